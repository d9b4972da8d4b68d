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
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tractstack/concierge/deploy"
	"github.com/tractstack/concierge/internal/pm2test"
	"github.com/tractstack/concierge/internal/sandbox"
	"github.com/tractstack/concierge/internal/systemdtest"
	"github.com/tractstack/concierge/internal/testtool"
	"github.com/tractstack/concierge/queue"
)

// pe2eHost is a sandbox TractStack home whose backends run under a private
// systemd user manager and whose frontends run under a private pm2.
type pe2eHost struct {
	t     *testing.T
	sb    *sandbox.Home
	sd    *systemdtest.Manager
	pm    *pm2test.PM2
	ports map[string][2]int // "main" or site → GO, ASTRO
	env   []string
	n     int          // triggers dropped so far
	http  *http.Client // loopback only, never through a proxy
}

// pe2eStart lays out a home with the main install and sites, installs
// their units and starts their frontends under pm2. frontendIsClone makes
// each frontend a git clone of its own origin (usually it is not one).
func pe2eStart(t *testing.T, frontendIsClone bool, sites ...string) *pe2eHost {
	t.Helper()
	testtool.Require(t, "git", "go", "pnpm", "pm2", "node")
	sd := systemdtest.Start(t)
	pm := pm2test.Start(t)
	ctx := context.Background()

	ports := map[string][2]int{}
	free := pe2eFreePorts(t, 2*(1+len(sites)))
	for i, key := range append([]string{"main"}, sites...) {
		ports[key] = [2]int{free[2*i], free[2*i+1]}
	}
	sb, err := sandbox.New(ctx, t.TempDir(), sandbox.Options{Sites: sites, FrontendIsClone: frontendIsClone, Ports: ports})
	if err != nil {
		t.Fatal(err)
	}
	h := &pe2eHost{t: t, sb: sb, sd: sd, pm: pm, ports: ports,
		http: &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}}
	h.env = pe2eEnv(t, sb.Dir, sd, pm)

	for _, site := range append([]string{""}, sites...) {
		p := h.paths(site)
		port := ports[p.PortsKey]
		sd.InstallUnit(p.Unit, fmt.Sprintf("[Unit]\nDescription=tractstack-go %s (test)\n\n[Service]\nExecStart=%s --port %d\nRestart=no\n",
			p.PortsKey, p.Binary, port[0]))
		unit := p.Unit
		t.Cleanup(func() { sd.Systemctl("stop", unit) })
		// The installer's first frontend build, and its pm2 process.
		pe2eCommand(t, p.FrontendSrc, h.env, "pnpm", "install")
		pe2eCommand(t, p.FrontendSrc, h.env, "pnpm", "build")
		pm.StartApp(p.Process, p.Entry, port[1])
	}
	return h
}

// pe2eFreePorts returns n distinct free loopback ports.
func pe2eFreePorts(t *testing.T, n int) []int {
	t.Helper()
	var out []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close() // held until all are picked, so they differ
		out = append(out, ln.Addr().(*net.TCPAddr).Port)
	}
	return out
}

// pe2eEnv is the binary's environment: the developer's (with its GOCACHE,
// GOPATH and HOME, so that go build is warm), minus anything that would
// point the concierge at another manager, pm2 or configuration, plus the
// sandbox's settings.
func pe2eEnv(t *testing.T, home string, sd *systemdtest.Manager, pm *pm2test.PM2) []string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOCACHE", "GOPATH", "GOMODCACHE").Output()
	if err != nil {
		t.Fatalf("go env: %v", err)
	}
	goEnv := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(goEnv) != 3 {
		t.Fatalf("go env printed %q", out)
	}
	drop := map[string]bool{"T8K_HOME": true, "PM2_HOME": true, "XDG_RUNTIME_DIR": true, "XDG_CONFIG_HOME": true,
		"DBUS_SESSION_BUS_ADDRESS": true, "JOURNAL_STREAM": true, "NOTIFY_SOCKET": true, "GOFLAGS": true}
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if drop[k] || strings.HasPrefix(k, "CONCIERGE_") {
			continue
		}
		env = append(env, kv)
	}
	env = append(env, sd.Env()...)
	return append(env,
		"T8K_HOME="+home,
		"PM2_HOME="+pm.Home(),
		"CONCIERGE_SYSTEMCTL=systemctl --user",
		"CONCIERGE_FRONTEND_UPDATE=", // no registry access
		"CONCIERGE_HEALTH_TIMEOUT=10s",
		"CONCIERGE_STEP_TIMEOUT=2m",
		"CONCIERGE_LOG_FORMAT=json",
		"GOCACHE="+goEnv[0], "GOPATH="+goEnv[1], "GOMODCACHE="+goEnv[2],
		"GOPROXY=off", "GOTOOLCHAIN=local", // the backend has no dependencies
		"npm_config_update_notifier=false",
	)
}

// pe2eCommand runs a tool as the installer or an operator would.
func pe2eCommand(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(append([]string{}, env...), "CI=true")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s in %s: %v\n%s", name, strings.Join(args, " "), dir, err, out)
	}
	return string(out)
}

func (h *pe2eHost) paths(site string) deploy.Paths {
	h.t.Helper()
	p, err := deploy.PathsFor(h.sb.Dir, site)
	if err != nil {
		h.t.Fatal(err)
	}
	return p
}

// push commits changes to a site's origins, as a developer elsewhere
// would; it returns the backend commit ("" when the backend is unchanged).
func (h *pe2eHost) push(site string, backend, frontend *sandbox.Change) string {
	h.t.Helper()
	ctx := context.Background()
	var commit string
	if backend != nil {
		c, err := h.sb.PushBackend(ctx, site, *backend)
		if err != nil {
			h.t.Fatal(err)
		}
		commit = c
	}
	if frontend != nil {
		if _, err := h.sb.PushFrontend(ctx, site, *frontend); err != nil {
			h.t.Fatal(err)
		}
	}
	return commit
}

// pe2eMerge is one commit made of several changes.
func pe2eMerge(changes ...sandbox.Change) *sandbox.Change {
	m := sandbox.Change{Files: map[string]string{}}
	var msgs []string
	for _, c := range changes {
		for k, v := range c.Files {
			m.Files[k] = v
		}
		m.Remove = append(m.Remove, c.Remove...)
		msgs = append(msgs, c.Message)
	}
	m.Message = strings.Join(msgs, ", ")
	return &m
}

func pe2eChange(c sandbox.Change) *sandbox.Change { return &c }

// drop writes a trigger into the state directory as an operator would.
func (h *pe2eHost) drop(line string) {
	h.t.Helper()
	h.n++
	name := filepath.Join(h.sb.StateDir(), fmt.Sprintf("build-%04d.csv", h.n))
	if err := os.WriteFile(name, []byte(line+"\n"), 0o644); err != nil {
		h.t.Fatal(err)
	}
}

// run runs `concierge run` to its end; extra overrides the environment.
func (h *pe2eHost) run(extra ...string) (logs string, code int) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bins.real, "run")
	cmd.Env = append(append([]string{}, h.env...), extra...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return out.String(), ee.ExitCode()
	}
	if err != nil {
		h.t.Fatalf("concierge run: %v\n%s", err, out.String())
	}
	return out.String(), 0
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

func (h *pe2eHost) concierge(args ...string) string {
	h.t.Helper()
	cmd := exec.Command(bins.real, args...)
	cmd.Env = h.env
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		h.t.Fatalf("concierge %s: %v\n%s", strings.Join(args, " "), err, errOut.String())
	}
	return out.String()
}

// lastJob is the newest job of `concierge status --json`.
func (h *pe2eHost) lastJob() queue.Job {
	h.t.Helper()
	out := h.concierge("status", "--json")
	var st struct{ Jobs []queue.Job }
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		h.t.Fatalf("status --json: %v\n%s", err, out)
	}
	if len(st.Jobs) == 0 {
		h.t.Fatalf("status --json lists no job")
	}
	return st.Jobs[len(st.Jobs)-1]
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

// answers reports what a site's services answer now: the version in the
// backend's health JSON and the frontend's page.
func (h *pe2eHost) answers(site string) (backend, frontend string, err error) {
	port := h.ports[h.paths(site).PortsKey]
	req, _ := http.NewRequest(http.MethodGet, "http://127.0.0.1:"+strconv.Itoa(port[0])+"/api/v1/health", nil)
	req.Header.Set("X-Tenant-ID", "default")
	resp, err := h.http.Do(req)
	if err != nil {
		return "", "", fmt.Errorf("backend: %w", err)
	}
	var health struct {
		Healthy bool
		Version string
	}
	err = json.NewDecoder(resp.Body).Decode(&health)
	resp.Body.Close()
	if err != nil {
		return "", "", fmt.Errorf("backend health JSON: %w", err)
	}
	if resp.StatusCode != http.StatusOK || !health.Healthy {
		return "", "", fmt.Errorf("backend %s unhealthy: status %d", health.Version, resp.StatusCode)
	}
	resp, err = h.http.Get("http://127.0.0.1:" + strconv.Itoa(port[1]) + "/")
	if err != nil {
		return health.Version, "", fmt.Errorf("frontend: %w", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return health.Version, "", fmt.Errorf("frontend: %w", err)
	}
	return health.Version, strings.TrimSpace(string(body)), nil
}

// serves waits until a site's backend answers healthy with version back
// and its frontend with "frontend <front>". A service just restarted takes
// a moment to listen, hence the poll.
func (h *pe2eHost) serves(site, back, front string) {
	h.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var last string
	for {
		b, f, err := h.answers(site)
		if err == nil && b == back && f == "frontend "+front {
			return
		}
		last = fmt.Sprintf("backend %q, frontend %q, error %v", b, f, err)
		if time.Now().After(deadline) {
			h.t.Fatalf("site %q never served backend %s and frontend %s; last: %s", site, back, front, last)
		}
		time.Sleep(50 * time.Millisecond)
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

// pe2eStrays lists the live processes, other than keep, that run in or
// from dir: their command line names it or their working directory is in
// it. Zombies do not count (PID 1 here never reaps orphans).
func pe2eStrays(dir string, keep map[int]bool) map[int]string {
	out := map[int]string{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || keep[pid] {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		if i := bytes.LastIndexByte(stat, ')'); i < 0 || len(stat) < i+3 || stat[i+2] == 'Z' || stat[i+2] == 'X' {
			continue
		}
		raw, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		cmdline := strings.TrimSpace(strings.ReplaceAll(string(raw), "\x00", " "))
		cwd, _ := os.Readlink("/proc/" + e.Name() + "/cwd")
		if strings.Contains(cmdline, dir) || cwd == dir || strings.HasPrefix(cwd, dir+"/") {
			out[pid] = fmt.Sprintf("pid %d %q in %s", pid, cmdline, cwd)
		}
	}
	return out
}

// pe2eHanging says whether the frontend's build script runs in dir.
func pe2eHanging(dir string, keep map[int]bool) bool {
	for _, s := range pe2eStrays(dir, keep) {
		if strings.Contains(s, "build.mjs") {
			return true
		}
	}
	return false
}

// services are the pids of what runs sites on purpose: each backend's
// main pid and frontend's pm2 process, and the pm2 daemon (whose working
// directory is where the installer started the first app).
func (h *pe2eHost) services(sites ...string) map[int]bool {
	h.t.Helper()
	keep := map[int]bool{}
	data, err := os.ReadFile(filepath.Join(h.pm.Home(), "pm2.pid"))
	if err != nil {
		h.t.Fatalf("pm2 daemon pid: %v", err)
	}
	daemon, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		h.t.Fatalf("pm2 daemon pid: %v", err)
	}
	keep[daemon] = true
	for _, site := range sites {
		p := h.paths(site)
		keep[h.sd.MainPID(p.Unit)] = true
		if pr, ok := h.pm.Get(p.Process); ok {
			keep[pr.PID] = true
		}
	}
	return keep
}

const pe2eBuildMain = "type=main,tenant=default,command=build"

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
			h.drop(pe2eBuildMain)
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
			c2 = h.push("", pe2eChange(sandbox.BackendVersion("v2", true)),
				pe2eMerge(sandbox.FrontendVersion("v2"), sandbox.FrontendBuildDelay(2000)))
			h.drop(pe2eBuildMain)
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
			h.push("", pe2eChange(sandbox.BackendBroken()), pe2eChange(sandbox.FrontendBuildDelay(0)))
			h.drop(pe2eBuildMain)
			j := h.runFailed()
			pe2eSteps(t, j, map[string]queue.State{"build-backend": queue.Failed, "build-frontend": queue.Succeeded})
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
			h.push("", pe2eChange(sandbox.BackendVersion("v2.1", true)), pe2eChange(sandbox.FrontendBroken()))
			h.drop(pe2eBuildMain)
			j := h.runFailed()
			pe2eSteps(t, j, map[string]queue.State{"build-backend": queue.Succeeded, "build-frontend": queue.Failed})
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
			h.push("", pe2eChange(sandbox.BackendVersion("v3", false)), pe2eChange(sandbox.FrontendVersion("v3")))
			h.drop(pe2eBuildMain)
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
			h.push("", nil, pe2eChange(sandbox.FrontendBuildDelay(600000)))
			h.drop(pe2eBuildMain)
			keep := h.services("", "acme")
			cmd := exec.Command(bins.real, "run")
			cmd.Env = append(append([]string{}, h.env...), "CONCIERGE_STEP_TIMEOUT=5s")
			var logs syncBuffer
			cmd.Stdout, cmd.Stderr = &logs, &logs
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if cmd.ProcessState == nil {
					cmd.Process.Kill()
					cmd.Wait()
				}
			})
			// The hanging build is seen while it hangs, so the check
			// after the timeout is known to see such processes.
			for deadline := time.Now().Add(30 * time.Second); !pe2eHanging(p.FrontendSrc, keep); time.Sleep(50 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("the hanging frontend build was never seen running\n%s", logs.String())
				}
			}
			if code := waitExit(t, cmd); code != 1 {
				t.Fatalf("run exit %d, want 1\n%s", code, logs.String())
			}
			j := h.lastJob()
			fs := pe2eStep(t, j, "build-frontend")
			if j.State != queue.Failed || fs.State != queue.Failed || !strings.Contains(fs.Error, "timed out after 5s") || !strings.Contains(j.Error, "timed out after 5s") {
				t.Fatalf("want a failed job, its build-frontend timed out after 5s:\n%s", pe2eJSON(j))
			}
			deadline := time.Now().Add(10 * time.Second)
			for {
				strays := pe2eStrays(h.sb.Dir, keep)
				if len(strays) == 0 {
					break
				}
				if time.Now().After(deadline) {
					var list []string
					for pid, s := range strays {
						list = append(list, s)
						syscall.Kill(pid, syscall.SIGKILL) // not to outlive the test
					}
					t.Fatalf("processes left behind after the timeout:\n%s", strings.Join(list, "\n"))
				}
				time.Sleep(50 * time.Millisecond)
			}
			h.unchanged("", before)
			h.serves("", "v1", "v1")
		}},
		{"a dedicated site builds and restarts its own services only", func(t *testing.T) {
			mainPID := h.sd.MainPID(p.Unit)
			mainPM, _ := h.pm.Get(p.Process)
			h.push("acme", pe2eChange(sandbox.BackendVersion("acme-v2", true)), pe2eChange(sandbox.FrontendVersion("acme-v2")))
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
	h.push("", pe2eChange(sandbox.BackendVersion("v2", true)), nil)
	if err := sandbox.WriteFrontendFiles(p.FrontendSrc, sandbox.FrontendVersion("v2")); err != nil {
		t.Fatal(err)
	}
	if pid := h.sd.MainPID(p.Unit); pid != 0 {
		t.Fatalf("backend runs before the first deploy (pid %d)", pid)
	}
	h.drop(pe2eBuildMain)
	j := h.runOK()
	pe2eSteps(t, j, map[string]queue.State{"pull-frontend": queue.Succeeded, "build-frontend": queue.Succeeded, "health-frontend": queue.Succeeded})
	if len(j.Warnings) != 0 {
		t.Fatalf("warnings %q", j.Warnings)
	}
	h.serves("", "v2", "v2")
	h.restartByHand("")
	h.serves("", "v2", "v2")
}
