package deploy

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestClassifyBackend(t *testing.T) {
	tests := []struct {
		name, tenant string
		status       int
		body         string
		ok           bool
		state        string
	}{
		{"healthy", "default", 200, `{"status":"ok","healthy":true,"timestamp":1,"tenantId":"default"}`, true, "healthy"},
		{"fresh install", "default", 200, `{"needsSetup":true}`, false, "needs setup"},
		{"reserved tenant", "acme", 503, `{"status":"error","healthy":false,"error":"tenant not available"}`, false, "tenant not available (503"},
		{"unknown tenant", "ghost", 404, `{"error":"tenant not found"}`, false, "unknown tenant (404)"},
		{"single-tenant answers for default", "ghost", 200, `{"healthy":true,"tenantId":"default"}`, false, `answers for tenant "default" instead`},
		{"no tenantId", "default", 200, `{"healthy":true}`, false, "without naming its tenant"},
		{"healthy false on 200", "default", 200, `{"healthy":false,"tenantId":"default"}`, false, "status 200"},
		{"not JSON", "default", 200, `OK`, false, "status 200: OK"},
		{"server error", "default", 500, ``, false, "status 500: (empty body)"},
		{"503 other error", "default", 503, `{"error":"db down"}`, false, `status 503: {"error":"db down"}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := ClassifyBackend(tc.tenant, tc.status, []byte(tc.body))
			if o.OK != tc.ok || !strings.Contains(o.State, tc.state) || o.Target != "tenant "+tc.tenant || !o.Answered || !o.Settled {
				t.Fatalf("ClassifyBackend = %+v, want ok %t state %q", o, tc.ok, tc.state)
			}
		})
	}
}

func TestClassifyFrontend(t *testing.T) {
	page := FrontendProbe{Target: "page /", Path: "/"}
	file := FrontendProbe{Target: "file", Path: "/_astro/a.css", File: true}
	tests := []struct {
		name     string
		probe    FrontendProbe
		status   int
		location string
		ok       bool
		state    string
	}{
		{"page 200", page, 200, "", true, "status 200"},
		{"page 404 still answers", page, 404, "", true, "status 404"},
		{"page redirect elsewhere", page, 302, "/login", true, "status 302"},
		{"maintenance", page, 302, "/maint?from=%2F", false, "site in maintenance mode (302 to /maint?from=%2F)"},
		{"maintenance absolute", page, 307, "http://127.0.0.1:4321/maint", false, "site in maintenance mode (307 to http://127.0.0.1:4321/maint)"},
		{"not maint, a prefix", page, 302, "/maintenance-free", true, "status 302"},
		{"page 500", page, 500, "", false, "status 500"},
		{"file 200", file, 200, "", true, "/_astro/a.css: status 200"},
		{"file missing", file, 404, "", false, "/_astro/a.css: status 404"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := ClassifyFrontend(tc.probe, tc.status, tc.location)
			if o.OK != tc.ok || o.State != tc.state {
				t.Fatalf("ClassifyFrontend = %+v, want ok %t state %q", o, tc.ok, tc.state)
			}
		})
	}
}

func TestUnanswered(t *testing.T) {
	hang := Unanswered("page /", true, 2*time.Second, errors.New("context deadline exceeded"))
	if hang.OK || !hang.Answered || !hang.Settled || hang.State != "no answer within 2s (hangs)" {
		t.Fatalf("hang = %+v", hang)
	}
	down := Unanswered("page /", false, time.Second, errors.New(`Get "http://127.0.0.1:1/": dial tcp 127.0.0.1:1: connect: connection refused`))
	if down.Answered || down.Settled || down.State != "not answering: connect: connection refused" {
		t.Fatalf("down = %+v", down)
	}
}

func TestJudge(t *testing.T) {
	healthy := Observation{Target: "tenant default", OK: true, State: "healthy", Answered: true, Settled: true}
	setup := Observation{Target: "tenant default", State: "needs setup", Answered: true, Settled: true}
	unknown := Observation{Target: "tenant ghost", State: "unknown tenant (404)", Answered: true, Settled: true}
	ghostOK := Observation{Target: "tenant ghost", OK: true, State: "healthy", Answered: true, Settled: true}
	down := Observation{Target: "tenant default", State: "not answering: connection refused"}
	unavailable := Observation{Target: "tenant default", State: "tenant not available (503)", Answered: true, Settled: true}
	stray := Observation{Target: "tenant default", State: "port 1 is held by pid 7 (old)", Answered: true, Foreign: true}
	hang := Observation{Target: "page /", State: "no answer within 1s (hangs)", Answered: true, Settled: true}
	pageOK := Observation{Target: "page /", OK: true, State: "status 200", Answered: true, Settled: true}
	pageDown := Observation{Target: "page /", State: "not answering: connection refused"}
	maint := Observation{Target: "page /", State: "site in maintenance mode (302 to /maint)", Answered: true, Settled: true}
	fileOK := Observation{Target: "file", OK: true, State: "/_astro/a.css: status 200", Answered: true, Settled: true}
	list := func(o ...Observation) []Observation { return o }

	tests := []struct {
		name              string
		before, prev, cur []Observation
		timedOut          bool
		want              Outcome
		reason            string
	}{
		{"healthy after", list(healthy), nil, list(healthy), false, Pass, ""},
		{"better than before", list(down), nil, list(healthy), false, Pass, ""},
		{"first deploy, not probed before", nil, nil, list(healthy), false, Pass, ""},
		{"healthy before, not yet after", list(healthy), nil, list(down), false, Pending, ""},
		{"healthy before, not after: fail at the timeout", list(healthy), list(unavailable), list(unavailable), true, Fail,
			"tenant default: healthy before, now tenant not available (503)"},
		{"healthy before, a stable tenant state after still waits", list(healthy), list(setup), list(setup), false, Pending, ""},
		{"not probed before: strict", nil, list(setup), list(setup), true, Fail, "tenant default: needs setup"},
		{"needs setup before and after, once", list(setup), nil, list(setup), false, Pending, ""},
		{"needs setup before and after, twice: warn at once", list(setup), list(setup), list(setup), false, Warn,
			"tenant default: needs setup, as before the restart"},
		{"not answering yet after a tenant state before", list(setup), list(down), list(down), false, Pending, ""},
		{"still not answering at the timeout: warn", list(down), list(down), list(down), true, Warn, "tenant default: not answering"},
		{"down before, a settled state twice after: warn", list(down), list(setup), list(setup), false, Warn,
			"needs setup (before the restart: not answering"},
		{"a different state than before waits for the timeout", list(setup), list(unavailable), list(unavailable), false, Pending, ""},
		{"a different state at the timeout: warn", list(setup), list(unavailable), list(unavailable), true, Warn, "(before the restart: needs setup)"},
		{"unknown tenant before and after beside a healthy one", list(healthy, unknown), list(healthy, unknown), list(healthy, unknown), false, Warn,
			"tenant ghost: unknown tenant (404), as before the restart"},
		{"the unknown tenant is known now", list(healthy, unknown), nil, list(healthy, ghostOK), false, Pass, ""},
		{"one fails, one warns: fail", list(healthy, unknown), list(unavailable, unknown), list(unavailable, unknown), true, Fail, "tenant default"},
		{"a stray answers: pending", list(healthy), nil, list(stray), false, Pending, ""},
		{"a stray answers: fail at the timeout", list(healthy), list(stray), list(stray), true, Fail, "held by pid 7"},
		{"a stray answers even when nothing was healthy before", list(down), list(stray), list(stray), true, Fail, "held by pid 7"},
		{"hangs before and after, the file answers: warn without waiting", list(hang, fileOK), list(hang, fileOK), list(hang, fileOK), false, Warn,
			"page /: no answer within 1s (hangs), as before the restart"},
		{"hangs only after: pending", list(pageOK, fileOK), list(hang, fileOK), list(hang, fileOK), false, Pending, ""},
		{"hangs only after: fail at the timeout", list(pageOK, fileOK), list(hang, fileOK), list(hang, fileOK), true, Fail,
			"page /: status 200 before, now no answer within 1s (hangs)"},
		{"maintenance only after: fail", list(pageOK), list(maint), list(maint), true, Fail, "site in maintenance mode"},
		{"maintenance before and after: warn", list(maint), list(maint), list(maint), false, Warn, "site in maintenance mode"},
		{"down before, hangs after: warn once stable", list(pageDown), list(hang), list(hang), false, Warn, "(before the restart: not answering"},
		{"a file of the new release not probed before", list(pageOK), nil, list(pageOK, fileOK), false, Pass, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := Judge(tc.before, tc.prev, tc.cur, tc.timedOut)
			if v.Outcome != tc.want || !strings.Contains(strings.Join(v.Reasons, "; "), tc.reason) {
				t.Fatalf("Judge = %s %q, want %s with %q", v.Outcome, v.Reasons, tc.want, tc.reason)
			}
		})
	}
}

func TestListenInodes(t *testing.T) {
	table := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:2710 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0
   1: 0100007F:2710 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:4E20 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4444 1 0000000000000000 100 0 0 10 0
`
	if got := ListenInodes([]byte(table), 10000); len(got) != 1 || got[0] != 4242 {
		t.Fatalf("port 10000: %v", got)
	}
	if got := ListenInodes([]byte(table), 20000); len(got) != 1 || got[0] != 4444 {
		t.Fatalf("port 20000: %v", got)
	}
	if got := ListenInodes([]byte(table), 80); len(got) != 0 {
		t.Fatalf("port 80: %v", got)
	}
}

func TestMaintRedirect(t *testing.T) {
	for loc, want := range map[string]bool{
		"/maint": true, "/maint?from=%2F": true, "/maint/": true, "https://example.com/maint?x": true,
		"": false, "/": false, "/maintenance": false, "/login?next=/maint": false,
	} {
		if got := MaintRedirect(loc); got != want {
			t.Errorf("MaintRedirect(%q) = %t, want %t", loc, got, want)
		}
	}
}

func TestClientFile(t *testing.T) {
	dir := t.TempDir()
	if _, ok := ClientFile(filepath.Join(dir, "none")); ok {
		t.Fatal("a file in a missing dir")
	}
	must := func(name string) {
		t.Helper()
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	must("favicon.svg")
	must(".hidden")
	if got, ok := ClientFile(dir); !ok || got != "/favicon.svg" {
		t.Fatalf("ClientFile = %q, %t", got, ok)
	}
	must("_astro/index.B2x.css")
	must("_astro/a b.js")
	if got, ok := ClientFile(dir); !ok || got != "/_astro/a%20b.js" {
		t.Fatalf("ClientFile = %q, %t", got, ok)
	}
}
