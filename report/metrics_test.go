package report

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/tractstack/concierge/internal/promtest"

	"github.com/tractstack/concierge/deploy"
	"github.com/tractstack/concierge/queue"
)

func TestMetrics(t *testing.T) {
	ok1 := job("01", queue.Succeeded, "main", "build", 0, 10)
	ok1.Steps = []queue.Step{{Name: "pull-backend", State: queue.Succeeded, StartedAt: at(0), FinishedAt: at(2), DurationMS: 2000}}
	failed := job("02", queue.Failed, "main", "build", 20, 30)
	rolled := job("03", queue.Failed, "main", "build", 40, 52,
		queue.Step{Name: "swap", State: queue.Succeeded, StartedAt: at(41), FinishedAt: at(42), DurationMS: 1000},
		queue.Step{Name: "health-backend", State: queue.Failed, StartedAt: at(42), FinishedAt: at(45), DurationMS: 3000},
		queue.Step{Name: "rollback", State: queue.Succeeded, StartedAt: at(45), FinishedAt: at(45), DurationMS: 250})
	acme := job("04", queue.Succeeded, "dedicated:acme", "rollback", 60, 61,
		queue.Step{Name: "rollback", State: queue.Succeeded, StartedAt: at(60), FinishedAt: at(61), DurationMS: 900})
	rej := queue.Job{ID: "05", State: queue.Rejected, FinishedAt: at(70)}
	pend := job("06", queue.Pending, "main", "restart", -1, -1)
	live := map[string]deploy.Release{"main": {ID: "r1", Backend: "b1", Frontend: "f1"}}

	data, err := EncodeMetrics(Snapshot{Jobs: []queue.Job{ok1, failed, rolled, acme, rej, rej, pend}, Live: live})
	if err != nil {
		t.Fatal(err)
	}
	mfs := promtest.Parse(t, data)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"concierge_jobs", []string{"target=main", "command=build", "result=succeeded"}, 1},
		{"concierge_jobs", []string{"target=main", "command=build", "result=failed"}, 1},
		{"concierge_jobs", []string{"target=main", "command=build", "result=rolled-back"}, 1},
		{"concierge_jobs", []string{"target=dedicated:acme", "command=rollback", "result=rolled-back"}, 1},
		{"concierge_jobs_pending", nil, 1},
		{"concierge_rejected_triggers", nil, 2},
		{"concierge_rollbacks", []string{"target=main"}, 1},
		{"concierge_rollbacks", []string{"target=dedicated:acme"}, 1},
		{"concierge_last_job_duration_seconds", []string{"target=main"}, 12},
		{"concierge_last_job_finish_timestamp_seconds", []string{"target=main"}, unix(*at(52))},
		{"concierge_last_job_succeeded", []string{"target=main"}, 0},
		{"concierge_last_job_succeeded", []string{"target=dedicated:acme"}, 1},
		{"concierge_last_success_timestamp_seconds", []string{"target=main"}, unix(*at(10))},
		{"concierge_last_success_timestamp_seconds", []string{"target=dedicated:acme"}, unix(*at(61))},
		{"concierge_last_job_step_duration_seconds", []string{"target=main", "step=health-backend"}, 3},
		{"concierge_last_job_step_duration_seconds", []string{"target=main", "step=rollback"}, 0.25},
		{"concierge_live_release_info", []string{"target=main", "release=r1", "backend_commit=b1", "frontend_commit=f1"}, 1},
	} {
		got, ok := promtest.Value(mfs, c.name, c.labels...)
		if !ok || got != c.want {
			t.Errorf("%s%v = %v (present %t), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
	// Only the last job's steps are shown.
	if _, ok := promtest.Value(mfs, "concierge_last_job_step_duration_seconds", "target=main", "step=pull-backend"); ok {
		t.Errorf("a step of an earlier job is shown:\n%s", data)
	}
	if _, ok := promtest.Value(mfs, "concierge_job_running"); ok {
		t.Errorf("a job is shown running:\n%s", data)
	}
}

func TestMetricsOfAnEmptyHost(t *testing.T) {
	data, err := EncodeMetrics(Snapshot{})
	if err != nil {
		t.Fatal(err)
	}
	mfs := promtest.Parse(t, data)
	if v, ok := promtest.Value(mfs, "concierge_jobs_pending"); !ok || v != 0 {
		t.Fatalf("pending %v %t\n%s", v, ok, data)
	}
}

func TestWriteMetricsFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "concierge.prom")
	if err := WriteMetricsFile(path, Snapshot{Jobs: []queue.Job{job("01", queue.Succeeded, "main", "build", 0, 3)}}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o644 {
		t.Fatalf("mode %v %v", fi, err)
	}
	data, _ := os.ReadFile(path)
	if v, ok := promtest.Value(promtest.Parse(t, data), "concierge_jobs", "result=succeeded"); !ok || v != 1 {
		t.Fatalf("jobs %v %t\n%s", v, ok, data)
	}
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
		t.Fatalf("left behind: %v", entries)
	}
}
