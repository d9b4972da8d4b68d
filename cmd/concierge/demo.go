package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tractstack/concierge/internal/sandbox"
	"github.com/tractstack/concierge/queue"
)

// demoCmd builds a throwaway TractStack home (local git origins, a tiny
// backend and a tiny frontend) and runs the real pipeline on it, with the
// services supervised by the demo itself instead of systemd and pm2: a
// first deploy, an upgrade going live, a broken commit kept out and an
// unhealthy commit rolled back. It prints what happens as it happens and
// ends with the status table and where the files are. It stops every
// process it started.
func demoCmd(ctx context.Context, a *App, cfg *Config, args []string) error {
	var dir string
	fs := flag.NewFlagSet("concierge demo", flag.ContinueOnError)
	fs.SetOutput(a.Stderr)
	fs.StringVar(&dir, "dir", "", "where to build the demo home (default: a new temporary directory)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageErr("%v", err)
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	for _, tool := range []string{"git", "go", "node"} {
		if _, err := exec.LookPath(tool); err != nil {
			return usageErr("the demo needs %s on PATH", tool)
		}
	}
	if dir == "" {
		d, err := os.MkdirTemp("", "concierge-demo-")
		if err != nil {
			return fmt.Errorf("create demo dir: %w", err)
		}
		dir = d
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("resolve demo dir: %w", err)
	}
	d := &demo{a: a, dir: dir, out: a.Stdout}
	return d.run(ctx, cfg)
}

type demo struct {
	a        *App
	dir      string
	out      io.Writer
	home     *sandbox.Home
	goPort   int
	astPort  int
	outcomes []string
}

func (d *demo) say(format string, args ...any) {
	fmt.Fprintf(d.out, format+"\n", args...)
}

func (d *demo) run(ctx context.Context, base *Config) error {
	d.say("==> concierge demo in %s", d.dir)
	ports, err := freePorts(2)
	if err != nil {
		return err
	}
	d.goPort, d.astPort = ports[0], ports[1]
	home, err := sandbox.New(ctx, filepath.Join(d.dir, "home"), sandbox.Options{
		FrontendIsClone: true,
		Ports:           map[string][2]int{"main": {d.goPort, d.astPort}},
	})
	if err != nil {
		return fmt.Errorf("set up the demo home: %w", err)
	}
	d.home = home
	d.say("    home %s: origins, backend clone and frontend clone made with git", home.Dir)
	d.say("    backend on 127.0.0.1:%d, frontend on 127.0.0.1:%d (supervised by the demo instead of systemd and pm2)", d.goPort, d.astPort)

	env, err := d.childEnv(base.Env)
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find concierge's own binary: %w", err)
	}
	sock := filepath.Join(d.dir, "supervisor.sock")
	sup, err := newSupervisor(sock, filepath.Join(d.dir, "services"), env, map[string]serviceSpec{
		"tractstack-go": {dir: home.Dir, name: home.Binary(""), args: []string{"--port", fmt.Sprint(d.goPort)}},
		"astro-main": {dir: home.FrontendSrc(""), name: "node", args: []string{"dist/server/entry.mjs"},
			env: []string{fmt.Sprintf("PORT=%d", d.astPort), "HOST=127.0.0.1"}},
	})
	if err != nil {
		return err
	}
	defer func() {
		sup.Close()
		d.say("    stopped the demo's backend and frontend")
	}()

	cfg := *base
	cfg.Home = home.Dir
	cfg.DataDir = ""
	cfg.Env = env
	cfg.LogFormat = "console"
	cfg.FrontendUpdate = ""
	cfg.HealthTimeout = 5 * time.Second
	cfg.StepTimeout = 5 * time.Minute
	cfg.Systemctl = []string{self, "demo-ctl", "--socket", sock, "systemctl"}
	cfg.PM2 = []string{self, "demo-ctl", "--socket", sock, "pm2"}
	recv, err := startDemoReceiver(d)
	if err != nil {
		return err
	}
	defer recv.close()
	cfg.Notify = []string{recv.url()}
	if cfg.MetricsFile, err = demoMetricsFile(d.dir); err != nil {
		return err
	}
	d.say("    notifications go to a webhook receiver the demo runs on %s; metrics to %s", recv.ln.Addr(), cfg.MetricsFile)
	if err := cfg.Validate(); err != nil {
		return err
	}
	logs := newLogger(&cfg, nil, d.out, true)
	defer logs.Close()
	svc, err := openService(ctx, &cfg, logs.log, nil)
	if err != nil {
		return err
	}
	defer svc.close()

	type scenario struct {
		name, title string
		change      func() error
		check       func(job queue.Job) (string, bool)
	}
	var v2 string
	scenarios := []scenario{
		{"first-deploy", "First deploy: build v1 and put it live", nil, func(job queue.Job) (string, bool) {
			return d.serving(job, queue.Succeeded, "v1")
		}},
		{"upgrade", "An upgrade: push v2 of backend and frontend upstream", func() error {
			c, err := home.PushBackend(ctx, "", sandbox.BackendVersion("v2", true))
			v2 = c
			if err != nil {
				return err
			}
			// A build that takes a few seconds, to watch the site
			// answer from the old release while it runs.
			_, err = home.PushFrontend(ctx, "", sandbox.Change{
				Files:   mergeFiles(sandbox.FrontendVersion("v2").Files, sandbox.FrontendBuildDelay(3000).Files),
				Message: "frontend v2, slow build",
			})
			return err
		}, func(job queue.Job) (string, bool) {
			return d.serving(job, queue.Succeeded, "v2")
		}},
		{"broken-commit", "A broken commit: push a backend that does not compile", func() error {
			_, err := home.PushBackend(ctx, "", sandbox.BackendBroken())
			return err
		}, func(job queue.Job) (string, bool) {
			msg, ok := d.serving(job, queue.Failed, "v2")
			return "kept out; " + msg, ok && stepFailed(job, "build-backend")
		}},
		{"unhealthy-commit", "An unhealthy commit: push v3 whose health check fails", func() error {
			_, err := home.PushBackend(ctx, "", sandbox.BackendVersion("v3", false))
			return err
		}, func(job queue.Job) (string, bool) {
			msg, ok := d.serving(job, queue.Failed, "v2")
			return "rolled back; " + msg, ok && strings.Contains(job.Error, "rolled back to "+v2[:min(len(v2), 7)])
		}},
	}
	allOK := true
	for i, sc := range scenarios {
		d.say("\n==> %d. %s", i+1, sc.title)
		if sc.change != nil {
			if err := sc.change(); err != nil {
				return err
			}
		}
		path, err := queue.WriteTrigger(cfg.StateDir(), []string{"type=main,tenant=default,command=build"}, time.Now())
		if err != nil {
			return err
		}
		d.say("    trigger %s", path)
		stopWatch := func() {}
		if i > 0 { // before the first deploy there is no site to watch
			stopWatch = d.watchSite()
		}
		sum, err := svc.drain(ctx)
		stopWatch()
		if err != nil {
			return err
		}
		if len(sum.jobs) != 1 {
			return fmt.Errorf("demo: expected one job, ran %d", len(sum.jobs))
		}
		msg, ok := sc.check(sum.jobs[0])
		verdict := "ok"
		if !ok {
			verdict = "UNEXPECTED"
			allOK = false
		}
		d.outcomes = append(d.outcomes, fmt.Sprintf("OUTCOME %-16s %-10s %s", sc.name, verdict, msg))
		d.say("    %s", d.outcomes[len(d.outcomes)-1])
	}

	d.say("\n==> Status (concierge --home %s status)", home.Dir)
	jobs, _, err := queue.ReadStore(cfg.DataDir).Load()
	if err != nil {
		return err
	}
	writeStatus(d.out, jobs, 10, time.Now(), false)
	got := recv.received()
	notified := len(got) == 2 && strings.Contains(got[0], "failed") && strings.Contains(got[1], "rolled back")
	verdict := "ok"
	if !notified {
		verdict, allOK = "UNEXPECTED", false
	}
	d.outcomes = append(d.outcomes, fmt.Sprintf("OUTCOME %-16s %-10s %d received (the failure and the rollback; successes notify with CONCIERGE_NOTIFY_ON=all)", "notifications", verdict, len(got)))
	d.say("\n==> Metrics (%s, as node_exporter's textfile collector reads it)", cfg.MetricsFile)
	if err := d.showMetrics(cfg.MetricsFile); err != nil {
		return err
	}
	d.say("\n==> Outcomes")
	for _, o := range d.outcomes {
		d.say("    %s", o)
	}
	d.say("\n==> Files")
	d.say("    home:          %s", home.Dir)
	d.say("    job records:   %s", filepath.Join(cfg.DataDir, "jobs"))
	d.say("    compat log:    %s", cfg.LogFile())
	d.say("    status file:   %s", filepath.Join(cfg.DataDir, "status.json"))
	d.say("    metrics file:  %s", cfg.MetricsFile)
	d.say("    releases:      %s", filepath.Join(home.Dir, "bin", "releases"))
	d.say("    service logs:  %s", filepath.Join(d.dir, "services"))
	d.say("    try: go run ./cmd/concierge --home %s status", home.Dir)
	d.say("    remove with: rm -rf %s", d.dir)
	if !allOK {
		return &exitError{code: exitFailed, err: errors.New("demo: an outcome was not what it should be")}
	}
	return nil
}

// serving checks the job's state and what the backend and frontend
// answer now.
func (d *demo) serving(job queue.Job, want queue.State, version string) (string, bool) {
	be, beErr := backendVersion(d.goPort)
	fe, feErr := get(fmt.Sprintf("http://127.0.0.1:%d/", d.astPort))
	fe = strings.TrimSpace(fe)
	msg := fmt.Sprintf("job %s %s; backend answers %s, frontend answers %q", job.ID, job.State, be, fe)
	if job.Error != "" {
		msg += "; error: " + job.Error
	}
	ok := job.State == want && beErr == nil && feErr == nil && be == version && fe == "frontend "+version
	return msg, ok
}

// watchSite prints, once a second until stopped, what a visitor of the
// site gets: a page, a lazily loaded page, a public file and the
// backend's health. The build runs beside the live release, so the site
// answers throughout.
func (d *demo) watchSite() (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for n := 0; ; n++ {
			front, ferr := get(fmt.Sprintf("http://127.0.0.1:%d/", d.astPort))
			page, perr := get(fmt.Sprintf("http://127.0.0.1:%d/p/%d", d.astPort, n%5+1))
			_, rerr := get(fmt.Sprintf("http://127.0.0.1:%d/files/robots.txt", d.astPort))
			back, berr := backendVersion(d.goPort)
			state := "site up  "
			if ferr != nil || perr != nil || rerr != nil || berr != nil {
				state = "site DOWN"
			}
			d.say("    %s %s: %s, %s, robots.txt %s; backend %s", state, time.Now().Format("15:04:05"),
				answer(front, ferr), answer(page, perr), answer("ok", rerr), back)
			select {
			case <-done:
				return
			case <-time.After(time.Second):
			}
		}
	}()
	return func() { close(done); <-finished }
}

// answer is what a request got, short: the body quoted, or why not.
func answer(body string, err error) string {
	switch {
	case err == nil:
		return strconv.Quote(strings.TrimSpace(body))
	case strings.Contains(err.Error(), "connection refused"):
		return "refused"
	default:
		return err.Error()
	}
}

// mergeFiles is the union of file sets, later ones winning.
func mergeFiles(sets ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, s := range sets {
		for k, v := range s {
			out[k] = v
		}
	}
	return out
}

func stepFailed(job queue.Job, name string) bool {
	for _, s := range job.Steps {
		if s.Name == name && s.State == queue.Failed {
			return true
		}
	}
	return false
}

func backendVersion(port int) (string, error) {
	body, err := get(fmt.Sprintf("http://127.0.0.1:%d/api/v1/health", port))
	if err != nil {
		return "down", err
	}
	var h struct{ Version string }
	if err := json.Unmarshal([]byte(body), &h); err != nil {
		return "?", fmt.Errorf("decode health: %w", err)
	}
	return h.Version, nil
}

func get(url string) (string, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if err == nil && resp.StatusCode >= 400 {
		err = fmt.Errorf("status %d", resp.StatusCode)
	}
	return string(b), err
}

// childEnv is the demo's environment for builds: when pnpm is not
// installed, a shim runs it through npx (npm ships with Node), so the
// demo needs only Go, git and Node.
func (d *demo) childEnv(base []string) ([]string, error) {
	env := append([]string{}, base...)
	if _, err := exec.LookPath("pnpm"); err == nil {
		return env, nil
	}
	if _, err := exec.LookPath("npx"); err != nil {
		return nil, usageErr("the demo needs pnpm, or npx to fetch it")
	}
	shims := filepath.Join(d.dir, "shims")
	if err := os.MkdirAll(shims, 0o755); err != nil {
		return nil, fmt.Errorf("create shim dir: %w", err)
	}
	shim := "#!/bin/sh\nexec npx --yes pnpm@10 \"$@\"\n"
	if err := os.WriteFile(filepath.Join(shims, "pnpm"), []byte(shim), 0o755); err != nil {
		return nil, fmt.Errorf("write pnpm shim: %w", err)
	}
	d.say("    pnpm is not installed: using npx pnpm@10 for the demo")
	m := envMap(env)
	out := []string{}
	for _, kv := range env {
		if !strings.HasPrefix(kv, "PATH=") {
			out = append(out, kv)
		}
	}
	return append(out, "PATH="+shims+string(os.PathListSeparator)+m["PATH"]), nil
}

// freePorts finds n free loopback ports.
func freePorts(n int) ([]int, error) {
	var ports []int
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		lns = append(lns, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
