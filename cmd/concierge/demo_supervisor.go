package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// supervisor stands in for systemd and pm2 in the demo: it runs the
// backend and the frontend as child processes and restarts them when the
// pipeline's "systemctl restart" and "pm2 reload" (pointed at `concierge
// demo-ctl`) ask it to over a unix socket. One goroutine serves the
// socket; Close stops everything it started and waits.
type supervisor struct {
	sock    string
	logDir  string
	env     []string
	ln      net.Listener
	wg      sync.WaitGroup
	mu      sync.Mutex
	running map[string]*exec.Cmd
	specs   map[string]serviceSpec
}

// serviceSpec is how to start one supervised service.
type serviceSpec struct {
	dir  string
	name string
	args []string
	env  []string
}

func newSupervisor(sock, logDir string, env []string, specs map[string]serviceSpec) (*supervisor, error) {
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return nil, fmt.Errorf("create service log dir: %w", err)
	}
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", sock, err)
	}
	s := &supervisor{sock: sock, logDir: logDir, env: env, ln: ln, running: map[string]*exec.Cmd{}, specs: specs}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.serve()
	}()
	return s, nil
}

func (s *supervisor) serve() {
	for {
		conn, err := s.ln.Accept()
		if err != nil {
			return // closed
		}
		s.handle(conn)
	}
}

type ctlReply struct {
	OK      bool   `json:"ok"`
	Message string `json:"message"`
}

func (s *supervisor) handle(conn net.Conn) {
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	var args []string
	if err := json.NewDecoder(bufio.NewReader(conn)).Decode(&args); err != nil {
		json.NewEncoder(conn).Encode(ctlReply{Message: "bad request: " + err.Error()})
		return
	}
	msg, err := s.control(args)
	reply := ctlReply{OK: err == nil, Message: msg}
	if err != nil {
		reply.Message = err.Error()
	}
	json.NewEncoder(conn).Encode(reply)
}

// control maps "systemctl restart tractstack-go.service" and "pm2 reload
// astro-main" to restarting the named service, and "systemctl show -p
// MainPID --value tractstack-go.service" to its pid. Pure routing; the restart
// is the side effect.
func (s *supervisor) control(args []string) (string, error) {
	if len(args) < 3 {
		return "", fmt.Errorf("unsupported: %s", strings.Join(args, " "))
	}
	tool, verb, name := args[0], args[1], strings.TrimSuffix(args[len(args)-1], ".service")
	if tool == "systemctl" && verb == "show" { // -p MainPID --value: the health check's owner test
		s.mu.Lock()
		defer s.mu.Unlock()
		if cmd := s.running[name]; cmd != nil {
			return strconv.Itoa(cmd.Process.Pid), nil
		}
		return "0", nil
	}
	switch {
	case tool == "systemctl" && (verb == "restart" || verb == "reset-failed"):
	case tool == "pm2" && (verb == "reload" || verb == "restart"):
	default:
		return "", fmt.Errorf("unsupported: %s", strings.Join(args, " "))
	}
	if verb == "reset-failed" {
		return "ok", nil
	}
	if _, ok := s.specs[name]; !ok {
		return "", fmt.Errorf("unknown service %s", name)
	}
	if err := s.restart(name); err != nil {
		return "", err
	}
	return name + " restarted", nil
}

func (s *supervisor) restart(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.running[name]; old != nil {
		stopProcess(old)
		delete(s.running, name)
	}
	spec := s.specs[name]
	logf, err := os.OpenFile(filepath.Join(s.logDir, name+".log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open %s log: %w", name, err)
	}
	defer logf.Close()
	cmd := exec.Command(spec.name, spec.args...)
	cmd.Dir = spec.dir
	cmd.Env = append(append([]string{}, s.env...), spec.env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	s.running[name] = cmd
	return nil
}

// stopProcess ends a supervised process group: SIGTERM, then SIGKILL.
func stopProcess(cmd *exec.Cmd) {
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
}

// Close stops the socket and every service, and waits.
func (s *supervisor) Close() {
	s.ln.Close()
	s.wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, cmd := range s.running {
		stopProcess(cmd)
		delete(s.running, name)
	}
	os.Remove(s.sock)
}

// demoCtlCmd is the hidden client the demo points CONCIERGE_SYSTEMCTL and
// CONCIERGE_PM2 at: `concierge demo-ctl --socket S systemctl restart X`.
func demoCtlCmd(ctx context.Context, a *App, cfg *Config, args []string) error {
	var sock string
	fs := flag.NewFlagSet("concierge demo-ctl", flag.ContinueOnError)
	fs.SetOutput(a.Stderr)
	fs.StringVar(&sock, "socket", "", "the demo supervisor's socket")
	if err := fs.Parse(args); err != nil {
		return usageErr("%v", err)
	}
	if sock == "" || fs.NArg() == 0 {
		return usageErr("demo-ctl --socket S <systemctl|pm2> <verb> <name>")
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", sock)
	if err != nil {
		return fmt.Errorf("reach the demo supervisor: %w", err)
	}
	defer conn.Close()
	if err := json.NewEncoder(conn).Encode(fs.Args()); err != nil {
		return fmt.Errorf("send to the demo supervisor: %w", err)
	}
	var r ctlReply
	if err := json.NewDecoder(conn).Decode(&r); err != nil {
		return fmt.Errorf("read the demo supervisor's answer: %w", err)
	}
	fmt.Fprintln(a.Stdout, r.Message)
	if !r.OK {
		return &exitError{code: exitFailed, err: errors.New(r.Message)}
	}
	return nil
}
