// Package pm2test runs a real pm2 for a test with its own PM2_HOME, so
// tests never see each other's processes or a host's; t.Cleanup runs
// `pm2 kill` with that PM2_HOME, which ends its daemon and every app.
package pm2test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tractstack/concierge/internal/testtool"
)

// PM2 is a pm2 with a private home.
type PM2 struct {
	t    testing.TB
	home string
}

// Start prepares a private PM2_HOME (the daemon starts with the first
// command) and registers `pm2 kill` for the end of the test. It skips t
// (or fails it under CI) when pm2 or node is not on PATH.
func Start(t testing.TB) *PM2 {
	t.Helper()
	testtool.Require(t, "pm2", "node")
	// pm2's rpc and pub sockets live in PM2_HOME, and a unix socket path
	// is limited to 108 bytes, which t.TempDir() can exceed.
	home, err := os.MkdirTemp("", "pm2-")
	if err != nil {
		t.Fatalf("create PM2_HOME: %v", err)
	}
	p := &PM2{t: t, home: home}
	t.Cleanup(func() {
		if out, err := p.run("kill"); err != nil {
			t.Logf("pm2 kill: %v\n%s", err, out)
		}
		p.reapLeft()
		os.RemoveAll(home)
	})
	return p
}

// reapLeft fails the test for every pm2 process of this PM2_HOME (a
// daemon, or an app it ran) that `pm2 kill` left running, a daemon no
// command reaches, say, and kills it, so that no test leaves a process
// behind unnoticed. Other processes given this PM2_HOME (a concierge the
// test runs) end by their own clean-ups.
func (p *PM2) reapLeft() {
	var left []int
	deadline := time.Now().Add(10 * time.Second)
	for {
		left = p.procs(true)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, pid := range left {
		p.t.Errorf("pm2 kill left pid %d of PM2_HOME %s running: %s", pid, p.home, cmdline(pid))
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

// Daemons returns the pids of the running pm2 daemons of this PM2_HOME:
// there should be at most one.
func (p *PM2) Daemons() []int { return p.procs(false) }

// procs lists this PM2_HOME's pm2 daemons, and with apps the processes
// they run (pm2 gives each a pm_id in its environment).
func (p *PM2) procs(apps bool) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil {
			continue
		}
		ours, app := false, false
		for _, v := range bytes.Split(env, []byte{0}) {
			ours = ours || string(v) == "PM2_HOME="+p.home
			app = app || bytes.HasPrefix(v, []byte("pm_id="))
		}
		if ours && (strings.HasSuffix(cmdline(pid), "God Daemon ("+p.home+")") || apps && app) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// cmdline is a process's command line with spaces for NULs.
func cmdline(pid int) string {
	b, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	return strings.TrimRight(strings.ReplaceAll(string(b), "\x00", " "), " ")
}

// Home is the PM2_HOME.
func (p *PM2) Home() string { return p.home }

// Env is the environment a child needs to drive this pm2: PATH, HOME and
// PM2_HOME.
func (p *PM2) Env() []string {
	return []string{"PATH=" + os.Getenv("PATH"), "HOME=" + p.home, "PM2_HOME=" + p.home}
}

func (p *PM2) run(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "pm2", args...)
	cmd.Env = append(p.Env(), "PM2_DISCRETE_MODE=true")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("pm2 %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// Run runs `pm2 args...` with this PM2_HOME and returns its output; a
// failure fails the test.
func (p *PM2) Run(args ...string) string {
	p.t.Helper()
	out, err := p.run(args...)
	if err != nil {
		p.t.Fatal(err)
	}
	return out
}

// StartApp starts script as the pm2 process name with PORT=port in its
// environment.
func (p *PM2) StartApp(name, script string, port int) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "pm2", "start", script, "--name", name)
	cmd.Dir = filepath.Dir(script)
	cmd.Env = append(p.Env(), "PORT="+strconv.Itoa(port), "HOST=127.0.0.1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		p.t.Fatalf("pm2 start %s --name %s: %v\n%s", script, name, err, out.String())
	}
}

// Process is one entry of `pm2 jlist`.
type Process struct {
	Name        string
	PID         int
	Status      string
	RestartTime int
}

// JList returns the processes pm2 knows.
func (p *PM2) JList() []Process {
	p.t.Helper()
	out := p.Run("jlist")
	ps, err := ParseJList([]byte(out))
	if err != nil {
		p.t.Fatalf("%v\n%s", err, out)
	}
	return ps
}

// Get returns the named process; ok is false when pm2 does not know it.
func (p *PM2) Get(name string) (Process, bool) {
	p.t.Helper()
	for _, pr := range p.JList() {
		if pr.Name == name {
			return pr, true
		}
	}
	return Process{}, false
}

// ParseJList parses `pm2 jlist` output. pm2 may print notices before the
// JSON array, so parsing starts at the line that opens it.
func ParseJList(out []byte) ([]Process, error) {
	start := -1
	for off, line := 0, []byte(nil); off < len(out); off += len(line) {
		line = out[off:]
		if j := bytes.IndexByte(line, '\n'); j >= 0 {
			line = line[:j+1]
		}
		t := bytes.TrimSpace(line)
		if bytes.HasPrefix(t, []byte("[{")) || bytes.Equal(t, []byte("[]")) {
			start = off
			break
		}
	}
	if start < 0 {
		return nil, fmt.Errorf("parse pm2 jlist: no JSON array")
	}
	var raw []struct {
		Name   string `json:"name"`
		PID    int    `json:"pid"`
		PM2Env struct {
			Status      string `json:"status"`
			RestartTime int    `json:"restart_time"`
		} `json:"pm2_env"`
	}
	if err := json.Unmarshal(out[start:], &raw); err != nil {
		return nil, fmt.Errorf("parse pm2 jlist: %w", err)
	}
	ps := make([]Process, 0, len(raw))
	for _, r := range raw {
		ps = append(ps, Process{Name: r.Name, PID: r.PID, Status: r.PM2Env.Status, RestartTime: r.PM2Env.RestartTime})
	}
	return ps, nil
}
