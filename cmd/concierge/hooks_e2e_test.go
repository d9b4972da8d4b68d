package main

// The operator's hooks through the real binary and the real pipeline:
// each runs at its moment with the job in its environment, a failing
// pre-build hook leaves everything live as it was, a failing post-deploy
// hook is a warning, and a hook writable by others is refused.

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tractstack/concierge/deploy"
	"github.com/tractstack/concierge/hooks"
	"github.com/tractstack/concierge/internal/sandbox"
	"github.com/tractstack/concierge/queue"
)

// hookHost is a host whose hooks log each run: a line "<hook> <job id>"
// in <log>/order and the CONCIERGE_* environment in <log>/<hook>-<job id>.env.
type hookHost struct {
	*pe2eHost
	dir, log string
}

func (h *hookHost) install(name string, exit int, mode os.FileMode) {
	h.t.Helper()
	script := fmt.Sprintf("#!/bin/sh\necho \"%[1]s $CONCIERGE_JOB_ID\" >> %[2]s/order\n"+
		"env | grep '^CONCIERGE_' | sort > %[2]s/%[1]s-$CONCIERGE_JOB_ID.env\necho \"hook %[1]s says hello\"\nexit %[3]d\n", name, h.log, exit)
	p := filepath.Join(h.dir, name)
	mustWrite(h.t, p, script)
	if err := os.Chmod(p, mode); err != nil {
		h.t.Fatal(err)
	}
}

// ran lists the hooks that ran for job id, in order.
func (h *hookHost) ran(id string) []string {
	h.t.Helper()
	data, err := os.ReadFile(filepath.Join(h.log, "order"))
	if err != nil && !os.IsNotExist(err) {
		h.t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if name, job, ok := strings.Cut(l, " "); ok && job == id {
			out = append(out, name)
		}
	}
	return out
}

// env is what hook name saw as its environment in job id.
func (h *hookHost) env(name, id string) map[string]string {
	h.t.Helper()
	data, err := os.ReadFile(filepath.Join(h.log, name+"-"+id+".env"))
	if err != nil {
		h.t.Fatal(err)
	}
	return envMap(strings.Split(strings.TrimSpace(string(data)), "\n"))
}

func (h *hookHost) wantEnv(name, id string, want map[string]string) map[string]string {
	h.t.Helper()
	env := h.env(name, id)
	for k, v := range want {
		if got, ok := env[k]; !ok || got != v {
			h.t.Fatalf("hook %s saw %s=%q, want %q\nall: %v", name, k, got, v, env)
		}
	}
	if env["CONCIERGE_DURATION_MS"] == "" || env["CONCIERGE_DURATION_MS"] == "-1" {
		h.t.Fatalf("hook %s saw CONCIERGE_DURATION_MS=%q", name, env["CONCIERGE_DURATION_MS"])
	}
	return env
}

func TestHooksE2E(t *testing.T) {
	h := &hookHost{pe2eHost: pe2eStart(t, true), log: t.TempDir()}
	h.dir = hooks.Dir(h.sb.Dir)
	if err := os.MkdirAll(h.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(h.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := h.paths("")
	for _, name := range hooks.Names {
		h.install(name, 0, 0o755)
	}

	t.Run("a deploy runs pre-build, pre-swap, post-deploy; a failing post-deploy is a warning", func(t *testing.T) {
		h.install(hooks.PostDeploy, 1, 0o755)
		h.drop(buildMain)
		j := h.runOK()
		if got := h.ran(j.ID); !slices.Equal(got, []string{"pre-build", "pre-swap", "post-deploy"}) {
			t.Fatalf("hooks ran %v", got)
		}
		cur, _, _ := deploy.Current(p)
		base := map[string]string{"CONCIERGE_JOB_ID": j.ID, "CONCIERGE_TARGET": "main", "CONCIERGE_COMMAND": "build",
			"CONCIERGE_TENANTS": "default", "CONCIERGE_ERROR": ""}
		h.wantEnv("pre-build", j.ID, merge(base, map[string]string{"CONCIERGE_STATE": "building"}))
		h.wantEnv("pre-swap", j.ID, merge(base, map[string]string{"CONCIERGE_STATE": "building", "CONCIERGE_RELEASE": cur.ID,
			"CONCIERGE_BACKEND_COMMIT": cur.Backend, "CONCIERGE_FRONTEND_COMMIT": cur.Frontend}))
		h.wantEnv("post-deploy", j.ID, merge(base, map[string]string{"CONCIERGE_STATE": "succeeded", "CONCIERGE_RELEASE": cur.ID,
			"CONCIERGE_BACKEND_COMMIT": cur.Backend, "CONCIERGE_FRONTEND_COMMIT": cur.Frontend}))
		pe2eSteps(t, j, map[string]queue.State{"hook-pre-build": queue.Succeeded, "hook-pre-swap": queue.Succeeded, "hook-post-deploy": queue.Failed})
		if !slices.ContainsFunc(j.Warnings, func(w string) bool { return strings.Contains(w, "post-deploy hook failed") }) {
			t.Fatalf("no warning for the failed post-deploy hook: %v", j.Warnings)
		}
		if out := h.concierge("logs", j.ID); !strings.Contains(out, "[hook-pre-swap] hook pre-swap says hello") {
			t.Fatalf("the hook's output is not in the job's output:\n%s", out)
		}
		h.serves("", "v1", "v1")
		h.install(hooks.PostDeploy, 0, 0o755)
	})
	t.Run("a failing pre-build hook leaves everything live as it was", func(t *testing.T) {
		before := h.live("")
		cur, _, _ := deploy.Current(p)
		h.install(hooks.PreBuild, 1, 0o755)
		h.push("", changeOf(sandbox.BackendVersion("v2", true)), changeOf(sandbox.FrontendVersion("v2")))
		h.drop(buildMain)
		j := h.runFailed()
		if got := h.ran(j.ID); !slices.Equal(got, []string{"pre-build", "on-failure"}) {
			t.Fatalf("hooks ran %v", got)
		}
		if !strings.Contains(j.Error, "pre-build hook failed, nothing live was changed") {
			t.Fatalf("job error %q", j.Error)
		}
		for _, s := range j.Steps {
			if !strings.HasPrefix(s.Name, "hook-") {
				t.Fatalf("the job went on to step %s after its pre-build hook failed", s.Name)
			}
		}
		h.wantEnv("on-failure", j.ID, map[string]string{"CONCIERGE_STATE": "failed", "CONCIERGE_ERROR": j.Error,
			"CONCIERGE_RELEASE": cur.ID, "CONCIERGE_BACKEND_COMMIT": cur.Backend})
		h.unchanged("", before)
		if after, _, _ := deploy.Current(p); after != cur {
			t.Fatalf("the live release changed: %+v → %+v", cur, after)
		}
		h.serves("", "v1", "v1")
		h.install(hooks.PreBuild, 0, 0o755)
	})
	t.Run("a rolled-back release runs post-rollback, then on-failure", func(t *testing.T) {
		prev, _, _ := deploy.Current(p)
		h.push("", changeOf(sandbox.BackendVersion("v3", false)), nil)
		h.drop(buildMain)
		j := h.runFailed("CONCIERGE_HEALTH_TIMEOUT=3s")
		if got := h.ran(j.ID); !slices.Equal(got, []string{"pre-build", "pre-swap", "post-rollback", "on-failure"}) {
			t.Fatalf("hooks ran %v", got)
		}
		for _, name := range []string{"post-rollback", "on-failure"} {
			env := h.wantEnv(name, j.ID, map[string]string{"CONCIERGE_STATE": "rolled-back", "CONCIERGE_ERROR": j.Error,
				"CONCIERGE_BACKEND_COMMIT": prev.Backend})
			if !strings.Contains(env["CONCIERGE_ERROR"], "rolled back to") {
				t.Fatalf("%s saw CONCIERGE_ERROR=%q", name, env["CONCIERGE_ERROR"])
			}
		}
		h.serves("", "v1", "v1")
	})
	t.Run("a hook writable by others is refused with the reason", func(t *testing.T) {
		h.install(hooks.PreBuild, 0, 0o757)
		h.drop(buildMain)
		j := h.runFailed()
		if got := h.ran(j.ID); !slices.Equal(got, []string{"on-failure"}) {
			t.Fatalf("hooks ran %v; the refused pre-build must not", got)
		}
		s := pe2eStep(t, j, "hook-pre-build")
		if s.State != queue.Failed || !strings.Contains(s.Error, "writable by group or others (mode 0757)") {
			t.Fatalf("hook-pre-build step %s: %s", s.State, s.Error)
		}
		if text := h.concierge("status"); !strings.Contains(text, "writable by group or others") {
			t.Fatalf("status does not say why:\n%s", text)
		}
		h.serves("", "v1", "v1")
	})
}

func merge(a, b map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}
