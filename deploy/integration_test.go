package deploy

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/tractstack/concierge/internal/pm2test"
	"github.com/tractstack/concierge/internal/sandbox"
	"github.com/tractstack/concierge/internal/systemdtest"
	"github.com/tractstack/concierge/internal/testtool"
)

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// command runs a tool the test needs with the test's environment (GOCACHE
// is shared with the go command running the tests).
func command(t *testing.T, dir string, env []string, name string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %s in %s: %v\n%s", name, strings.Join(args, " "), dir, err, out)
	}
}

// answers waits until GET url answers a body containing want.
func answers(t *testing.T, url, want string) {
	t.Helper()
	c := loopbackClient(2 * time.Second)
	deadline := time.Now().Add(20 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		resp, err := c.Get(url)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			last = fmt.Sprintf("%d %s", resp.StatusCode, b)
			if resp.StatusCode < 300 && strings.Contains(string(b), want) {
				return
			}
		} else {
			last = err.Error()
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s never answered %q (last: %s)", url, want, last)
}

// realHost is a sandbox home whose backend runs under a private systemd
// user manager and whose frontend runs under a private pm2.
type realHost struct {
	h     *sandbox.Home
	p     Paths
	d     *Deployer
	sd    *systemdtest.Manager
	pm    *pm2test.PM2
	ports Ports
	b     Build // the build prepared by build, for swap
}

func startRealHost(t *testing.T) *realHost {
	t.Helper()
	testtool.Require(t, "git", "go", "node", "pnpm", "pm2")
	sd := systemdtest.Start(t)
	pm := pm2test.Start(t)
	ctx := context.Background()
	ports := Ports{Go: freePort(t), Astro: freePort(t)}
	h, err := sandbox.New(ctx, t.TempDir(), sandbox.Options{Ports: map[string][2]int{"main": {ports.Go, ports.Astro}}})
	if err != nil {
		t.Fatal(err)
	}
	p, err := PathsFor(h.Dir, "")
	if err != nil {
		t.Fatal(err)
	}
	if got, ok, err := ReadPorts(p); err != nil || !ok || got != ports {
		t.Fatalf("ReadPorts = %v, %t, %v; want %v", got, ok, err, ports)
	}
	command(t, p.BackendSrc, nil, "go", "build", "-o", p.Binary, "./cmd/tractstack-go")
	command(t, p.FrontendSrc, []string{"CI=true"}, "pnpm", "install")
	command(t, p.FrontendSrc, []string{"CI=true"}, "pnpm", "build")
	sd.InstallUnit(p.Unit, fmt.Sprintf("[Unit]\nDescription=tractstack-go (test)\n\n[Service]\nExecStart=%s --port %d\nRestart=no\n", p.Binary, ports.Go))
	if out, err := sd.Systemctl("start", p.Unit); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	t.Cleanup(func() { sd.Systemctl("stop", p.Unit) })
	pm.StartApp(p.Process, p.Entry, ports.Astro)
	d := New(Config{
		Systemctl:      []string{"systemctl", "--user"},
		Env:            append(sd.Env(), pm.Env()...),
		HealthTimeout:  10 * time.Second,
		HealthInterval: 100 * time.Millisecond,
	})
	r := &realHost{h: h, p: p, d: d, sd: sd, pm: pm, ports: ports}
	r.answer(t, "v1", "v1")
	return r
}

func (r *realHost) answer(t *testing.T, backend, frontend string) {
	t.Helper()
	if _, err := r.d.CheckBackend(context.Background(), r.p, r.ports.Go, []string{"default"}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := r.d.CheckFrontend(context.Background(), r.p, r.ports.Astro, nil); err != nil {
		t.Fatal(err)
	}
	answers(t, loopbackURL(r.ports.Go, "/api/v1/version"), backend)
	answers(t, loopbackURL(r.ports.Astro, "/"), "frontend "+frontend)
}

// build pulls a backend change and writes a frontend change, then builds
// both into the prepared staging, as the pipeline does.
func (r *realHost) build(t *testing.T, backend sandbox.Change, frontend string) string {
	t.Helper()
	ctx := context.Background()
	commit, err := r.h.PushBackend(ctx, "", backend)
	if err != nil {
		t.Fatal(err)
	}
	if err := sandbox.Git(ctx, r.p.BackendSrc, "pull", "-q", "--ff-only"); err != nil {
		t.Fatal(err)
	}
	if err := sandbox.WriteFrontendFiles(r.p.FrontendSrc, sandbox.FrontendVersion(frontend)); err != nil {
		t.Fatal(err)
	}
	b, err := r.d.Prepare(ctx, r.p, Release{Backend: "initial"})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.d.StageFrontend(ctx, r.p, b, testOut(t)); err != nil {
		t.Fatal(err)
	}
	command(t, r.p.BackendSrc, nil, "go", "build", "-o", b.Binary, "./cmd/tractstack-go")
	command(t, b.Frontend, []string{"CI=true"}, "pnpm", "install", "--no-frozen-lockfile")
	command(t, b.Frontend, []string{"CI=true"}, "pnpm", "build")
	r.b = b
	return commit
}

func (r *realHost) swap(t *testing.T, next string) {
	t.Helper()
	if err := r.d.Swap(context.Background(), r.p, r.b, Release{Backend: next}); err != nil {
		t.Fatal(err)
	}
}

func (r *realHost) restartBoth(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	if _, err := r.d.RestartBackend(ctx, r.p, r.ports.Go, testOut(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := r.d.ReloadFrontend(ctx, r.p, testOut(t)); err != nil {
		t.Fatal(err)
	}
}

func TestRealSwapRollbackRestart(t *testing.T) {
	r := startRealHost(t)
	ctx := context.Background()

	// A new release: swap, restart, reload, and the new versions answer;
	// pm2 reload starts a new process.
	before, ok := r.pm.Get(r.p.Process)
	if !ok {
		t.Fatal("frontend not under pm2")
	}
	c2 := r.build(t, sandbox.BackendVersion("v2", true), "v2")
	r.answer(t, "v1", "v1") // built, not live
	r.swap(t, c2)
	r.restartBoth(t)
	r.answer(t, "v2", "v2")
	if err := r.d.MarkVerified(r.p); err != nil {
		t.Fatal(err)
	}
	after, _ := r.pm.Get(r.p.Process)
	if after.PID == before.PID || after.RestartTime <= before.RestartTime || after.Status != "online" {
		t.Fatalf("pm2 reload: before %+v, after %+v", before, after)
	}

	// An unhealthy backend is rolled back: the old version answers, also
	// after another restart by hand.
	c3 := r.build(t, sandbox.BackendVersion("v3", false), "v3")
	r.swap(t, c3)
	if _, err := r.d.RestartBackend(ctx, r.p, r.ports.Go, testOut(t)); err != nil {
		t.Fatal(err)
	}
	quick := New(Config{Systemctl: []string{"systemctl", "--user"}, Env: r.d.cfg.Env, HealthTimeout: 2 * time.Second, HealthInterval: 100 * time.Millisecond})
	if _, err := quick.CheckBackend(ctx, r.p, r.ports.Go, []string{"default", "acme"}, nil); err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("unhealthy v3 passed its check: %v", err)
	}
	rel, err := r.d.Rollback(ctx, r.p, "job-build-v3")
	if err != nil {
		t.Fatal(err)
	}
	if rel.Backend != c2 {
		t.Fatalf("rolled back to %q, want %q", rel.Backend, c2)
	}
	if _, err := r.d.RestartBackend(ctx, r.p, r.ports.Go, testOut(t)); err != nil {
		t.Fatal(err)
	}
	// The frontend was not reloaded with v3: v2 is on disk and running.
	r.answer(t, "v2", "v2")
	if out, err := r.sd.Systemctl("restart", r.p.Unit); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	r.answer(t, "v2", "v2")

	// The rollback command brings the release before back, binary and dist.
	rel, err = r.d.Rollback(ctx, r.p, "job-rollback-1")
	if err != nil {
		t.Fatal(err)
	}
	if rel.Backend != "initial" {
		t.Fatalf("rolled back to %+v", rel)
	}
	r.restartBoth(t)
	r.answer(t, "v1", "v1")
	if _, err := r.d.Rollback(ctx, r.p, "job-rollback-2"); err == nil || !strings.Contains(err.Error(), "no previous release to roll back to") {
		t.Fatalf("rollback past history: %v", err)
	}

	// A plain restart starts a new backend process that answers.
	pid := r.sd.MainPID(r.p.Unit)
	if _, err := r.d.RestartBackend(ctx, r.p, r.ports.Go, testOut(t)); err != nil {
		t.Fatal(err)
	}
	if got := r.sd.MainPID(r.p.Unit); got == pid || got == 0 {
		t.Fatalf("restart: main pid %d -> %d", pid, got)
	}
	r.answer(t, "v1", "v1")
}

func TestRealRestartFailsForUnknownUnit(t *testing.T) {
	testtool.Require(t, "pm2")
	sd := systemdtest.Start(t)
	pm := pm2test.Start(t)
	p, err := PathsFor(t.TempDir(), "nosuch")
	if err != nil {
		t.Fatal(err)
	}
	d := New(Config{Systemctl: []string{"systemctl", "--user"}, Env: append(sd.Env(), pm.Env()...), StepTimeout: time.Minute})
	if _, err := d.RestartBackend(context.Background(), p, 0, io.Discard); err == nil || !strings.Contains(err.Error(), "tractstack-go@nosuch.service") {
		t.Fatalf("restart of a missing unit: %v", err)
	}
	if _, err := d.ReloadFrontend(context.Background(), p, io.Discard); err == nil || !strings.Contains(err.Error(), "astro-nosuch") {
		t.Fatalf("reload of a missing process: %v", err)
	}
	// No daemon ran before the reload: its pm2 commands start one, and
	// only one (two at once used to start two, one of them unreachable).
	if d := pm.Daemons(); len(d) != 1 {
		t.Fatalf("pm2 daemons of this PM2_HOME after the reload: %v, want one", d)
	}
}

// testOut is a writer to the test log.
func testOut(t *testing.T) io.Writer { return tlog{t} }

type tlog struct{ t *testing.T }

func (w tlog) Write(b []byte) (int, error) {
	w.t.Logf("%s", strings.TrimRight(string(b), "\n"))
	return len(b), nil
}
