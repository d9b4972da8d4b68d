package report

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tractstack/concierge/deploy"
	"github.com/tractstack/concierge/queue"
)

var t0 = time.Date(2026, 12, 5, 3, 0, 0, 0, time.UTC)

func at(sec int) *time.Time {
	t := t0.Add(time.Duration(sec) * time.Second)
	return &t
}

func step(name string, st queue.State, started int) queue.Step {
	return queue.Step{Name: name, State: st, StartedAt: at(started)}
}

// job makes a record; id orders the records as the queue does.
func job(id string, st queue.State, target, command string, started, finished int, steps ...queue.Step) queue.Job {
	j := queue.Job{ID: id, State: st, Target: target, Command: command, Tenants: []string{"default"}, Steps: steps}
	if started >= 0 {
		j.StartedAt = at(started)
	}
	if finished >= 0 {
		j.FinishedAt = at(finished)
	}
	if st == queue.Failed {
		j.Error = "it broke"
	}
	return j
}

func TestBuildStatus(t *testing.T) {
	ok := job("01", queue.Succeeded, "main", "build", 0, 10, step("swap", queue.Succeeded, 5))
	failed := job("02", queue.Failed, "main", "build", 20, 30, step("build-backend", queue.Failed, 21))
	rolled := job("03", queue.Failed, "main", "build", 40, 50, step("health-backend", queue.Failed, 45), step("rollback", queue.Succeeded, 46))
	rollbackCmd := job("04", queue.Succeeded, "dedicated:acme", "rollback", 60, 70, step("rollback", queue.Succeeded, 61))
	rejected := queue.Job{ID: "05", State: queue.Rejected, FinishedAt: at(80), Error: "bad trigger"}
	pending := job("06", queue.Pending, "main", "build", -1, -1)
	building := job("07", queue.Running, "main", "build", 90, -1,
		step("pull-backend", queue.Succeeded, 90), step("build-backend", queue.Running, 91), step("build-frontend", queue.Running, 92))
	swapping := job("07", queue.Running, "main", "build", 90, -1,
		step("build-backend", queue.Succeeded, 91), step("swap", queue.Running, 95))
	restarting := job("08", queue.Running, "main", "restart", 90, -1)

	cases := []struct {
		name    string
		jobs    []queue.Job
		state   string
		jobID   string
		step    string
		pending int
	}{
		{"no jobs yet", nil, StateIdle, "", "", 0},
		{"last job succeeded", []queue.Job{ok}, StateIdle, "01", "", 0},
		{"last job failed", []queue.Job{ok, failed}, StateFailed, "02", "", 0},
		{"last job rolled back", []queue.Job{ok, failed, rolled}, StateRolledBack, "03", "", 0},
		{"rollback command", []queue.Job{ok, rollbackCmd}, StateRolledBack, "04", "", 0},
		{"a rejected trigger leaves the state alone", []queue.Job{ok, failed, rejected}, StateFailed, "02", "", 0},
		{"queued", []queue.Job{ok, pending}, StateQueued, "06", "", 1},
		{"building shows the step started last", []queue.Job{ok, building, pending}, StateBuilding, "07", "build-frontend", 1},
		{"deploying once the swap started", []queue.Job{ok, swapping}, StateDeploying, "07", "swap", 0},
		{"restart is deploying", []queue.Job{restarting}, StateDeploying, "08", "", 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st := BuildStatus(Snapshot{Jobs: c.jobs}, t0)
			if st.State != c.state || st.Pending != c.pending {
				t.Fatalf("state %q pending %d, want %q %d", st.State, st.Pending, c.state, c.pending)
			}
			id, stepName := "", ""
			if st.Job != nil {
				id, stepName = st.Job.ID, st.Job.Step
			}
			if id != c.jobID || stepName != c.step {
				t.Fatalf("job %q step %q, want %q %q", id, stepName, c.jobID, c.step)
			}
		})
	}
}

func TestBuildStatusTargets(t *testing.T) {
	jobs := []queue.Job{
		job("01", queue.Succeeded, "main", "build", 0, 10),
		job("02", queue.Failed, "main", "build", 20, 30, step("health-backend", queue.Failed, 25), step("rollback", queue.Succeeded, 26)),
		job("03", queue.Failed, "dedicated:acme", "build", 40, 50),
	}
	live := map[string]deploy.Release{"main": {ID: "20261205T030000.000000000Z", Backend: "b1", Frontend: "f1", LiveAt: *at(5)}}
	st := BuildStatus(Snapshot{Jobs: jobs, Live: live}, t0)
	if len(st.Targets) != 2 {
		t.Fatalf("targets %v", st.Targets)
	}
	m := st.Targets["main"]
	if m.LastResult == nil || m.LastResult.ID != "02" || m.LastResult.Result != ResultRolledBack || m.LastResult.Error != "it broke" {
		t.Fatalf("main last result %+v", m.LastResult)
	}
	if m.Live == nil || m.Live.BackendCommit != "b1" || m.Live.FrontendCommit != "f1" || !m.Live.Verified {
		t.Fatalf("main live %+v", m.Live)
	}
	a := st.Targets["dedicated:acme"]
	if a.LastResult == nil || a.LastResult.Result != ResultFailed || a.Live != nil {
		t.Fatalf("acme %+v", a)
	}
}

func TestStatusFileWritesWholeWorldReadableFiles(t *testing.T) {
	path := filepath.Join(t.TempDir(), StatusFileName)
	f := NewStatusFile(path)
	st := BuildStatus(Snapshot{Jobs: []queue.Job{job("01", queue.Pending, "main", "build", -1, -1)}}, t0)
	if err := f.Write(st); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o644 {
		t.Fatalf("mode %v, want 0644", fi.Mode().Perm())
	}
	var got Status
	data, _ := os.ReadFile(path)
	if err := json.Unmarshal(data, &got); err != nil || got.State != StateQueued || got.Job.ID != "01" || got.Schema != StatusSchema {
		t.Fatalf("read back %+v, %v\n%s", got, err, data)
	}
	// The same status at a later time is not written again.
	mtime := fi.ModTime()
	if err := os.Chtimes(path, t0, t0); err != nil {
		t.Fatal(err)
	}
	st.UpdatedAt = st.UpdatedAt.Add(time.Minute)
	if err := f.Write(st); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path); !fi.ModTime().Equal(t0) {
		t.Fatalf("an unchanged status was written again (mtime %v, before %v)", fi.ModTime(), mtime)
	}
	st.State = StateBuilding
	if err := f.Write(st); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path); fi.ModTime().Equal(t0) {
		t.Fatal("a changed status was not written")
	}
}
