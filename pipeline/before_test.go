package pipeline

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tractstack/concierge/deploy"
	"github.com/tractstack/concierge/queue"
)

// A tenant that was not healthy before the build and still is not is a
// warning on the job, and the release goes live.
func TestTenantNotHealthyBeforeAndAfterWarns(t *testing.T) {
	h := newHost(t, true)
	ports, _, err := deploy.ReadPorts(h.p)
	if err != nil {
		t.Fatal(err)
	}
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tenant := r.Header.Get("X-Tenant-ID")
		if tenant == "acme" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintf(w, `{"healthy":true,"tenantId":%q}`, tenant)
	}))
	t.Cleanup(be.Close)
	write(t, h.p.PortsFile, fmt.Sprintf("main=%d,%d\n", port(t, be), ports.Astro))

	s, err := h.run(t, &fakeBuilder{version: "v2"}, queue.CommandBuild)
	if err != nil {
		t.Fatal(err)
	}
	h.wantLive(t, "v2")
	if len(s.warnings) != 1 || s.warnings[0] != "backend tenant acme: unknown tenant (404), as before the restart" {
		t.Fatalf("warnings %q", s.warnings)
	}
	steps := strings.Join(s.stepList(), ",")
	if !strings.HasPrefix(steps, "pull-backend,pull-frontend,probe-before,") || strings.Contains(steps, "rollback") {
		t.Fatalf("steps %s", steps)
	}
}

// A rollback job's checks are judged against what answered before it.
func TestRollbackJobProbesBefore(t *testing.T) {
	h := newHost(t, true)
	if _, err := h.run(t, &fakeBuilder{version: "v2"}, queue.CommandBuild); err != nil {
		t.Fatal(err)
	}
	s, err := h.run(t, &fakeBuilder{}, queue.CommandRollback)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(s.stepList(), ","); got != strings.Join(PlanSteps(queue.Job{Command: queue.CommandRollback}, Facts{Ports: true}), ",") {
		t.Fatalf("steps %s", got)
	}
	h.wantLive(t, "v1")
}
