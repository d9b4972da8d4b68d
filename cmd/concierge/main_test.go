package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tractstack/concierge/internal/syncbuf"
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
	mustWrite(h.t, filepath.Join(h.dir, "state", name), content)
}

// concierge runs the fake binary to its end.
func (h *home) concierge(args ...string) (stdout, stderr string, code int) {
	h.t.Helper()
	return runConcierge(h.t, bins.fake, h.env(), args...)
}

// start starts the fake binary in the background; it is killed at the
// end of the test if still running.
func (h *home) start(args ...string) (*proc, *syncbuf.Buffer) {
	h.t.Helper()
	p := startProc(h.t, bins.fake, h.env(), args...)
	return p, p.out
}

func (h *home) status() []queue.Job {
	h.t.Helper()
	return statusJobs(h.t, bins.fake, h.env())
}

// run is one line of the fake executor's runs.jsonl: a job's start or end.
type run struct {
	Event    string
	ID       string
	Target   string
	Tenants  []string
	Triggers []string
	Attempts int
}

// fakeRuns reads the runs.jsonl the fake executor writes in dir.
func fakeRuns(t testing.TB, dir string) []run {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "runs.jsonl"))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
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
			t.Fatalf("runs.jsonl line %q: %v", l, err)
		}
		out = append(out, r)
	}
	return out
}

// endsOf is the jobs that ended, out of runs.
func endsOf(runs []run) []run {
	var out []run
	for _, r := range runs {
		if r.Event == "end" {
			out = append(out, r)
		}
	}
	return out
}

// fakeRunningJob waits for the fake executor in dir to hold a job at its
// gate that is not in seen, and returns its id.
func fakeRunningJob(t testing.TB, dir string, seen map[string]bool) string {
	t.Helper()
	var id string
	waitFor(t, "a job to hold at the gate", 20*time.Second, func() (bool, string) {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if s, ok := strings.CutPrefix(e.Name(), "running-"); ok && !seen[s] {
				id = s
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d entries in %s", len(entries), dir)
	})
	return id
}

func (h *home) runs() []run { return fakeRuns(h.t, h.fake) }

func (h *home) ends() []run { return endsOf(h.runs()) }

func (h *home) stateEntries() []string {
	h.t.Helper()
	return dirNames(h.t, filepath.Join(h.dir, "state"))
}

func (h *home) gate() {
	h.t.Helper()
	mustWrite(h.t, filepath.Join(h.fake, "gate"), "")
}

func (h *home) openGate() { os.Remove(filepath.Join(h.fake, "gate")) }

// runningJob waits for a job to hold at the gate and returns its id.
func (h *home) runningJob() string {
	h.t.Helper()
	return fakeRunningJob(h.t, h.fake, nil)
}
