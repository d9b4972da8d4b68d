package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tractstack/concierge/builder"
	"github.com/tractstack/concierge/internal/sandbox"
	"github.com/tractstack/concierge/queue"
	"github.com/tractstack/concierge/runner"
)

// TestBuildResourcesE2E drives the release binary on a live host: builds
// one after the other record why and what each used, shown by status; a
// build child runs with the documented priorities, and killed with
// SIGKILL (as the OOM killer does) fails the job saying so, while the site
// goes on serving the live release.
func TestBuildResourcesE2E(t *testing.T) {
	h := &pe2eHost{startLiveHost(t, liveOptions{
		installs: []string{""}, running: true, frontendIsClone: true,
		env: []string{"CONCIERGE_HEALTH_TIMEOUT=10s", "CONCIERGE_STEP_TIMEOUT=2m", "CONCIERGE_LOG_FORMAT=json",
			"CONCIERGE_BUILD_CONCURRENCY=off"},
	})}
	h.serves("", "v1", "v1")

	h.push("", changeOf(sandbox.BackendVersion("v2", true)), changeOf(sandbox.FrontendVersion("v2")))
	h.drop(buildMain)
	j := h.runOK()
	h.serves("", "v2", "v2")
	if len(j.Notes) != 1 || j.Notes[0] != "builds one after the other: CONCIERGE_BUILD_CONCURRENCY=off" {
		t.Fatalf("notes %q; want the decision and why", j.Notes)
	}
	back, front := pe2eStep(t, j, "build-backend"), pe2eStep(t, j, "build-frontend")
	if front.StartedAt.Before(*back.FinishedAt) {
		t.Fatalf("the frontend build started (%s) before the backend build ended (%s)", front.StartedAt, back.FinishedAt)
	}
	for _, s := range []queue.Step{back, front} {
		if s.PeakMemoryKiB < 1024 || s.CPUMS <= 0 {
			t.Fatalf("step %s records peak memory %d KiB, CPU %d ms; want both measured:\n%s", s.Name, s.PeakMemoryKiB, s.CPUMS, pe2eJSON(j))
		}
	}
	peak := max(back.PeakMemoryKiB, front.PeakMemoryKiB)
	if text := h.concierge("status"); !strings.Contains(text, "peak "+runner.MiB(peak)) {
		t.Fatalf("status lacks the job's peak memory (%d KiB):\n%s", peak, text)
	}

	// The frontend build now sleeps a minute: kill it meanwhile.
	h.push("", changeOf(sandbox.BackendVersion("v3", true)), mergeChanges(sandbox.FrontendVersion("v3"), sandbox.FrontendBuildDelay(60000)))
	h.drop(buildMain)
	run := startProc(t, bins.real, h.env, "run")
	mark := []byte(builder.OwnerEnv + "=" + filepath.Join(h.sb.Dir, "concierge") + "\x00")
	var child int
	waitFor(t, "the frontend's `pnpm build` to run", time.Minute, func() (bool, string) {
		if run.exited() {
			t.Fatalf("concierge ended before the frontend build:\n%s", run.out.String())
		}
		child = buildChild(run.cmd.Process.Pid, mark, "pnpm", "build")
		return child != 0, "no child of concierge runs pnpm build"
	})
	oom, nice, class := e2eProcAttrs(t, child)
	if oom != builder.BuildOOMScoreAdj || nice != builder.BuildNice || class != builder.BuildIOClass {
		t.Errorf("pnpm build runs with oom_score_adj %d, nice %d, I/O class %d; want %d, %d, %d",
			oom, nice, class, builder.BuildOOMScoreAdj, builder.BuildNice, builder.BuildIOClass)
	}
	if err := syscall.Kill(child, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if code := run.wait(t, time.Minute); code != 1 {
		t.Fatalf("run exit %d, want 1:\n%s", code, run.out.String())
	}
	j = h.lastJob()
	if j.State != queue.Failed || !strings.Contains(j.Error, "build failed, nothing live was changed: frontend:") ||
		!strings.Contains(j.Error, "run pnpm build: killed (signal 9") {
		t.Fatalf("job %s: %q; want failed, the frontend build killed", j.State, j.Error)
	}
	h.serves("", "v2", "v2")
	h.restartByHand("")
	h.serves("", "v2", "v2")
}

// buildChild returns a child of parent carrying mark whose command line
// holds prog and then arg as a word, or 0.
func buildChild(parent int, mark []byte, prog, arg string) int {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || parentPID(pid) != parent {
			continue
		}
		env, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		// Not choom before it has set the score and exec'd the program.
		before, _, found := bytes.Cut(append([]byte{0}, cmdline...), []byte("\x00"+arg+"\x00"))
		if bytes.Contains(append(env, 0), mark) && found && bytes.Contains(before, []byte(prog)) &&
			!bytes.HasPrefix(cmdline, []byte("choom\x00")) {
			return pid
		}
	}
	return 0
}

// e2eProcAttrs reads pid's oom_score_adj, nice value and I/O class.
func e2eProcAttrs(t *testing.T, pid int) (oom, nice, class int) {
	t.Helper()
	p, err := builder.ReadPriorities(pid)
	if err != nil {
		t.Fatal(err)
	}
	return p.OOMScoreAdj, p.Nice, p.IOClass
}
