package main

// Fault drills: concierge killed with SIGKILL at each step boundary of a
// real build, SIGTERM during a real build in watch mode, an unreachable
// origin, a data directory that cannot be written, a state directory
// removed and recreated under `watch`, and an fsnotify queue overflow.
// Each must end in a clear error or a rescan: never a crash, a lost
// trigger, a half-swapped site or a build process left running.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tractstack/concierge/deploy"
	"github.com/tractstack/concierge/internal/sandbox"
	"github.com/tractstack/concierge/internal/testtool"
	"github.com/tractstack/concierge/queue"
)

// fdHost is a host (see liveHost) with its main install running v1,
// driven by the release binary (the real pipeline).
type fdHost struct {
	*liveHost
	p     deploy.Paths // the main install's
	data  string       // the concierge's data directory
	stops string       // where the backend unit records how each process ended
	// services are the pids whose descendants are services, not build
	// children: the systemd user manager and the pm2 daemon.
	services []int
	live     string // the version both halves serve now
}

func fdStartHost(t *testing.T) *fdHost {
	t.Helper()
	// ExecStopPost records how each backend process ended, for a failure.
	stops := filepath.Join(t.TempDir(), "backend-stops.log")
	h := startLiveHost(t, liveOptions{
		installs:        []string{""},
		frontendIsClone: true,
		running:         true,
		serviceExtra: fmt.Sprintf("ExecStopPost=/bin/sh -c 'echo \"$(date +%%%%T.%%%%N) $SERVICE_RESULT $EXIT_CODE $EXIT_STATUS $MAINPID\" >> %s'\n",
			stops),
		env: []string{"CONCIERGE_LOG_FORMAT=json", "CONCIERGE_HEALTH_TIMEOUT=20s"},
	})
	return &fdHost{liveHost: h, p: h.paths(""), data: filepath.Join(h.sb.Dir, "concierge"), stops: stops, services: h.services(), live: "v1"}
}

// pushVersion commits version to both origins; the frontend build takes
// delayMS.
func (f *fdHost) pushVersion(version string, delayMS int) {
	f.t.Helper()
	f.push("", changeOf(sandbox.BackendVersion(version, true)), mergeChanges(sandbox.FrontendVersion(version), sandbox.FrontendBuildDelay(delayMS)))
}

// fdJobs reads the job records straight from the data directory (as
// status does, without a lock).
func fdJobs(data string) []queue.Job {
	jobs, _, _ := queue.ReadStore(data).Load()
	out := make([]queue.Job, 0, len(jobs))
	for _, j := range jobs {
		out = append(out, *j)
	}
	return out
}

func fdJobOf(jobs []queue.Job, trigger string) (queue.Job, bool) {
	for _, j := range jobs {
		if slices.Contains(j.Triggers, trigger) {
			return j, true
		}
	}
	return queue.Job{}, false
}

// fdEveryTriggerOnce checks that each trigger went into exactly one job,
// in a final state, and that no job waits or runs.
func fdEveryTriggerOnce(t *testing.T, jobs []queue.Job, triggers []string) {
	t.Helper()
	count := map[string]int{}
	for _, j := range jobs {
		if j.State == queue.Pending || j.State == queue.Running {
			t.Errorf("job %s is still %s (triggers %v)", j.ID, j.State, j.Triggers)
		}
		for _, tr := range j.Triggers {
			count[tr]++
		}
	}
	for _, tr := range triggers {
		if count[tr] != 1 {
			t.Errorf("trigger %s is in %d jobs, want 1", tr, count[tr])
		}
	}
	for _, j := range jobs {
		if j.State != queue.Succeeded && j.State != queue.Failed && j.State != queue.Rejected {
			t.Errorf("job %s in state %s", j.ID, j.State)
		}
	}
}

// consistent waits until both halves answer and returns the one release
// they serve; both must serve the same one, out of want.
func (f *fdHost) consistent(want ...string) string {
	f.t.Helper()
	var back, front string
	var err error
	if !poll(20*time.Second, 50*time.Millisecond, func() bool { back, front, err = f.answers(""); return err == nil }) {
		f.t.Fatalf("%s\nsite does not answer: %v", f.diag(), err)
	}
	if back != front || !slices.Contains(want, back) {
		f.t.Fatalf("%s\n"+"site serves backend %s and frontend %s; want one release out of %v", f.diag(), back, front, want)
	}
	return back
}

// diag describes the services, for a failure message.
func (f *fdHost) diag() string {
	st, _ := f.sd.Systemctl("show", "-p", "ActiveState,SubState,Result,ExecMainCode,ExecMainStatus,ExecMainPID,ExecMainStartTimestamp,ExecMainExitTimestamp,NRestarts", f.p.Unit)
	jr, _ := exec.Command("journalctl", "--no-pager", "-n", "30", "-o", "short-precise", "_SYSTEMD_USER_UNIT="+f.p.Unit).CombinedOutput()
	st += "\njournal:\n" + string(jr)
	stops, _ := os.ReadFile(f.stops)
	st += "\nbackend stops:\n" + string(stops)
	root := filepath.Dir(filepath.Dir(filepath.Dir(filepath.Dir(f.sd.UnitDir()))))
	if logs, _ := filepath.Glob(filepath.Join(root, "*", "systemd-user.log")); len(logs) > 0 {
		b, _ := os.ReadFile(logs[0])
		if len(b) > 4000 {
			b = b[len(b)-4000:]
		}
		st += "\nmanager log:\n" + string(b)
	}
	pmCmd := exec.Command("pm2", "jlist")
	pmCmd.Env = f.env
	pm, _ := pmCmd.Output()
	cur, _ := os.ReadFile(filepath.Join(f.p.Releases, "current.json"))
	ls, _ := exec.Command("ls", "-laR", f.p.BinDir).CombinedOutput()
	return fmt.Sprintf("systemctl status:\n%s\npm2 jlist: %.2000s\ncurrent: %s\n%s", st, pm, cur, ls)
}

// servesRelease checks that the site serves version, which is live now.
func (f *fdHost) servesRelease(version string) {
	f.t.Helper()
	f.consistent(version)
	f.live = version
}

// noStrays waits (briefly: a killed process takes a moment to go) until
// no build process of this host is left.
func (f *fdHost) noStrays() {
	f.t.Helper()
	waitNoStrays(f.t, f.sb.Dir, f.services)
}

// atStep waits until the job of trigger has a record of step (started, or
// already past: a short step may be over by the time it is seen), and
// says whether the step still runs.
func (f *fdHost) atStep(pr *proc, trigger, step string) (running bool) {
	f.t.Helper()
	reached := false
	poll(2*time.Minute, 2*time.Millisecond, func() bool {
		if j, ok := fdJobOf(fdJobs(f.data), trigger); ok && j.State == queue.Running {
			for _, s := range j.Steps {
				if s.Name == step {
					reached, running = true, s.State == queue.Running
					return true
				}
			}
		}
		return pr.exited()
	})
	switch {
	case reached:
		return running
	case pr.exited():
		f.t.Fatalf("concierge exited before step %s of %s:\n%s", step, trigger, pr.out.String())
	default:
		f.t.Fatalf("step %s of %s never started:\n%s", step, trigger, pr.out.String())
	}
	return false
}

// TestFaultDrillsRealPipeline drives the release binary against one real
// host (systemd user manager, pm2, git origins) through a sequence of
// faults; each case starts from what the previous one left live.
func TestFaultDrillsRealPipeline(t *testing.T) {
	f := fdStartHost(t)
	var triggers []string

	// kill -9 at each step boundary of a build, then `run` again.
	for i, c := range []struct {
		step    string
		delayMS int // frontend build time, to catch the build mid-way
	}{
		{"pull-backend", 0},
		{"build-frontend", 1500},
		{"swap", 0},
		{"restart-backend", 0},
		{"reload-frontend", 0},
		{"health-backend", 0},
	} {
		ok := t.Run("kill9-at-"+c.step, func(t *testing.T) {
			f.t = t
			old, next := f.live, fmt.Sprintf("v%d", i+2)
			f.pushVersion(next, c.delayMS)
			trig := f.drop(buildMain)
			triggers = append(triggers, trig)
			pr := startProc(t, bins.real, f.env, "run")
			running := f.atStep(pr, trig, c.step)
			if c.delayMS > 0 {
				// The step record comes before its children: wait for one.
				eventually(t, "a build process", time.Minute, func() bool {
					return len(strays(f.sb.Dir, f.services)) > 0
				})
			}
			if err := pr.cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			pr.wait(t, 10*time.Second)
			left := strays(f.sb.Dir, f.services)
			t.Logf("killed at %s (step still running: %t); build processes left by the kill: %d", c.step, running, len(left))
			if c.step == "build-frontend" && len(left) == 0 {
				t.Errorf("a kill mid-build left no build process: the drill did not catch the build")
			}
			logs, code := f.run()
			jobs := f.jobs()
			fdEveryTriggerOnce(t, jobs, triggers)
			j, _ := fdJobOf(jobs, trig)
			if code != 0 || j.State != queue.Succeeded {
				t.Errorf("recovery run exit %d, job %s %s: %s\n%s", code, j.ID, j.State, j.Error, logs)
			}
			if j.Attempts != 2 {
				t.Errorf("job ran %d times, want 2 (killed, then re-run)", j.Attempts)
			}
			f.live = f.consistent(old, next)
			t.Logf("site serves %s (old %s, new %s)", f.live, old, next)
			f.noStrays()
			if left := dirNames(t, f.sb.StateDir()); len(left) != 0 {
				t.Errorf("state dir still holds %v", left)
			}
		})
		if !ok {
			return
		}
	}

	// SIGTERM during a build in watch mode: the build's children are
	// ended, the job goes back to pending, watch exits 0; a run finishes it.
	if !t.Run("sigterm-watch-mid-build", func(t *testing.T) {
		f.t = t
		old, next := f.live, "v20"
		f.pushVersion(next, 3000)
		pr := startProc(t, bins.real, f.env, "watch")
		trig := f.drop(buildMain)
		triggers = append(triggers, trig)
		f.atStep(pr, trig, "build-frontend")
		if err := pr.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if code := pr.wait(t, 30*time.Second); code != 0 {
			t.Fatalf("watch exit %d after SIGTERM, want 0:\n%s", code, pr.out.String())
		}
		j, ok := fdJobOf(f.jobs(), trig)
		if !ok || j.State != queue.Pending {
			t.Fatalf("after SIGTERM the job is %+v; want it pending", j)
		}
		f.noStrays()
		f.consistent(old)
		logs, code := f.run()
		jobs := f.jobs()
		fdEveryTriggerOnce(t, jobs, triggers)
		if j, _ := fdJobOf(jobs, trig); code != 0 || j.State != queue.Succeeded || j.Attempts != 2 {
			t.Fatalf("run after SIGTERM: exit %d, job %+v\n%s", code, j, logs)
		}
		f.servesRelease(next)
		f.noStrays()
	}) {
		return
	}

	// The backend origin is unreachable: the job fails naming the
	// repository, the trigger is not lost, the site keeps serving.
	t.Run("origin-unreachable", func(t *testing.T) {
		f.t = t
		f.pushVersion("v30", 0)
		origin := f.sb.BackendOrigin("")
		if err := os.Rename(origin, origin+".away"); err != nil {
			t.Fatal(err)
		}
		defer os.Rename(origin+".away", origin)
		trig := f.drop(buildMain)
		triggers = append(triggers, trig)
		logs, code := f.run()
		if code != 1 {
			t.Fatalf("run exit %d, want 1:\n%s", code, logs)
		}
		jobs := f.jobs()
		fdEveryTriggerOnce(t, jobs, triggers)
		j, _ := fdJobOf(jobs, trig)
		if j.State != queue.Failed || !strings.Contains(j.Error, f.p.BackendSrc) {
			t.Fatalf("job %s %s: error %q; want failed, naming %s", j.ID, j.State, j.Error, f.p.BackendSrc)
		}
		t.Logf("error: %s", j.Error)
		if left := dirNames(t, f.sb.StateDir()); len(left) != 0 {
			t.Fatalf("state dir still holds %v", left)
		}
		f.servesRelease(f.live)
		f.noStrays()
	})
}

// fdReadOnly makes dir read-only with a read-only bind mount (the tests run
// as root, for whom permissions do not stop writes); t.Cleanup unmounts.
// It returns the function that removes the fault.
func fdReadOnly(t *testing.T, dir string) (undo func()) {
	t.Helper()
	if os.Geteuid() != 0 {
		testtool.Missing(t, "a read-only bind mount needs root")
	}
	testtool.Require(t, "mount", "umount")
	if out, err := exec.Command("mount", "--bind", dir, dir).CombinedOutput(); err != nil {
		testtool.Missing(t, fmt.Sprintf("mount --bind is not permitted here: %v: %s", err, out))
	}
	mounted := true
	undo = func() {
		if mounted {
			if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
				t.Errorf("umount %s: %v: %s", dir, err, out)
			}
			mounted = false
		}
	}
	t.Cleanup(undo)
	if out, err := exec.Command("mount", "-o", "remount,ro,bind", dir).CombinedOutput(); err != nil {
		testtool.Missing(t, fmt.Sprintf("remount read-only is not permitted here: %v: %s", err, out))
	}
	if err := os.WriteFile(filepath.Join(dir, "probe"), nil, 0o644); err == nil {
		t.Fatalf("%s is still writable after the read-only remount", dir)
	}
	return undo
}

// TestFaultStateDirRecreatedWhileWatching: the state directory is removed
// and made again under a running watch; triggers dropped in the new one
// are processed (the watcher re-arms and rescans).
func TestFaultStateDirRecreatedWhileWatching(t *testing.T) {
	h := newHome(t)
	watch, logs := h.start("watch")
	h.drop("build-1.csv", "type=main,command=build")
	eventually(t, "the first trigger to run", 20*time.Second, func() bool { return len(h.ends()) == 1 })
	state := filepath.Join(h.dir, "state")
	if err := os.RemoveAll(state); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the watcher to notice", 20*time.Second, func() bool {
		return strings.Contains(logs.String(), "state directory removed")
	})
	if err := os.Mkdir(state, 0o755); err != nil {
		t.Fatal(err)
	}
	h.drop("build-2.csv", "type=dedicated,site=acme,command=build")
	eventually(t, "the trigger in the new directory to run", 20*time.Second, func() bool { return len(h.ends()) == 2 })
	// And the re-armed watch sees the next one as it arrives.
	h.drop("build-3.csv", "type=main,command=build")
	eventually(t, "a trigger after the re-arm to run", 20*time.Second, func() bool { return len(h.ends()) == 3 })
	watch.cmd.Process.Signal(syscall.SIGTERM)
	if code := waitExit(t, watch); code != 0 {
		t.Fatalf("watch exit %d:\n%s", code, logs)
	}
	fdEveryTriggerOnce(t, h.status(), []string{"build-1.csv", "build-2.csv", "build-3.csv"})
	if left := h.stateEntries(); len(left) != 0 {
		t.Fatalf("state dir still holds %v", left)
	}
}

// TestFaultInotifyOverflow: more triggers arrive at once than the kernel's
// inotify queue holds (the watch process is stopped meanwhile, so the
// overflow is certain; the limit is system-wide and is not touched). The
// watcher rescans, and every trigger goes into exactly one job.
func TestFaultInotifyOverflow(t *testing.T) {
	max := 16384
	if b, err := os.ReadFile("/proc/sys/fs/inotify/max_queued_events"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			max = n
		}
	}
	n := max + 1000
	if n > 100000 {
		t.Skipf("max_queued_events is %d: too many files to overflow it cheaply", max)
	}
	h := newHome(t)
	watch, logs := h.start("watch")
	eventually(t, "watch to arm", 20*time.Second, func() bool { return strings.Contains(logs.String(), "watching for triggers") })
	if err := watch.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := true
	defer func() {
		if stopped {
			watch.cmd.Process.Signal(syscall.SIGCONT)
		}
	}()
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("build-%06d.csv", i)
		h.drop(names[i], "type=main,tenant=default,command=build")
	}
	if err := watch.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	stopped = false
	eventually(t, "every trigger to be taken in", 2*time.Minute, h.allTakenIn)
	eventually(t, "the jobs to finish", time.Minute, func() bool {
		for _, j := range fdJobs(filepath.Join(h.dir, "concierge")) {
			if j.State == queue.Pending || j.State == queue.Running {
				return false
			}
		}
		return true
	})
	watch.cmd.Process.Signal(syscall.SIGTERM)
	if code := waitExit(t, watch); code != 0 {
		t.Fatalf("watch exit %d:\n%s", code, logs)
	}
	if !strings.Contains(logs.String(), "fsnotify queue overflowed") {
		t.Errorf("no overflow was reported; the drill did not overflow the queue")
	}
	jobs := h.status()
	fdEveryTriggerOnce(t, jobs, names)
	t.Logf("%d triggers became %d job(s); %d build(s) ran", n, len(jobs), len(h.ends()))
	for _, j := range jobs {
		if j.State != queue.Succeeded {
			t.Errorf("job %s %s: %s", j.ID, j.State, j.Error)
		}
	}
}
