package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/tractstack/concierge/builder"
	"github.com/tractstack/concierge/internal/sandbox"
)

// pullChild is `bench pull-child -dir D`: one go-git pull, as the pipeline
// does it, in a process of its own so that its peak RSS can be measured.
func pullChild(args []string) int {
	fs := flag.NewFlagSet("pull-child", flag.ContinueOnError)
	dir := fs.String("dir", "", "clone to pull into")
	if err := fs.Parse(args); err != nil || *dir == "" {
		return 2
	}
	if _, err := builder.New(builder.Config{}).PullBackend(context.Background(), *dir, io.Discard); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// pull: go-git against `git pull --ff-only`, pulling 1, 10 and 100 new
// commits into a clone of a repository of about 3,000 files.
func (b *bench) pull(ctx context.Context) error {
	reps := 3
	if b.short {
		reps = 1
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	root := filepath.Join(b.dir, "pull")
	work := filepath.Join(root, "work")
	commits, size, err := makeHistory(ctx, work, 3000, 100)
	if err != nil {
		return err
	}
	type result struct {
		wall   []time.Duration
		rssKiB int64
	}
	var rows [][]string
	for _, n := range []int{1, 10, 100} {
		origin := filepath.Join(root, fmt.Sprintf("origin-%d.git", n))
		if err := sandbox.Git(ctx, root, "clone", "-q", "--bare", work, origin); err != nil {
			return err
		}
		if err := sandbox.Git(ctx, origin, "update-ref", "refs/heads/main", commits[0]); err != nil {
			return err
		}
		clones := map[string][]string{}
		for _, tool := range []string{"go-git", "git"} {
			for r := range reps {
				dir := filepath.Join(root, fmt.Sprintf("clone-%d-%s-%d", n, tool, r))
				// --no-local: only what is reachable from main now, as a
				// clone made before the new commits would hold.
				if err := sandbox.Git(ctx, root, "clone", "-q", "--no-local", origin, dir); err != nil {
					return err
				}
				if err := sandbox.Git(ctx, dir, "remote", "set-url", "origin", origin); err != nil {
					return err
				}
				clones[tool] = append(clones[tool], dir)
			}
		}
		if err := sandbox.Git(ctx, origin, "update-ref", "refs/heads/main", commits[n]); err != nil {
			return err
		}
		res := map[string]*result{}
		for r := range reps {
			for _, tool := range []string{"go-git", "git"} {
				dir := clones[tool][r]
				var cmd *exec.Cmd
				if tool == "go-git" {
					cmd = exec.CommandContext(ctx, self, "pull-child", "-dir", dir)
				} else {
					cmd = exec.CommandContext(ctx, "git", "-C", dir, "pull", "-q", "--ff-only")
					cmd.Env = setEnv(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null", "GIT_TERMINAL_PROMPT=0")
				}
				t0 := time.Now()
				out, err := cmd.CombinedOutput()
				wall := time.Since(t0)
				if err != nil {
					return fmt.Errorf("%s pull of %d commits: %w: %s", tool, n, err, out)
				}
				head, err := sandbox.GitOutput(ctx, dir, "rev-parse", "HEAD")
				if err != nil || strings.TrimSpace(head) != commits[n] {
					return fmt.Errorf("%s pull of %d commits left HEAD at %s, want %s (%v)", tool, n, strings.TrimSpace(head), commits[n], err)
				}
				if res[tool] == nil {
					res[tool] = &result{}
				}
				res[tool].wall = append(res[tool].wall, wall)
				if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
					res[tool].rssKiB = max(res[tool].rssKiB, ru.Maxrss)
				}
			}
		}
		gg, gc := res["go-git"], res["git"]
		gm, cm := percentile(gg.wall, 50), percentile(gc.wall, 50)
		rows = append(rows, []string{fmt.Sprint(n), ms(gm), fmt.Sprintf("%.1f", float64(gg.rssKiB)/1024),
			ms(cm), fmt.Sprintf("%.1f", float64(gc.rssKiB)/1024), fmt.Sprintf("%.1fx", float64(gm)/float64(cm))})
	}
	table(fmt.Sprintf("Pull: go-git (builder.PullBackend) against `git pull --ff-only` (%d files, %.1f MiB work tree; median of %d)", 3000, float64(size)/(1<<20), reps),
		[]string{"new commits", "go-git ms", "go-git peak RSS MiB", "git ms", "git peak RSS MiB", "go-git / git time"}, rows,
		"Each pull runs in a child process: its wall time includes process start, and its peak RSS is the child's ru_maxrss (for git, the largest of git and the git processes it ran). Every commit changes 5 files and adds one.")
	return nil
}

// makeHistory makes a repository in dir with files files of a few KiB and
// extra commits on top of the first; it returns the commits, oldest first,
// and the work tree's size.
func makeHistory(ctx context.Context, dir string, files, extra int) ([]string, int64, error) {
	rng := rand.New(rand.NewPCG(1, 2))
	words := strings.Fields("tenant site build pane story fragment belief menu resource epinet render layout astro tailwind config handler route")
	text := func() string {
		var b strings.Builder
		for b.Len() < 2048+rng.IntN(4096) {
			b.WriteString(words[rng.IntN(len(words))])
			if rng.IntN(12) == 0 {
				b.WriteByte('\n')
			} else {
				b.WriteByte(' ')
			}
		}
		return b.String()
	}
	var size int64
	name := func(i int) string { return filepath.Join(fmt.Sprintf("pkg%02d", i%60), fmt.Sprintf("file%04d.txt", i)) }
	write := func(rel string) error {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		t := text()
		size += int64(len(t))
		return os.WriteFile(p, []byte(t), 0o644)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, 0, err
	}
	if err := sandbox.Git(ctx, dir, "init", "-q", "-b", "main"); err != nil {
		return nil, 0, err
	}
	for i := range files {
		if err := write(name(i)); err != nil {
			return nil, 0, err
		}
	}
	commit := func(msg string) error {
		if err := sandbox.Git(ctx, dir, "add", "-A"); err != nil {
			return err
		}
		return sandbox.Git(ctx, dir, "commit", "-q", "-m", msg)
	}
	if err := commit("initial"); err != nil {
		return nil, 0, err
	}
	initial := size
	for c := range extra {
		for range 5 {
			if err := write(name(rng.IntN(files))); err != nil {
				return nil, 0, err
			}
		}
		if err := write(name(files + c)); err != nil {
			return nil, 0, err
		}
		if err := commit(fmt.Sprintf("change %d", c+1)); err != nil {
			return nil, 0, err
		}
	}
	out, err := sandbox.GitOutput(ctx, dir, "rev-list", "--reverse", "main")
	if err != nil {
		return nil, 0, err
	}
	return strings.Fields(out), initial, nil
}
