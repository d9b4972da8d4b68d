package main

// Fault drills: concierge killed with SIGKILL at each step boundary of a
// real build, SIGTERM during a real build in watch mode, an unreachable
// origin, a data directory that cannot be written, a state directory
// removed and recreated under `watch`, and an fsnotify queue overflow.
// Each must end in a clear error or a rescan: never a crash, a lost
// trigger, a half-swapped site or a build process left running.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tractstack/concierge/builder"
	"github.com/tractstack/concierge/deploy"
	"github.com/tractstack/concierge/internal/pm2test"
	"github.com/tractstack/concierge/internal/sandbox"
	"github.com/tractstack/concierge/internal/systemdtest"
	"github.com/tractstack/concierge/internal/testtool"
	"github.com/tractstack/concierge/queue"
)

// fdHost is a sandbox home whose backend runs under a private systemd user
// manager and whose frontend runs under a private pm2, driven by the
// release binary (the real pipeline).
type fdHost struct {
	t       *testing.T
	h       *sandbox.Home
	p       deploy.Paths
	env     []string
	data    string
	goPort  int
	webPort int
	// services are the pids whose descendants are services, not build
	// children: the systemd user manager and the pm2 daemon.
	services []int
	sd       *systemdtest.Manager
	pm       *pm2test.PM2
	live     string // the version both halves serve now
	n        int    // triggers dropped so far
}

// fdSetEnv returns base with every KEY=VALUE of set replacing its key.
func fdSetEnv(base []string, set ...string) []string {
	out := make([]string, 0, len(base)+len(set))
	for _, kv := range base {
		k, _, _ := strings.Cut(kv, "=")
		if !slices.ContainsFunc(set, func(s string) bool { return strings.HasPrefix(s, k+"=") }) {
			out = append(out, kv)
		}
	}
	return append(out, set...)
}

func fdFreePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func fdCommand(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir, cmd.Env = dir, env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s in %s: %v\n%s", name, strings.Join(args, " "), dir, err, out)
	}
	return string(out)
}

func fdStartHost(t *testing.T) *fdHost {
	t.Helper()
	testtool.Require(t, "git", "go", "node", "pnpm", "pm2")
	sd := systemdtest.Start(t)
	pm := pm2test.Start(t)
	ctx := context.Background()
	goPort, webPort := fdFreePort(t), fdFreePort(t)
	h, err := sandbox.New(ctx, t.TempDir(), sandbox.Options{FrontendIsClone: true,
		Ports: map[string][2]int{"main": {goPort, webPort}}})
	if err != nil {
		t.Fatal(err)
	}
	p, err := deploy.PathsFor(h.Dir, "")
	if err != nil {
		t.Fatal(err)
	}
	// The test's own Go caches, so a backend build is an incremental one.
	goEnv := strings.Fields(fdCommand(t, "", os.Environ(), "go", "env", "GOCACHE", "GOMODCACHE", "GOPATH"))
	if len(goEnv) != 3 {
		t.Fatalf("go env: %q", goEnv)
	}
	env := fdSetEnv(os.Environ(), append(append(append([]string{}, sd.Env()...), pm.Env()...),
		"GOCACHE="+goEnv[0], "GOMODCACHE="+goEnv[1], "GOPATH="+goEnv[2],
		"T8K_HOME="+h.Dir, "CONCIERGE_SYSTEMCTL=systemctl --user", "CONCIERGE_FRONTEND_UPDATE=",
		"CONCIERGE_LOG_FORMAT=json", "CONCIERGE_HEALTH_TIMEOUT=20s", "CONCIERGE_FAKE_DIR=")...)
	fdCommand(t, p.BackendSrc, env, "go", "build", "-o", p.Binary, "./cmd/tractstack-go")
	fdCommand(t, p.FrontendSrc, fdSetEnv(env, "CI=true"), "pnpm", "install", "--no-frozen-lockfile")
	fdCommand(t, p.FrontendSrc, fdSetEnv(env, "CI=true"), "pnpm", "build")
	// ExecStopPost records how each backend process ended, for a failure.
	stops := filepath.Join(h.Dir, "log", "backend-stops.log")
	sd.InstallUnit(p.Unit, fmt.Sprintf("[Unit]\nDescription=tractstack-go (fault drills)\n\n[Service]\nExecStart=%s --port %d\nRestart=no\n"+
		"ExecStopPost=/bin/sh -c 'echo \"$(date +%%%%T.%%%%N) $SERVICE_RESULT $EXIT_CODE $EXIT_STATUS $MAINPID\" >> %s'\n", p.Binary, goPort, stops))
	if out, err := sd.Systemctl("start", p.Unit); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	t.Cleanup(func() { sd.Systemctl("stop", p.Unit) })
	pm.StartApp(p.Process, p.Entry, webPort)

	f := &fdHost{t: t, h: h, p: p, env: env, data: filepath.Join(h.Dir, "concierge"), goPort: goPort, webPort: webPort, live: "v1", sd: sd, pm: pm}
	// The manager is the parent of the unit's main process; pm2's daemon
	// writes its pid to PM2_HOME/pm2.pid.
	if ppid := fdPPID(sd.MainPID(p.Unit)); ppid > 1 {
		f.services = append(f.services, ppid)
	} else {
		t.Fatalf("cannot find the systemd user manager's pid")
	}
	if b, err := os.ReadFile(filepath.Join(pm.Home(), "pm2.pid")); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			f.services = append(f.services, pid)
		}
	}
	f.serves("v1")
	return f
}

// push commits version to both origins; the frontend build takes delayMS.
func (f *fdHost) push(version string, delayMS int) {
	f.t.Helper()
	ctx := context.Background()
	if _, err := f.h.PushBackend(ctx, "", sandbox.BackendVersion(version, true)); err != nil {
		f.t.Fatal(err)
	}
	c := sandbox.FrontendVersion(version)
	if delayMS > 0 {
		c.Files["src/build-delay-ms"] = strconv.Itoa(delayMS) + "\n"
	} else {
		c.Remove = append(c.Remove, "src/build-delay-ms")
	}
	if _, err := f.h.PushFrontend(ctx, "", c); err != nil {
		f.t.Fatal(err)
	}
}

// drop writes the next trigger and returns its name.
func (f *fdHost) drop() string {
	f.t.Helper()
	f.n++
	name := fmt.Sprintf("build-%04d.csv", f.n)
	if err := os.WriteFile(filepath.Join(f.h.StateDir(), name), []byte("type=main,tenant=default,command=build\n"), 0o644); err != nil {
		f.t.Fatal(err)
	}
	return name
}

// fdProc is a concierge started in the background.
type fdProc struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	err  error
}

func fdStart(t *testing.T, bin string, env []string, args ...string) *fdProc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	pr := &fdProc{cmd: cmd, out: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = pr.out, pr.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { pr.err = cmd.Wait(); close(pr.done) }()
	t.Cleanup(func() {
		select {
		case <-pr.done:
		default:
			cmd.Process.Kill()
			<-pr.done
		}
	})
	return pr
}

func (pr *fdProc) exited() bool {
	select {
	case <-pr.done:
		return true
	default:
		return false
	}
}

// wait waits for the process to exit and returns its exit status.
func (pr *fdProc) wait(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-pr.done:
	case <-time.After(d):
		pr.cmd.Process.Kill()
		<-pr.done
		t.Fatalf("concierge did not exit within %s:\n%s", d, pr.out.String())
	}
	if ee, ok := pr.err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if pr.err != nil {
		t.Fatal(pr.err)
	}
	return 0
}

// run runs `concierge run` with the release binary to its end.
func (f *fdHost) run() (logs string, code int) {
	f.t.Helper()
	pr := fdStart(f.t, bins.real, f.env, "run")
	code = pr.wait(f.t, 3*time.Minute)
	return pr.out.String(), code
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

// fdStatus runs `status --json` and returns its jobs.
func fdStatus(t *testing.T, bin string, env []string) []queue.Job {
	t.Helper()
	cmd := exec.Command(bin, "status", "--json")
	cmd.Env = env
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	if err := cmd.Run(); err != nil {
		t.Fatalf("status --json: %v\n%s", err, e.String())
	}
	var st struct{ Jobs []queue.Job }
	if err := json.Unmarshal(o.Bytes(), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, o.String())
	}
	return st.Jobs
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

var fdClient = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}

// answers returns the versions the backend and the frontend serve.
func (f *fdHost) answers() (backend, frontend string, err error) {
	req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/api/v1/health", f.goPort), nil)
	req.Header.Set("X-Tenant-ID", "default")
	resp, err := fdClient.Do(req)
	if err != nil {
		return "", "", err
	}
	var health struct {
		Healthy bool
		Version string
	}
	err = json.NewDecoder(resp.Body).Decode(&health)
	resp.Body.Close()
	if err != nil || !health.Healthy {
		return "", "", fmt.Errorf("backend health: %+v %v", health, err)
	}
	resp, err = fdClient.Get(fmt.Sprintf("http://127.0.0.1:%d/", f.webPort))
	if err != nil {
		return health.Version, "", err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return health.Version, "", err
	}
	front, ok := strings.CutPrefix(strings.TrimSpace(string(body)), "frontend ")
	if !ok {
		return health.Version, "", fmt.Errorf("frontend answered %q", body)
	}
	return health.Version, front, nil
}

// consistent waits until both halves answer and returns the one release
// they serve; both must serve the same one, out of want.
func (f *fdHost) consistent(want ...string) string {
	f.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		back, front, err := f.answers()
		if err == nil {
			if back != front || !slices.Contains(want, back) {
				f.t.Fatalf("%s\n"+"site serves backend %s and frontend %s; want one release out of %v", f.diag(), back, front, want)
			}
			return back
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("%s\nsite does not answer: %v", f.diag(), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// diag describes the services, for a failure message.
func (f *fdHost) diag() string {
	st, _ := f.sd.Systemctl("show", "-p", "ActiveState,SubState,Result,ExecMainCode,ExecMainStatus,ExecMainPID,ExecMainStartTimestamp,ExecMainExitTimestamp,NRestarts", f.p.Unit)
	jr, _ := exec.Command("journalctl", "--no-pager", "-n", "30", "-o", "short-precise", "_SYSTEMD_USER_UNIT="+f.p.Unit).CombinedOutput()
	st += "\njournal:\n" + string(jr)
	stops, _ := os.ReadFile(filepath.Join(f.h.Dir, "log", "backend-stops.log"))
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

func (f *fdHost) serves(version string) {
	f.t.Helper()
	f.consistent(version)
	f.live = version
}

// fdPPID returns the parent of pid (0 when it is gone).
func fdPPID(pid int) int {
	_, ppid, ok := fdStat(pid)
	if !ok {
		return 0
	}
	return ppid
}

// fdStat reads the state and parent of pid from /proc/<pid>/stat.
func fdStat(pid int) (state string, ppid int, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", 0, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return "", 0, false
	}
	fields := strings.Fields(s[i+1:])
	if len(fields) < 2 {
		return "", 0, false
	}
	ppid, _ = strconv.Atoi(fields[1])
	return fields[0], ppid, true
}

// fdStrays lists the live (non-zombie) processes that carry the owner
// mark of data, or whose command line names home, except the services
// (descendants of the pids in services) and this test process.
func fdStrays(home, data string, services []int) []string {
	mark := []byte(builder.OwnerEnv + "=" + data + "\x00")
	entries, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		state, _, ok := fdStat(pid)
		if !ok || state == "Z" {
			continue
		}
		env, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if !bytes.Contains(append(env, 0), mark) && !bytes.Contains(cmdline, []byte(home)) {
			continue
		}
		service := false
		for a, n := pid, 0; a > 1 && n < 64; a, n = fdPPID(a), n+1 {
			if slices.Contains(services, a) {
				service = true
				break
			}
		}
		if !service {
			out = append(out, fmt.Sprintf("%d %s %q", pid, state, strings.ReplaceAll(string(cmdline), "\x00", " ")))
		}
	}
	return out
}

// noStrays waits (briefly: a killed process takes a moment to go) until
// no build process of this host is left.
func (f *fdHost) noStrays() {
	f.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s := fdStrays(f.h.Dir, f.data, f.services)
		if len(s) == 0 {
			return
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("processes left running:\n%s", strings.Join(s, "\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// atStep waits until the job of trigger has a record of step (started, or
// already past: a short step may be over by the time it is seen).
func (f *fdHost) atStep(pr *fdProc, trigger, step string) (running bool) {
	f.t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if j, ok := fdJobOf(fdJobs(f.data), trigger); ok && j.State == queue.Running {
			for _, s := range j.Steps {
				if s.Name == step {
					return s.State == queue.Running
				}
			}
		}
		if pr.exited() {
			f.t.Fatalf("concierge exited before step %s of %s:\n%s", step, trigger, pr.out.String())
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("step %s of %s never started:\n%s", step, trigger, pr.out.String())
		}
		time.Sleep(2 * time.Millisecond)
	}
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
			f.push(next, c.delayMS)
			trig := f.drop()
			triggers = append(triggers, trig)
			pr := fdStart(t, bins.real, f.env, "run")
			running := f.atStep(pr, trig, c.step)
			if c.delayMS > 0 {
				// The step record comes before its children: wait for one.
				fdWaitFor(t, time.Minute, "a build process", func() bool {
					return len(fdStrays(f.h.Dir, f.data, f.services)) > 0
				})
			}
			if err := pr.cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			pr.wait(t, 10*time.Second)
			left := fdStrays(f.h.Dir, f.data, f.services)
			t.Logf("killed at %s (step still running: %t); build processes left by the kill: %d", c.step, running, len(left))
			if c.step == "build-frontend" && len(left) == 0 {
				t.Errorf("a kill mid-build left no build process: the drill did not catch the build")
			}
			logs, code := f.run()
			jobs := fdStatus(t, bins.real, f.env)
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
			if left := f.h.StateDir(); len(fdEntries(t, left)) != 0 {
				t.Errorf("state dir still holds %v", fdEntries(t, left))
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
		f.push(next, 3000)
		pr := fdStart(t, bins.real, f.env, "watch")
		trig := f.drop()
		triggers = append(triggers, trig)
		f.atStep(pr, trig, "build-frontend")
		if err := pr.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if code := pr.wait(t, 30*time.Second); code != 0 {
			t.Fatalf("watch exit %d after SIGTERM, want 0:\n%s", code, pr.out.String())
		}
		j, ok := fdJobOf(fdStatus(t, bins.real, f.env), trig)
		if !ok || j.State != queue.Pending {
			t.Fatalf("after SIGTERM the job is %+v; want it pending", j)
		}
		f.noStrays()
		f.consistent(old)
		logs, code := f.run()
		jobs := fdStatus(t, bins.real, f.env)
		fdEveryTriggerOnce(t, jobs, triggers)
		if j, _ := fdJobOf(jobs, trig); code != 0 || j.State != queue.Succeeded || j.Attempts != 2 {
			t.Fatalf("run after SIGTERM: exit %d, job %+v\n%s", code, j, logs)
		}
		f.serves(next)
		f.noStrays()
	}) {
		return
	}

	// The backend origin is unreachable: the job fails naming the
	// repository, the trigger is not lost, the site keeps serving.
	t.Run("origin-unreachable", func(t *testing.T) {
		f.t = t
		f.push("v30", 0)
		origin := f.h.BackendOrigin("")
		if err := os.Rename(origin, origin+".away"); err != nil {
			t.Fatal(err)
		}
		defer os.Rename(origin+".away", origin)
		trig := f.drop()
		triggers = append(triggers, trig)
		logs, code := f.run()
		if code != 1 {
			t.Fatalf("run exit %d, want 1:\n%s", code, logs)
		}
		jobs := fdStatus(t, bins.real, f.env)
		fdEveryTriggerOnce(t, jobs, triggers)
		j, _ := fdJobOf(jobs, trig)
		if j.State != queue.Failed || !strings.Contains(j.Error, f.p.BackendSrc) {
			t.Fatalf("job %s %s: error %q; want failed, naming %s", j.ID, j.State, j.Error, f.p.BackendSrc)
		}
		t.Logf("error: %s", j.Error)
		if len(fdEntries(t, f.h.StateDir())) != 0 {
			t.Fatalf("state dir still holds %v", fdEntries(t, f.h.StateDir()))
		}
		f.serves(f.live)
		f.noStrays()
	})
}

func fdEntries(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// fdWaitFor polls cond until it holds or d passes.
func fdWaitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
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

// TestFaultDataDirNotWritable: job records cannot be written. run exits
// with an error naming the failed write, the trigger stays in state/; once
// the fault is gone, a run processes it.
func TestFaultDataDirNotWritable(t *testing.T) {
	h := newHome(t)
	jobsDir := filepath.Join(h.dir, "concierge", "jobs")
	if err := os.MkdirAll(jobsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	undo := fdReadOnly(t, jobsDir)
	h.drop("build-1.csv", "type=main,command=build")
	_, stderr, code := h.concierge("run")
	if code != 1 || !strings.Contains(stderr, "save job") || !strings.Contains(stderr, "read-only file system") {
		t.Fatalf("run with a read-only jobs dir: exit %d, want 1 with a clear error:\n%s", code, stderr)
	}
	if left := h.stateEntries(); !slices.Equal(left, []string{"build-1.csv"}) {
		t.Fatalf("state dir holds %v; want the trigger kept", left)
	}
	if n := len(h.runs()); n != 0 {
		t.Fatalf("%d job(s) ran without a record", n)
	}
	undo()
	if _, stderr, code := h.concierge("run"); code != 0 {
		t.Fatalf("run after the fault: exit %d:\n%s", code, stderr)
	}
	if ends := h.ends(); len(ends) != 1 || !slices.Equal(ends[0].Triggers, []string{"build-1.csv"}) {
		t.Fatalf("ran %+v; want one job of build-1.csv", ends)
	}
	fdEveryTriggerOnce(t, h.status(), []string{"build-1.csv"})
	if left := h.stateEntries(); len(left) != 0 {
		t.Fatalf("state dir still holds %v", left)
	}
}

// TestFaultStateDirRecreatedWhileWatching: the state directory is removed
// and made again under a running watch; triggers dropped in the new one
// are processed (the watcher re-arms and rescans).
func TestFaultStateDirRecreatedWhileWatching(t *testing.T) {
	h := newHome(t)
	watch, logs := h.start("watch")
	h.drop("build-1.csv", "type=main,command=build")
	fdWaitFor(t, 20*time.Second, "the first trigger to run", func() bool { return len(h.ends()) == 1 })
	state := filepath.Join(h.dir, "state")
	if err := os.RemoveAll(state); err != nil {
		t.Fatal(err)
	}
	fdWaitFor(t, 20*time.Second, "the watcher to notice", func() bool {
		return strings.Contains(logs.String(), "state directory removed")
	})
	if err := os.Mkdir(state, 0o755); err != nil {
		t.Fatal(err)
	}
	h.drop("build-2.csv", "type=dedicated,site=acme,command=build")
	fdWaitFor(t, 20*time.Second, "the trigger in the new directory to run", func() bool { return len(h.ends()) == 2 })
	// And the re-armed watch sees the next one as it arrives.
	h.drop("build-3.csv", "type=main,command=build")
	fdWaitFor(t, 20*time.Second, "a trigger after the re-arm to run", func() bool { return len(h.ends()) == 3 })
	watch.Process.Signal(syscall.SIGTERM)
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
	fdWaitFor(t, 20*time.Second, "watch to arm", func() bool { return strings.Contains(logs.String(), "watching for triggers") })
	if err := watch.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := true
	defer func() {
		if stopped {
			watch.Process.Signal(syscall.SIGCONT)
		}
	}()
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("build-%06d.csv", i)
		h.drop(names[i], "type=main,tenant=default,command=build")
	}
	if err := watch.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	stopped = false
	fdWaitFor(t, 2*time.Minute, "every trigger to be taken in", func() bool { return len(h.stateEntries()) == 0 })
	fdWaitFor(t, time.Minute, "the jobs to finish", func() bool {
		for _, j := range fdJobs(filepath.Join(h.dir, "concierge")) {
			if j.State == queue.Pending || j.State == queue.Running {
				return false
			}
		}
		return true
	})
	watch.Process.Signal(syscall.SIGTERM)
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
