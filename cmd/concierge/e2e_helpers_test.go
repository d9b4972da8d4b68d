package main

// The harness the end-to-end tests share: children started and waited
// for, polls with a deadline, the environment of the tools and of the
// concierge, loopback HTTP, scans of /proc for processes left behind, and
// a sandbox home set up as the installer leaves a host (backends under a
// private systemd user manager, frontends under a private pm2).

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tractstack/concierge/builder"
	"github.com/tractstack/concierge/deploy"
	"github.com/tractstack/concierge/internal/pm2test"
	"github.com/tractstack/concierge/internal/sandbox"
	"github.com/tractstack/concierge/internal/syncbuf"
	"github.com/tractstack/concierge/internal/systemdtest"
	"github.com/tractstack/concierge/internal/testtool"
	"github.com/tractstack/concierge/queue"
)

// buildMain is the trigger line of a build of the main install.
const buildMain = "type=main,tenant=default,command=build"

// proc is a child started in the background.
type proc struct {
	cmd  *exec.Cmd
	out  *syncbuf.Buffer // its stdout and stderr
	done chan struct{}
	err  error // what Wait returned, once done is closed
}

// startProc starts bin with env in the background; t.Cleanup kills it
// if it is still running.
func startProc(t testing.TB, bin string, env []string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	p := &proc{cmd: cmd, out: &syncbuf.Buffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		if !p.exited() {
			cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// wait waits at most d for the process to exit and returns its exit
// status (-1 when a signal ended it); past d it kills it and fails t.
func (p *proc) wait(t testing.TB, d time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(d):
		p.cmd.Process.Kill()
		<-p.done
		t.Fatalf("%s did not exit within %s:\n%s", filepath.Base(p.cmd.Path), d, p.out.String())
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	if p.err != nil {
		t.Fatal(p.err)
	}
	return 0
}

// waitExit is p.wait with the usual 30 seconds.
func waitExit(t testing.TB, p *proc) int {
	t.Helper()
	return p.wait(t, 30*time.Second)
}

// runConcierge runs a concierge binary to its end.
func runConcierge(t testing.TB, bin string, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return o.String(), e.String(), code
}

// statusJobs is the job list of `concierge status --json`.
func statusJobs(t testing.TB, bin string, env []string) []queue.Job {
	t.Helper()
	out, errOut, code := runConcierge(t, bin, env, "status", "--json")
	if code != 0 {
		t.Fatalf("status --json: exit %d: %s", code, errOut)
	}
	var st struct{ Jobs []queue.Job }
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	return st.Jobs
}

// poll calls cond every interval until it holds, and reports whether it
// did before timeout passed.
func poll(timeout, interval time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(interval)
	}
	return true
}

// waitFor fails t unless cond holds within timeout; cond's second value
// says what it saw, for the failure message.
func waitFor(t testing.TB, what string, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	var seen string
	if poll(timeout, 20*time.Millisecond, func() bool {
		ok, s := cond()
		seen = s
		return ok
	}) {
		return
	}
	if seen == "" {
		t.Fatalf("timed out after %s waiting for %s", timeout, what)
	}
	t.Fatalf("timed out after %s waiting for %s (last seen: %s)", timeout, what, seen)
}

// eventually fails t unless cond holds within timeout.
func eventually(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	waitFor(t, what, timeout, func() (bool, string) { return cond(), "" })
}

// mustWrite writes a file.
func mustWrite(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// dirNames lists the names in dir.
func dirNames(t testing.TB, dir string) []string {
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

// loopbackPorts returns n distinct free loopback ports.
func loopbackPorts(t testing.TB, n int) []int {
	t.Helper()
	ports, err := freePorts(n)
	if err != nil {
		t.Fatal(err)
	}
	return ports
}

// setEnv returns base with every KEY=VALUE of set replacing its key.
func setEnv(base []string, set ...string) []string {
	out := make([]string, 0, len(base)+len(set))
	for _, kv := range base {
		k, _, _ := strings.Cut(kv, "=")
		if !slices.ContainsFunc(set, func(s string) bool { return strings.HasPrefix(s, k+"=") }) {
			out = append(out, kv)
		}
	}
	return append(out, set...)
}

// toolEnv is what go, pnpm, pm2 and the concierge need, and all they get
// of the test's environment: its PATH and HOME and its warm Go caches; no
// network (the backend has no dependencies), no GOFLAGS, and nothing that
// would point a child at another manager, pm2, home or configuration.
func toolEnv(t testing.TB) []string {
	t.Helper()
	g := strings.Split(strings.TrimSpace(runTool(t, "", os.Environ(), "go", "env", "GOCACHE", "GOPATH", "GOMODCACHE")), "\n")
	if len(g) != 3 {
		t.Fatalf("go env printed %q", g)
	}
	home := os.Getenv("HOME")
	if home == "" {
		home = t.TempDir()
	}
	return []string{"PATH=" + os.Getenv("PATH"), "HOME=" + home,
		"GOCACHE=" + g[0], "GOPATH=" + g[1], "GOMODCACHE=" + g[2], "GOPROXY=off", "GOTOOLCHAIN=local", "GOFLAGS=",
		"npm_config_update_notifier=false"}
}

// runTool runs a tool in dir with env (and CI=true) as the installer or an
// operator would, in its own process group, which is killed if the tool
// takes more than two minutes; a failure fails t. It returns the tool's
// standard output.
func runTool(t testing.TB, dir string, env []string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = setEnv(env, "CI=true")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s in %s: %v\n%s%s", name, strings.Join(args, " "), dir, err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// loopbackGet returns the trimmed body of GET http://127.0.0.1:<port><path>;
// an answer other than 200 is an error. The request names the tenant
// (X-Tenant-ID: default), as the backend's health check wants; it never
// goes through a proxy, keeps no connection and gives up after 2 seconds.
func loopbackGet(port int, path string) (string, error) {
	req, err := http.NewRequest(http.MethodGet, "http://127.0.0.1:"+strconv.Itoa(port)+path, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("X-Tenant-ID", "default")
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	body := strings.TrimSpace(string(b))
	if err != nil {
		return body, err
	}
	if resp.StatusCode != http.StatusOK {
		return body, fmt.Errorf("status %d: %s", resp.StatusCode, body)
	}
	return body, nil
}

// siteAnswers reports the versions a site serves now: the version in its
// backend's health JSON (which must say healthy) and the one its frontend
// page names ("frontend <version>"). ports are its GO and ASTRO ports.
func siteAnswers(ports [2]int) (backend, frontend string, err error) {
	body, err := loopbackGet(ports[0], "/api/v1/health")
	if err != nil {
		return "", "", fmt.Errorf("backend: %w", err)
	}
	var health struct {
		Healthy bool
		Version string
	}
	if err := json.Unmarshal([]byte(body), &health); err != nil {
		return "", "", fmt.Errorf("backend health JSON: %w", err)
	}
	if !health.Healthy {
		return "", "", fmt.Errorf("backend %s unhealthy: %s", health.Version, body)
	}
	page, err := loopbackGet(ports[1], "/")
	if err != nil {
		return health.Version, "", fmt.Errorf("frontend: %w", err)
	}
	front, ok := strings.CutPrefix(page, "frontend ")
	if !ok {
		return health.Version, "", fmt.Errorf("frontend answered %q", page)
	}
	return health.Version, front, nil
}

// procStat reads the state and parent of pid from /proc/<pid>/stat.
func procStat(pid int) (state string, ppid int, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return "", 0, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')') // the command name may hold anything
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

// parentPID returns the parent of pid (0 when it is gone).
func parentPID(pid int) int {
	_, ppid, _ := procStat(pid)
	return ppid
}

// strays lists the live processes of a home: those whose command line
// names it, whose working directory is in it, or which carry the owner
// mark of its data directory (<home>/concierge), except this test process
// and keep and their descendants (services that run on purpose). Zombies
// do not count (PID 1 here never reaps orphans).
func strays(home string, keep []int) map[int]string {
	mark := []byte(builder.OwnerEnv + "=" + filepath.Join(home, "concierge") + "\x00")
	out := map[int]string{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		state, _, ok := procStat(pid)
		if !ok || state == "Z" || state == "X" {
			continue
		}
		dir := filepath.Join("/proc", e.Name())
		cmdline, _ := os.ReadFile(filepath.Join(dir, "cmdline"))
		env, _ := os.ReadFile(filepath.Join(dir, "environ"))
		cwd, _ := os.Readlink(filepath.Join(dir, "cwd"))
		if !bytes.Contains(cmdline, []byte(home)) && cwd != home && !strings.HasPrefix(cwd, home+"/") &&
			!bytes.Contains(append(env, 0), mark) {
			continue
		}
		service := false
		for a, n := pid, 0; a > 1 && n < 64 && !service; a, n = parentPID(a), n+1 {
			service = slices.Contains(keep, a)
		}
		if !service {
			out[pid] = fmt.Sprintf("pid %d (%s) %q in %s", pid, state, strings.TrimSpace(strings.ReplaceAll(string(cmdline), "\x00", " ")), cwd)
		}
	}
	return out
}

// waitNoStrays waits (briefly: a killed process takes a moment to go)
// until no process of home is left but keep's (see strays). Past the
// deadline it kills those left, not to outlive the test, and fails t.
func waitNoStrays(t testing.TB, home string, keep []int) {
	t.Helper()
	var left map[int]string
	if poll(10*time.Second, 50*time.Millisecond, func() bool { left = strays(home, keep); return len(left) == 0 }) {
		return
	}
	var list []string
	for pid, s := range left {
		list = append(list, s)
		syscall.Kill(pid, syscall.SIGKILL)
	}
	sort.Strings(list)
	t.Fatalf("processes left running:\n%s", strings.Join(list, "\n"))
}

// liveHost is a sandbox TractStack home as the installer leaves a host:
// each backend a unit of a private systemd user manager, each frontend
// built once by hand (pnpm install, pnpm build) and running under a
// private pm2. The release binary (bins.real) drives it.
type liveHost struct {
	t        *testing.T
	sb       *sandbox.Home
	sd       *systemdtest.Manager
	pm       *pm2test.PM2
	installs []string          // "" (the main install) and sites, as set up
	ports    map[string][2]int // PortsKey ("main" or site) → GO, ASTRO
	tools    []string          // toolEnv: the installer's tools run with it
	env      []string          // the concierge's environment
	n        int               // triggers dropped so far
}

// liveOptions shape a liveHost.
type liveOptions struct {
	// installs are the targets to set up: "" for the main install and
	// dedicated site ids. Each gets ports, a unit and a pm2 process.
	installs        []string
	frontendIsClone bool // each frontend a git clone of its own origin
	// running builds each backend and starts its unit, then waits until
	// the site serves v1. Otherwise the unit is installed but has never
	// run (there is no binary yet: the first `concierge run` builds it,
	// and its `systemctl restart` starts the stopped unit).
	running bool
	// template installs the backend of the (one) dedicated site as an
	// instance of tractstack-go@.service, as the installer does, instead
	// of a unit file of its own.
	template     bool
	serviceExtra string   // lines added to each backend unit's [Service]
	env          []string // the concierge's own settings (KEY=VALUE)
}

// startLiveHost lays out and sets up a host. The frontends are started
// under pm2 because `pm2 reload` needs a process to reload and pm2 cannot
// start a dist/server/entry.mjs that does not exist yet: the concierge
// never starts a pm2 process of its own.
func startLiveHost(t *testing.T, o liveOptions) *liveHost {
	t.Helper()
	testtool.Require(t, "git", "go", "node", "pnpm", "pm2")
	sd := systemdtest.Start(t)
	pm := pm2test.Start(t)
	h := &liveHost{t: t, sd: sd, pm: pm, installs: o.installs, ports: map[string][2]int{}, tools: toolEnv(t)}
	dir := t.TempDir()
	free := loopbackPorts(t, 2*len(o.installs))
	var sites []string
	for i, site := range o.installs {
		p, err := deploy.PathsFor(dir, site)
		if err != nil {
			t.Fatal(err)
		}
		h.ports[p.PortsKey] = [2]int{free[2*i], free[2*i+1]}
		if site != "" {
			sites = append(sites, site)
		}
	}
	sb, err := sandbox.New(context.Background(), dir, sandbox.Options{Sites: sites, FrontendIsClone: o.frontendIsClone, Ports: h.ports})
	if err != nil {
		t.Fatal(err)
	}
	h.sb = sb
	h.env = setEnv(append(append([]string{}, h.tools...), sd.Env()...), append([]string{
		"T8K_HOME=" + sb.Dir,
		"PM2_HOME=" + pm.Home(),
		"CONCIERGE_SYSTEMCTL=systemctl --user",
		"CONCIERGE_FRONTEND_UPDATE=", // no registry access
		// Both builds at once whatever this host has: tests expect them to overlap.
		"CONCIERGE_BUILD_CONCURRENCY=on",
	}, o.env...)...)

	for _, site := range o.installs {
		p := h.paths(site)
		port := h.ports[p.PortsKey]
		if o.running {
			runTool(t, p.BackendSrc, h.tools, "go", "build", "-o", p.Binary, "./cmd/tractstack-go")
		}
		runTool(t, p.FrontendSrc, h.tools, "pnpm", "install")
		runTool(t, p.FrontendSrc, h.tools, "pnpm", "build")
		unit, name, bin := p.Unit, p.PortsKey, p.Binary
		if o.template && site != "" {
			unit, name, bin = "tractstack-go@.service", "%i", filepath.Join(sb.Dir, "sites", "%i", "bin", "tractstack-go")
		}
		sd.InstallUnit(unit, fmt.Sprintf("[Unit]\nDescription=tractstack-go %s (test)\n\n[Service]\nExecStart=%s --port %d\nRestart=no\n%s",
			name, bin, port[0], o.serviceExtra))
		t.Cleanup(func() { sd.Systemctl("stop", p.Unit) })
		if o.running {
			if out, err := sd.Systemctl("start", p.Unit); err != nil {
				t.Fatalf("start %s: %v\n%s", p.Unit, err, out)
			}
		}
		pm.StartApp(p.Process, p.Entry, port[1])
	}
	if o.running {
		for _, site := range o.installs {
			h.serves(site, "v1", "v1")
		}
	}
	return h
}

func (h *liveHost) paths(site string) deploy.Paths {
	h.t.Helper()
	p, err := deploy.PathsFor(h.sb.Dir, site)
	if err != nil {
		h.t.Fatal(err)
	}
	return p
}

// push commits changes to a site's origins, as a developer elsewhere
// would; it returns the backend commit ("" when the backend is unchanged).
func (h *liveHost) push(site string, backend, frontend *sandbox.Change) string {
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

// mergeChanges is one commit made of several changes.
func mergeChanges(changes ...sandbox.Change) *sandbox.Change {
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

func changeOf(c sandbox.Change) *sandbox.Change { return &c }

// drop writes the next trigger into the state directory, as an operator
// would, and returns its name.
func (h *liveHost) drop(line string) string {
	h.t.Helper()
	h.n++
	name := fmt.Sprintf("build-%04d.csv", h.n)
	mustWrite(h.t, filepath.Join(h.sb.StateDir(), name), line+"\n")
	return name
}

// run runs `concierge run` to its end (at most 3 minutes); extra
// overrides the environment.
func (h *liveHost) run(extra ...string) (logs string, code int) {
	h.t.Helper()
	p := startProc(h.t, bins.real, setEnv(h.env, extra...), "run")
	code = p.wait(h.t, 3*time.Minute)
	return p.out.String(), code
}

// concierge runs the release binary and requires exit 0; it returns
// stdout.
func (h *liveHost) concierge(args ...string) string {
	h.t.Helper()
	out, errOut, code := runConcierge(h.t, bins.real, h.env, args...)
	if code != 0 {
		h.t.Fatalf("concierge %s: exit %d\n%s", strings.Join(args, " "), code, errOut)
	}
	return out
}

// jobs is `concierge status --json`.
func (h *liveHost) jobs() []queue.Job {
	h.t.Helper()
	return statusJobs(h.t, bins.real, h.env)
}

// answers reports what a site's services answer now (see siteAnswers).
func (h *liveHost) answers(site string) (backend, frontend string, err error) {
	return siteAnswers(h.ports[h.paths(site).PortsKey])
}

// serves waits until a site's backend answers healthy with version back
// and its frontend with front. A service just restarted takes a moment
// to listen, hence the poll.
func (h *liveHost) serves(site, back, front string) {
	h.t.Helper()
	waitFor(h.t, fmt.Sprintf("site %q to serve backend %s and frontend %s", site, back, front), 20*time.Second, func() (bool, string) {
		b, f, err := h.answers(site)
		return err == nil && b == back && f == front, fmt.Sprintf("backend %q, frontend %q, error %v", b, f, err)
	})
}

// services are the pids whose descendants run the sites on purpose, not
// builds: the systemd user manager (the parent of a running backend's main
// process) and the pm2 daemon (its pid is in PM2_HOME/pm2.pid). A backend
// must be running.
func (h *liveHost) services() []int {
	h.t.Helper()
	var keep []int
	for _, site := range h.installs {
		if pid := h.sd.MainPID(h.paths(site).Unit); pid > 0 {
			if ppid := parentPID(pid); ppid > 1 {
				keep = append(keep, ppid)
				break
			}
		}
	}
	if len(keep) == 0 {
		h.t.Fatalf("cannot find the systemd user manager's pid: no backend runs")
	}
	data, err := os.ReadFile(filepath.Join(h.pm.Home(), "pm2.pid"))
	if err != nil {
		h.t.Fatalf("pm2 daemon pid: %v", err)
	}
	daemon, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		h.t.Fatalf("pm2 daemon pid: %v", err)
	}
	return append(keep, daemon)
}
