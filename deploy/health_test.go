package deploy

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// tractstackHealth answers /api/v1/health as the TractStack backend does,
// per tenant: "active", "setup" (the inactive default tenant of a fresh
// install), "reserved"; a tenant not in the map is unknown.
func tractstackHealth(states func() map[string]string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tenant := r.Header.Get("X-Tenant-ID")
		switch states()[tenant] {
		case "active":
			fmt.Fprintf(w, `{"status":"ok","healthy":true,"timestamp":1,"tenantId":%q}`, tenant)
		case "setup":
			fmt.Fprint(w, `{"needsSetup":true}`)
		case "reserved":
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprint(w, `{"status":"error","healthy":false,"error":"tenant not available"}`)
		default:
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"error":"tenant not found"}`)
		}
	}
}

// bounded is a context that ends well before a check's HealthTimeout, so
// that a check waiting out its timeout fails the test instead of passing
// slowly.
func bounded(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestCheckBackendTenantStatesWarnWithoutWaiting(t *testing.T) {
	states := map[string]string{"default": "active", "fresh": "setup", "acme": "reserved"}
	srv := httptest.NewServer(tractstackHealth(func() map[string]string { return states }))
	defer srv.Close()
	d := New(Config{HealthTimeout: 10 * time.Minute, HealthInterval: 10 * time.Millisecond, Run: selfPID})
	tenants := []string{"default", "fresh", "acme", "ghost"}
	before := d.ProbeBackend(context.Background(), portOf(t, srv), tenants)
	if got := summary(before); !strings.Contains(got, "tenant default: healthy") || !strings.Contains(got, "tenant ghost: unknown tenant (404)") {
		t.Fatalf("before: %s", got)
	}
	res, err := d.CheckBackend(bounded(t), testPaths(t), portOf(t, srv), tenants, before)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(res.Warnings, "\n")
	for _, want := range []string{
		"backend tenant fresh: needs setup (the tenant is not set up yet), as before the restart",
		"backend tenant acme: tenant not available (503: reserved or inactive), as before the restart",
		"backend tenant ghost: unknown tenant (404), as before the restart",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("warnings lack %q:\n%s", want, got)
		}
	}
	if len(res.Warnings) != 3 || len(res.Notes) != 0 {
		t.Fatalf("result %+v", res)
	}
}

func TestCheckBackendHealthyBeforeNotAfterFails(t *testing.T) {
	var after atomic.Bool
	srv := httptest.NewServer(tractstackHealth(func() map[string]string {
		if after.Load() {
			return map[string]string{"default": "setup"}
		}
		return map[string]string{"default": "active"}
	}))
	defer srv.Close()
	d := New(Config{HealthTimeout: 300 * time.Millisecond, HealthInterval: 10 * time.Millisecond, Run: selfPID})
	before := d.ProbeBackend(context.Background(), portOf(t, srv), nil)
	after.Store(true)
	_, err := d.CheckBackend(context.Background(), testPaths(t), portOf(t, srv), nil, before)
	if err == nil || !strings.Contains(err.Error(), "tenant default: healthy before, now needs setup") {
		t.Fatalf("err = %v", err)
	}
}

// A healthy answer from a process that is not the unit's main process
// fails the check, naming the process that holds the port.
func TestCheckBackendStrayHoldsThePort(t *testing.T) {
	srv := httptest.NewServer(tractstackHealth(func() map[string]string { return map[string]string{"default": "active"} }))
	defer srv.Close()
	// The unit's main process: alive, but not holding the port.
	main := exec.Command("sleep", "60")
	if err := main.Start(); err != nil {
		t.Skipf("cannot start sleep: %v", err)
	}
	defer func() { main.Process.Kill(); main.Wait() }()
	run := func(ctx context.Context, dir, name string, args, env []string, timeout time.Duration, out io.Writer) error {
		fmt.Fprintf(out, "%d\n", main.Process.Pid)
		return nil
	}
	d := New(Config{HealthTimeout: 300 * time.Millisecond, HealthInterval: 10 * time.Millisecond, Run: run})
	before := d.ProbeBackend(context.Background(), portOf(t, srv), nil)
	_, err := d.CheckBackend(context.Background(), testPaths(t), portOf(t, srv), nil, before)
	want := fmt.Sprintf("port %d is held by pid %d", portOf(t, srv), os.Getpid())
	if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), fmt.Sprintf("main process %d", main.Process.Pid)) {
		t.Fatalf("err = %v; want it to say %q", err, want)
	}
}

func TestPortOwner(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	port := portOf(t, srv)
	if msg, err := PortOwner(port, os.Getpid(), "x.service"); err != nil || msg != "" {
		t.Fatalf("own listener: %q, %v", msg, err)
	}
	// A descendant of the main process (a wrapper's child) is fine too.
	if msg, err := PortOwner(port, os.Getppid(), "x.service"); err != nil || msg != "" {
		t.Fatalf("listener of a child of the main process: %q, %v", msg, err)
	}
	msg, err := PortOwner(port, 0, "x.service")
	if err != nil || !strings.Contains(msg, fmt.Sprintf("pid %d", os.Getpid())) || !strings.Contains(msg, "x.service, which has no main process") {
		t.Fatalf("no main process: %q, %v", msg, err)
	}
	srv.Close()
	if msg, err := PortOwner(port, os.Getpid(), "x.service"); err != nil || !strings.Contains(msg, "nothing listens") {
		t.Fatalf("closed: %q, %v", msg, err)
	}
}

func TestMainPIDLeavesSudoOut(t *testing.T) {
	var ran string
	d := New(Config{Systemctl: []string{"sudo", "-n", "systemctl"}, Run: func(ctx context.Context, dir, name string, args, env []string, timeout time.Duration, out io.Writer) error {
		ran = name + " " + strings.Join(args, " ")
		fmt.Fprintln(out, "MainPID=42")
		return nil
	}})
	pid, err := d.MainPID(context.Background(), "tractstack-go.service")
	if err != nil || pid != 42 || ran != "systemctl show -p MainPID --value tractstack-go.service" {
		t.Fatalf("MainPID = %d, %v; ran %q", pid, err, ran)
	}
}

// frontend serves a release: files of dist/client, and on any other path
// what mode says: "ok" (200), "hang" (no answer), "maint" (302 to /maint).
func frontend(t *testing.T, p Paths, mode *atomic.Value) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if st, err := os.Stat(filepath.Join(p.Dist, "client", filepath.FromSlash(r.URL.Path))); err == nil && st.Mode().IsRegular() {
			http.ServeFile(w, r, filepath.Join(p.Dist, "client", filepath.FromSlash(r.URL.Path)))
			return
		}
		switch mode.Load() {
		case "hang":
			<-r.Context().Done()
		case "maint":
			http.Redirect(w, r, "/maint?from=%2F", http.StatusFound)
		default:
			fmt.Fprintln(w, "page")
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func frontendHost(t *testing.T, mode string) (Paths, *atomic.Value, int) {
	t.Helper()
	p := testPaths(t)
	if err := os.MkdirAll(filepath.Join(p.Dist, "client", "_astro"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(p.Dist, "client", "_astro", "index.abc.css"), []byte("p{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	var m atomic.Value
	m.Store(mode)
	return p, &m, portOf(t, frontend(t, p, &m))
}

func TestCheckFrontendHangingBeforeAndAfterWarnsWithoutWaiting(t *testing.T) {
	p, _, port := frontendHost(t, "hang")
	d := New(Config{HealthTimeout: 10 * time.Minute, HealthInterval: 10 * time.Millisecond, RequestTimeout: 200 * time.Millisecond})
	before := d.ProbeFrontend(context.Background(), p, port)
	if got := summary(before); got != "page /: no answer within 200ms (hangs); file: /_astro/index.abc.css: status 200" {
		t.Fatalf("before: %s", got)
	}
	res, err := d.CheckFrontend(bounded(t), p, port, before)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Warnings) != 1 || res.Warnings[0] != "frontend page /: no answer within 200ms (hangs), as before the restart" {
		t.Fatalf("warnings %q", res.Warnings)
	}
}

func TestCheckFrontendWorseAfterFails(t *testing.T) {
	for _, tc := range []struct{ mode, want string }{
		{"hang", "page /: status 200 before, now no answer within 200ms (hangs)"},
		{"maint", "page /: status 200 before, now site in maintenance mode (302 to /maint?from=%2F)"},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			p, mode, port := frontendHost(t, "ok")
			d := New(Config{HealthTimeout: time.Second, HealthInterval: 10 * time.Millisecond, RequestTimeout: 200 * time.Millisecond})
			before := d.ProbeFrontend(context.Background(), p, port)
			mode.Store(tc.mode)
			_, err := d.CheckFrontend(context.Background(), p, port, before)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestFrontendProbesConfigured(t *testing.T) {
	p, _, _ := frontendHost(t, "ok")
	d := New(Config{FrontendPaths: []string{"/", "/robots.txt"}})
	got := d.FrontendProbes(p)
	if len(got) != 2 || got[1].Path != "/robots.txt" || got[1].File || got[1].Target != "page /robots.txt" {
		t.Fatalf("probes %+v", got)
	}
	if got := New(Config{}).FrontendProbes(p); len(got) != 2 || got[1] != (FrontendProbe{Target: "file", Path: "/_astro/index.abc.css", File: true}) {
		t.Fatalf("default probes %+v", got)
	}
}
