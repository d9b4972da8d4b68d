package deploy

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestServiceCommands(t *testing.T) {
	main, _ := PathsFor("/home/t8k", "")
	acme, _ := PathsFor("/home/t8k", "acme")
	tests := []struct {
		name      string
		systemctl []string
		pm2       []string
		p         Paths
		restart   string
		reload    string
	}{
		{name: "host root", systemctl: []string{"systemctl"}, p: main,
			restart: "systemctl restart tractstack-go.service", reload: "pm2 reload astro-main"},
		{name: "sudo", systemctl: []string{"sudo", "systemctl"}, p: acme,
			restart: "sudo systemctl restart tractstack-go@acme.service", reload: "pm2 reload astro-acme"},
		{name: "user manager", systemctl: []string{"systemctl", "--user"}, pm2: []string{"/opt/pm2/bin/pm2"}, p: main,
			restart: "systemctl --user restart tractstack-go.service", reload: "/opt/pm2/bin/pm2 reload astro-main"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex // the reload asks pm2 jlist meanwhile
			var got []string
			var gotEnv []string
			d := New(Config{Systemctl: tc.systemctl, PM2: tc.pm2, Env: []string{"PATH=/usr/bin", "PM2_HOME=/x"},
				Run: func(ctx context.Context, dir, name string, args, env []string, timeout time.Duration, out io.Writer) error {
					mu.Lock()
					defer mu.Unlock()
					got = append(got, strings.Join(append([]string{name}, args...), " "))
					gotEnv = env
					if timeout <= 0 {
						t.Errorf("no timeout")
					}
					return nil
				}})
			if _, err := d.RestartBackend(context.Background(), tc.p, 0, io.Discard); err != nil {
				t.Fatal(err)
			}
			if _, err := d.ReloadFrontend(context.Background(), tc.p, io.Discard); err != nil {
				t.Fatal(err)
			}
			jlist := strings.TrimSuffix(tc.reload, "reload "+tc.p.Process) + "jlist"
			sort.Strings(got[1:])
			if want := []string{tc.restart, jlist, tc.reload}; !slices.Equal(got, want) {
				t.Fatalf("ran %q, want %q", got, want)
			}
			if strings.Join(gotEnv, " ") != "PATH=/usr/bin PM2_HOME=/x" {
				t.Fatalf("env %q", gotEnv)
			}
		})
	}
}

func portOf(t *testing.T, srv *httptest.Server) int {
	t.Helper()
	_, ps, err := net.SplitHostPort(srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	p, err := strconv.Atoi(ps)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// selfPID is a Run that answers `systemctl show -p MainPID` with this
// process, which serves the test backends.
func selfPID(ctx context.Context, dir, name string, args, env []string, timeout time.Duration, out io.Writer) error {
	if len(args) > 0 && slices.Contains(args, "show") {
		fmt.Fprintln(out, os.Getpid())
		return nil
	}
	return fmt.Errorf("unexpected %s %v", name, args)
}

func testPaths(t *testing.T) Paths {
	t.Helper()
	p, err := PathsFor(t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCheckBackend(t *testing.T) {
	var calls atomic.Int32
	var tenants seen
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/health" {
			http.NotFound(w, r)
			return
		}
		tenant := r.Header.Get("X-Tenant-ID")
		tenants.add(tenant)
		// Unhealthy for the first three calls, as a backend starting up.
		if calls.Add(1) <= 3 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintf(w, `{"healthy":true,"tenantId":%q}`, tenant)
	}))
	defer srv.Close()
	d := New(Config{HealthTimeout: 10 * time.Second, HealthInterval: 10 * time.Millisecond, Run: selfPID})
	p := testPaths(t)
	if res, err := d.CheckBackend(context.Background(), p, portOf(t, srv), []string{"default", "acme"}, nil); err != nil || len(res.Warnings)+len(res.Notes) != 0 {
		t.Fatal(res, err)
	}
	if !tenants.has("default") || !tenants.has("acme") {
		t.Fatalf("tenants asked: %v", tenants.list())
	}
	if _, err := d.CheckBackend(context.Background(), p, portOf(t, srv), nil, nil); err != nil {
		t.Fatal(err)
	}
}

func TestCheckUnhealthyTimesOut(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
	}))
	defer srv.Close()
	d := New(Config{HealthTimeout: 200 * time.Millisecond, HealthInterval: 10 * time.Millisecond, Run: selfPID})
	p := testPaths(t)
	_, err := d.CheckBackend(context.Background(), p, portOf(t, srv), []string{"default"}, nil)
	if err == nil || !strings.Contains(err.Error(), "status 500") {
		t.Fatalf("backend err = %v", err)
	}
	_, err = d.CheckFrontend(context.Background(), p, portOf(t, srv), nil)
	if err == nil || !strings.Contains(err.Error(), "status 500") {
		t.Fatalf("frontend err = %v", err)
	}
	// Nothing listening.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	if _, err := d.CheckFrontend(context.Background(), p, port, nil); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("frontend on a closed port: %v", err)
	}
}

func TestCheckFrontendAcceptsNotFound(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	d := New(Config{HealthTimeout: 2 * time.Second, HealthInterval: 10 * time.Millisecond})
	if _, err := d.CheckFrontend(context.Background(), testPaths(t), portOf(t, srv), nil); err != nil {
		t.Fatal(err)
	}
}

func TestLoopbackClientRefusesOtherHosts(t *testing.T) {
	c := loopbackClient(time.Second)
	_, err := c.Get("http://192.0.2.1:80/")
	if err == nil || !strings.Contains(err.Error(), "loopback only") {
		t.Fatalf("err = %v", err)
	}
}

type seen struct {
	mu sync.Mutex
	m  map[string]bool
}

func (s *seen) add(v string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string]bool{}
	}
	s.m[v] = true
}

func (s *seen) has(v string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[v]
}

func (s *seen) list() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for k := range s.m {
		out = append(out, k)
	}
	return out
}
