package pipeline

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"

	"github.com/tractstack/concierge/deploy"
	"github.com/tractstack/concierge/queue"
)

// recDeployer is the real deployer recording the calls that matter for
// verification, in order.
type recDeployer struct {
	*deploy.Deployer
	mu    sync.Mutex
	calls []string
}

func (r *recDeployer) record(call string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, call)
}

func (r *recDeployer) callList() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(canon(r.calls), ",")
}

func (r *recDeployer) Swap(ctx context.Context, p deploy.Paths, b deploy.Build, next deploy.Release) error {
	r.record("swap")
	return r.Deployer.Swap(ctx, p, b, next)
}

func (r *recDeployer) Rollback(ctx context.Context, p deploy.Paths, jobID string) (deploy.Release, error) {
	r.record("rollback:" + jobID)
	return r.Deployer.Rollback(ctx, p, jobID)
}

func (r *recDeployer) CheckBackend(ctx context.Context, p deploy.Paths, port int, tenants []string, before []deploy.Observation) (deploy.CheckResult, error) {
	r.record("check-backend")
	return r.Deployer.CheckBackend(ctx, p, port, tenants, before)
}

func (r *recDeployer) CheckFrontend(ctx context.Context, p deploy.Paths, port int, before []deploy.Observation) (deploy.CheckResult, error) {
	r.record("check-frontend")
	return r.Deployer.CheckFrontend(ctx, p, port, before)
}

func (r *recDeployer) MarkVerified(p deploy.Paths) error {
	r.record("mark-verified")
	return r.Deployer.MarkVerified(p)
}

// runJob runs job id with command on h through d, interrupted (the job's
// context cancelled) at step interrupt when it is not "".
func (h *host) runJob(t *testing.T, d Deployer, b Builder, command, id, interrupt string) (*fakeSession, error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pl := New(Config{Home: h.p.Home, Builder: b, Deployer: d, Log: zerolog.Nop(),
		Resources: Resources{Concurrency: ConcurrencyOn}}) // concurrency_test.go tests auto
	s := &fakeSession{log: zerolog.Nop(), interrupt: interrupt, cancel: cancel}
	err := pl.Execute(ctx, queue.Job{ID: id, Target: queue.MainTarget, Command: command, Tenants: []string{"default", "acme"}}, s)
	return s, err
}

func (h *host) kept(t *testing.T) string {
	t.Helper()
	rs, err := deploy.ListReleases(h.p)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range rs {
		out = append(out, r.Backend)
	}
	return strings.Join(out, ",")
}

func (h *host) current(t *testing.T) deploy.Release {
	t.Helper()
	cur, ok, err := deploy.Current(h.p)
	if err != nil || !ok {
		t.Fatalf("current = %+v, %t, %v", cur, ok, err)
	}
	return cur
}

func (h *host) wantLive(t *testing.T, version string) {
	t.Helper()
	if b, d := h.live(t); b != "bin "+version || d != "dist "+version {
		t.Fatalf("live %q %q, want %s", b, d, version)
	}
}

// A build job killed after its swap, before its checks, is re-run by the
// runner: it rebuilds the same commit and swaps it in again. When the
// check then fails, the rollback goes to the last verified release, not to
// the broken build that was live when the job was killed.
func TestRerunBuildAfterInterruptedSwapRollsBackToVerified(t *testing.T) {
	h := newHost(t, true)
	if _, err := h.runJob(t, h.d, &fakeBuilder{version: "v2"}, queue.CommandBuild, "01GOOD", ""); err != nil {
		t.Fatal(err)
	}
	h.wantLive(t, "v2")
	if cur := h.current(t); cur.Backend != "commit-v2" || cur.Unverified {
		t.Fatalf("current after a healthy build = %+v", cur)
	}

	broken := &fakeBuilder{version: "bad"}
	if _, err := h.runJob(t, h.d, broken, queue.CommandBuild, "01BROKEN", StepRestartBackend); !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted build = %v", err)
	}
	if cur := h.current(t); cur.Backend != "commit-bad" || !cur.Unverified {
		t.Fatalf("current after the interrupted build = %+v", cur)
	}
	if got := h.kept(t); got != "commit-old,commit-v2" {
		t.Fatalf("kept %q", got)
	}

	s, err := h.runJob(t, h.d, broken, queue.CommandBuild, "01BROKEN", "")
	if err == nil || !strings.Contains(err.Error(), "backend unhealthy") || !strings.Contains(err.Error(), "rolled back to commit-v2") ||
		strings.Contains(err.Error(), "not healthy either") {
		t.Fatalf("re-run err = %v", err)
	}
	h.wantLive(t, "v2")
	if got := h.kept(t); got != "commit-old" {
		t.Fatalf("kept %q after the rollback", got)
	}
	if cur := h.current(t); cur.Backend != "commit-v2" || cur.Unverified || cur.RolledBackBy != "01BROKEN" {
		t.Fatalf("current = %+v", cur)
	}
	steps := strings.Join(s.stepList(), ",")
	if !strings.HasSuffix(steps, "swap,restart-backend,health-backend,reload-frontend,health-frontend,rollback,restart-backend-previous,health-backend-previous,reload-frontend-previous,health-frontend-previous") {
		t.Fatalf("steps %s", steps)
	}
}

// A build job killed after its rollback step (restarting the previous
// release) and re-run: one release back from the broken build, again.
func TestRerunBuildAfterInterruptedRollback(t *testing.T) {
	h := newHost(t, true)
	if _, err := h.runJob(t, h.d, &fakeBuilder{version: "v2"}, queue.CommandBuild, "01GOOD", ""); err != nil {
		t.Fatal(err)
	}
	broken := &fakeBuilder{version: "bad"}
	if _, err := h.runJob(t, h.d, broken, queue.CommandBuild, "01BROKEN", StepRestartBackendPrevious); !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted build = %v", err)
	}
	h.wantLive(t, "v2")
	_, err := h.runJob(t, h.d, broken, queue.CommandBuild, "01BROKEN", "")
	if err == nil || !strings.Contains(err.Error(), "rolled back to commit-v2") || strings.Contains(err.Error(), "not healthy either") {
		t.Fatalf("re-run err = %v", err)
	}
	h.wantLive(t, "v2")
	if got := h.kept(t); got != "commit-old" {
		t.Fatalf("kept %q", got)
	}
}

// A rollback job killed after its rollback step and re-run stays on the
// release it rolled back to.
func TestRerunRollbackJobRollsBackOnce(t *testing.T) {
	h := newHost(t, true)
	for i, v := range []string{"v2", "v3"} {
		if _, err := h.runJob(t, h.d, &fakeBuilder{version: v}, queue.CommandBuild, "01BUILD"+string(rune('A'+i)), ""); err != nil {
			t.Fatal(err)
		}
	}
	if got := h.kept(t); got != "commit-old,commit-v2" {
		t.Fatalf("kept %q", got)
	}
	rd := &recDeployer{Deployer: h.d}
	if _, err := h.runJob(t, rd, &fakeBuilder{}, queue.CommandRollback, "01ROLLBACK", StepRestartBackend); !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted rollback = %v", err)
	}
	h.wantLive(t, "v2")

	// The re-run, recorded on its own (the interrupted attempt's frontend
	// check may or may not have started beside the cancelled restart).
	rd = &recDeployer{Deployer: h.d}
	s, err := h.runJob(t, rd, &fakeBuilder{}, queue.CommandRollback, "01ROLLBACK", "")
	if err != nil {
		t.Fatal(err)
	}
	h.wantLive(t, "v2")
	if got := h.kept(t); got != "commit-old" {
		t.Fatalf("kept %q", got)
	}
	if got := rd.callList(); got != "rollback:01ROLLBACK,check-backend,check-frontend,mark-verified" {
		t.Fatalf("calls %s", got)
	}
	want := PlanSteps(queue.Job{Command: queue.CommandRollback}, Facts{Ports: true})
	if strings.Join(s.stepList(), ",") != strings.Join(want, ",") {
		t.Fatalf("steps %v, want %v", s.stepList(), want)
	}
	// Another rollback job goes one further back.
	if _, err := h.runJob(t, h.d, &fakeBuilder{}, queue.CommandRollback, "01ROLLBACK2", ""); err != nil {
		t.Fatal(err)
	}
	h.wantLive(t, "v1")
}

func TestMarkVerifiedAfterChecks(t *testing.T) {
	tests := []struct {
		name      string
		ports     bool
		before    string // a build of this version interrupted after its swap ("" none)
		command   string
		version   string
		interrupt string
		wantErr   bool
		// calls are the recorded calls of the job, but for optional, a
		// call that may or may not be among them.
		calls    string
		optional string
		// live and unverified describe the live release afterwards.
		live       string
		unverified bool
	}{
		{name: "healthy build", ports: true, command: queue.CommandBuild, version: "v2",
			calls: "swap,check-backend,check-frontend,mark-verified", live: "commit-v2"},
		{name: "build without ports", ports: false, command: queue.CommandBuild, version: "v2",
			calls: "swap,mark-verified", live: "commit-v2"},
		{name: "unhealthy build", ports: true, command: queue.CommandBuild, version: "bad", wantErr: true,
			calls: "swap,check-backend,check-frontend,rollback:01JOB,check-backend,check-frontend", live: "commit-old"},
		// The frontend's check runs beside the backend's, so it may have
		// started before the interruption.
		{name: "build interrupted before its checks", ports: true, command: queue.CommandBuild, version: "v2", interrupt: StepHealthBackend, wantErr: true,
			calls: "swap", optional: "check-frontend", live: "commit-v2", unverified: true},
		{name: "restart verifies an unverified release", ports: true, before: "v2", command: queue.CommandRestart,
			calls: "check-backend,check-frontend,mark-verified", live: "commit-v2"},
		{name: "failed restart check leaves it unverified", ports: true, before: "bad", command: queue.CommandRestart, wantErr: true,
			calls: "check-backend,check-frontend", live: "commit-bad", unverified: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHost(t, tc.ports)
			if tc.before != "" {
				if _, err := h.runJob(t, h.d, &fakeBuilder{version: tc.before}, queue.CommandBuild, "01BEFORE", StepRestartBackend); !errors.Is(err, context.Canceled) {
					t.Fatalf("interrupted build = %v", err)
				}
			}
			rd := &recDeployer{Deployer: h.d}
			_, err := h.runJob(t, rd, &fakeBuilder{version: tc.version}, tc.command, "01JOB", tc.interrupt)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %t", err, tc.wantErr)
			}
			got := rd.callList()
			if tc.optional != "" {
				got = strings.Join(slices.DeleteFunc(strings.Split(got, ","), func(c string) bool { return c == tc.optional }), ",")
			}
			if got != tc.calls {
				t.Fatalf("calls %s, want %s", got, tc.calls)
			}
			cur, ok, err := deploy.Current(h.p)
			if err != nil || !ok || cur.Backend != tc.live || cur.Unverified != tc.unverified {
				t.Fatalf("current %+v, %t, %v; want %s unverified %t", cur, ok, err, tc.live, tc.unverified)
			}
		})
	}
}
