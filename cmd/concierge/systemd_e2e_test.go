package main

// The shipped systemd units under a real systemd user manager (a private
// one per test, internal/systemdtest) and the real journald: the
// t8k-build-watcher path/service pair started by a trigger an operator
// drops, and concierge.service (`watch`) as Type=notify with its watchdog.
// The units are the shipped ones rendered with systemd.Render for a user
// manager; the only additions are test drop-ins that count the service's
// starts (ExecStartPre=mktemp) and drop a file the instant the run ends
// (ExecStartPost=mv), each said where it is made.
//
// Facts these tests rest on (systemd 252, no systemd as PID 1, root):
//   - The private user manager puts its units in cgroups at the root of
//     the hierarchy (/app.slice/<unit>), so journald files their lines
//     under _SYSTEMD_UNIT=<unit>: `journalctl -u` finds them, while
//     `--user-unit` does not. Two managers running at once share those
//     cgroups (stopping a unit in one kills the same-named unit's
//     processes in the other), so the backend here is a dedicated site with
//     a random id, whose unit name no other test uses.
//   - The user manager writes no "Started"/"Finished" lines anywhere, so
//     starts are counted with an ExecStartPre= drop-in.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tractstack/concierge/deploy/systemd"
	"github.com/tractstack/concierge/internal/sandbox"
	"github.com/tractstack/concierge/internal/systemdtest"
	"github.com/tractstack/concierge/internal/testtool"
	"github.com/tractstack/concierge/queue"
)

const (
	sdPath    = "t8k-build-watcher.path"
	sdService = "t8k-build-watcher.service"
	sdWatch   = "concierge.service"
)

// sdHost is a TractStack home whose concierge units run under a private
// systemd user manager.
type sdHost struct {
	t   *testing.T
	sd  *systemdtest.Manager
	dir string // the home
	bin string // the concierge binary the units run
}

// sdNewHost prepares the home's directories (state, log, etc, and the
// test's starts, late and fake) and writes etc/concierge.env, which the
// units read through EnvironmentFile=: the manager's XDG_RUNTIME_DIR (so
// `systemctl --user` inside the service reaches this manager) and extra
// (which wins over those).
func sdNewHost(t *testing.T, sd *systemdtest.Manager, dir, bin string, extra ...string) *sdHost {
	t.Helper()
	for _, d := range []string{"state", "log", "etc", "starts", "late", "fake"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	h := &sdHost{t: t, sd: sd, dir: dir, bin: bin}
	env := setEnv(append([]string{"CONCIERGE_SYSTEMCTL=systemctl --user"}, sd.Env()...), extra...)
	mustWrite(t, filepath.Join(dir, "etc", "concierge.env"), strings.Join(env, "\n")+"\n")
	return h
}

// sdRefused are the sandboxing options this machine's container refuses
// to set up for any unit (the service fails with 226/NAMESPACE: its /proc
// cannot be remounted), so the tests' units go without them; README,
// "Sandboxing", says why they are safe.
var sdRefused = []string{"ProtectKernelTunables=yes", "ProtectKernelLogs=yes"}

// render renders a shipped unit for this user manager and home with its
// sandbox: the private manager runs as root, so it applies it (but for
// sdRefused).
func (h *sdHost) render(name string) string {
	h.t.Helper()
	text, err := systemd.Render(name, systemd.Options{Binary: h.bin, Home: h.dir, UserManager: true, Sandboxed: true})
	if err != nil {
		h.t.Fatal(err)
	}
	for _, o := range sdRefused {
		text = strings.Replace(text, "\n"+o+"\n", "\n", 1)
	}
	return text
}

// testPaths writes a drop-in for a service that lets its sandbox reach
// what this test keeps outside the home and a host keeps in it or in
// /usr: the concierge binary (read-only), the manager's runtime dir
// (`systemctl --user`), and the HOME and PM2_HOME of concierge.env (the
// test's warm Go caches, its pm2 daemon). All live in /tmp, which
// PrivateTmp= replaces, and /root, which ProtectHome= hides. And
// journald's sockets: in this container /run is not a mount point, so
// ProtectControlGroups= (which mounts the API file systems) puts an empty
// tmpfs there; on a host /run is a tmpfs of its own, which systemd leaves.
func (h *sdHost) testPaths(unit string) {
	h.t.Helper()
	data, err := os.ReadFile(filepath.Join(h.dir, "etc", "concierge.env"))
	if err != nil {
		h.t.Fatal(err)
	}
	paths := []string{h.sd.RuntimeDir(), "-/run/systemd/journal"}
	for _, l := range strings.Split(string(data), "\n") {
		k, v, _ := strings.Cut(l, "=")
		if (k == "HOME" || k == "PM2_HOME") && filepath.IsAbs(v) {
			paths = append(paths, v)
		}
	}
	h.dropIn(unit, "test-paths.conf", fmt.Sprintf("[Service]\nBindReadOnlyPaths=%s\nBindPaths=%s\n",
		filepath.Dir(h.bin), strings.Join(paths, " ")))
}

// sandboxed checks that a process of the service runs in its sandbox:
// no capabilities, no new privileges, a seccomp filter, the root file
// system read-only and the home writable.
func (h *sdHost) sandboxed(pid string) {
	h.t.Helper()
	status, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		h.t.Fatal(err)
	}
	for _, want := range []string{"CapBnd:\t0000000000000000", "CapEff:\t0000000000000000", "NoNewPrivs:\t1", "Seccomp:\t2"} {
		if !strings.Contains(string(status), want+"\n") {
			h.t.Fatalf("process %s of the service lacks %q:\n%s", pid, want, status)
		}
	}
	mounts, err := os.ReadFile("/proc/" + pid + "/mountinfo")
	if err != nil {
		h.t.Fatal(err)
	}
	opts := map[string]string{} // mount point → options of its last (top) mount
	for _, l := range strings.Split(string(mounts), "\n") {
		if f := strings.Fields(l); len(f) > 5 {
			opts[f[4]] = f[5]
		}
	}
	if o := opts["/"]; !strings.HasPrefix(o, "ro") {
		h.t.Fatalf("/ is mounted %q in the service, want read-only", o)
	}
	if o := opts[h.dir]; !strings.HasPrefix(o, "rw") {
		h.t.Fatalf("the home %s is mounted %q in the service, want read-write", h.dir, o)
	}
}

// dropIn writes a drop-in for unit (no reload).
func (h *sdHost) dropIn(unit, name, content string) {
	h.t.Helper()
	d := filepath.Join(h.sd.UnitDir(), unit+".d")
	if err := os.MkdirAll(d, 0o755); err != nil {
		h.t.Fatal(err)
	}
	mustWrite(h.t, filepath.Join(d, name), content)
}

// installPathPair installs the rendered path/service pair plus the test
// drop-ins: ExecStartPre= makes one file in starts/ per start of the
// service; ExecStartPost= moves whatever the test put in late/ into
// state/ after concierge has exited but while the unit is still active
// (each '-' so a missing file is no failure). Then it enables and starts
// the path unit.
func (h *sdHost) installPathPair() {
	h.t.Helper()
	mktemp, err := exec.LookPath("mktemp")
	if err != nil {
		h.t.Fatal(err)
	}
	mv, err := exec.LookPath("mv")
	if err != nil {
		h.t.Fatal(err)
	}
	h.dropIn(sdService, "test-count.conf", fmt.Sprintf("[Service]\nExecStartPre=%s -p %s start.XXXXXXXX\n",
		mktemp, filepath.Join(h.dir, "starts")))
	late, state := filepath.Join(h.dir, "late"), filepath.Join(h.dir, "state")
	h.dropIn(sdService, "test-late.conf", fmt.Sprintf("[Service]\nExecStartPost=-%[1]s %[2]s/late-notes.txt %[3]s/late-notes.txt\nExecStartPost=-%[1]s %[2]s/build-late.csv %[3]s/build-late.csv\n",
		mv, late, state))
	h.testPaths(sdService)
	mustWrite(h.t, filepath.Join(h.sd.UnitDir(), sdService), h.render(sdService))
	h.sd.InstallUnit(sdPath, h.render(sdPath))
	if out, err := h.sd.Systemctl("enable", "--now", sdPath); err != nil {
		h.t.Fatalf("enable --now %s: %v\n%s", sdPath, err, out)
	}
	h.t.Cleanup(func() { h.sd.Systemctl("stop", sdPath, sdService) })
}

// show returns one property of a unit.
func (h *sdHost) show(unit, prop string) string {
	h.t.Helper()
	out, err := h.sd.Systemctl("show", "-p", prop, "--value", unit)
	if err != nil {
		h.t.Fatalf("show %s of %s: %v", prop, unit, err)
	}
	return strings.TrimSpace(out)
}

// trigger drops a trigger as an operator would: a shell redirection in
// the home, named by the shell's date (name is the file name, with $(...)
// left to the shell).
func (h *sdHost) trigger(line, name string) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "-c", fmt.Sprintf(`echo "%s" > state/%s`, line, name))
	cmd.Dir = h.dir
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	if out, err := cmd.CombinedOutput(); err != nil {
		h.t.Fatalf("drop trigger: %v\n%s", err, out)
	}
}

func (h *sdHost) count(sub string) int {
	h.t.Helper()
	return len(dirNames(h.t, filepath.Join(h.dir, sub)))
}

// starts is how many times the service has started.
func (h *sdHost) starts() int { return h.count("starts") }

// triggers lists the build-*.csv files in state/.
func (h *sdHost) triggers() []string {
	h.t.Helper()
	var out []string
	for _, name := range dirNames(h.t, filepath.Join(h.dir, "state")) {
		if queue.IsTriggerName(name) {
			out = append(out, name)
		}
	}
	return out
}

// fakeEnds counts the jobs the fake executor finished.
func (h *sdHost) fakeEnds() int {
	h.t.Helper()
	return len(endsOf(fakeRuns(h.t, filepath.Join(h.dir, "fake"))))
}

// jobs is `concierge status --json`.
func (h *sdHost) jobs() []queue.Job {
	h.t.Helper()
	return statusJobs(h.t, h.bin, []string{"PATH=" + os.Getenv("PATH"), "T8K_HOME=" + h.dir})
}

// settled waits until no trigger is left, the service is inactive and
// cond holds; then it checks the service's last run succeeded.
func (h *sdHost) settled(what string, timeout time.Duration, cond func() bool) {
	h.t.Helper()
	waitFor(h.t, what, timeout, func() (bool, string) {
		trig := h.triggers()
		state := h.show(sdService, "ActiveState")
		return len(trig) == 0 && state == "inactive" && cond(),
			fmt.Sprintf("triggers %q, service %s, starts %d", trig, state, h.starts())
	})
	if r := h.show(sdService, "Result"); r != "success" {
		h.t.Fatalf("%s: last run of %s: Result=%s", what, sdService, r)
	}
}

// steady checks that the start count does not move for d (a unit that
// loops restarts within milliseconds, up to its start limit), and that
// the path unit is still waiting, not failed by its start limit.
func (h *sdHost) steady(what string, want int) {
	h.t.Helper()
	deadline := time.Now().Add(1500 * time.Millisecond)
	for {
		if got := h.starts(); got != want {
			h.t.Fatalf("%s: %s started %d times, want %d", what, sdService, got, want)
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if st, res := h.show(sdPath, "ActiveState"), h.show(sdPath, "Result"); st != "active" || res != "success" {
		h.t.Fatalf("%s: %s is %s (Result=%s)", what, sdPath, st, res)
	}
}

// TestSystemdPathUnitDoesNotLoopAndCatchesLateTriggers drives the shipped
// path/service pair (with the fake executor, whose gate holds a job) and
// counts the service's starts.
func TestSystemdPathUnitDoesNotLoopAndCatchesLateTriggers(t *testing.T) {
	testtool.Require(t, "sh", "mktemp", "mv")
	sd := systemdtest.Start(t)
	dir := t.TempDir()
	h := sdNewHost(t, sd, dir, bins.fake, "CONCIERGE_FAKE_DIR="+filepath.Join(dir, "fake"))
	state := filepath.Join(dir, "state")

	// A stray file that was there before: the path unit starts and waits;
	// the file never starts the service (DirectoryNotEmpty= would loop).
	mustWrite(t, filepath.Join(state, "notes.txt"), "operator's notes\n")
	h.installPathPair()
	h.steady("stray notes.txt, no trigger", 0)

	// One trigger, dropped as an operator does: one start, one job.
	h.trigger("type=main,tenant=default,command=build", "build-$(date +%s).csv")
	h.settled("the first trigger to be built", 30*time.Second, func() bool { return h.fakeEnds() == 1 })
	if h.starts() != 1 {
		t.Fatalf("one trigger: %d starts, want 1", h.starts())
	}
	h.steady("after one trigger", 1)

	// A stray file created while the path unit waits: at most one run
	// that finds nothing to do, never a loop. (systemd 252 with both
	// PathModified= and PathExistsGlob= starts that run only sometimes:
	// seen both ways on this machine.)
	before := h.starts()
	mustWrite(t, filepath.Join(state, "notes-2.txt"), "more notes\n")
	poll(time.Second, 50*time.Millisecond, func() bool { return h.starts() != before })
	h.settled("the path unit to wait again after notes-2.txt", 10*time.Second, func() bool { return true })
	strayRuns := h.starts() - before
	if strayRuns > 1 {
		t.Fatalf("a stray file started the service %d times, want at most 1", strayRuns)
	}
	t.Logf("a stray file created while waiting started %d run(s)", strayRuns)
	h.steady("after a stray file", before+strayRuns)

	// A trigger dropped while a job runs is taken in by the same run: one
	// start for the whole batch, one follow-up job.
	before = h.starts()
	mustWrite(t, filepath.Join(dir, "fake", "gate"), "")
	h.trigger("type=main,tenant=default,command=build", "build-$(date +%s%N).csv")
	waitFor(t, "the job to hold at the gate", 20*time.Second, func() (bool, string) {
		return h.count("fake") >= 3, fmt.Sprintf("fake dir has %d entries", h.count("fake")) // runs.jsonl, gate, running-<id>
	})
	h.trigger("type=main,tenant=second,command=build", "build-$(date +%s%N).csv")
	if got := h.triggers(); len(got) != 1 || h.show(sdService, "ActiveState") != "activating" {
		t.Fatalf("while the job holds: triggers %q, service %s", got, h.show(sdService, "ActiveState"))
	}
	os.Remove(filepath.Join(dir, "fake", "gate"))
	h.settled("the job and its follow-up", 30*time.Second, func() bool { return h.fakeEnds() == 3 })
	if got := h.starts() - before; got != 1 {
		t.Fatalf("a trigger during a run: %d starts for the batch, want 1", got)
	}
	h.steady("after a trigger during a run", before+1)

	// A file that lands after concierge's last scan, while the unit is
	// still active (ExecStartPost= moves it in): systemd 252 does not act
	// on PathModified= events of a running unit (systemd issue 5770)...
	before = h.starts()
	mustWrite(t, filepath.Join(dir, "late", "late-notes.txt"), "late notes\n")
	h.trigger("type=main,tenant=default,command=build", "build-$(date +%s%N).csv")
	h.settled("a run that ends with a late stray file", 30*time.Second, func() bool { return h.fakeEnds() == 4 })
	if _, err := os.Stat(filepath.Join(state, "late-notes.txt")); err != nil {
		t.Fatalf("ExecStartPost= did not move the late file: %v", err)
	}
	if got := h.starts() - before; got != 1 {
		t.Fatalf("a late stray file: %d starts, want 1", got)
	}
	h.steady("after a late stray file", before+1)

	// ...but it re-checks PathExistsGlob= when the service ends: a late
	// trigger starts the service once more and is built.
	before = h.starts()
	mustWrite(t, filepath.Join(dir, "late", "build-late.csv"), "type=main,tenant=late,command=build\n")
	h.trigger("type=main,tenant=default,command=build", "build-$(date +%s%N).csv")
	h.settled("a run that ends with a late trigger, and the next run", 30*time.Second, func() bool {
		_, err := os.Stat(filepath.Join(dir, "late", "build-late.csv"))
		return os.IsNotExist(err) && h.fakeEnds() == 6
	})
	if got := h.starts() - before; got != 2 {
		t.Fatalf("a late trigger: %d starts, want 2", got)
	}
	h.steady("after a late trigger", before+2)
	var late bool
	for _, j := range h.jobs() {
		if len(j.Triggers) == 1 && j.Triggers[0] == "build-late.csv" {
			late = j.State == queue.Succeeded
		}
	}
	if !late {
		t.Fatalf("no succeeded job for build-late.csv: %+v", h.jobs())
	}

	// Quick runs in a row (each batch dropped once the last run is over)
	// stay below the service's start limit: with systemd's default (5 in
	// 10s) the 6th start is refused and the path unit fails for good
	// (unit-start-limit-hit).
	before, ends := h.starts(), h.fakeEnds()
	for i := 1; i <= 7; i++ {
		h.trigger("type=main,tenant=default,command=build", "build-$(date +%s%N).csv")
		h.settled(fmt.Sprintf("quick run %d of 7", i), 20*time.Second, func() bool { return h.fakeEnds() == ends+i })
	}
	if got := h.starts() - before; got != 7 {
		t.Fatalf("7 quick batches: %d starts, want 7", got)
	}
	h.steady("after 7 quick runs", before+7)
}

// TestSystemdWatchServiceNotifyWatchdogAndStop runs the shipped
// concierge.service (`concierge watch`, Type=notify) with the fake
// executor and WatchdogSec=2s instead of 60s.
func TestSystemdWatchServiceNotifyWatchdogAndStop(t *testing.T) {
	testtool.Require(t, "sh")
	sd := systemdtest.Start(t)
	dir := t.TempDir()
	h := sdNewHost(t, sd, dir, bins.fake, "CONCIERGE_FAKE_DIR="+filepath.Join(dir, "fake"))
	text := h.render(sdWatch)
	if !strings.Contains(text, "\nWatchdogSec=60s\n") || !strings.Contains(text, "\nType=notify\n") {
		t.Fatalf("concierge.service is not Type=notify with WatchdogSec=60s:\n%s", text)
	}
	h.testPaths(sdWatch)
	sd.InstallUnit(sdWatch, strings.Replace(text, "\nWatchdogSec=60s\n", "\nWatchdogSec=2s\n", 1))
	t.Cleanup(func() { sd.Systemctl("stop", sdWatch) })

	// `systemctl start` of a Type=notify unit returns once READY=1 came.
	if out, err := sd.Systemctl("start", sdWatch); err != nil {
		t.Fatalf("start: %v\n%s", err, out)
	}
	if st, sub := h.show(sdWatch, "ActiveState"), h.show(sdWatch, "SubState"); st != "active" || sub != "running" {
		t.Fatalf("after start: %s/%s, want active/running", st, sub)
	}
	waitFor(t, "StatusText=idle", 10*time.Second, func() (bool, string) {
		s := h.show(sdWatch, "StatusText")
		return s == "idle", s
	})

	// The keep-alives keep it up over more than two watchdog periods.
	pid := h.show(sdWatch, "MainPID")
	h.sandboxed(pid)
	wd := h.show(sdWatch, "WatchdogTimestampMonotonic")
	if h.show(sdWatch, "WatchdogUSec") != "2s" {
		t.Fatalf("WatchdogUSec=%s, want 2s", h.show(sdWatch, "WatchdogUSec"))
	}
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(500 * time.Millisecond) {
		st, p, n := h.show(sdWatch, "ActiveState"), h.show(sdWatch, "MainPID"), h.show(sdWatch, "NRestarts")
		if st != "active" || p != pid || n != "0" {
			t.Fatalf("with WatchdogSec=2s: %s, MainPID %s (was %s), NRestarts %s", st, p, pid, n)
		}
	}
	if now := h.show(sdWatch, "WatchdogTimestampMonotonic"); now == wd || now == "0" {
		t.Fatalf("no keep-alive received: WatchdogTimestampMonotonic %s → %s", wd, now)
	}

	// A trigger is built; STATUS= names the job while it runs.
	mustWrite(t, filepath.Join(dir, "fake", "gate"), "")
	h.trigger("type=main,tenant=default,command=build", "build-$(date +%s).csv")
	id := fakeRunningJob(t, filepath.Join(dir, "fake"), nil)
	waitFor(t, "StatusText naming the job", 10*time.Second, func() (bool, string) {
		s := h.show(sdWatch, "StatusText")
		return strings.Contains(s, id) && strings.Contains(s, "build main"), s
	})
	os.Remove(filepath.Join(dir, "fake", "gate"))
	waitFor(t, "the job to finish and StatusText=idle", 20*time.Second, func() (bool, string) {
		s := h.show(sdWatch, "StatusText")
		return h.fakeEnds() == 1 && s == "idle" && len(h.triggers()) == 0, s
	})

	// Stopped while a job holds: concierge cancels the step, the job is
	// pending again, and it exits 0 well before TimeoutStopSec=.
	mustWrite(t, filepath.Join(dir, "fake", "gate"), "")
	h.trigger("type=main,tenant=default,command=build", "build-$(date +%s%N).csv")
	id2 := fakeRunningJob(t, filepath.Join(dir, "fake"), map[string]bool{id: true})
	if out, err := sd.Systemctl("stop", "--no-block", sdWatch); err != nil {
		t.Fatalf("stop: %v\n%s", err, out)
	}
	waitFor(t, "concierge.service to stop", 20*time.Second, func() (bool, string) {
		st := h.show(sdWatch, "ActiveState")
		return st == "inactive" || st == "failed", st
	})
	// ExecMainStatus is the exit status, or the signal for a process
	// killed (ExecMainCode 2, 3): 0 means it exited 0 by itself.
	if st, res, code, status := h.show(sdWatch, "ActiveState"), h.show(sdWatch, "Result"),
		h.show(sdWatch, "ExecMainCode"), h.show(sdWatch, "ExecMainStatus"); st != "inactive" || res != "success" || status != "0" || code == "2" || code == "3" {
		t.Fatalf("after stop: ActiveState=%s Result=%s ExecMainCode=%s ExecMainStatus=%s; want inactive, success, exit status 0",
			st, res, code, status)
	}
	for _, j := range h.jobs() {
		if j.ID == id2 && j.State != queue.Pending {
			t.Fatalf("job interrupted by stop is %s, want pending", j.State)
		}
	}
}

// sdJournal runs journalctl with args and returns its output.
func sdJournal(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "journalctl", append([]string{"--no-pager", "-q"}, args...)...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0", "LC_ALL=C"}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("journalctl %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

// TestSystemdPathUnitBuildGoesLive is the operator's view of the shipped
// path/service pair with the real concierge: a trigger dropped into
// state/ builds the pushed backend, restarts it under the user manager,
// reloads the frontend under pm2, and the journal has the job's lines.
func TestSystemdPathUnitBuildGoesLive(t *testing.T) {
	testtool.Require(t, "git", "go", "node", "pnpm", "pm2", "journalctl", "sh", "mktemp", "mv")
	systemdtest.RequireJournal(t)

	// The host as the installer leaves it: v1 built and running, the
	// backend as an instance of a template unit of the (user) manager,
	// the frontend under pm2.
	site := fmt.Sprintf("sd%08x", rand.Uint32()) // a unit name no other test uses
	live := startLiveHost(t, liveOptions{installs: []string{site}, running: true, template: true,
		env: []string{"CONCIERGE_HEALTH_TIMEOUT=20s", "CONCIERGE_STEP_TIMEOUT=2m"}})
	p, ports := live.paths(site), live.ports[site]
	fe, ok := live.pm.Get(p.Process)
	if !ok {
		t.Fatal("frontend not under pm2")
	}

	h := sdNewHost(t, live.sd, live.sb.Dir, bins.real, live.env...)
	h.installPathPair()
	live.push(site, changeOf(sandbox.BackendVersion("v2", true)), nil)
	h.trigger("type=dedicated,site="+site+",command=build", "build-$(date +%s).csv")

	waitFor(t, "v2 to answer", 2*time.Minute, func() (bool, string) {
		v, err := loopbackGet(ports[0], "/api/v1/version")
		return err == nil && v == "v2", fmt.Sprintf("%q %v; service %s", v, err, h.show(sdService, "ActiveState"))
	})
	h.settled("the run to end", time.Minute, func() bool { return true })
	if n := h.starts(); n != 1 {
		t.Fatalf("%d starts of %s for one trigger, want 1", n, sdService)
	}
	jobs := h.jobs()
	if len(jobs) != 1 || jobs[0].State != queue.Succeeded || jobs[0].Target != "dedicated:"+site {
		t.Fatalf("jobs: %+v", jobs)
	}
	job := jobs[0]
	// UMask=0027: what concierge wrote is not world-readable.
	for _, f := range []string{filepath.Join("concierge", "jobs", job.ID+".json"), filepath.Join("concierge", "jobs", job.ID+".log"),
		"concierge.lock", filepath.Join("log", "concierge.log")} {
		st, err := os.Stat(filepath.Join(live.sb.Dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm()&0o007 != 0 {
			t.Fatalf("%s is mode %o under UMask=0027, want no access for others", f, st.Mode().Perm())
		}
	}
	if after, ok := live.pm.Get(p.Process); !ok || after.RestartTime <= fe.RestartTime || after.Status != "online" {
		t.Fatalf("pm2 reload through PM2_HOME from concierge.env: before %+v, after %+v", fe, after)
	}
	if v, err := loopbackGet(ports[1], "/"); err != nil || !strings.Contains(v, "frontend") {
		t.Fatalf("frontend after reload: %q %v", v, err)
	}

	// `journalctl JOB_ID=<id>` finds the job's lines, readable.
	var text string
	waitFor(t, "the job's lines in the journal", 15*time.Second, func() (bool, string) {
		text = sdJournal(t, "-o", "cat", "JOB_ID="+job.ID)
		return strings.Contains(text, "job succeeded"), text
	})
	sdReadable(t, text)

	// -o json carries the fields.
	have := map[string]int{}
	for _, e := range sdJournalJSON(t, "JOB_ID="+job.ID) {
		if e["SYSLOG_IDENTIFIER"] != "t8k-concierge" {
			t.Fatalf("entry without SYSLOG_IDENTIFIER=t8k-concierge: %v", e)
		}
		for _, k := range []string{"TARGET", "STEP", "DURATION_MS", "COMPONENT"} {
			if _, ok := e[k]; ok {
				have[k]++
			}
		}
		if tg, ok := e["TARGET"]; ok && tg != job.Target {
			t.Fatalf("TARGET=%v, want %s", tg, job.Target)
		}
		if d, ok := e["DURATION_MS"].(string); ok {
			if _, err := strconv.ParseInt(d, 10, 64); err != nil {
				t.Fatalf("DURATION_MS=%q is not a number", d)
			}
		}
	}
	for _, k := range []string{"TARGET", "STEP", "DURATION_MS"} {
		if have[k] == 0 {
			t.Fatalf("no journal entry of job %s has %s= (have %v)", job.ID, k, have)
		}
	}

	// The unit's lines. journald files them by the process's cgroup; under
	// this user manager that is /app.slice/<unit>, i.e. a system unit.
	queries := [][]string{
		{"-u", "t8k-build-watcher"},
		{"--user-unit", "t8k-build-watcher"},
		{"_SYSTEMD_USER_UNIT=" + sdService},
		{"SYSLOG_IDENTIFIER=t8k-concierge"},
	}
	var found []string
	for _, q := range queries {
		out := sdJournal(t, append(append([]string{"-o", "cat"}, q...), "JOB_ID="+job.ID)...)
		if strings.Contains(out, "job succeeded") {
			sdReadable(t, out)
			found = append(found, strings.Join(q, " "))
		}
	}
	t.Logf("queries that find the job's lines: %q", found)
	if len(found) == 0 || (found[0] != "-u t8k-build-watcher" && found[0] != "--user-unit t8k-build-watcher") {
		// Unit metadata comes from the cgroup; where journald cannot
		// attach it, SYSLOG_IDENTIFIER= is what finds the lines.
		t.Logf("journald attached no unit metadata to the job's lines here")
	}
	if len(found) == 0 {
		t.Fatalf("no query found job %s's lines", job.ID)
	}

	// The compat log file has them too.
	data, err := os.ReadFile(filepath.Join(live.sb.Dir, "log", "concierge.log"))
	if err != nil || !strings.Contains(string(data), job.ID) {
		t.Fatalf("log/concierge.log does not name job %s: %v", job.ID, err)
	}
}

// sdReadable checks journal text lines are messages, not JSON.
func sdReadable(t *testing.T, text string) {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(text))
	n := 0
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(strings.TrimSpace(l), "{") {
			t.Fatalf("journal line is JSON, not a message: %s", l)
		}
		n++
	}
	if n == 0 {
		t.Fatal("no journal lines")
	}
}

// sdJournalJSON returns the entries `journalctl -o json` prints.
func sdJournalJSON(t *testing.T, matches ...string) []map[string]any {
	t.Helper()
	out := sdJournal(t, append([]string{"-o", "json"}, matches...)...)
	var entries []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l == "" {
			continue
		}
		var e map[string]any
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("journalctl -o json line %q: %v", l, err)
		}
		entries = append(entries, e)
	}
	if len(entries) == 0 {
		t.Fatalf("no journal entries for %q", matches)
	}
	return entries
}

// switchCommands returns the systemctl commands a shipped unit's header
// names for switching to its set-up (the lines "#   systemctl ..."), as
// argument lists without "systemctl".
func switchCommands(t *testing.T, text string) [][]string {
	t.Helper()
	var out [][]string
	for _, l := range strings.Split(text, "\n") {
		if rest, ok := strings.CutPrefix(l, "#   systemctl "); ok {
			out = append(out, strings.Fields(rest))
		}
	}
	if len(out) != 2 {
		t.Fatalf("want a disable and an enable command in the header, got %q in:\n%s", out, text)
	}
	return out
}

// TestSystemdSetUpsAreExclusiveAtBoot switches between the two set-ups
// with the commands `concierge units` prints in the units' headers and
// boots a fresh manager on the same unit configuration after each switch:
// only the chosen set-up starts, and it builds a trigger.
func TestSystemdSetUpsAreExclusiveAtBoot(t *testing.T) {
	testtool.Require(t, "sh", "mktemp", "mv")
	sd := systemdtest.Start(t)
	dir := t.TempDir()
	h := sdNewHost(t, sd, dir, bins.fake, "CONCIERGE_FAKE_DIR="+filepath.Join(dir, "fake"))
	h.installPathPair()
	h.testPaths(sdWatch)
	sd.InstallUnit(sdWatch, h.render(sdWatch))
	t.Cleanup(func() { sd.Systemctl("stop", sdWatch) })
	toPair, toWatch := switchCommands(t, h.render(sdPath)), switchCommands(t, h.render(sdWatch))
	switchTo := func(cmds [][]string) {
		t.Helper()
		for _, c := range cmds {
			if out, err := sd.Systemctl(c...); err != nil {
				t.Fatalf("systemctl %q: %v\n%s", c, err, out)
			}
		}
	}
	// neverStarted: the unit has not left inactive since this boot.
	neverStarted := func(unit string) bool { return h.show(unit, "InactiveExitTimestampMonotonic") == "0" }
	// built drops a trigger and waits until the jobs ended reach want.
	built := func(what string, want int) {
		t.Helper()
		h.trigger("type=main,tenant=default,command=build", "build-$(date +%s%N).csv")
		waitFor(t, what, 30*time.Second, func() (bool, string) {
			return h.fakeEnds() == want && len(h.triggers()) == 0, fmt.Sprintf("%d jobs ended, triggers %q", h.fakeEnds(), h.triggers())
		})
	}
	// Boot with the pair chosen, after a switch back from the watcher,
	// and check only the pair started. The boot transaction is over when
	// Reboot returns (the manager says running only with no job queued).
	pairBoot := func(what string, ends int) {
		t.Helper()
		sd.Reboot()
		starts := h.starts()
		if st := h.show(sdPath, "ActiveState"); st != "active" {
			t.Fatalf("%s: %s is %s after boot, want active", what, sdPath, st)
		}
		if neverStarted(sdService) || h.show(sdService, "Result") != "success" {
			t.Fatalf("%s: %s did not run once at boot (Result=%s)", what, sdService, h.show(sdService, "Result"))
		}
		if !neverStarted(sdWatch) {
			t.Fatalf("%s: %s started at boot (%s)", what, sdWatch, h.show(sdWatch, "ActiveState"))
		}
		built(what+": a trigger built by the pair", ends)
		if got := h.starts(); got != starts+1 {
			t.Fatalf("%s: the trigger started %s %d times, want once", what, sdService, got-starts)
		}
		if !neverStarted(sdWatch) {
			t.Fatalf("%s: %s started", what, sdWatch)
		}
	}

	switchTo(toPair)
	pairBoot("the pair", 1)

	switchTo(toWatch)
	sd.Reboot()
	starts := h.starts()
	if st, sub := h.show(sdWatch, "ActiveState"), h.show(sdWatch, "SubState"); st != "active" || sub != "running" {
		t.Fatalf("after switching to %s and booting: it is %s/%s, want active/running", sdWatch, st, sub)
	}
	for _, u := range []string{sdPath, sdService} {
		if !neverStarted(u) {
			t.Fatalf("after switching to %s and booting: %s started (%s)", sdWatch, u, h.show(u, "ActiveState"))
		}
	}
	built("a trigger built by concierge.service", 2)
	if h.starts() != starts || !neverStarted(sdService) || !neverStarted(sdPath) {
		t.Fatalf("the pair ran under concierge.service: %d starts (was %d), %s %s", h.starts(), starts,
			h.show(sdPath, "ActiveState"), h.show(sdService, "ActiveState"))
	}

	switchTo(toPair)
	pairBoot("back to the pair", 3)
}
