package pipeline

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tractstack/concierge/builder"
	"github.com/tractstack/concierge/deploy"
	"github.com/tractstack/concierge/queue"
)

// fakeSession records steps and warnings. With interrupt set, the step
// of that name is not run: cancel is called (the runner's shutdown: the
// job's context ends) and the step fails with the context's error.
type fakeSession struct {
	mu        sync.Mutex
	steps     []string
	failed    []string
	warnings  []string
	notes     []string
	log       zerolog.Logger
	interrupt string
	cancel    context.CancelFunc
	errs      map[string]string // step → its error
	stops     map[string]queue.Stop
}

func (s *fakeSession) Step(ctx context.Context, name string, fn func(context.Context, io.Writer) error) error {
	s.mu.Lock()
	s.steps = append(s.steps, name)
	s.mu.Unlock()
	if s.interrupt != "" && name == s.interrupt {
		s.cancel()
		s.mu.Lock()
		s.failed = append(s.failed, name)
		s.mu.Unlock()
		return ctx.Err()
	}
	var out bytes.Buffer
	err := fn(ctx, &out)
	if err != nil {
		s.mu.Lock()
		s.failed = append(s.failed, name)
		if s.errs == nil {
			s.errs = map[string]string{}
		}
		s.errs[name] = err.Error()
		s.mu.Unlock()
	}
	return err
}

// stepErr is the error a step failed with, "" if it did not fail.
func (s *fakeSession) stepErr(name string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.errs[name]
}

func (s *fakeSession) Warn(msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.warnings = append(s.warnings, msg)
}

func (s *fakeSession) Note(msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.notes = append(s.notes, msg)
}

func (s *fakeSession) Log() *zerolog.Logger { return &s.log }

func (s *fakeSession) RecordStop(step string, stop queue.Stop) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stops == nil {
		s.stops = map[string]queue.Stop{}
	}
	s.stops[step] = stop
}

// stepList is the steps in the order they started, each run of
// concurrent steps in plan order (canon).
func (s *fakeSession) stepList() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return canon(s.steps)
}

// fakeBuilder writes "bin <version>" and a dist whose entry says
// "dist <version>"; its function fields override a method.
type fakeBuilder struct {
	version       string
	backendFails  bool
	frontendFails bool
	pullFrontend  builder.PullResult
	buildBackend  func(ctx context.Context) error
	buildFrontend func(ctx context.Context) error
	whitelist     func() error
	whitelisted   bool
}

func (f *fakeBuilder) PullBackend(ctx context.Context, dir string, out io.Writer) (builder.PullResult, error) {
	return builder.PullResult{Dir: dir, Old: "commit-old", New: "commit-" + f.version}, nil
}

func (f *fakeBuilder) PullFrontend(ctx context.Context, dir string, out io.Writer) (builder.PullResult, error) {
	r := f.pullFrontend
	r.Dir = dir
	return r, nil
}

func (f *fakeBuilder) BuildBackend(ctx context.Context, srcDir, outPath string, out io.Writer) error {
	if f.buildBackend != nil {
		if err := f.buildBackend(ctx); err != nil {
			return err
		}
	}
	if f.backendFails {
		return errors.New("go build: exit status 1")
	}
	return os.WriteFile(outPath, []byte("bin "+f.version), 0o755)
}

func (f *fakeBuilder) BuildFrontend(ctx context.Context, srcDir string, out io.Writer) error {
	if f.buildFrontend != nil {
		if err := f.buildFrontend(ctx); err != nil {
			return err
		}
	}
	dist := filepath.Join(srcDir, "dist", "server")
	if err := os.MkdirAll(dist, 0o755); err != nil {
		return err
	}
	if f.frontendFails {
		return errors.New("pnpm build: exit status 1")
	}
	return os.WriteFile(filepath.Join(dist, "entry.mjs"), []byte("dist "+f.version), 0o644)
}

func (f *fakeBuilder) Whitelist(ctx context.Context, script, distDir, jsonOut, templatesDir string, out io.Writer) error {
	f.whitelisted = true
	if f.whitelist != nil {
		return f.whitelist()
	}
	return nil
}

// host is a main install in a temp dir with release v1 live, and two
// loopback servers standing in for the services: the backend is healthy
// unless the live binary says "bad", the frontend unless the live dist
// does.
type host struct {
	p   deploy.Paths
	d   *deploy.Deployer
	ran []string
	mu  sync.Mutex
}

func newHost(t *testing.T, withPorts bool) *host {
	t.Helper()
	p, err := deploy.PathsFor(t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	h := &host{p: p}
	write(t, p.Binary, "bin v1")
	write(t, p.Entry, "dist v1")
	healthy := func(file string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			b, _ := os.ReadFile(file)
			if strings.Contains(string(b), "bad") {
				w.WriteHeader(http.StatusServiceUnavailable)
			}
			if tenant := r.Header.Get("X-Tenant-ID"); tenant != "" { // the backend
				fmt.Fprintf(w, `{"healthy":%t,"tenantId":%q,"version":%q}`, !strings.Contains(string(b), "bad"), tenant, b)
				return
			}
			fmt.Fprintln(w, string(b))
		}
	}
	be := httptest.NewServer(healthy(p.Binary))
	t.Cleanup(be.Close)
	fe := httptest.NewServer(healthy(p.Entry))
	t.Cleanup(fe.Close)
	if withPorts {
		write(t, p.PortsFile, fmt.Sprintf("# ports\nmain=%d,%d\n", port(t, be), port(t, fe)))
	}
	h.d = deploy.New(deploy.Config{
		HealthTimeout:  300 * time.Millisecond,
		HealthInterval: 10 * time.Millisecond,
		Run: func(ctx context.Context, dir, name string, args, env []string, timeout time.Duration, out io.Writer) error {
			if slices.Contains(args, "show") { // MainPID: this process serves the backend; not an action
				fmt.Fprintln(out, os.Getpid())
				return nil
			}
			h.mu.Lock()
			defer h.mu.Unlock()
			h.ran = append(h.ran, name+" "+strings.Join(args, " "))
			return nil
		},
	})
	return h
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o755); err != nil {
		t.Fatal(err)
	}
}

func port(t *testing.T, s *httptest.Server) int {
	t.Helper()
	return s.Listener.Addr().(*net.TCPAddr).Port
}

func (h *host) live(t *testing.T) (string, string) {
	t.Helper()
	b, _ := os.ReadFile(h.p.Binary)
	d, _ := os.ReadFile(h.p.Entry)
	return string(b), string(d)
}

func (h *host) run(t *testing.T, b Builder, command string) (*fakeSession, error) {
	t.Helper()
	pl := New(Config{Home: h.p.Home, Builder: b, Deployer: h.d, Log: zerolog.Nop(),
		Resources: Resources{Concurrency: ConcurrencyOn}}) // concurrency_test.go tests auto
	s := &fakeSession{log: zerolog.Nop()}
	err := pl.Execute(context.Background(), queue.Job{ID: "01TEST", Target: queue.MainTarget, Command: command, Tenants: []string{"default", "acme"}}, s)
	return s, err
}

func TestBuildSucceeds(t *testing.T) {
	h := newHost(t, true)
	s, err := h.run(t, &fakeBuilder{version: "v2"}, queue.CommandBuild)
	if err != nil {
		t.Fatal(err)
	}
	if b, d := h.live(t); b != "bin v2" || d != "dist v2" {
		t.Fatalf("live %q %q", b, d)
	}
	want := PlanSteps(queue.Job{Command: queue.CommandBuild}, Facts{Ports: true})
	got := s.stepList()
	// The two builds run concurrently: compare as sets at their places.
	if len(got) != len(want) || strings.Join(sortBuilds(got), ",") != strings.Join(want, ",") {
		t.Fatalf("steps %v, want %v", got, want)
	}
	if len(s.warnings) != 0 {
		t.Fatalf("warnings %v", s.warnings)
	}
	if ran := h.ranList(); strings.Join(ran, "|") != "pm2 jlist|pm2 reload astro-main|systemctl restart tractstack-go.service" {
		t.Fatalf("ran %q", ran)
	}
	rs, err := deploy.ListReleases(h.p)
	if err != nil || len(rs) != 1 || rs[0].Backend != "commit-old" {
		t.Fatalf("releases %+v, %v", rs, err)
	}
}

// concurrent are the groups of steps (and deployer calls) that run at the
// same time, each in the order PlanSteps lists them.
var concurrent = [][]string{
	{StepBuildBackend, StepBuildFrontend},
	{StepRestartBackend, StepHealthBackend, StepReloadFrontend, StepHealthFrontend},
	{StepRestartBackendPrevious, StepHealthBackendPrevious, StepReloadFrontendPrevious, StepHealthFrontendPrevious},
	{"check-backend", "check-frontend"},
}

// canon puts each run of steps of one concurrent group into the group's
// order, so that a recorded list compares with the plan whatever the
// interleaving; the order of everything else is kept.
func canon(steps []string) []string {
	out := append([]string(nil), steps...)
	for _, g := range concurrent {
		rank := func(s string) int { return slices.Index(g, s) }
		for i := 0; i < len(out); {
			j := i
			for j < len(out) && rank(out[j]) >= 0 {
				j++
			}
			if j > i {
				sort.SliceStable(out[i:j], func(a, b int) bool { return rank(out[i+a]) < rank(out[i+b]) })
				i = j
			} else {
				i++
			}
		}
	}
	return out
}

// sortBuilds is canon, under its older name.
func sortBuilds(steps []string) []string { return canon(steps) }

// waitStopped holds a fake build until the pipeline stops it because the
// other build failed; then the build goes on (and fails as configured).
func waitStopped(ctx context.Context) error {
	<-ctx.Done()
	return nil
}

func TestFailedBuildChangesNothing(t *testing.T) {
	tests := []struct {
		name string
		b    *fakeBuilder
		want string
	}{
		{name: "backend", b: &fakeBuilder{version: "v2", backendFails: true}, want: "backend: go build"},
		{name: "frontend", b: &fakeBuilder{version: "v2", frontendFails: true}, want: "frontend: pnpm build"},
		// Both fail; which fails first decides the message, so each order
		// is made certain: the later build waits for the first one's
		// failure to stop it (ctx done), never for a time.
		{name: "both", b: &fakeBuilder{version: "v2", backendFails: true, frontendFails: true,
			buildFrontend: waitStopped}, want: "backend: go build"},
		{name: "both, frontend first", b: &fakeBuilder{version: "v2", backendFails: true, frontendFails: true,
			buildBackend: waitStopped}, want: "frontend: pnpm build"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHost(t, true)
			s, err := h.run(t, tc.b, queue.CommandBuild)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "nothing live was changed") {
				t.Fatalf("err = %v", err)
			}
			if b, d := h.live(t); b != "bin v1" || d != "dist v1" {
				t.Fatalf("live %q %q", b, d)
			}
			if len(h.ran) != 0 {
				t.Fatalf("services touched: %v", h.ran)
			}
			for _, st := range s.stepList() {
				if st == StepSwap || st == StepRestartBackend {
					t.Fatalf("step %s ran after a failed build", st)
				}
			}
			if _, err := os.Stat(h.p.Staging); !os.IsNotExist(err) {
				t.Fatalf("staging left: %v", err)
			}
			// A later restart still runs v1.
			if _, err := h.run(t, tc.b, queue.CommandRestart); err != nil {
				t.Fatal(err)
			}
			if b, d := h.live(t); b != "bin v1" || d != "dist v1" {
				t.Fatalf("after restart live %q %q", b, d)
			}
		})
	}
}

func TestUnhealthyBackendRollsBack(t *testing.T) {
	h := newHost(t, true)
	s, err := h.run(t, &fakeBuilder{version: "bad"}, queue.CommandBuild)
	if err == nil || !strings.Contains(err.Error(), "backend unhealthy") || !strings.Contains(err.Error(), "rolled back to commit-old") {
		t.Fatalf("err = %v", err)
	}
	if b, d := h.live(t); b != "bin v1" || d != "dist v1" {
		t.Fatalf("live %q %q", b, d)
	}
	steps := strings.Join(canon(s.stepList()), ",")
	if !strings.HasSuffix(steps, "swap,restart-backend,health-backend,reload-frontend,health-frontend,rollback,restart-backend-previous,health-backend-previous,reload-frontend-previous,health-frontend-previous") {
		t.Fatalf("steps %s", steps)
	}
	// The frontend is reloaded with the new release (at the same time as
	// the backend restart) and again with the previous one.
	if n := strings.Count(strings.Join(h.ranList(), "|"), "pm2 reload"); n != 2 {
		t.Fatalf("calls %v; want two pm2 reloads", h.ranList())
	}
}

// ranList is what the services were asked, sorted (the backend restart
// and the frontend reload run at the same time).
func (h *host) ranList() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := append([]string(nil), h.ran...)
	sort.Strings(out)
	return out
}

func TestUnhealthyFrontendRollsBack(t *testing.T) {
	h := newHost(t, true)
	b := &fakeBuilder{version: "v2"}
	// The backend is healthy with v2; only the dist is bad.
	fb := &badDist{fakeBuilder: b}
	_, err := h.run(t, fb, queue.CommandBuild)
	if err == nil || !strings.Contains(err.Error(), "frontend unhealthy") || !strings.Contains(err.Error(), "rolled back to commit-old") {
		t.Fatalf("err = %v", err)
	}
	if b, d := h.live(t); b != "bin v1" || d != "dist v1" {
		t.Fatalf("live %q %q", b, d)
	}
	if n := strings.Count(strings.Join(h.ranList(), "|"), "pm2 reload"); n != 2 {
		t.Fatalf("pm2 reloads: %v", h.ranList())
	}
}

// badDist builds a dist that is unhealthy.
type badDist struct{ *fakeBuilder }

func (b *badDist) BuildFrontend(ctx context.Context, srcDir string, out io.Writer) error {
	dist := filepath.Join(srcDir, "dist", "server")
	if err := os.MkdirAll(dist, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dist, "entry.mjs"), []byte("dist bad"), 0o644)
}

func TestBuildsRunConcurrently(t *testing.T) {
	h := newHost(t, true)
	backendStarted, frontendStarted := make(chan struct{}), make(chan struct{})
	// Each build waits for the other to have started: with sequential
	// builds the first would wait for ever (the guard below fails it).
	wait := func(ctx context.Context, mine, other chan struct{}) error {
		close(mine)
		select {
		case <-other:
			return nil
		case <-time.After(30 * time.Second):
			return errors.New("the other build never started while this one ran")
		}
	}
	b := &fakeBuilder{version: "v2",
		buildBackend:  func(ctx context.Context) error { return wait(ctx, backendStarted, frontendStarted) },
		buildFrontend: func(ctx context.Context) error { return wait(ctx, frontendStarted, backendStarted) },
	}
	if _, err := h.run(t, b, queue.CommandBuild); err != nil {
		t.Fatal(err)
	}
}

func TestFrontendLocalChangesWarn(t *testing.T) {
	h := newHost(t, true)
	b := &fakeBuilder{version: "v2", pullFrontend: builder.PullResult{Skipped: true, Note: "local changes to tracked files (src/x) in /x"}}
	s, err := h.run(t, b, queue.CommandBuild)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.warnings) != 1 || !strings.Contains(s.warnings[0], "local changes") {
		t.Fatalf("warnings %v", s.warnings)
	}
}

func TestPullWarning(t *testing.T) {
	tests := []struct {
		name string
		res  builder.PullResult
		warn bool
	}{
		{name: "pulled", res: builder.PullResult{Old: "a", New: "b"}},
		{name: "not a clone", res: builder.PullResult{Skipped: true, Note: "not a git repository; the frontend is updated through its packages"}},
		{name: "local changes", res: builder.PullResult{Skipped: true, Note: "local changes to tracked files (a) in /x"}, warn: true},
		{name: "other skip", res: builder.PullResult{Skipped: true, Note: "untracked files would be overwritten"}, warn: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, got := PullWarning(tc.res); got != tc.warn {
				t.Fatalf("PullWarning = %t, want %t", got, tc.warn)
			}
		})
	}
}

func TestWhitelist(t *testing.T) {
	tests := []struct {
		name      string
		script    bool
		fails     bool
		wantStep  bool
		wantWarns int
	}{
		{name: "no script", script: false},
		{name: "script ok", script: true, wantStep: true},
		{name: "script fails", script: true, fails: true, wantStep: true, wantWarns: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHost(t, true)
			if tc.script {
				write(t, h.p.WhitelistScript, "#!/usr/bin/env python3\n")
			}
			b := &fakeBuilder{version: "v2"}
			if tc.fails {
				b.whitelist = func() error { return errors.New("python3: exit status 1") }
			}
			s, err := h.run(t, b, queue.CommandBuild)
			if err != nil {
				t.Fatal(err)
			}
			if b.whitelisted != tc.wantStep || len(s.warnings) != tc.wantWarns {
				t.Fatalf("whitelisted %t, warnings %v", b.whitelisted, s.warnings)
			}
			if bin, d := h.live(t); bin != "bin v2" || d != "dist v2" {
				t.Fatalf("live %q %q", bin, d)
			}
		})
	}
}

func TestNoPortsSkipsHealthWithWarning(t *testing.T) {
	h := newHost(t, false)
	s, err := h.run(t, &fakeBuilder{version: "bad"}, queue.CommandBuild)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.warnings) != 1 || !strings.Contains(s.warnings[0], "health checks skipped") {
		t.Fatalf("warnings %v", s.warnings)
	}
	want := PlanSteps(queue.Job{Command: queue.CommandBuild}, Facts{})
	if got := sortBuilds(s.stepList()); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("steps %v, want %v", got, want)
	}
}

func TestRollbackCommand(t *testing.T) {
	h := newHost(t, true)
	if _, err := h.run(t, &fakeBuilder{version: "v2"}, queue.CommandRollback); err == nil ||
		!strings.Contains(err.Error(), "no previous release to roll back to in "+h.p.Releases) {
		t.Fatalf("rollback without history: %v", err)
	}
	if _, err := h.run(t, &fakeBuilder{version: "v2"}, queue.CommandBuild); err != nil {
		t.Fatal(err)
	}
	s, err := h.run(t, &fakeBuilder{}, queue.CommandRollback)
	if err != nil {
		t.Fatal(err)
	}
	if b, d := h.live(t); b != "bin v1" || d != "dist v1" {
		t.Fatalf("live %q %q", b, d)
	}
	want := PlanSteps(queue.Job{Command: queue.CommandRollback}, Facts{Ports: true})
	if strings.Join(s.stepList(), ",") != strings.Join(want, ",") {
		t.Fatalf("steps %v, want %v", s.stepList(), want)
	}
}

func TestRestartCommand(t *testing.T) {
	h := newHost(t, true)
	s, err := h.run(t, &fakeBuilder{}, queue.CommandRestart)
	if err != nil {
		t.Fatal(err)
	}
	want := PlanSteps(queue.Job{Command: queue.CommandRestart}, Facts{Ports: true})
	if strings.Join(s.stepList(), ",") != strings.Join(want, ",") {
		t.Fatalf("steps %v, want %v", s.stepList(), want)
	}
	if ran := h.ranList(); len(ran) != 3 {
		t.Fatalf("ran %v", ran)
	}
}

func TestRecoverAtJobStart(t *testing.T) {
	h := newHost(t, true)
	// A build killed after Prepare: a half release is staged.
	b, err := h.d.Prepare(context.Background(), h.p, deploy.Release{Backend: "commit-old"})
	if err != nil {
		t.Fatal(err)
	}
	write(t, b.Entry, "dist half")
	if _, err := h.run(t, &fakeBuilder{}, queue.CommandRestart); err != nil {
		t.Fatal(err)
	}
	// restart does not recover (it touches no files), and the half
	// release was never live ...
	if _, d := h.live(t); d != "dist v1" {
		t.Fatalf("restart changed files: %q", d)
	}
	if _, err := os.Stat(b.Entry); err != nil {
		t.Fatalf("restart touched the staged release: %v", err)
	}
	// ... a rollback job does, before looking for a release.
	s, err := h.run(t, &fakeBuilder{}, queue.CommandRollback)
	if err == nil || !strings.Contains(err.Error(), "no previous release") {
		t.Fatalf("err = %v", err)
	}
	if b, d := h.live(t); b != "bin v1" || d != "dist v1" {
		t.Fatalf("live %q %q", b, d)
	}
	if len(s.warnings) != 1 || !strings.Contains(s.warnings[0], "undo") {
		t.Fatalf("warnings %v", s.warnings)
	}
}

func TestPlan(t *testing.T) {
	tests := []struct {
		name    string
		job     queue.Job
		want    string
		wantErr bool
	}{
		{name: "build main", job: queue.Job{Target: "main", Command: "build"},
			want: "pull-backend,pull-frontend,probe-before,build-backend,build-frontend,whitelist,swap,restart-backend,health-backend,reload-frontend,health-frontend"},
		{name: "restart site", job: queue.Job{Target: "dedicated:acme", Command: "restart"},
			want: "probe-before,restart-backend,health-backend,reload-frontend,health-frontend"},
		{name: "rollback", job: queue.Job{Target: "main", Command: "rollback"},
			want: "probe-before,rollback,restart-backend,health-backend,reload-frontend,health-frontend"},
		{name: "bad site", job: queue.Job{Target: "dedicated:../x", Command: "build"}, wantErr: true},
		{name: "bad target", job: queue.Job{Target: "prod", Command: "build"}, wantErr: true},
		{name: "bad command", job: queue.Job{Target: "main", Command: "deploy"}, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Plan("/home/t8k", tc.job)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("Plan = %v, want error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(got, ",") != tc.want {
				t.Fatalf("Plan = %v, want %s", got, tc.want)
			}
		})
	}
}

func TestPlanSteps(t *testing.T) {
	tests := []struct {
		name string
		cmd  string
		f    Facts
		want string
	}{
		{name: "build bare", cmd: "build", want: "pull-backend,pull-frontend,build-backend,build-frontend,swap,restart-backend,reload-frontend"},
		{name: "build whitelist", cmd: "build", f: Facts{Whitelist: true}, want: "pull-backend,pull-frontend,build-backend,build-frontend,whitelist,swap,restart-backend,reload-frontend"},
		{name: "restart no ports", cmd: "restart", want: "restart-backend,reload-frontend"},
		{name: "unknown", cmd: "x", want: ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := strings.Join(PlanSteps(queue.Job{Command: tc.cmd}, tc.f), ","); got != tc.want {
				t.Fatalf("PlanSteps = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestAFailedBuildStopsTheOther(t *testing.T) {
	h := newHost(t, true)
	b := &fakeBuilder{version: "v2", backendFails: true,
		// The frontend build would go on until stopped.
		buildFrontend: func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }}
	s, err := h.run(t, b, queue.CommandBuild)
	if err == nil || !strings.Contains(err.Error(), "backend: go build: exit status 1") || strings.Contains(err.Error(), "frontend:") {
		t.Fatalf("err = %v; want the backend's failure alone", err)
	}
	if e := s.stepErr(StepBuildFrontend); !strings.Contains(e, "stopped: the build-backend step failed") {
		t.Fatalf("frontend step error = %q; want it stopped because the backend failed", e)
	}
	if b, d := h.live(t); b != "bin v1" || d != "dist v1" {
		t.Fatalf("live %q %q", b, d)
	}
}

func TestAPanickingBuildFailsTheJobNotConcierge(t *testing.T) {
	h := newHost(t, true)
	b := &fakeBuilder{version: "v2", buildBackend: func(ctx context.Context) error { panic("nil map") }}
	_, err := h.run(t, b, queue.CommandBuild)
	if err == nil || !strings.Contains(err.Error(), "internal error (panic) in build-backend: nil map") {
		t.Fatalf("err = %v", err)
	}
	if b, d := h.live(t); b != "bin v1" || d != "dist v1" {
		t.Fatalf("live %q %q", b, d)
	}
}

// TestFrontendPullMessageSaysWhatHappened: the pull message said
// "(skipped false)" after every pull; now it names the commits, or why
// the pull was skipped.
func TestFrontendPullMessageSaysWhatHappened(t *testing.T) {
	for _, tc := range []struct {
		name string
		res  builder.PullResult
		want string
	}{
		{"pulled", builder.PullResult{Old: "aaa", New: "bbb"}, "frontend aaa -> bbb"},
		{"skipped", builder.PullResult{Old: "aaa", New: "aaa", Skipped: true, Note: "not a git repository"},
			"frontend pull skipped (not a git repository); stays at aaa"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHost(t, true)
			var logs bytes.Buffer
			pl := New(Config{Home: h.p.Home, Builder: &fakeBuilder{version: "v2", pullFrontend: tc.res}, Deployer: h.d, Log: zerolog.Nop()})
			s := &fakeSession{log: zerolog.New(&logs)}
			if err := pl.Execute(context.Background(), queue.Job{ID: "01TEST", Target: queue.MainTarget, Command: queue.CommandBuild, Tenants: []string{"default"}}, s); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(logs.String(), `"message":"`+tc.want+`"`) || strings.Contains(logs.String(), "(skipped ") {
				t.Fatalf("log %s; want the message %q", logs.String(), tc.want)
			}
		})
	}
}
