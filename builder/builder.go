// Package builder produces a release from sources: it pulls the backend
// and frontend trees (go-git, fast-forward only), builds the Go backend
// beside its live binary, installs and builds the frontend with pnpm and
// extracts the Tailwind whitelist. Every child runs with an explicit
// environment, in its own process group, under a timeout that ends the
// whole group, and below the live site (Command.Background: nice 10, idle
// I/O, raised OOM score). It knows nothing of services, queue files or
// systemd.
package builder

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/rs/zerolog"
)

// DefaultStepTimeout bounds a child process when Config.StepTimeout is 0.
const DefaultStepTimeout = 15 * time.Minute

// Config shapes a Builder.
type Config struct {
	Env            []string      // child environment (already through ChildEnv)
	StepTimeout    time.Duration // per child process; default 15m when 0
	GoBuildFlags   []string      // extra `go build` flags, e.g. ["-tags","sqlite_fts5"]
	FrontendUpdate string        // package for `pnpm up <pkg> --latest` before install; "" = off
	Log            zerolog.Logger
}

// Builder builds releases. It holds no state between calls besides its
// configuration, so one Builder may serve calls from several goroutines.
type Builder struct {
	cfg Config
	log zerolog.Logger
}

// New returns a Builder for cfg.
func New(cfg Config) *Builder {
	if cfg.StepTimeout <= 0 {
		cfg.StepTimeout = DefaultStepTimeout
	}
	cfg.Env = append([]string{}, cfg.Env...)
	cfg.GoBuildFlags = append([]string{}, cfg.GoBuildFlags...)
	return &Builder{cfg: cfg, log: cfg.Log.With().Str("component", "builder").Logger()}
}

// run runs one child with the builder's environment and step timeout.
func (b *Builder) run(ctx context.Context, dir string, env []string, out io.Writer, name string, args ...string) error {
	c := Command{Dir: dir, Name: name, Args: args, Env: env, Timeout: b.cfg.StepTimeout, Output: out, Background: true}
	start := time.Now()
	b.log.Info().Str("dir", dir).Str("cmd", c.String()).Msgf("run %s in %s", c.String(), dir)
	err := Run(ctx, c)
	ev := b.log.Info()
	if err != nil {
		ev = b.log.Warn().Err(err)
	}
	took := time.Since(start)
	ev.Str("dir", dir).Str("cmd", c.String()).Int64("duration_ms", took.Milliseconds()).Msgf("%s ended after %s", c.Name, took.Round(time.Millisecond))
	return err
}

// BuildBackend runs `go build <GoBuildFlags> -o <outPath> ./cmd/tractstack-go`
// in srcDir. It builds to a temporary name beside outPath and renames to
// outPath only on success, so outPath is either absent or a complete binary.
func (b *Builder) BuildBackend(ctx context.Context, srcDir, outPath string, out io.Writer) error {
	outDir := filepath.Dir(outPath)
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return fmt.Errorf("build backend: create %s: %w", outDir, err)
	}
	// A directory of our own beside outPath: same file system, so the
	// rename is atomic, and go build creates a fresh executable in it.
	tmpDir, err := os.MkdirTemp(outDir, ".build-"+filepath.Base(outPath)+"-")
	if err != nil {
		return fmt.Errorf("build backend: create temporary dir: %w", err)
	}
	defer os.RemoveAll(tmpDir)
	tmp := filepath.Join(tmpDir, filepath.Base(outPath))
	args := append([]string{"build"}, b.cfg.GoBuildFlags...)
	args = append(args, "-o", tmp, "./cmd/tractstack-go")
	if err := b.run(ctx, srcDir, b.cfg.Env, out, "go", args...); err != nil {
		return fmt.Errorf("build backend in %s: %w", srcDir, err)
	}
	if err := os.Rename(tmp, outPath); err != nil {
		return fmt.Errorf("build backend: move binary to %s: %w", outPath, err)
	}
	b.log.Info().Str("dir", srcDir).Str("binary", outPath).Msg("backend built")
	return nil
}

// BuildFrontend, in srcDir: when FrontendUpdate is set and that package is
// a dependency in package.json, `pnpm up <pkg> --latest`; then `pnpm
// install`, `pnpm build`, and a check that dist/ exists. pnpm runs with
// CI=true so that it never prompts.
func (b *Builder) BuildFrontend(ctx context.Context, srcDir string, out io.Writer) error {
	return b.withStepTimeout(ctx, "frontend build", func(ctx context.Context) error {
		return b.buildFrontend(ctx, srcDir, out)
	})
}

// withStepTimeout bounds a whole step by the step timeout: a step may run
// several children (pnpm up, install, build) or work in this process (a
// pull with go-git), and each child's own timeout alone would let the step
// take a multiple of it, or forever for a remote that never answers.
func (b *Builder) withStepTimeout(ctx context.Context, what string, fn func(ctx context.Context) error) error {
	sctx, cancel := context.WithTimeout(ctx, b.cfg.StepTimeout)
	defer cancel()
	err := fn(sctx)
	if err != nil && ctx.Err() == nil && errors.Is(sctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("%s timed out after %s: %w (%w)", what, b.cfg.StepTimeout, ErrTimeout, err)
	}
	return err
}

func (b *Builder) buildFrontend(ctx context.Context, srcDir string, out io.Writer) error {
	env := setenv(b.cfg.Env, "CI", "true")
	if pkg := b.cfg.FrontendUpdate; pkg != "" {
		has, err := hasDependency(filepath.Join(srcDir, "package.json"), pkg)
		if err != nil {
			return fmt.Errorf("build frontend in %s: %w", srcDir, err)
		}
		if has {
			if err := b.run(ctx, srcDir, env, out, "pnpm", "up", pkg, "--latest"); err != nil {
				return fmt.Errorf("update %s in %s: %w", pkg, srcDir, err)
			}
		} else {
			b.log.Info().Str("dir", srcDir).Str("package", pkg).Msg("package update skipped: not a dependency in package.json")
		}
	}
	if done, digest := installDone(srcDir); done {
		// node_modules/ came (linked) from a release installed from
		// these very manifests: an install would change nothing.
		msg := "pnpm install skipped: package.json and the lock file are those node_modules/ was installed from (" + digest[:12] + ")"
		fmt.Fprintln(out, msg)
		b.log.Info().Str("dir", srcDir).Msg(msg)
	} else {
		// Under CI=true pnpm defaults to a frozen lockfile, which fails
		// when there is none or when a pull changed package.json; the old
		// script ran a plain `pnpm install`, which updates the lockfile.
		if err := b.run(ctx, srcDir, env, out, "pnpm", "install", "--no-frozen-lockfile"); err != nil {
			return fmt.Errorf("install frontend packages in %s: %w", srcDir, err)
		}
		if err := markInstalled(srcDir); err != nil {
			b.log.Warn().Err(err).Str("dir", srcDir).Msg("record the installed manifests; the next build installs again")
		}
	}
	if err := b.run(ctx, srcDir, env, out, "pnpm", "build"); err != nil {
		return fmt.Errorf("build frontend in %s: %w", srcDir, err)
	}
	dist := filepath.Join(srcDir, "dist")
	fi, err := os.Stat(dist)
	if err != nil {
		return fmt.Errorf("build frontend in %s: pnpm build succeeded but %s is missing: %w", srcDir, dist, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("build frontend in %s: %s is not a directory", srcDir, dist)
	}
	b.log.Info().Str("dir", srcDir).Msg("frontend built")
	return nil
}

// hasDependency says whether pkg is in the dependencies or
// devDependencies of the package.json at path.
func hasDependency(path, pkg string) (bool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return false, fmt.Errorf("read package.json: %w", err)
	}
	return dependsOn(data, pkg)
}

// dependsOn is hasDependency on the file's content.
func dependsOn(packageJSON []byte, pkg string) (bool, error) {
	var p struct {
		Dependencies    map[string]string `json:"dependencies"`
		DevDependencies map[string]string `json:"devDependencies"`
	}
	if err := json.Unmarshal(packageJSON, &p); err != nil {
		return false, fmt.Errorf("parse package.json: %w", err)
	}
	_, dep := p.Dependencies[pkg]
	_, dev := p.DevDependencies[pkg]
	return dep || dev, nil
}

// Whitelist runs `python3 <script> <distDir> <jsonOut> <templatesDir>`.
// Whether a failure matters is the caller's business.
func (b *Builder) Whitelist(ctx context.Context, script, distDir, jsonOut, templatesDir string, out io.Writer) error {
	if script == "" {
		return errors.New("extract whitelist: no script given")
	}
	if err := b.run(ctx, filepath.Dir(distDir), b.cfg.Env, out, "python3", script, distDir, jsonOut, templatesDir); err != nil {
		return fmt.Errorf("extract whitelist with %s: %w", script, err)
	}
	b.log.Info().Str("json", jsonOut).Msg("whitelist extracted")
	return nil
}
