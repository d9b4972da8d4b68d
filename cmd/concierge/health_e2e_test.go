package main

// End-to-end tests of the health checks judged against before the
// restart, through the real concierge binary, with a backend that answers
// as the real TractStack backend does (internal/sandbox: tenant registry
// from SANDBOX_TENANTS_FILE) under a private systemd user manager, and a
// frontend under a private pm2 that can be built to hang on its pages or
// to redirect them to /maint, as a real TractStack frontend can.

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tractstack/concierge/internal/sandbox"
	"github.com/tractstack/concierge/queue"
)

// healthTimeout is the hosts' CONCIERGE_HEALTH_TIMEOUT: long, so that a
// check that waited it out would stand out; the runs expected to roll
// back use rollbackTimeout instead.
const (
	healthTimeout   = 60 * time.Second
	rollbackTimeout = "CONCIERGE_HEALTH_TIMEOUT=4s"
)

func healthHost(t *testing.T, extra string) *pe2eHost {
	t.Helper()
	return &pe2eHost{startLiveHost(t, liveOptions{
		installs:        []string{""},
		frontendIsClone: true,
		running:         true,
		serviceExtra:    extra,
		env: []string{"CONCIERGE_HEALTH_TIMEOUT=" + healthTimeout.String(), "CONCIERGE_HEALTH_REQUEST_TIMEOUT=1s",
			"CONCIERGE_STEP_TIMEOUT=2m", "CONCIERGE_LOG_FORMAT=json"},
	})}
}

// quick checks that a check that ended in a warning did not wait out
// the health timeout.
func quick(t *testing.T, j queue.Job, step string) {
	t.Helper()
	if s := pe2eStep(t, j, step); s.DurationMS >= healthTimeout.Milliseconds() {
		t.Fatalf("step %s took %d ms: it waited out the health timeout", step, s.DurationMS)
	}
}

func noRollback(t *testing.T, j queue.Job) {
	t.Helper()
	for _, s := range j.Steps {
		if strings.Contains(s.Name, "rollback") || strings.HasSuffix(s.Name, "-previous") {
			t.Fatalf("the job rolled back (%s):\n%s", s.Name, pe2eJSON(j))
		}
	}
}

func hasWarning(t *testing.T, j queue.Job, want string) {
	t.Helper()
	for _, w := range j.Warnings {
		if strings.Contains(w, want) {
			return
		}
	}
	t.Fatalf("no warning says %q:\n%s", want, pe2eJSON(j))
}

// runLogged runs, requires exit 0 and a succeeded job, and returns the
// job and the run's log (JSON lines).
func (h *pe2eHost) runLogged() (queue.Job, string) {
	h.t.Helper()
	logs, code := h.run()
	j := h.lastJob()
	if code != 0 || j.State != queue.Succeeded {
		h.t.Fatalf("run exit %d, job %s (%s); want 0 and succeeded\njob: %s\nlogs:\n%s", code, j.State, j.Error, pe2eJSON(j), logs)
	}
	return j, logs
}

// stepSaid checks that a step wrote want in its output, as the run's
// log records it.
func stepSaid(t *testing.T, logs, step, want string) {
	t.Helper()
	var lines []string
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, `"step":"`+step+`"`) {
			if strings.Contains(l, want) {
				return
			}
			lines = append(lines, l)
		}
	}
	t.Fatalf("step %s did not say %q; its lines:\n%s", step, want, strings.Join(lines, "\n"))
}

// backendVersionAt is what /api/v1/version answers (the health answer
// may not be healthy).
func backendVersionAt(t *testing.T, port int) string {
	t.Helper()
	var v string
	waitFor(t, "the backend to answer its version", 20*time.Second, func() (bool, string) {
		var err error
		v, err = loopbackGet(port, "/api/v1/version")
		return err == nil, fmt.Sprint(err)
	})
	return v
}

func TestHealthE2EBackendJudgedAgainstBefore(t *testing.T) {
	tenants := filepath.Join(t.TempDir(), "tenants")
	h := healthHost(t, "Environment=SANDBOX_TENANTS_FILE="+tenants+"\n")
	p := h.paths("")
	port := h.ports["main"][0]
	write := func(mode string, states map[string]string) {
		t.Helper()
		if err := sandbox.WriteTenants(tenants, mode, states); err != nil {
			t.Fatal(err)
		}
	}
	steps := []struct {
		name string
		fn   func(t *testing.T)
	}{
		{"an unknown tenant in a multi-tenant trigger does not roll back", func(t *testing.T) {
			write("multi", map[string]string{"default": "active"})
			h.push("", changeOf(sandbox.BackendVersion("v2", true)), changeOf(sandbox.FrontendVersion("v2")))
			h.drop(buildMain + "\ntype=main,tenant=ghost,command=build")
			j, logs := h.runLogged()
			if strings.Join(j.Tenants, ",") != "default,ghost" {
				t.Fatalf("tenants %v", j.Tenants)
			}
			hasWarning(t, j, "backend tenant ghost: unknown tenant (404), as before the restart")
			noRollback(t, j)
			quick(t, j, "health-backend")
			stepSaid(t, logs, "probe-before", "backend tenant ghost: unknown tenant (404)")
			h.serves("", "v2", "v2")
		}},
		{"needsSetup before and after is a warning", func(t *testing.T) {
			write("single", map[string]string{"default": "inactive"})
			h.push("", changeOf(sandbox.BackendVersion("v3", true)), changeOf(sandbox.FrontendVersion("v3")))
			h.drop(buildMain)
			j := h.runOK()
			hasWarning(t, j, "backend tenant default: needs setup (the tenant is not set up yet), as before the restart")
			noRollback(t, j)
			quick(t, j, "health-backend")
			if v := backendVersionAt(t, port); v != "v3" {
				t.Fatalf("backend answers %s, want v3", v)
			}
			write("multi", map[string]string{"default": "active"})
			h.serves("", "v3", "v3")
		}},
		{"a tenant healthy before and not after rolls back", func(t *testing.T) {
			h.push("", changeOf(sandbox.BackendVersion("v4", false)), nil)
			h.drop(buildMain)
			j := h.runFailed(rollbackTimeout)
			for _, want := range []string{"tenant default: healthy before, now tenant not available (503", "rolled back to"} {
				if !strings.Contains(j.Error, want) {
					t.Fatalf("job error %q lacks %q", j.Error, want)
				}
			}
			pe2eSteps(t, j, map[string]queue.State{"health-backend": queue.Failed, "rollback": queue.Succeeded, "health-backend-previous": queue.Succeeded})
			h.serves("", "v3", "v3")
		}},
		{"a stray process holding the port fails the check with its pid", func(t *testing.T) {
			if out, err := h.sd.Systemctl("stop", p.Unit); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			// This test process answers healthy on the backend's port, as an
			// old backend left running would.
			ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
			if err != nil {
				t.Fatal(err)
			}
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprintf(w, `{"status":"ok","healthy":true,"tenantId":%q,"version":"stray"}`, r.Header.Get("X-Tenant-ID"))
			})}
			go srv.Serve(ln)
			h.push("", changeOf(sandbox.BackendVersion("v5", true)), nil)
			h.drop(buildMain)
			j := h.runFailed(rollbackTimeout)
			want := fmt.Sprintf("port %d is held by pid %d", port, os.Getpid())
			if !strings.Contains(j.Error, want) || !strings.Contains(j.Error, "not by tractstack-go.service's main process") {
				t.Fatalf("job error %q lacks %q", j.Error, want)
			}
			pe2eSteps(t, j, map[string]queue.State{"health-backend": queue.Failed, "rollback": queue.Succeeded})
			srv.Close()
			if out, err := h.sd.Systemctl("restart", p.Unit); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			h.serves("", "v3", "v3")
		}},
	}
	for _, s := range steps {
		if !t.Run(s.name, s.fn) {
			return // later steps build on this one
		}
	}
}

func TestHealthE2EFrontendJudgedAgainstBefore(t *testing.T) {
	h := healthHost(t, "")
	p := h.paths("")
	steps := []struct {
		name string
		fn   func(t *testing.T)
	}{
		{"a frontend that redirects to /maint only after is rolled back", func(t *testing.T) {
			h.push("", nil, changeOf(sandbox.FrontendMode("v2", "maint")))
			h.drop(buildMain)
			j := h.runFailed(rollbackTimeout)
			for _, want := range []string{"page /: status 200 before, now site in maintenance mode (302 to /maint?from=%2F)", "rolled back to"} {
				if !strings.Contains(j.Error, want) {
					t.Fatalf("job error %q lacks %q", j.Error, want)
				}
			}
			pe2eSteps(t, j, map[string]queue.State{"health-frontend": queue.Failed, "health-frontend-previous": queue.Succeeded})
			h.serves("", "v1", "v1")
		}},
		{"a frontend that hangs only after is rolled back", func(t *testing.T) {
			h.push("", nil, changeOf(sandbox.FrontendMode("v3", "hang")))
			h.drop(buildMain)
			j := h.runFailed(rollbackTimeout)
			for _, want := range []string{"page /: status 200 before, now no answer within 1s (hangs)", "rolled back to"} {
				if !strings.Contains(j.Error, want) {
					t.Fatalf("job error %q lacks %q", j.Error, want)
				}
			}
			pe2eSteps(t, j, map[string]queue.State{"health-frontend": queue.Failed, "health-frontend-previous": queue.Succeeded})
			h.serves("", "v1", "v1")
		}},
		{"a hanging frontend replacing a stopped one goes live with a warning", func(t *testing.T) {
			h.pm.Run("stop", p.Process)
			h.push("", nil, changeOf(sandbox.FrontendMode("v4", "hang")))
			h.drop(buildMain)
			j := h.runOK()
			hasWarning(t, j, "frontend page /: no answer within 1s (hangs) (before the restart: not answering")
			noRollback(t, j)
			quick(t, j, "health-frontend")
		}},
		{"a frontend that hangs before and after goes live with a warning, without waiting out the timeout", func(t *testing.T) {
			h.push("", nil, changeOf(sandbox.FrontendMode("v5", "hang")))
			h.drop(buildMain)
			j, logs := h.runLogged()
			hasWarning(t, j, "frontend page /: no answer within 1s (hangs), as before the restart")
			noRollback(t, j)
			quick(t, j, "health-frontend")
			// The release's own file answers: the server is up.
			stepSaid(t, logs, "probe-before", "frontend file: /_astro/page.v4.css: status 200")
			stepSaid(t, logs, "probe-before", "frontend page /: no answer within 1s (hangs)")
			if body, err := loopbackGet(h.ports["main"][1], "/_astro/page.v5.css"); err != nil || body != "p{margin:0}" {
				t.Fatalf("the v5 file: %q, %v", body, err)
			}
		}},
	}
	for _, s := range steps {
		if !t.Run(s.name, s.fn) {
			return // later steps build on this one
		}
	}
}
