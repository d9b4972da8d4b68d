package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/tractstack/concierge/deploy"
	"github.com/tractstack/concierge/internal/sandbox"
	"github.com/tractstack/concierge/internal/syncbuf"
	"github.com/tractstack/concierge/queue"
)

// sitePages is how many pages the Astro site has.
const sitePages = 60

// siteFiles is a real Astro 5 SSR site on the node adapter (standalone),
// as `pnpm create astro` and an operator would leave it: a layout that
// shows the version, a component, sitePages small pages, a public file,
// the template's .gitignore and, when known, the lock file.
func siteFiles(version, lock string) map[string]string {
	files := map[string]string{
		"package.json": `{
  "name": "my-tractstack",
  "type": "module",
  "version": "0.0.1",
  "private": true,
  "scripts": {
    "build": "astro build"
  },
  "dependencies": {
    "@astrojs/node": "^9",
    "astro": "^5"
  }
}
`,
		"astro.config.mjs": "import { defineConfig } from \"astro/config\";\nimport node from \"@astrojs/node\";\n\nexport default defineConfig({\n  output: \"server\",\n  adapter: node({ mode: \"standalone\" }),\n});\n",
		".gitignore":       "# build output\ndist/\n\n# generated types\n.astro/\n\n# dependencies\nnode_modules/\n\n# logs\nnpm-debug.log*\npnpm-debug.log*\n\n# environment variables\n.env\n.env.production\n",
		"src/version.ts":   fmt.Sprintf("export const version = %q;\n", version),
		"src/layouts/Layout.astro": `---
import { version } from "../version";
const { title } = Astro.props;
---
<html lang="en">
  <head><meta charset="utf-8" /><title>{title}</title><link rel="icon" href="/favicon.svg" /></head>
  <body data-version={version}>
    <nav><a href="/">home</a></nav>
    <main><slot /></main>
    <footer>version {version}</footer>
  </body>
</html>
`,
		"src/components/Card.astro": `---
const { text, n } = Astro.props;
---
<section class="card"><h2>{text}</h2><p>{n * 7} things</p></section>
`,
		"src/pages/index.astro": `---
import Layout from "../layouts/Layout.astro";
---
<Layout title="home"><h1>Home</h1></Layout>
`,
		"public/robots.txt":  "User-agent: *\nAllow: /\n",
		"public/favicon.svg": "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 8 8\"><rect width=\"8\" height=\"8\"/></svg>\n",
	}
	for i := 1; i <= sitePages; i++ {
		files[fmt.Sprintf("src/pages/p/%d.astro", i)] = fmt.Sprintf(`---
import Layout from "../../layouts/Layout.astro";
import Card from "../../components/Card.astro";
const items = Array.from({ length: 5 }, (_, k) => ({ text: "item %d." + k, n: k * %d }));
---
<Layout title="page %d">
  <h1>Page %d</h1>
  {items.map((it) => <Card text={it.text} n={it.n} />)}
</Layout>
`, i, i, i, i)
	}
	if lock != "" {
		files["pnpm-lock.yaml"] = lock
	}
	return files
}

// siteCache is where the site's pnpm store and lock file are kept between
// runs of the bench, so that only the first run fetches from the registry.
func siteCache() (string, error) {
	dir, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("find cache dir: %w", err)
	}
	dir = filepath.Join(dir, "concierge-bench", "site")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("create cache dir: %w", err)
	}
	return dir, nil
}

// siteLock returns the site's lock file, resolved once from the registry
// (`pnpm install --lockfile-only`) and kept in the cache.
func siteLock(ctx context.Context, cache string, env []string) (string, error) {
	path := filepath.Join(cache, "pnpm-lock.yaml")
	if b, err := os.ReadFile(path); err == nil {
		return string(b), nil
	}
	dir := filepath.Join(cache, "lock")
	os.RemoveAll(dir)
	if err := writeTree(dir, map[string]string{"package.json": siteFiles("", "")["package.json"]}); err != nil {
		return "", err
	}
	if _, err := output(ctx, dir, env, "pnpm", "install", "--lockfile-only"); err != nil {
		return "", err
	}
	b, err := os.ReadFile(filepath.Join(dir, "pnpm-lock.yaml"))
	if err != nil {
		return "", fmt.Errorf("read lock file: %w", err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return "", fmt.Errorf("keep lock file: %w", err)
	}
	return string(b), nil
}

// runCPU runs a command to its end like output, passes each line of its
// output to line (when not nil), and returns the user+system CPU time of
// the process and of the children it waited for.
func runCPU(ctx context.Context, dir string, env []string, line func(string), name string, args ...string) (time.Duration, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir, cmd.Env = dir, env
	var all syncbuf.Buffer
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start %s: %w", name, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			all.Write(append(sc.Bytes(), '\n'))
			if line != nil {
				line(sc.Text())
			}
		}
		io.Copy(io.Discard, pr)
	}()
	err := cmd.Wait()
	pw.Close()
	<-done
	var cpu time.Duration
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	if err != nil {
		out := all.String()
		if len(out) > 4000 {
			out = out[len(out)-4000:]
		}
		return cpu, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, out)
	}
	return cpu, nil
}

func writeTree(dir string, files map[string]string) error {
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fmt.Errorf("create dir: %w", err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
	}
	return nil
}

// siteHome is one TractStack home (one host) with a dedicated site per
// way and pm2 mode, all from the same sources: the backend (the sandbox
// backend plus genFiles, so `go build` takes seconds) a unit of the
// private systemd user manager, the Astro frontend a git clone, built in
// place and served by a private pm2. The old way and concierge take turns
// on their own sites, so that both see the same load on a shared machine.
type siteHome struct {
	b       *bench
	sb      *sandbox.Home
	m       *manager
	pm2Home string
	lock    string
	tools   []string // what the old way's tools and pm2 run with
	env     []string // the concierge's environment
	sites   map[string]*siteHost
}

// siteHost is one site of a siteHome.
type siteHost struct {
	*siteHome
	p     deploy.Paths
	mode  string // "fork" or "cluster"
	way   string // "old" or "concierge"
	ports [2]int // backend, frontend
	seed  int
}

func freePorts(n int) ([]int, error) {
	var out []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		ls = append(ls, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}

var siteModes, siteWays = []string{"fork", "cluster"}, []string{"old", "concierge"}

func (b *bench) newSiteHome(ctx context.Context, m *manager, cache, lock string) (*siteHome, error) {
	ports, err := freePorts(2 * len(siteModes) * len(siteWays))
	if err != nil {
		return nil, err
	}
	pm2Home, err := os.MkdirTemp("", "pm2-") // its socket paths must stay short
	if err != nil {
		return nil, fmt.Errorf("create PM2_HOME: %w", err)
	}
	// Site ids of their own: their units' names are ones no test's
	// manager uses (user managers without systemd as PID 1 share the
	// cgroup of units of the same name; internal/systemdtest takes a lock
	// for that, which the bench need not wait for).
	h := &siteHome{b: b, m: m, pm2Home: pm2Home, lock: lock, sites: map[string]*siteHost{}}
	portMap := map[string][2]int{}
	var ids []string
	for _, mode := range siteModes {
		for _, way := range siteWays {
			id := fmt.Sprintf("%c%s%d", way[0], mode[:4], os.Getpid()%100000)
			portMap[id] = [2]int{ports[0], ports[1]}
			ports = ports[2:]
			ids = append(ids, id)
			h.sites[mode+"/"+way] = &siteHost{siteHome: h, mode: mode, way: way, ports: portMap[id]}
			h.sites[mode+"/"+way].p.Site = id
		}
	}
	sb, err := sandbox.New(ctx, filepath.Join(b.dir, "site"), sandbox.Options{FrontendIsClone: true, Sites: ids, Ports: portMap})
	if err != nil {
		return nil, err
	}
	h.sb = sb
	gocache, err := output(ctx, "", nil, "go", "env", "GOCACHE")
	if err != nil {
		return nil, err
	}
	var base []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CONCIERGE_") {
			base = append(base, kv)
		}
	}
	h.tools = setEnv(base, append(m.env(), "PM2_HOME="+pm2Home, "GOCACHE="+strings.TrimSpace(gocache), "CI=true",
		"npm_config_store_dir="+filepath.Join(cache, "pnpm-store"), "npm_config_update_notifier=false",
		"ASTRO_TELEMETRY_DISABLED=1", "GOFLAGS=")...)
	h.env = setEnv(h.tools, "T8K_HOME="+sb.Dir, "CONCIERGE_SYSTEMCTL=systemctl --user", "CONCIERGE_FRONTEND_UPDATE=",
		"CONCIERGE_LOG_FORMAT=json", "CONCIERGE_LOG_LEVEL=warn", "CONCIERGE_FAKE_DIR=")
	for _, s := range h.sites {
		if s.p, err = deploy.PathsFor(sb.Dir, s.p.Site); err != nil {
			break
		}
		if err = s.setUp(ctx); err != nil {
			break
		}
	}
	if err != nil {
		h.close(ctx)
		return nil, err
	}
	return h, nil
}

func (h *siteHome) close(ctx context.Context) {
	for _, s := range h.sites {
		if s.p.Unit != "" {
			h.m.systemctl(ctx, "stop", s.p.Unit)
		}
	}
	output(ctx, "", h.tools, "pm2", "kill")
	os.RemoveAll(h.pm2Home)
}

// setUp does what the installer does: the first version built in place,
// the backend unit started, the frontend started under pm2.
func (h *siteHost) setUp(ctx context.Context) error {
	v, err := h.push(ctx)
	if err != nil {
		return err
	}
	for _, dir := range []string{h.p.BackendSrc, h.p.FrontendSrc} {
		if err := sandbox.Git(ctx, dir, "pull", "-q", "--ff-only"); err != nil {
			return err
		}
	}
	if _, err := output(ctx, h.p.FrontendSrc, h.tools, "pnpm", "install", "--frozen-lockfile"); err != nil {
		return err
	}
	if _, err := output(ctx, h.p.FrontendSrc, h.tools, "pnpm", "build"); err != nil {
		return err
	}
	if _, err := output(ctx, h.p.BackendSrc, h.tools, "go", "build", "-o", h.p.Binary, "./cmd/tractstack-go"); err != nil {
		return err
	}
	unit := fmt.Sprintf("[Unit]\nDescription=tractstack-go (bench)\n\n[Service]\nExecStart=%s --port %d\nRestart=no\n", h.p.Binary, h.ports[0])
	if err := os.WriteFile(filepath.Join(h.m.unitDir, h.p.Unit), []byte(unit), 0o644); err != nil {
		return fmt.Errorf("install unit: %w", err)
	}
	if _, err := h.m.systemctl(ctx, "daemon-reload"); err != nil {
		return err
	}
	if _, err := h.m.systemctl(ctx, "start", h.p.Unit); err != nil {
		return err
	}
	// As the installer: PORT=… HOST=… pm2 start dist/server/entry.mjs --name astro-main.
	args := []string{"start", h.p.Entry, "--name", h.p.Process}
	if h.mode == "cluster" {
		args = append(args, "-i", "1")
	}
	if _, err := output(ctx, h.p.FrontendSrc, setEnv(h.tools, fmt.Sprintf("PORT=%d", h.ports[1]), "HOST=127.0.0.1"), "pm2", args...); err != nil {
		return err
	}
	return h.waitServes(v, 60*time.Second)
}

// waitServes waits until a page and the backend's health answer version v.
func (h *siteHost) waitServes(v string, d time.Duration) error {
	pr := startProbe(h.ports[1], h.ports[0], sitePages)
	done := make(chan struct{})
	close(done)
	pr.finish(done, v, v, d)
	if !pr.pages.seen(v) || !pr.backend.seen(v) {
		return fmt.Errorf("site does not serve %s within %s", v, d)
	}
	return nil
}

// push commits the next version upstream: the backend's version and
// generated bulk (so its build recompiles), the site's version.
func (h *siteHost) push(ctx context.Context) (string, error) {
	h.seed++
	v := fmt.Sprintf("s%d", h.seed)
	back := sandbox.BackendVersion(v, true)
	for k, c := range genFiles(h.seed) {
		back.Files[k] = c
	}
	if _, err := h.sb.PushBackend(ctx, h.p.Site, back); err != nil {
		return "", err
	}
	front := sandbox.Change{Files: siteFiles(v, h.lock), Remove: []string{"build.mjs", "src/version.txt"}, Message: "site " + v}
	if _, err := h.sb.PushFrontend(ctx, h.p.Site, front); err != nil {
		return "", err
	}
	return v, nil
}

// siteRun is one measured job.
type siteRun struct {
	mode, way string
	rep       int
	version   string
	t0        time.Time // the trigger
	swap      time.Time // old way: the restart starts; concierge: the swap step starts
	end       time.Time // old way: the reload returned; concierge: the job's finished_at
	steps     []stepTime
	cpu       time.Duration // user+system CPU of the job's processes and the children they waited for
	pr        *probe
}

type stepTime struct {
	name string
	d    time.Duration
}

// oldWay runs the old script's steps in the live tree, one after the
// other, as it did: pull both, build the backend onto the live binary,
// install and build the frontend in place, restart, reload.
func (h *siteHost) oldWay(ctx context.Context, r *siteRun) error {
	r.t0 = time.Now()
	last := r.t0
	step := func(name string, dir string, env []string, cmd string, args ...string) error {
		if name == "restart-backend" {
			r.swap = time.Now()
		}
		cpu, err := runCPU(ctx, dir, env, nil, cmd, args...)
		r.cpu += cpu
		now := time.Now()
		r.steps = append(r.steps, stepTime{name, now.Sub(last)})
		last = now
		return err
	}
	git := append([]string{"-c", "user.name=bench", "-c", "user.email=bench@localhost"}, "pull", "-q", "--ff-only")
	for _, s := range []struct {
		name, dir string
		cmd       string
		args      []string
	}{
		{"pull-backend", h.p.BackendSrc, "git", git},
		{"pull-frontend", h.p.FrontendSrc, "git", git},
		{"build-backend", h.p.BackendSrc, "go", []string{"build", "-o", h.p.Binary, "./cmd/tractstack-go"}},
		{"pnpm-install", h.p.FrontendSrc, "pnpm", []string{"install", "--no-frozen-lockfile"}},
		{"pnpm-build", h.p.FrontendSrc, "pnpm", []string{"build"}},
		{"restart-backend", "", "systemctl", []string{"--user", "restart", h.p.Unit}},
		{"reload-frontend", "", "pm2", []string{"reload", h.p.Process}},
	} {
		if err := step(s.name, s.dir, h.tools, s.cmd, s.args...); err != nil {
			return err
		}
	}
	r.end = last
	return nil
}

// concierge runs one job with `concierge run` of the release binary.
func (h *siteHost) concierge(ctx context.Context, r *siteRun) error {
	r.t0 = time.Now()
	if _, err := queue.WriteTrigger(h.sb.StateDir(), []string{"type=dedicated,site=" + h.p.Site + ",command=build"}, r.t0); err != nil {
		return err
	}
	// The step output lines (info level) are stamped as they arrive, to
	// split the frontend build into staging, pnpm install and pnpm build.
	var stage, installed, built time.Time
	mark := func(line string) {
		now := time.Now()
		switch {
		case strings.Contains(line, "files of node_modules from"):
			stage = now
		case strings.Contains(line, "Done in ") && installed.IsZero():
			installed = now
		case strings.Contains(line, "Complete!"):
			built = now
		}
	}
	cpu, err := runCPU(ctx, "", setEnv(h.env, "CONCIERGE_LOG_LEVEL=info"), mark, h.b.real, "run")
	if err != nil {
		return err
	}
	r.cpu = cpu
	j, err := lastJob(h.sb.Dir)
	if err != nil {
		return err
	}
	defer func() {
		for _, s := range j.Steps {
			if s.Name != "build-frontend" || s.StartedAt == nil || stage.IsZero() || installed.IsZero() || built.IsZero() {
				continue
			}
			r.steps = append(r.steps, stepTime{"build-frontend: stage (copy, link node_modules)", stage.Sub(*s.StartedAt)},
				stepTime{"build-frontend: pnpm install", installed.Sub(stage)}, stepTime{"build-frontend: pnpm build", built.Sub(installed)})
		}
	}()
	r.end = *j.FinishedAt
	for _, s := range j.Steps {
		if s.StartedAt == nil || s.FinishedAt == nil {
			continue
		}
		if s.Name == "swap" {
			r.swap = *s.StartedAt
		}
		r.steps = append(r.steps, stepTime{s.Name, s.FinishedAt.Sub(*s.StartedAt)})
	}
	// Where the job's time goes between steps: before the first and
	// after the last.
	if len(j.Steps) > 0 && j.Steps[0].StartedAt != nil {
		r.steps = append(r.steps, stepTime{"(trigger → first step)", j.Steps[0].StartedAt.Sub(r.t0)})
	}
	return nil
}

// measure pushes a new version, then runs way under the probe until the
// new version answers (at most 20 s after the job ended).
func (h *siteHost) measure(ctx context.Context, rep int) (*siteRun, error) {
	way := h.way
	v, err := h.push(ctx)
	if err != nil {
		return nil, err
	}
	r := &siteRun{mode: h.mode, way: way, rep: rep, version: v}
	r.pr = startProbe(h.ports[1], h.ports[0], sitePages)
	time.Sleep(200 * time.Millisecond) // the probe's first requests are before the trigger
	done := make(chan struct{})
	var runErr error
	go func() {
		defer close(done)
		if way == "old" {
			runErr = h.oldWay(ctx, r)
		} else {
			runErr = h.concierge(ctx, r)
		}
	}()
	r.pr.finish(done, v, v, 20*time.Second)
	if runErr != nil {
		return nil, fmt.Errorf("%s way, %s mode: %w", way, h.mode, runErr)
	}
	if !r.pr.pages.seen(v) || !r.pr.backend.seen(v) {
		return nil, fmt.Errorf("%s way, %s mode: %s does not answer 20 s after the job", way, h.mode, v)
	}
	fmt.Fprintf(os.Stderr, "bench site: %s %s #%d: %.1f s\n", h.mode, way, rep, r.end.Sub(r.t0).Seconds())
	return r, nil
}

// site: what a visitor sees during whole build jobs on a realistic host,
// the old script's steps in the live tree against concierge, with the
// frontend under pm2 in fork mode and then in cluster mode.
func (b *bench) site(ctx context.Context) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root (a private systemd user manager)")
	}
	reps := 3
	if b.short {
		reps = 1
	}
	cache, err := siteCache()
	if err != nil {
		return err
	}
	lock, err := siteLock(ctx, cache, setEnv(os.Environ(), "npm_config_store_dir="+filepath.Join(cache, "pnpm-store"), "CI=true"))
	if err != nil {
		return err
	}
	m, err := startManager(ctx, b.dir)
	if err != nil {
		return err
	}
	defer m.stop()
	home, err := b.newSiteHome(ctx, m, cache, lock)
	if err != nil {
		return fmt.Errorf("set up the host: %w", err)
	}
	defer home.close(ctx)
	var runs []*siteRun
	var firsts []string
	// The first job on a site without releases keeps what is live as a
	// release first (adopt): measured, shown apart.
	for _, mode := range siteModes {
		first, err := home.sites[mode+"/concierge"].measure(ctx, 0)
		if err != nil {
			return err
		}
		firsts = append(firsts, fmt.Sprintf("%s mode %.1f s", mode, first.end.Sub(first.t0).Seconds()))
		runs = append(runs, first)
	}
	for r := range reps {
		for _, mode := range siteModes {
			for _, way := range siteWays {
				run, err := home.sites[mode+"/"+way].measure(ctx, r+1)
				if err != nil {
					return err
				}
				runs = append(runs, run)
			}
		}
	}
	sort.SliceStable(runs, func(i, j int) bool {
		a, b := runs[i], runs[j]
		if a.mode != b.mode {
			return a.mode > b.mode // fork first
		}
		return a.way > b.way // old first
	})
	siteReport(runs, firsts)
	return nil
}

func siteReport(runs []*siteRun, firsts []string) {
	var rows [][]string
	for _, r := range runs {
		np, fp, gp := window(r.pr.pages.samples(), r.t0, r.swap)
		nf, ff, gf := window(r.pr.public.samples(), r.t0, r.swap)
		_, fp2, gp2 := window(r.pr.pages.samples(), r.swap, time.Time{})
		_, ff2, gf2 := window(r.pr.public.samples(), r.swap, time.Time{})
		nb, fb, gb := window(r.pr.backend.samples(), r.t0, time.Time{})
		run := fmt.Sprint(r.rep)
		if r.rep == 0 {
			run = "first (adopts)"
		}
		rows = append(rows, []string{r.mode, r.way, run, fmt.Sprintf("%.1f", r.end.Sub(r.t0).Seconds()), fmt.Sprintf("%.1f", r.cpu.Seconds()),
			fmt.Sprintf("%d / %d", fp, np), fmt.Sprintf("%d / %d", ff, nf), ms(max(gp, gf)),
			fmt.Sprintf("%d / %d", fp2, ff2), ms(max(gp2, gf2)), fmt.Sprintf("%d / %d", fb, nb), ms(gb)})
	}
	table("A real site during whole build jobs: the old script's steps against concierge",
		[]string{"pm2 mode", "way", "run", "wall s (trigger → done)", "CPU s", "page fails before swap", "public-file fails before swap",
			"longest frontend gap before swap ms", "page / public fails from swap", "longest frontend gap from swap ms",
			"backend fails", "longest backend gap ms"}, rows)

	// Wall time: medians of the measured runs (not the adopting first job).
	var stepRows [][]string
	for _, mode := range []string{"fork", "cluster"} {
		walls, cpus := map[string][]time.Duration{}, map[string][]time.Duration{}
		steps := map[string]map[string][]time.Duration{"old": {}, "concierge": {}}
		order := map[string][]string{}
		for _, r := range runs {
			if r.mode != mode || r.rep == 0 {
				continue
			}
			walls[r.way] = append(walls[r.way], r.end.Sub(r.t0))
			cpus[r.way] = append(cpus[r.way], r.cpu)
			for _, s := range r.steps {
				if _, ok := steps[r.way][s.name]; !ok {
					order[r.way] = append(order[r.way], s.name)
				}
				steps[r.way][s.name] = append(steps[r.way][s.name], s.d)
			}
		}
		o, c := percentile(walls["old"], 50), percentile(walls["concierge"], 50)
		if o > 0 {
			stepRows = append(stepRows, []string{mode, "**wall (median)**", ms(o), ms(c), fmt.Sprintf("**%.2f×**", c.Seconds()/o.Seconds())})
			oc, cc := percentile(cpus["old"], 50), percentile(cpus["concierge"], 50)
			stepRows = append(stepRows, []string{mode, "CPU user+system (median)", ms(oc), ms(cc), fmt.Sprintf("%.2f×", cc.Seconds()/oc.Seconds())})
		}
		for _, way := range []string{"old", "concierge"} {
			for _, name := range order[way] {
				d := percentile(steps[way][name], 50)
				row := []string{mode, name, "", "", ""}
				if way == "old" {
					row[2] = ms(d)
				} else {
					row[3] = ms(d)
				}
				stepRows = append(stepRows, row)
			}
		}
	}
	table("Where the time goes (median per step)", []string{"pm2 mode", "step", "old way ms", "concierge ms", "concierge / old"}, stepRows,
		"First concierge job on each host (adopts the live tree as a release; not in the medians): "+strings.Join(firsts, ", ")+".")

	// Failure timelines, for reading the table.
	var tl []string
	for _, r := range runs {
		for _, s := range []*stream{r.pr.pages, r.pr.public, r.pr.backend} {
			if f := failTimes(s.samples(), r.t0); len(f) > 0 {
				tl = append(tl, fmt.Sprintf("- %s %s #%d %s (swap at %.2f s, done at %.2f s): %s", r.mode, r.way, r.rep, s.name,
					r.swap.Sub(r.t0).Seconds(), r.end.Sub(r.t0).Seconds(), strings.Join(f, ", ")))
			}
		}
	}
	sort.Strings(tl)
	fmt.Printf("\nFailed requests, seconds after the trigger:\n\n%s\n", strings.Join(tl, "\n"))
}
