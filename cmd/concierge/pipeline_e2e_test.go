package main

// End-to-end tests of the build pipeline through the real concierge binary
// (bins.real) and real tools: git origins and clones made by
// internal/sandbox, `go build` of a tiny backend, real pnpm building a tiny
// frontend, the frontend under a real pm2 with its own PM2_HOME and the
// backend under a real systemd user manager. Triggers are dropped into
// <home>/state exactly as an operator would, and what is checked is what a
// user sees: HTTP answers on the ports, exit statuses, `concierge status`.
//
// Setup, as on a host the installer left: the backend unit is installed
// but has never run (there is no binary yet: the first `concierge run`
// builds it, and its `systemctl restart` starts the stopped unit); the
// frontend was built once by hand (pnpm install, pnpm build) and started
// under pm2, because `pm2 reload astro-main` needs a process to reload and
// pm2 cannot start a dist/server/entry.mjs that does not exist yet. The
// concierge never starts a pm2 process of its own.

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tractstack/concierge/deploy"
	"github.com/tractstack/concierge/internal/sandbox"
	"github.com/tractstack/concierge/queue"
)

// pe2eHost is a host (see liveHost) whose main install and sites the
// tests deploy through their release history.
type pe2eHost struct{ *liveHost }

// pe2eStart lays out a home with the main install and sites, installs
// their units and starts their frontends under pm2. frontendIsClone makes
// each frontend a git clone of its own origin (usually it is not one).
func pe2eStart(t *testing.T, frontendIsClone bool, sites ...string) *pe2eHost {
	t.Helper()
	return &pe2eHost{startLiveHost(t, liveOptions{
		installs:        append([]string{""}, sites...),
		frontendIsClone: frontendIsClone,
		env:             []string{"CONCIERGE_HEALTH_TIMEOUT=10s", "CONCIERGE_STEP_TIMEOUT=2m", "CONCIERGE_LOG_FORMAT=json"},
	})}
}

// runOK runs and requires exit 0 and a succeeded job.
func (h *pe2eHost) runOK() queue.Job {
	h.t.Helper()
	logs, code := h.run()
	j := h.lastJob()
	if code != 0 || j.State != queue.Succeeded {
		h.t.Fatalf("run exit %d, job %s (%s); want 0 and succeeded\njob: %s\nlogs:\n%s", code, j.State, j.Error, pe2eJSON(j), logs)
	}
	return j
}

// runFailed runs and requires exit 1 and a failed job.
func (h *pe2eHost) runFailed(extra ...string) queue.Job {
	h.t.Helper()
	logs, code := h.run(extra...)
	j := h.lastJob()
	if code != 1 || j.State != queue.Failed {
		h.t.Fatalf("run exit %d, job %s; want 1 and failed\njob: %s\nlogs:\n%s", code, j.State, pe2eJSON(j), logs)
	}
	return j
}

// lastJob is the newest job of `concierge status --json`.
func (h *pe2eHost) lastJob() queue.Job {
	h.t.Helper()
	jobs := h.jobs()
	if len(jobs) == 0 {
		h.t.Fatalf("status --json lists no job")
	}
	return jobs[len(jobs)-1]
}

func pe2eJSON(v any) string {
	b, _ := json.MarshalIndent(v, "", "  ")
	return string(b)
}

// pe2eStep returns the named step of j; it fails the test when j lacks it.
func pe2eStep(t *testing.T, j queue.Job, name string) queue.Step {
	t.Helper()
	for _, s := range j.Steps {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("job has no step %s:\n%s", name, pe2eJSON(j))
	return queue.Step{}
}

// pe2eSteps checks the states of the named steps of j.
func pe2eSteps(t *testing.T, j queue.Job, want map[string]queue.State) {
	t.Helper()
	for name, st := range want {
		if s := pe2eStep(t, j, name); s.State != st {
			t.Fatalf("step %s is %s, want %s:\n%s", name, s.State, st, pe2eJSON(j))
		}
	}
}

// restartByHand restarts both services as an operator (or a reboot)
// would, outside the concierge.
func (h *pe2eHost) restartByHand(site string) {
	h.t.Helper()
	p := h.paths(site)
	if out, err := h.sd.Systemctl("restart", p.Unit); err != nil {
		h.t.Fatalf("%v\n%s", err, out)
	}
	h.pm.Run("reload", p.Process)
}

// pe2eLive describes the live binary and frontend entry of a site.
type pe2eLive struct {
	binary os.FileInfo
	entry  string
}

func (h *pe2eHost) live(site string) pe2eLive {
	h.t.Helper()
	p := h.paths(site)
	fi, err := os.Stat(p.Binary)
	if err != nil {
		h.t.Fatal(err)
	}
	entry, err := os.ReadFile(p.Entry)
	if err != nil {
		h.t.Fatal(err)
	}
	return pe2eLive{binary: fi, entry: string(entry)}
}

// unchanged checks that a failed job left the live files as they were
// and no staging behind.
func (h *pe2eHost) unchanged(site string, before pe2eLive) {
	h.t.Helper()
	after := h.live(site)
	if !os.SameFile(before.binary, after.binary) || !after.binary.ModTime().Equal(before.binary.ModTime()) {
		h.t.Fatalf("the live binary changed: %v → %v", before.binary.ModTime(), after.binary.ModTime())
	}
	if after.entry != before.entry {
		h.t.Fatalf("the live dist changed: entry.mjs was\n%s\nis\n%s", before.entry, after.entry)
	}
	if _, err := os.Stat(h.paths(site).Staging); !os.IsNotExist(err) {
		h.t.Fatalf("staging left behind: %v", err)
	}
}

// hanging says whether the frontend's build script runs in the home,
// other than under keep.
func (h *pe2eHost) hanging(keep []int) bool {
	for _, s := range strays(h.sb.Dir, keep) {
		if strings.Contains(s, "build.mjs") {
			return true
		}
	}
	return false
}

// TestPipelineE2E drives a main install through its release history with
// the real concierge binary and real git, go, pnpm, pm2 and systemd. The
// steps run in order: each one builds on the releases the ones before made.
func TestPipelineE2E(t *testing.T) {
	h := pe2eStart(t, true, "acme")
	p := h.paths("")
	c1, err := sandbox.GitOutput(context.Background(), p.BackendSrc, "rev-parse", "HEAD")
	if err != nil {
		t.Fatal(err)
	}
	c1 = strings.TrimSpace(c1)
	var c2 string

	steps := []struct {
		name string
		fn   func(t *testing.T)
	}{
		{"first deploy starts the backend and reloads the frontend", func(t *testing.T) {
			if pid := h.sd.MainPID(p.Unit); pid != 0 {
				t.Fatalf("backend runs before the first deploy (pid %d)", pid)
			}
			before, _ := h.pm.Get(p.Process)
			h.drop(buildMain)
			j := h.runOK()
			pe2eSteps(t, j, map[string]queue.State{"build-backend": queue.Succeeded, "swap": queue.Succeeded,
				"restart-backend": queue.Succeeded, "health-backend": queue.Succeeded,
				"reload-frontend": queue.Succeeded, "health-frontend": queue.Succeeded})
			h.serves("", "v1", "v1")
			if after, _ := h.pm.Get(p.Process); after.RestartTime <= before.RestartTime || after.Status != "online" {
				t.Fatalf("pm2 was not reloaded: before %+v, after %+v", before, after)
			}
			if left, _ := os.ReadDir(h.sb.StateDir()); len(left) != 0 {
				t.Fatalf("the trigger was not consumed: %v", left)
			}
		}},
		{"an upstream change goes live, built in overlapping steps", func(t *testing.T) {
			// The frontend build is made slow enough that the two builds
			// overlap beyond doubt.
			c2 = h.push("", changeOf(sandbox.BackendVersion("v2", true)),
				mergeChanges(sandbox.FrontendVersion("v2"), sandbox.FrontendBuildDelay(2000)))
			h.drop(buildMain)
			j := h.runOK()
			h.serves("", "v2", "v2")
			back, front := pe2eStep(t, j, "build-backend"), pe2eStep(t, j, "build-frontend")
			if back.StartedAt == nil || back.FinishedAt == nil || front.StartedAt == nil || front.FinishedAt == nil {
				t.Fatalf("build steps lack times:\n%s", pe2eJSON(j))
			}
			if !back.StartedAt.Before(*front.FinishedAt) || !front.StartedAt.Before(*back.FinishedAt) {
				t.Fatalf("builds did not overlap: backend %s–%s, frontend %s–%s", back.StartedAt, back.FinishedAt, front.StartedAt, front.FinishedAt)
			}
			if cur, ok, err := deploy.Current(p); err != nil || !ok || cur.Backend != c2 {
				t.Fatalf("current release %+v, %t, %v; want backend %s", cur, ok, err, c2)
			}
		}},
		{"a backend that does not compile changes nothing live", func(t *testing.T) {
			before := h.live("")
			h.push("", changeOf(sandbox.BackendBroken()), changeOf(sandbox.FrontendBuildDelay(0)))
			h.drop(buildMain)
			j := h.runFailed()
			pe2eSteps(t, j, map[string]queue.State{"build-backend": queue.Failed})
			// The frontend build either finished first or was stopped
			// because the backend failed; it never fails on its own here.
			if fs := pe2eStep(t, j, "build-frontend"); fs.State != queue.Succeeded &&
				!strings.Contains(fs.Error, "stopped: the build-backend step failed") {
				t.Fatalf("build-frontend %s: %s", fs.State, fs.Error)
			}
			bs := pe2eStep(t, j, "build-backend")
			if tail := strings.Join(bs.Tail, "\n"); !strings.Contains(tail, "broken.go") {
				t.Fatalf("build-backend tail lacks the compiler output:\n%s", tail)
			}
			if !strings.Contains(j.Error, "nothing live was changed") {
				t.Fatalf("job error %q", j.Error)
			}
			for _, s := range j.Steps {
				if s.Name == "swap" || s.Name == "restart-backend" {
					t.Fatalf("a failed build went on to %s", s.Name)
				}
			}
			text := h.concierge("status")
			for _, want := range []string{"FAILED", j.ID + " failed: build failed", "last output of step build-backend:", "broken.go"} {
				if !strings.Contains(text, want) {
					t.Fatalf("status lacks %q:\n%s", want, text)
				}
			}
			h.unchanged("", before)
			h.serves("", "v2", "v2")
			h.restartByHand("")
			h.serves("", "v2", "v2")
		}},
		{"a frontend that fails to build changes nothing live", func(t *testing.T) {
			before := h.live("")
			// The backend is fixed and builds, but must not go live alone.
			// The frontend fails after 3 s, so the backend has usually built
			// by then; if not, it is stopped, and nothing may go live either way.
			h.push("", changeOf(sandbox.BackendVersion("v2.1", true)), mergeChanges(sandbox.FrontendBroken(), sandbox.FrontendBuildDelay(3000)))
			h.drop(buildMain)
			j := h.runFailed()
			pe2eSteps(t, j, map[string]queue.State{"build-frontend": queue.Failed})
			if bs := pe2eStep(t, j, "build-backend"); bs.State != queue.Succeeded &&
				!strings.Contains(bs.Error, "stopped: the build-frontend step failed") {
				t.Fatalf("build-backend %s: %s", bs.State, bs.Error)
			}
			fs := pe2eStep(t, j, "build-frontend")
			if tail := strings.Join(fs.Tail, "\n"); !strings.Contains(tail, "src/broken exists") {
				t.Fatalf("build-frontend tail lacks the build output:\n%s", tail)
			}
			text := h.concierge("status")
			if !strings.Contains(text, "last output of step build-frontend:") || !strings.Contains(text, "src/broken exists") {
				t.Fatalf("status lacks the failed step's output:\n%s", text)
			}
			h.unchanged("", before) // the old dist is back
			if !strings.Contains(before.entry, `"v2"`) {
				t.Fatalf("live entry.mjs is not v2's:\n%s", before.entry)
			}
			h.serves("", "v2", "v2")
			h.restartByHand("")
			h.serves("", "v2", "v2")
		}},
		{"an unhealthy backend is rolled back", func(t *testing.T) {
			h.push("", changeOf(sandbox.BackendVersion("v3", false)), changeOf(sandbox.FrontendVersion("v3")))
			h.drop(buildMain)
			j := h.runFailed("CONCIERGE_HEALTH_TIMEOUT=3s")
			if want := "rolled back to " + c2; !strings.Contains(j.Error, want) {
				t.Fatalf("job error %q lacks %q", j.Error, want)
			}
			pe2eSteps(t, j, map[string]queue.State{"swap": queue.Succeeded, "health-backend": queue.Failed,
				"rollback": queue.Succeeded, "restart-backend-previous": queue.Succeeded, "health-backend-previous": queue.Succeeded})
			h.serves("", "v2", "v2")
			if e := h.live("").entry; !strings.Contains(e, `"v2"`) {
				t.Fatalf("live dist is not v2's after the rollback:\n%s", e)
			}
			h.restartByHand("")
			h.serves("", "v2", "v2")
		}},
		{"the rollback command brings the previous release back", func(t *testing.T) {
			h.drop("type=main,tenant=default,command=rollback")
			j := h.runOK()
			pe2eSteps(t, j, map[string]queue.State{"rollback": queue.Succeeded, "health-backend": queue.Succeeded, "health-frontend": queue.Succeeded})
			h.serves("", "v1", "v1")
			if cur, ok, err := deploy.Current(p); err != nil || !ok || cur.Backend != c1 {
				t.Fatalf("current release %+v, %t, %v; want backend %s", cur, ok, err, c1)
			}
		}},
		{"the restart command restarts both services and checks them", func(t *testing.T) {
			pid := h.sd.MainPID(p.Unit)
			before, _ := h.pm.Get(p.Process)
			h.drop("type=main,tenant=default,command=restart")
			j := h.runOK()
			pe2eSteps(t, j, map[string]queue.State{"restart-backend": queue.Succeeded, "health-backend": queue.Succeeded,
				"reload-frontend": queue.Succeeded, "health-frontend": queue.Succeeded})
			if got := h.sd.MainPID(p.Unit); got == 0 || got == pid {
				t.Fatalf("backend main pid %d → %d", pid, got)
			}
			if after, _ := h.pm.Get(p.Process); after.RestartTime <= before.RestartTime || after.Status != "online" {
				t.Fatalf("pm2 was not reloaded: before %+v, after %+v", before, after)
			}
			h.serves("", "v1", "v1")
		}},
		{"a hanging step is killed at its timeout with nothing left behind", func(t *testing.T) {
			before := h.live("")
			h.push("", nil, changeOf(sandbox.FrontendBuildDelay(600000)))
			h.drop(buildMain)
			keep := h.services()
			// Long enough that the install before the build (which the
			// timeout bounds too) finishes on a busy machine, and the hanging
			// build is seen.
			pr := startProc(t, bins.real, setEnv(h.env, "CONCIERGE_STEP_TIMEOUT=20s"), "run")
			// The hanging build is seen while it hangs, so the check
			// after the timeout is known to see such processes.
			waitFor(t, "the hanging frontend build to be seen running", 30*time.Second, func() (bool, string) {
				return h.hanging(keep), pr.out.String()
			})
			if code := waitExit(t, pr); code != 1 {
				t.Fatalf("run exit %d, want 1\n%s", code, pr.out.String())
			}
			j := h.lastJob()
			fs := pe2eStep(t, j, "build-frontend")
			if j.State != queue.Failed || fs.State != queue.Failed || !strings.Contains(fs.Error, "timed out after 20s") || !strings.Contains(j.Error, "timed out after 20s") {
				t.Fatalf("want a failed job, its build-frontend timed out after 20s:\n%s", pe2eJSON(j))
			}
			waitNoStrays(t, h.sb.Dir, keep)
			h.unchanged("", before)
			h.serves("", "v1", "v1")
		}},
		{"a dedicated site builds and restarts its own services only", func(t *testing.T) {
			mainPID := h.sd.MainPID(p.Unit)
			mainPM, _ := h.pm.Get(p.Process)
			h.push("acme", changeOf(sandbox.BackendVersion("acme-v2", true)), changeOf(sandbox.FrontendVersion("acme-v2")))
			h.drop("type=dedicated,site=acme,command=build")
			j := h.runOK()
			if j.Target != "dedicated:acme" {
				t.Fatalf("job target %q", j.Target)
			}
			h.serves("acme", "acme-v2", "acme-v2")
			h.serves("", "v1", "v1")
			if got := h.sd.MainPID(p.Unit); got != mainPID {
				t.Fatalf("the main backend was restarted: pid %d → %d", mainPID, got)
			}
			if got, _ := h.pm.Get(p.Process); got.PID != mainPM.PID || got.RestartTime != mainPM.RestartTime {
				t.Fatalf("the main frontend was reloaded: %+v → %+v", mainPM, got)
			}
		}},
	}
	for _, s := range steps {
		if !t.Run(s.name, s.fn) {
			return // later steps build on this one
		}
	}
}

// TestPipelineE2EFrontendEditedInPlace is the usual host: the frontend is
// not a git clone (the installer made it with `pnpm create astro`) and is
// changed in place; the backend comes from its origin. Both go live in the
// first deploy, and the skipped frontend pull is no cause for a warning.
func TestPipelineE2EFrontendEditedInPlace(t *testing.T) {
	h := pe2eStart(t, false)
	p := h.paths("")
	if _, err := os.Stat(filepath.Join(p.FrontendSrc, ".git")); !os.IsNotExist(err) {
		t.Fatalf("the frontend is a git repository: %v", err)
	}
	h.push("", changeOf(sandbox.BackendVersion("v2", true)), nil)
	if err := sandbox.WriteFrontendFiles(p.FrontendSrc, sandbox.FrontendVersion("v2")); err != nil {
		t.Fatal(err)
	}
	if pid := h.sd.MainPID(p.Unit); pid != 0 {
		t.Fatalf("backend runs before the first deploy (pid %d)", pid)
	}
	h.drop(buildMain)
	j := h.runOK()
	pe2eSteps(t, j, map[string]queue.State{"pull-frontend": queue.Succeeded, "build-frontend": queue.Succeeded, "health-frontend": queue.Succeeded})
	if len(j.Warnings) != 0 {
		t.Fatalf("warnings %q", j.Warnings)
	}
	h.serves("", "v2", "v2")
	h.restartByHand("")
	h.serves("", "v2", "v2")
}
