// Package sandbox builds a throwaway TractStack home for the demo, the
// integration tests and the benchmarks: bare git origins with clones of them,
// a tiny Go backend that serves /api/v1/health and reports its version, and a
// tiny frontend package whose plain-Node build writes dist/server/entry.mjs.
//
// Everything is made with the real git CLI, as an operator would, so the
// concierge under test meets the same repositories it meets on a host.
package sandbox

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// Options shape a sandbox home.
type Options struct {
	// Sites are dedicated sites to lay out under <home>/sites/<site>.
	Sites []string
	// FrontendIsClone makes src/my-tractstack a git clone of its own
	// origin. On a usual host it is not one (the installer runs
	// `pnpm create astro`), which is the default here too.
	FrontendIsClone bool
	// Ports lists SITE=GO,ASTRO lines for etc/t8k-ports.conf, keyed by
	// site id ("main" for the main install). Empty: no ports file.
	Ports map[string][2]int
	// BackendVersion is the version the first backend commit reports
	// (default "v1"); FrontendVersion likewise for the frontend.
	BackendVersion  string
	FrontendVersion string
}

// Home is a sandbox TractStack home.
type Home struct {
	// Dir is the home directory (what --home / T8K_HOME names).
	Dir string
	// Origins is where the bare origin repositories live, outside the
	// home, keyed by site ("" for the main install).
	Origins string
	opts    Options
}

// Root is the install root of a site: the home for the main install ("").
func (h *Home) Root(site string) string {
	if site == "" {
		return h.Dir
	}
	return filepath.Join(h.Dir, "sites", site)
}

// BackendSrc is the backend source tree of a site.
func (h *Home) BackendSrc(site string) string {
	return filepath.Join(h.Root(site), "src", "tractstack-go")
}

// FrontendSrc is the frontend source tree of a site.
func (h *Home) FrontendSrc(site string) string {
	return filepath.Join(h.Root(site), "src", "my-tractstack")
}

// Binary is the live backend binary path of a site.
func (h *Home) Binary(site string) string {
	return filepath.Join(h.Root(site), "bin", "tractstack-go")
}

// GreetingDir is where the frontend's one dependency lives (see
// greetingFiles): beside the origins, outside every frontend tree.
func (h *Home) GreetingDir() string { return filepath.Join(h.Origins, "greeting") }

// StateDir is where triggers are dropped.
func (h *Home) StateDir() string { return filepath.Join(h.Dir, "state") }

func (h *Home) originDir(site, repo string) string {
	name := "main"
	if site != "" {
		name = site
	}
	return filepath.Join(h.Origins, name, repo+".git")
}

// BackendOrigin is the bare origin of a site's backend.
func (h *Home) BackendOrigin(site string) string { return h.originDir(site, "tractstack-go") }

// FrontendOrigin is the bare origin of a site's frontend.
func (h *Home) FrontendOrigin(site string) string { return h.originDir(site, "my-tractstack") }

// New lays out a home in dir (which should be empty) with origins in
// dir/../origins-<base>. It does not build anything.
func New(ctx context.Context, dir string, opts Options) (*Home, error) {
	if opts.BackendVersion == "" {
		opts.BackendVersion = "v1"
	}
	if opts.FrontendVersion == "" {
		opts.FrontendVersion = "v1"
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("resolve sandbox dir: %w", err)
	}
	h := &Home{Dir: dir, Origins: filepath.Join(dir, ".origins"), opts: opts}
	for _, d := range []string{"state", "log", "etc", "scripts", "bin", "t8k-go-server/config/default"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, fmt.Errorf("create sandbox dir: %w", err)
		}
	}
	if len(opts.Ports) > 0 {
		var b strings.Builder
		b.WriteString("# SITE_ID=GO_PORT,ASTRO_PORT\n")
		for _, site := range append([]string{"main"}, opts.Sites...) {
			if p, ok := opts.Ports[site]; ok {
				fmt.Fprintf(&b, "%s=%d,%d\n", site, p[0], p[1])
			}
		}
		if err := os.WriteFile(filepath.Join(dir, "etc", "t8k-ports.conf"), []byte(b.String()), 0o644); err != nil {
			return nil, fmt.Errorf("write ports file: %w", err)
		}
	}
	if err := writeFiles(h.GreetingDir(), greetingFiles()); err != nil {
		return nil, err
	}
	for _, site := range append([]string{""}, opts.Sites...) {
		if err := h.layoutSite(ctx, site); err != nil {
			return nil, err
		}
	}
	return h, nil
}

func (h *Home) layoutSite(ctx context.Context, site string) error {
	root := h.Root(site)
	for _, d := range []string{"src", "bin", "t8k-go-server/config/default"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return fmt.Errorf("create site dir: %w", err)
		}
	}
	// Backend: origin, seeded from a work tree, then cloned to src/.
	if err := h.seedOrigin(ctx, h.BackendOrigin(site), backendFiles(h.opts.BackendVersion, true)); err != nil {
		return err
	}
	if err := Git(ctx, filepath.Join(root, "src"), "clone", "-q", h.BackendOrigin(site), "tractstack-go"); err != nil {
		return err
	}
	if err := h.seedOrigin(ctx, h.FrontendOrigin(site), frontendFiles(h.opts.FrontendVersion, h.GreetingDir())); err != nil {
		return err
	}
	if h.opts.FrontendIsClone {
		if err := Git(ctx, filepath.Join(root, "src"), "clone", "-q", h.FrontendOrigin(site), "my-tractstack"); err != nil {
			return err
		}
	} else if err := writeFiles(h.FrontendSrc(site), frontendFiles(h.opts.FrontendVersion, h.GreetingDir())); err != nil {
		return err
	}
	return nil
}

func (h *Home) seedOrigin(ctx context.Context, origin string, files map[string]string) error {
	if err := os.MkdirAll(origin, 0o755); err != nil {
		return fmt.Errorf("create origin: %w", err)
	}
	if err := Git(ctx, origin, "init", "-q", "--bare", "-b", "main"); err != nil {
		return err
	}
	work, err := os.MkdirTemp(h.Origins, "seed-")
	if err != nil {
		return fmt.Errorf("create seed dir: %w", err)
	}
	defer os.RemoveAll(work)
	if err := Git(ctx, work, "init", "-q", "-b", "main"); err != nil {
		return err
	}
	if err := writeFiles(work, files); err != nil {
		return err
	}
	if err := Git(ctx, work, "add", "-A"); err != nil {
		return err
	}
	if err := Git(ctx, work, "commit", "-q", "-m", "initial"); err != nil {
		return err
	}
	if err := Git(ctx, work, "push", "-q", origin, "main"); err != nil {
		return err
	}
	return nil
}

// Change is a commit to push upstream: files to write (path relative to
// the repository root) and a message.
type Change struct {
	Files   map[string]string
	Remove  []string
	Message string
}

// PushBackend commits change to a site's backend origin (through a
// scratch clone, as a developer elsewhere would) and returns the commit.
func (h *Home) PushBackend(ctx context.Context, site string, c Change) (string, error) {
	return h.push(ctx, h.BackendOrigin(site), c)
}

// PushFrontend commits change to a site's frontend origin.
func (h *Home) PushFrontend(ctx context.Context, site string, c Change) (string, error) {
	return h.push(ctx, h.FrontendOrigin(site), c)
}

func (h *Home) push(ctx context.Context, origin string, c Change) (string, error) {
	work, err := os.MkdirTemp(h.Origins, "push-")
	if err != nil {
		return "", fmt.Errorf("create scratch clone dir: %w", err)
	}
	defer os.RemoveAll(work)
	if err := Git(ctx, work, "clone", "-q", origin, "."); err != nil {
		return "", err
	}
	if err := writeFiles(work, c.Files); err != nil {
		return "", err
	}
	for _, p := range c.Remove {
		if err := os.RemoveAll(filepath.Join(work, p)); err != nil {
			return "", fmt.Errorf("remove %s: %w", p, err)
		}
	}
	msg := c.Message
	if msg == "" {
		msg = "change"
	}
	if err := Git(ctx, work, "add", "-A"); err != nil {
		return "", err
	}
	if err := Git(ctx, work, "commit", "-q", "--allow-empty", "-m", msg); err != nil {
		return "", err
	}
	if err := Git(ctx, work, "push", "-q", "origin", "HEAD:main"); err != nil {
		return "", err
	}
	out, err := GitOutput(ctx, work, "rev-parse", "HEAD")
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(out), nil
}

// BackendVersion is a change that makes the backend report version and
// answer its health check healthy or not.
func BackendVersion(version string, healthy bool) Change {
	return Change{Files: map[string]string{
		"cmd/tractstack-go/version.go": versionGo(version, healthy),
	}, Remove: []string{"cmd/tractstack-go/broken.go"}, Message: "backend " + version}
}

// BackendBroken is a change that does not compile.
func BackendBroken() Change {
	return Change{Files: map[string]string{
		"cmd/tractstack-go/broken.go": "package main\n\nfunc broken() { this does not compile }\n",
	}, Message: "broken backend"}
}

// FrontendVersion is a change that makes the frontend serve version.
func FrontendVersion(version string) Change {
	return Change{Files: map[string]string{"src/version.txt": version + "\n"},
		Remove: []string{"src/broken", "src/mode.txt"}, Message: "frontend " + version}
}

// FrontendMode is a change that makes the frontend serve version and
// answer its pages as mode says: "hang" (no answer; its files still
// answer) or "maint" (a redirect to /maint).
func FrontendMode(version, mode string) Change {
	return Change{Files: map[string]string{"src/version.txt": version + "\n", "src/mode.txt": mode + "\n"},
		Remove: []string{"src/broken"}, Message: "frontend " + version + " " + mode}
}

// WriteTenants writes the tenant registry the backend stand-in reads
// from the file its unit names in SANDBOX_TENANTS_FILE: mode "single" or
// "multi", and each tenant's status ("active", "inactive", "reserved").
// As the real backend: an active tenant is healthy; the inactive default
// tenant needs setup; another inactive or a reserved tenant is not
// available (503); a tenant not listed is unknown (404); a single-tenant
// backend answers every name for its default tenant.
func WriteTenants(path, mode string, states map[string]string) error {
	var b strings.Builder
	b.WriteString(mode + "\n")
	for k, v := range states {
		fmt.Fprintf(&b, "%s=%s\n", k, v)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("write tenants: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write tenants: %w", err)
	}
	return nil
}

// FrontendBroken is a change whose build fails.
func FrontendBroken() Change {
	return Change{Files: map[string]string{"src/broken": "the build fails while this file exists\n"},
		Message: "broken frontend"}
}

// FrontendBuildDelay makes the frontend build take ms milliseconds.
func FrontendBuildDelay(ms int) Change {
	return Change{Files: map[string]string{"src/build-delay-ms": strconv.Itoa(ms) + "\n"},
		Message: "slow frontend build"}
}

// WriteFrontendFiles writes the frontend package into dir (for a frontend
// that is not a clone and is changed in place, as an operator would).
func WriteFrontendFiles(dir string, c Change) error { return writeFiles(dir, c.Files) }

func writeFiles(dir string, files map[string]string) error {
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fmt.Errorf("create dir for %s: %w", name, err)
		}
		mode := os.FileMode(0o644)
		if strings.HasSuffix(name, ".sh") {
			mode = 0o755
		}
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
	}
	return nil
}

// Git runs the git CLI in dir with a fixed identity and no user or system
// configuration, so the host's settings cannot change what a test sees.
func Git(ctx context.Context, dir string, args ...string) error {
	_, err := GitOutput(ctx, dir, args...)
	return err
}

// GitOutput is Git returning standard output.
func GitOutput(ctx context.Context, dir string, args ...string) (string, error) {
	full := append([]string{"-c", "user.name=sandbox", "-c", "user.email=sandbox@localhost",
		"-c", "commit.gpgsign=false", "-c", "init.defaultBranch=main"}, args...)
	cmd := exec.CommandContext(ctx, "git", full...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null", "GIT_TERMINAL_PROMPT=0")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("run git %s in %s: %w: %s", strings.Join(args, " "), dir, err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}
