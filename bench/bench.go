package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/tractstack/concierge/internal/syncbuf"
	"github.com/tractstack/concierge/queue"
)

// bench holds what every benchmark shares: a scratch directory and the
// two concierge binaries.
type bench struct {
	dir   string
	real  string // release binary
	fake  string // -tags concierge_fake: the pipeline is a fake step
	short bool
}

func newBench(ctx context.Context, short bool) (*bench, error) {
	dir, err := os.MkdirTemp("", "concierge-bench-")
	if err != nil {
		return nil, fmt.Errorf("create scratch dir: %w", err)
	}
	b := &bench{dir: dir, real: filepath.Join(dir, "concierge"), fake: filepath.Join(dir, "concierge-fake"), short: short}
	root, err := moduleRoot(ctx)
	if err != nil {
		return nil, err
	}
	for _, bin := range []struct{ out, tags string }{{b.real, ""}, {b.fake, "concierge_fake"}} {
		if _, err := output(ctx, root, nil, "go", "build", "-tags", bin.tags, "-o", bin.out, "./cmd/concierge"); err != nil {
			return nil, fmt.Errorf("build concierge: %w", err)
		}
	}
	return b, nil
}

func (b *bench) close() { os.RemoveAll(b.dir) }

func moduleRoot(ctx context.Context) (string, error) {
	out, err := output(ctx, "", nil, "go", "env", "GOMOD")
	if err != nil {
		return "", err
	}
	mod := strings.TrimSpace(out)
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("run the bench from inside the concierge module")
	}
	return filepath.Dir(mod), nil
}

// output runs a command to its end and returns its standard output; env
// nil is the bench's own environment.
func output(ctx context.Context, dir string, env []string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	if env != nil {
		cmd.Env = env
	}
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	if err := cmd.Run(); err != nil {
		return o.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(e.String()))
	}
	return o.String(), nil
}

// setEnv returns base with each KEY=VALUE of set replacing its key.
func setEnv(base []string, set ...string) []string {
	out := make([]string, 0, len(base)+len(set))
	for _, kv := range base {
		k, _, _ := strings.Cut(kv, "=")
		keep := true
		for _, s := range set {
			if strings.HasPrefix(s, k+"=") {
				keep = false
			}
		}
		if keep {
			out = append(out, kv)
		}
	}
	return append(out, set...)
}

// home is a TractStack home for the fake binary.
type home struct {
	dir, state, data, fakeDir string
	env                       []string
}

func (b *bench) newHome(name string) (*home, error) {
	dir := filepath.Join(b.dir, name)
	h := &home{dir: dir, state: filepath.Join(dir, "state"), data: filepath.Join(dir, "concierge"), fakeDir: filepath.Join(dir, "fake")}
	for _, d := range []string{h.state, h.fakeDir, filepath.Join(dir, "log"), filepath.Join(dir, "etc")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("create home: %w", err)
		}
	}
	h.env = setEnv(os.Environ(), "T8K_HOME="+dir, "CONCIERGE_FAKE_DIR="+h.fakeDir, "CONCIERGE_LOG_FORMAT=json",
		"CONCIERGE_LOG_LEVEL=warn")
	return h, nil
}

func (h *home) drop(name string) error {
	return os.WriteFile(filepath.Join(h.state, name), []byte("type=main,tenant=default,command=build\n"), 0o644)
}

func (h *home) jobs() []*queue.Job {
	jobs, _, _ := queue.ReadStore(h.data).Load()
	return jobs
}

// idle reports whether no job waits or runs.
func (h *home) idle() bool {
	for _, j := range h.jobs() {
		if j.State == queue.Pending || j.State == queue.Running {
			return false
		}
	}
	return true
}

func (h *home) stateEmpty() bool {
	entries, err := os.ReadDir(h.state)
	return err == nil && len(entries) == 0
}

// builds counts the fake executor's finished builds.
func (h *home) builds() int {
	b, _ := os.ReadFile(filepath.Join(h.fakeDir, "runs.jsonl"))
	return strings.Count(string(b), `"event":"end"`)
}

// proc is a concierge running in the background.
type proc struct {
	cmd  *exec.Cmd
	out  *syncbuf.Buffer
	done chan error
}

func start(bin string, env []string, args ...string) (*proc, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	p := &proc{cmd: cmd, out: &syncbuf.Buffer{}, done: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() { p.done <- cmd.Wait() }()
	return p, nil
}

// startWatch starts `watch` and waits until it watches.
func startWatch(bin string, env []string) (*proc, error) {
	p, err := start(bin, env, "--log-level", "info", "watch")
	if err != nil {
		return nil, err
	}
	if err := waitFor(20*time.Second, time.Millisecond, func() bool { return strings.Contains(p.out.String(), "watching for triggers") }); err != nil {
		p.stop()
		return nil, fmt.Errorf("watch did not start: %w\n%s", err, p.out.String())
	}
	return p, nil
}

// stop sends SIGTERM and waits (SIGKILL after 30 s).
func (p *proc) stop() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// waitFor polls cond every interval until it holds or d passes.
func waitFor(d, interval time.Duration, cond func() bool) error {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s", d)
		}
		time.Sleep(interval)
	}
	return nil
}

// percentile of sorted-in-place durations (nearest rank).
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	i := int(p/100*float64(len(ds))+0.5) - 1
	i = max(0, min(i, len(ds)-1))
	return ds[i]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d.Microseconds())/1000) }

// table prints a markdown table.
func table(title string, header []string, rows [][]string, notes ...string) {
	fmt.Printf("\n## %s\n\n| %s |\n|%s\n", title, strings.Join(header, " | "), strings.Repeat(" --- |", len(header)))
	for _, r := range rows {
		fmt.Printf("| %s |\n", strings.Join(r, " | "))
	}
	for _, n := range notes {
		fmt.Printf("\n%s\n", n)
	}
}
