package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tractstack/concierge/queue"
)

// binaries built once for the package's tests: the release binary and
// one with the fake executor (-tags concierge_fake) for the queue tests.
type binaries struct{ real, fake string }

var bins binaries // set by TestMain only; read-only in tests

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "concierge-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bins = binaries{real: filepath.Join(dir, "concierge"), fake: filepath.Join(dir, "concierge-fake")}
	for _, b := range []struct{ out, tags string }{{bins.real, ""}, {bins.fake, "concierge_fake"}} {
		cmd := exec.Command("go", "build", "-tags", b.tags, "-o", b.out, ".")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build concierge:", err)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// home is a temporary TractStack home for the fake-executor binary.
type home struct {
	t    *testing.T
	dir  string
	fake string
}

func newHome(t *testing.T) *home {
	t.Helper()
	dir := t.TempDir()
	h := &home{t: t, dir: dir, fake: filepath.Join(dir, "fake")}
	for _, d := range []string{"state", "sites/acme", "fake", "log"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

func (h *home) env() []string {
	return append(os.Environ(), "T8K_HOME="+h.dir, "CONCIERGE_FAKE_DIR="+h.fake, "CONCIERGE_LOG_FORMAT=json")
}

func (h *home) drop(name, content string) {
	h.t.Helper()
	if err := os.WriteFile(filepath.Join(h.dir, "state", name), []byte(content), 0o644); err != nil {
		h.t.Fatal(err)
	}
}

// concierge runs the fake binary to its end.
func (h *home) concierge(args ...string) (stdout, stderr string, code int) {
	h.t.Helper()
	cmd := exec.Command(bins.fake, args...)
	cmd.Env = h.env()
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	code = 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		h.t.Fatal(err)
	}
	return o.String(), e.String(), code
}

// start starts the fake binary in the background; it is killed at the
// end of the test if still running.
func (h *home) start(args ...string) (*exec.Cmd, *syncBuffer) {
	h.t.Helper()
	cmd := exec.Command(bins.fake, args...)
	cmd.Env = h.env()
	e := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = e, e
	if err := cmd.Start(); err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return cmd, e
}

// syncBuffer is a bytes.Buffer that a child writes while a test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (h *home) status() []queue.Job {
	h.t.Helper()
	out, errOut, code := h.concierge("status", "--json")
	if code != 0 {
		h.t.Fatalf("status exit %d: %s", code, errOut)
	}
	var st struct{ Jobs []queue.Job }
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		h.t.Fatalf("status --json: %v\n%s", err, out)
	}
	return st.Jobs
}

type run struct {
	Event    string
	ID       string
	Target   string
	Tenants  []string
	Triggers []string
	Attempts int
}

func (h *home) runs() []run {
	h.t.Helper()
	data, err := os.ReadFile(filepath.Join(h.fake, "runs.jsonl"))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		h.t.Fatal(err)
	}
	var out []run
	// The fake may be writing a line right now: only whole lines count.
	data = data[:max(bytes.LastIndexByte(data, '\n'), 0)]
	for _, l := range strings.Split(string(data), "\n") {
		if l == "" {
			continue
		}
		var r run
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			h.t.Fatalf("runs.jsonl line %q: %v", l, err)
		}
		out = append(out, r)
	}
	return out
}

func (h *home) ends() []run {
	var out []run
	for _, r := range h.runs() {
		if r.Event == "end" {
			out = append(out, r)
		}
	}
	return out
}

func (h *home) stateEntries() []string {
	h.t.Helper()
	entries, err := os.ReadDir(filepath.Join(h.dir, "state"))
	if err != nil {
		h.t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (h *home) gate() {
	h.t.Helper()
	if err := os.WriteFile(filepath.Join(h.fake, "gate"), nil, 0o644); err != nil {
		h.t.Fatal(err)
	}
}

func (h *home) openGate() { os.Remove(filepath.Join(h.fake, "gate")) }

// runningJob waits for a job to hold at the gate and returns its id.
func (h *home) runningJob() string {
	h.t.Helper()
	var id string
	eventually(h.t, "a job to reach the gate", func() bool {
		entries, _ := os.ReadDir(h.fake)
		for _, e := range entries {
			if s, ok := strings.CutPrefix(e.Name(), "running-"); ok {
				id = s
				return true
			}
		}
		return false
	})
	return id
}

func waitExit(t *testing.T, cmd *exec.Cmd) int {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatal("concierge did not exit")
		return -1
	}
}

var _ = syscall.SIGTERM
