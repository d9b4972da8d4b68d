package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/tractstack/concierge/report"
)

// readStatusFile reads and parses <data>/status.json; ok is false while
// there is none.
func readStatusFile(t testing.TB, dataDir string) (report.Status, bool) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dataDir, report.StatusFileName))
	if os.IsNotExist(err) {
		return report.Status{}, false
	}
	if err != nil {
		t.Fatal(err)
	}
	var st report.Status
	if err := json.Unmarshal(data, &st); err != nil {
		t.Fatalf("status.json is not valid JSON: %v\n%s", err, data)
	}
	return st, true
}

// TestStatusFileFollowsTheQueue drives the fake-executor binary through
// a running job, a follow-up that waits, a shutdown that puts the job
// back, and a run in which one target fails, reading status.json as a
// site would at each point.
func TestStatusFileFollowsTheQueue(t *testing.T) {
	h := newHome(t)
	data := filepath.Join(h.dir, "concierge")
	h.gate()
	watch, logs := h.start("watch")
	h.drop("build-1.csv", "type=main,tenant=default,command=build")
	first := h.runningJob()
	waitFor(t, "status.json to say building", 10*time.Second, func() (bool, string) {
		st, ok := readStatusFile(t, data)
		return ok && st.State == report.StateBuilding && st.Job != nil && st.Job.ID == first && st.Job.Step == "fake-build",
			pe2eJSON(st)
	})
	h.drop("build-2.csv", "type=dedicated,site=acme,command=build")
	waitFor(t, "status.json to count the waiting job", 10*time.Second, func() (bool, string) {
		st, _ := readStatusFile(t, data)
		return st.State == report.StateBuilding && st.Pending == 1, pe2eJSON(st)
	})
	watch.cmd.Process.Signal(syscall.SIGTERM)
	if code := waitExit(t, watch); code != 0 {
		t.Fatalf("watch exit %d:\n%s", code, logs)
	}
	st, _ := readStatusFile(t, data)
	if st.State != report.StateQueued || st.Pending != 2 || st.Job == nil || st.Job.ID != first || st.Job.StartedAt != nil {
		t.Fatalf("after SIGTERM the interrupted job waits again; status.json:\n%s", pe2eJSON(st))
	}

	mustWrite(t, filepath.Join(h.fake, "fail-targets"), "dedicated:acme\n")
	h.openGate()
	if _, stderr, code := h.concierge("run"); code != 1 {
		t.Fatalf("run exit %d, want 1 (acme fails):\n%s", code, stderr)
	}
	jobs := h.status()
	if len(jobs) != 2 {
		t.Fatalf("jobs %+v", jobs)
	}
	st, _ = readStatusFile(t, data)
	acme := jobs[1]
	if st.State != report.StateFailed || st.Pending != 0 || st.Job == nil || st.Job.ID != acme.ID ||
		st.Job.Error != "fake build failed" || st.Job.Result != "failed" || st.Job.Step != "" {
		t.Fatalf("after the run, status.json:\n%s\njobs: %s", pe2eJSON(st), pe2eJSON(jobs))
	}
	if m := st.Targets["main"].LastResult; m == nil || m.ID != first || m.Result != "succeeded" || !m.FinishedAt.Equal(*jobs[0].FinishedAt) {
		t.Fatalf("main's last result %s, want job %s succeeded", pe2eJSON(m), first)
	}
	if a := st.Targets["dedicated:acme"].LastResult; a == nil || a.ID != acme.ID || a.Result != "failed" {
		t.Fatalf("acme's last result %s", pe2eJSON(a))
	}
	fi, err := os.Stat(filepath.Join(data, report.StatusFileName))
	if err != nil || fi.Mode().Perm() != 0o644 {
		t.Fatalf("status.json mode %v (%v), want 0644", fi.Mode().Perm(), err)
	}
}
