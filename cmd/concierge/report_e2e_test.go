package main

// The status file and the metrics through the real binary and the real
// pipeline (see pipeline_e2e_test.go for the host): a reader polls
// status.json while jobs run, as a site would, and the metrics file is
// parsed with the Prometheus text parser after succeeded, failed and
// rolled-back jobs.

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tractstack/concierge/deploy"
	"github.com/tractstack/concierge/internal/promtest"
	"github.com/tractstack/concierge/internal/sandbox"
	"github.com/tractstack/concierge/queue"
	"github.com/tractstack/concierge/report"
)

// statusReader reads status.json as fast as it can until stopped, and
// keeps every state it saw (in order, repeats folded) and every read that
// was not a whole, valid status.
type statusReader struct {
	path string
	stop chan struct{}
	done chan struct{}

	mu     sync.Mutex
	states []string
	reads  int
	bad    []string
}

func startStatusReader(path string) *statusReader {
	r := &statusReader{path: path, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(r.done)
		for {
			select {
			case <-r.stop:
				return
			default:
			}
			r.read()
			time.Sleep(time.Millisecond) // the machine is shared; thousands of reads per job remain

		}
	}()
	return r
}

func (r *statusReader) read() {
	data, err := os.ReadFile(r.path)
	if os.IsNotExist(err) {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reads++
	var st report.Status
	if err == nil {
		err = json.Unmarshal(data, &st)
	}
	if err == nil && st.State == "" {
		err = os.ErrInvalid
	}
	if err != nil {
		r.bad = append(r.bad, err.Error()+": "+string(data))
		return
	}
	if n := len(r.states); n == 0 || r.states[n-1] != st.State {
		r.states = append(r.states, st.State)
	}
}

// finish stops the reader and returns what it saw.
func (r *statusReader) finish() (states []string, reads int, bad []string) {
	close(r.stop)
	<-r.done
	r.read() // the file as the job left it
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.states, r.reads, r.bad
}

// readDuring runs one `concierge run` with a status reader polling and
// returns the job and the states the reader saw.
func (h *pe2eHost) readDuring(wantCode int, extra ...string) (queue.Job, []string) {
	h.t.Helper()
	r := startStatusReader(filepath.Join(h.sb.Dir, "concierge", report.StatusFileName))
	logs, code := h.run(extra...)
	states, reads, bad := r.finish()
	j := h.lastJob()
	if code != wantCode {
		h.t.Fatalf("run exit %d, want %d\njob: %s\nlogs:\n%s", code, wantCode, pe2eJSON(j), logs)
	}
	if len(bad) > 0 {
		h.t.Fatalf("%d of %d reads of status.json were not a whole status, the first:\n%s", len(bad), reads, bad[0])
	}
	h.t.Logf("%d reads of status.json saw %v", reads, states)
	return j, states
}

// sawInOrder reports whether want appear in states in that order.
func sawInOrder(states []string, want ...string) bool {
	i := 0
	for _, s := range states {
		if i < len(want) && s == want[i] {
			i++
		}
	}
	return i == len(want)
}

func TestReportsE2E(t *testing.T) {
	prom := filepath.Join(t.TempDir(), "textfile", "concierge.prom")
	if err := os.MkdirAll(filepath.Dir(prom), 0o755); err != nil {
		t.Fatal(err)
	}
	hook := startWebhook(t)
	h := &pe2eHost{startLiveHost(t, liveOptions{installs: []string{""}, frontendIsClone: true,
		env: []string{"CONCIERGE_HEALTH_TIMEOUT=10s", "CONCIERGE_STEP_TIMEOUT=2m", "CONCIERGE_LOG_FORMAT=json", "CONCIERGE_METRICS_FILE=" + prom,
			"CONCIERGE_NOTIFY=" + hook.url()}})}
	p := h.paths("")
	data := filepath.Join(h.sb.Dir, "concierge")

	t.Run("a deploy goes building, deploying, idle", func(t *testing.T) {
		h.drop(buildMain)
		j, states := h.readDuring(0)
		if j.State != queue.Succeeded {
			t.Fatalf("job %s", pe2eJSON(j))
		}
		if !sawInOrder(states, report.StateBuilding, report.StateDeploying, report.StateIdle) || slices.Contains(states, report.StateFailed) {
			t.Fatalf("status.json went through %v; want building, deploying, idle", states)
		}
		st, _ := readStatusFile(t, data)
		cur, ok, err := deploy.Current(p)
		if err != nil || !ok {
			t.Fatalf("current release: %v %v", ok, err)
		}
		main := st.Targets["main"]
		if got := hook.messages(); len(got) != 0 {
			t.Fatalf("a success was notified (CONCIERGE_NOTIFY_ON is failure): %v", got)
		}
		if st.Job == nil || st.Job.ID != j.ID || main.LastResult == nil || main.LastResult.Result != "succeeded" ||
			main.Live == nil || main.Live.BackendCommit != cur.Backend || main.Live.FrontendCommit != cur.Frontend || !main.Live.Verified {
			t.Fatalf("status.json after the deploy:\n%s\ncurrent release %+v", pe2eJSON(st), cur)
		}
	})
	t.Run("a build that fails leaves the state failed", func(t *testing.T) {
		h.push("", changeOf(sandbox.BackendBroken()), nil)
		h.drop(buildMain)
		j, states := h.readDuring(1)
		if !sawInOrder(states, report.StateBuilding, report.StateFailed) || slices.Contains(states, report.StateDeploying) {
			t.Fatalf("status.json went through %v; want building, failed and never deploying", states)
		}
		st, _ := readStatusFile(t, data)
		if st.Job == nil || st.Job.ID != j.ID || st.Job.Error != j.Error || !strings.Contains(st.Job.Error, "build failed") {
			t.Fatalf("status.json after the failed build:\n%s", pe2eJSON(st))
		}
		hook.wantOne(t, j, "build of main failed")
	})
	t.Run("a release that fails its checks is rolled back", func(t *testing.T) {
		before, _, _ := deploy.Current(p)
		h.push("", changeOf(sandbox.BackendVersion("v3", false)), nil)
		h.drop(buildMain)
		j, states := h.readDuring(1, "CONCIERGE_HEALTH_TIMEOUT=3s")
		if !sawInOrder(states, report.StateBuilding, report.StateDeploying, report.StateRolledBack) {
			t.Fatalf("status.json went through %v; want building, deploying, rolled-back", states)
		}
		st, _ := readStatusFile(t, data)
		main := st.Targets["main"]
		if st.Job == nil || st.Job.ID != j.ID || st.Job.Result != "rolled-back" || !strings.Contains(st.Job.Error, "rolled back to") ||
			main.Live == nil || main.Live.BackendCommit != before.Backend {
			t.Fatalf("status.json after the rollback:\n%s\nrelease before %+v", pe2eJSON(st), before)
		}
		hook.wantOne(t, j, "build of main failed and was rolled back")
	})
	t.Run("the metrics file matches the job records", func(t *testing.T) {
		data, err := os.ReadFile(prom)
		if err != nil {
			t.Fatal(err)
		}
		mfs := promtest.Parse(t, data)
		jobs := h.jobs()
		if len(jobs) != 3 {
			t.Fatalf("want 3 jobs, have %s", pe2eJSON(jobs))
		}
		last := jobs[2]
		cur, _, _ := deploy.Current(p)
		want := []promWant{
			{"concierge_jobs", []string{"target=main", "command=build", "result=succeeded"}, 1},
			{"concierge_jobs", []string{"target=main", "command=build", "result=failed"}, 1},
			{"concierge_jobs", []string{"target=main", "command=build", "result=rolled-back"}, 1},
			{"concierge_rollbacks", []string{"target=main"}, 1},
			{"concierge_rejected_triggers", nil, 0},
			{"concierge_jobs_pending", nil, 0},
			{"concierge_last_job_succeeded", []string{"target=main"}, 0},
			{"concierge_last_job_duration_seconds", []string{"target=main"}, last.FinishedAt.Sub(*last.StartedAt).Seconds()},
			{"concierge_last_job_finish_timestamp_seconds", []string{"target=main"}, float64(last.FinishedAt.UnixNano()) / 1e9},
			{"concierge_last_success_timestamp_seconds", []string{"target=main"}, float64(jobs[0].FinishedAt.UnixNano()) / 1e9},
			{"concierge_live_release_info", []string{"target=main", "release=" + cur.ID, "backend_commit=" + cur.Backend, "frontend_commit=" + cur.Frontend}, 1},
		}
		for _, s := range last.Steps {
			want = append(want, promWant{"concierge_last_job_step_duration_seconds", []string{"target=main", "step=" + s.Name}, float64(s.DurationMS) / 1000})
		}
		checkProm(t, mfs, data, want)
		if n := len(mfs["concierge_last_job_step_duration_seconds"].GetMetric()); n != len(last.Steps) {
			t.Fatalf("%d step durations, the last job has %d steps:\n%s", n, len(last.Steps), data)
		}
		if fi, err := os.Stat(prom); err != nil || fi.Mode().Perm() != 0o644 {
			t.Fatalf("metrics file mode: %v %v", fi, err)
		}
		if left := dirNames(t, filepath.Dir(prom)); len(left) != 1 {
			t.Fatalf("the textfile directory holds %v; want the metrics file alone", left)
		}
	})
}
