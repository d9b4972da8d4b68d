// Package hooks runs the operator's executables at the moments of a job,
// the way Kamal runs .kamal/hooks: <home>/etc/concierge/hooks/pre-build,
// pre-swap, post-deploy, post-rollback and on-failure. A hook gets the
// job in its environment (CONCIERGE_JOB_ID, ...), runs in its own process
// group with the step timeout, and is run only when it and its directory
// are owned by concierge's user or root and writable by no one else: a
// hook runs with concierge's rights, so whoever may change it may run
// anything as concierge.
package hooks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tractstack/concierge/builder"
	"github.com/tractstack/concierge/queue"
)

// The moments a hook may run at.
const (
	PreBuild     = "pre-build"     // before the pulls
	PreSwap      = "pre-swap"      // the builds are done; nothing live has changed
	PostDeploy   = "post-deploy"   // the new release passed its checks
	PostRollback = "post-rollback" // a release was taken back (failed check or the rollback command)
	OnFailure    = "on-failure"    // the job failed, after its rollback if any
)

// Names are the hook names, in the order they may run.
var Names = []string{PreBuild, PreSwap, PostDeploy, PostRollback, OnFailure}

// Dir is where the hooks of home live.
func Dir(home string) string { return filepath.Join(home, "etc", "concierge", "hooks") }

// ErrRefused marks a hook that exists but may not run.
var ErrRefused = errors.New("hook refused")

// Config configures a Runner.
type Config struct {
	// Dir holds the hooks (Dir(home)).
	Dir string
	// Env is the environment every hook starts from (concierge's own,
	// through builder.ChildEnv).
	Env []string
	// Timeout bounds one hook (the step timeout).
	Timeout time.Duration
	// UID is concierge's user: hooks it owns may run (as may root's).
	UID int
}

// Runner finds and runs hooks. A nil *Runner has no hooks.
type Runner struct{ cfg Config }

// New returns a Runner.
func New(cfg Config) *Runner { return &Runner{cfg: cfg} }

// Exists reports whether a file (or anything else) named after the hook
// is in the hooks directory, whether or not it may run.
func (r *Runner) Exists(name string) bool {
	if r == nil {
		return false
	}
	_, err := os.Lstat(filepath.Join(r.cfg.Dir, name))
	return err == nil
}

// Info is the job as a hook sees it.
type Info struct {
	Job queue.Job
	// State is what the job is at: building (pre-*), succeeded
	// (post-deploy), rolled-back or failed.
	State string
	Err   error
	// Release, Backend and Frontend describe the release concerned: the
	// one about to go live (pre-swap) or the live one.
	Release, Backend, Frontend string
	// Duration is how long the job has run.
	Duration time.Duration
}

// Env returns base with the job's variables set. Pure.
func Env(base []string, in Info) []string {
	errText := ""
	if in.Err != nil {
		errText = in.Err.Error()
	}
	vars := [][2]string{
		{"CONCIERGE_JOB_ID", in.Job.ID},
		{"CONCIERGE_TARGET", in.Job.Target},
		{"CONCIERGE_COMMAND", in.Job.Command},
		{"CONCIERGE_STATE", in.State},
		{"CONCIERGE_ERROR", errText},
		{"CONCIERGE_RELEASE", in.Release},
		{"CONCIERGE_BACKEND_COMMIT", in.Backend},
		{"CONCIERGE_FRONTEND_COMMIT", in.Frontend},
		{"CONCIERGE_DURATION_MS", strconv.FormatInt(in.Duration.Milliseconds(), 10)},
		{"CONCIERGE_TENANTS", strings.Join(in.Job.Tenants, ",")},
	}
	out := make([]string, 0, len(base)+len(vars))
	for _, kv := range base {
		k, _, _ := strings.Cut(kv, "=")
		if !isJobVar(k, vars) {
			out = append(out, kv)
		}
	}
	for _, v := range vars {
		out = append(out, v[0]+"="+v[1])
	}
	return out
}

func isJobVar(k string, vars [][2]string) bool {
	for _, v := range vars {
		if v[0] == k {
			return true
		}
	}
	return false
}

// Refusal says why a file with mode, owned by uid, may not run as a hook
// of a concierge running as self; "" when it may. dir says the file is the
// hooks directory, which must not be writable by others either. Pure.
func Refusal(mode fs.FileMode, uid, self int, dir bool) string {
	what := "it"
	if dir {
		what = "the hooks directory"
	}
	switch {
	case mode&fs.ModeSymlink != 0:
		return "it is a symbolic link; put the executable itself there"
	case dir && !mode.IsDir():
		return "the hooks directory is not a directory"
	case !dir && !mode.IsRegular():
		return "it is not a regular file"
	case uid != self && uid != 0:
		return fmt.Sprintf("%s is owned by uid %d, not by concierge's user (uid %d) or root", what, uid, self)
	case mode.Perm()&0o022 != 0:
		return fmt.Sprintf("%s is writable by group or others (mode %04o); chmod go-w", what, mode.Perm())
	case !dir && mode.Perm()&0o100 == 0:
		return fmt.Sprintf("it is not executable by its owner (mode %04o); chmod u+x", mode.Perm())
	}
	return ""
}

// check returns the refusal of the hook's path and of its directory.
func (r *Runner) check(path string) error {
	for _, c := range []struct {
		path string
		dir  bool
	}{{r.cfg.Dir, true}, {path, false}} {
		fi, err := os.Lstat(c.path)
		if err != nil {
			return fmt.Errorf("check hook %s: %w", path, err)
		}
		uid := -1
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			uid = int(st.Uid)
		}
		if why := Refusal(fi.Mode(), uid, r.cfg.UID, c.dir); why != "" {
			return fmt.Errorf("%w: %s: %s", ErrRefused, path, why)
		}
	}
	return nil
}

// Run runs the hook name with the job's variables, its output to out,
// in its own process group, bounded by the timeout. It returns an error
// wrapping ErrRefused when the hook may not run, and the hook's failure
// (a non-zero exit, a timeout) otherwise. A hook that is not there is
// not run (nil).
func (r *Runner) Run(ctx context.Context, name string, in Info, out io.Writer) error {
	if !r.Exists(name) {
		return nil
	}
	path := filepath.Join(r.cfg.Dir, name)
	if err := r.check(path); err != nil {
		return err
	}
	fmt.Fprintf(out, "running hook %s\n", path)
	err := builder.Run(ctx, builder.Command{Dir: r.cfg.Dir, Name: path, Env: Env(r.cfg.Env, in), Timeout: r.cfg.Timeout, Output: out})
	if err != nil {
		return fmt.Errorf("hook %s: %w", name, err)
	}
	return nil
}
