package builder

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tractstack/concierge/internal/rusage"
)

// ErrTimeout is wrapped by the error of a child that ran past its timeout.
var ErrTimeout = errors.New("step timed out")

const (
	// killGrace is how long a process group has between SIGTERM and SIGKILL.
	killGrace = 3 * time.Second
	// outputGrace bounds the wait for the output pipe to drain once the
	// group is gone (a process that left the group could hold it open).
	outputGrace = 2 * time.Second
	// pollInterval is how often a dying group is checked.
	pollInterval = 20 * time.Millisecond
)

// Command is one child process.
type Command struct {
	Dir     string
	Name    string // program, resolved against the PATH in Env (not the parent's)
	Args    []string
	Env     []string      // the child's whole environment
	Timeout time.Duration // 0: only ctx bounds it
	Output  io.Writer     // stdout and stderr, combined; may be nil
	// Background marks a build child: it and its descendants run with
	// oom_score_adj BuildOOMScoreAdj, nice BuildNice and the idle I/O
	// class, so that the live site keeps memory, CPU and disk first.
	// Deploy children (systemctl, pm2) must not: pm2 may start its
	// daemon, which the live frontend runs under.
	Background bool
}

// String is the command line, for logs and errors.
func (c Command) String() string {
	return strings.Join(append([]string{c.Name}, c.Args...), " ")
}

// Run runs c in its own process group (Setpgid). When ctx is done or the
// timeout passes, the whole group gets SIGTERM, then SIGKILL after a short
// grace, so no grandchild (pnpm's node, go's compile) is left behind; Run
// returns only after the child is reaped. Processes still in the group when
// the child exits by itself are ended the same way.
//
// The child's resource use (rusage) is added to the rusage.Meter that ctx
// carries, if any.
//
// Errors: a timeout wraps ErrTimeout and says "<name> timed out after <d>";
// a non-zero exit says the exit status; a signal concierge did not send
// wraps ErrKilled, and ErrOutOfMemory when the kernel's OOM killer acted
// meanwhile (see KillReason); a cancelled ctx wraps ctx.Err().
func Run(ctx context.Context, c Command) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("run %s: %w", c.Name, err)
	}
	path, err := lookPath(c.Name, c.Env)
	if err != nil {
		return fmt.Errorf("run %s: %w", c.Name, err)
	}
	prog, argv, note := path, append([]string{c.Name}, c.Args...), ""
	if c.Background {
		prog, argv, note = backgroundArgs(path, argv, c.Env)
	}
	if note != "" && c.Output != nil {
		fmt.Fprintf(c.Output, "concierge: %s\n", note)
	}
	cmd := &exec.Cmd{
		Path:        prog,
		Args:        argv,
		Dir:         c.Dir,
		Env:         append([]string{}, c.Env...),
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true},
	}
	// The output goes through a pipe of our own rather than through
	// os/exec's copying goroutine, so that Wait returns when the child
	// exits even if a grandchild still holds the pipe.
	var pr, pw *os.File
	if c.Output != nil {
		pr, pw, err = os.Pipe()
		if err != nil {
			return fmt.Errorf("run %s: create output pipe: %w", c.Name, err)
		}
		cmd.Stdout, cmd.Stderr = pw, pw
	}
	oomBefore, oomKnown := oomKills()
	var startErr error
	if c.Background {
		note, startErr = startBackground(cmd)
		if note != "" && c.Output != nil {
			fmt.Fprintf(c.Output, "concierge: %s\n", note)
		}
	} else {
		startErr = cmd.Start()
	}
	if pw != nil {
		pw.Close()
	}
	if startErr != nil {
		if pr != nil {
			pr.Close()
		}
		return fmt.Errorf("run %s: %w", c.Name, startErr)
	}
	copied := make(chan struct{})
	if pr != nil {
		go func() {
			defer close(copied)
			_, _ = io.Copy(c.Output, pr)
		}()
	} else {
		close(copied)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()

	pgid := cmd.Process.Pid
	var timeout <-chan time.Time
	if c.Timeout > 0 {
		t := time.NewTimer(c.Timeout)
		defer t.Stop()
		timeout = t.C
	}
	var waitErr, cause error
	select {
	case waitErr = <-waited:
		// The child exited by itself; end whatever it left in its group.
		_ = endGroup(pgid, nil)
	case <-ctx.Done():
		cause = fmt.Errorf("run %s: %w", c.Name, ctx.Err())
		waitErr = endGroup(pgid, waited)
	case <-timeout:
		cause = fmt.Errorf("%s timed out after %s: %w", c.Name, c.Timeout, ErrTimeout)
		waitErr = endGroup(pgid, waited)
	}
	select {
	case <-copied:
	case <-time.After(outputGrace):
	}
	if pr != nil {
		pr.Close()
		<-copied
	}
	if cmd.ProcessState != nil {
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			rusage.Add(ctx, rusage.FromRusage(ru))
		}
	}
	if cause != nil {
		return cause
	}
	if waitErr != nil {
		var exitErr *exec.ExitError
		if errors.As(waitErr, &exitErr) {
			if ws, ok := exitErr.Sys().(syscall.WaitStatus); ok {
				delta := int64(-1)
				if oomAfter, ok := oomKills(); ok && oomKnown {
					delta = oomAfter - oomBefore
				}
				if why := KillReason(ws, delta); why != nil {
					return fmt.Errorf("run %s: %w", c, why)
				}
			}
		}
		return fmt.Errorf("run %s: %w", c, waitErr)
	}
	return nil
}

// endGroup ends process group pgid: SIGTERM, then SIGKILL when members are
// left after killGrace. When waited is not nil the group leader is still to
// be reaped and endGroup returns its Wait result; otherwise it was reaped
// already. Members reparented to this process (when it is a child
// subreaper) are reaped too, so that none stays behind as a zombie.
func endGroup(pgid int, waited <-chan error) error {
	reaped := waited == nil
	if reaped {
		reapGroup(pgid)
		if groupGone(pgid) {
			return nil
		}
	}
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	reaped, gone, waitErr := pollGroup(pgid, waited, reaped, killGrace)
	if gone {
		return waitErr
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	if !reaped {
		waitErr = <-waited
	}
	// SIGKILL cannot be ignored, but members die and are reaped
	// asynchronously; give them a moment. Zombies whose parent does not
	// reap them would keep the group "alive" forever, hence the bound.
	pollGroup(pgid, nil, true, killGrace)
	return waitErr
}

// pollGroup polls until the leader is reaped and the group is empty
// (gone), or d has passed.
func pollGroup(pgid int, waited <-chan error, reaped bool, d time.Duration) (reapedOut, gone bool, waitErr error) {
	deadline := time.Now().Add(d)
	for {
		if !reaped {
			select {
			case waitErr = <-waited:
				reaped = true
			default:
			}
		}
		if reaped {
			reapGroup(pgid)
			if groupGone(pgid) {
				return true, true, waitErr
			}
		}
		if time.Now().After(deadline) {
			return reaped, false, waitErr
		}
		time.Sleep(pollInterval)
	}
}

// groupGone says whether no live process is left in group pgid. Zombies
// do not count: an orphan's zombie stays in its group until its new parent
// reaps it, and some container inits never do.
func groupGone(pgid int) bool {
	err := syscall.Kill(-pgid, 0)
	if errors.Is(err, syscall.ESRCH) {
		return true
	}
	live, ok := liveMembers(pgid)
	return ok && live == 0
}

// liveMembers counts the processes of group pgid that are not zombies,
// from /proc; ok is false when /proc cannot be read.
func liveMembers(pgid int) (live int, ok bool) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, false
	}
	for _, e := range entries {
		name := e.Name()
		if name[0] < '0' || name[0] > '9' {
			continue
		}
		data, err := os.ReadFile("/proc/" + name + "/stat")
		if err != nil {
			continue // gone meanwhile
		}
		state, pgrp, ok := parseStat(string(data))
		if ok && pgrp == pgid && state != "Z" && state != "X" {
			live++
		}
	}
	return live, true
}

// parseStat reads the state and process group from a /proc/<pid>/stat
// line: "pid (comm) state ppid pgrp ...", where comm may hold spaces and
// parentheses, hence the last ')'.
func parseStat(stat string) (state string, pgrp int, ok bool) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return "", 0, false
	}
	f := strings.Fields(stat[i+1:])
	if len(f) < 3 {
		return "", 0, false
	}
	pgrp, err := strconv.Atoi(f[2])
	if err != nil {
		return "", 0, false
	}
	return f[0], pgrp, true
}

// reapGroup reaps the exited members of group pgid that are children of
// this process; after the leader is reaped such members can only be
// orphans reparented here.
func reapGroup(pgid int) {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-pgid, &ws, syscall.WNOHANG, nil)
		if err != nil || pid <= 0 {
			return
		}
	}
}

// lookPath resolves name against the PATH in env, as the child would.
func lookPath(name string, env []string) (string, error) {
	if name == "" {
		return "", errors.New("no program named")
	}
	if strings.Contains(name, "/") {
		if err := isExecutable(name); err != nil {
			return "", err
		}
		return name, nil
	}
	for _, dir := range filepath.SplitList(getenv(env, "PATH")) {
		if dir == "" || !filepath.IsAbs(dir) {
			// Relative PATH entries would depend on the child's
			// directory; the git CLI and exec.LookPath refuse them too.
			continue
		}
		p := filepath.Join(dir, name)
		if isExecutable(p) == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found in PATH %q", name, getenv(env, "PATH"))
}

func isExecutable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file", p)
	}
	return nil
}

// getenv is the value of key in env (the last one wins, as in the child).
func getenv(env []string, key string) string {
	val := ""
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok && k == key {
			val = v
		}
	}
	return val
}

// setenv returns env with key set to val: the first entry of key is
// replaced in place and later ones dropped; a missing key is appended.
func setenv(env []string, key, val string) []string {
	out := make([]string, 0, len(env)+1)
	set := false
	for _, kv := range env {
		if k, _, _ := strings.Cut(kv, "="); k == key {
			if !set {
				out = append(out, key+"="+val)
				set = true
			}
			continue
		}
		out = append(out, kv)
	}
	if !set {
		out = append(out, key+"="+val)
	}
	return out
}

// ChildEnv returns base with HOME (=home when unset or empty), GOCACHE
// (=<home>/.cache/go-build when unset or empty) and a PATH that keeps base's
// entries and appends, when missing, the usual Go and pnpm locations:
// /usr/local/go/bin, <home>/go/bin, <home>/.local/share/pnpm,
// /usr/local/bin, /usr/bin, /bin.
func ChildEnv(base []string, home string) []string {
	env := append([]string{}, base...)
	if getenv(env, "HOME") == "" {
		env = setenv(env, "HOME", home)
	} else {
		env = setenv(env, "HOME", getenv(env, "HOME")) // one entry only
	}
	h := home
	if h == "" {
		h = getenv(env, "HOME")
	}
	if c := getenv(env, "GOCACHE"); c == "" {
		env = setenv(env, "GOCACHE", filepath.Join(h, ".cache", "go-build"))
	} else {
		env = setenv(env, "GOCACHE", c)
	}
	var path []string
	if p := getenv(env, "PATH"); p != "" {
		path = filepath.SplitList(p)
	}
	for _, dir := range []string{
		"/usr/local/go/bin",
		filepath.Join(h, "go", "bin"),
		filepath.Join(h, ".local", "share", "pnpm"),
		"/usr/local/bin", "/usr/bin", "/bin",
	} {
		if !contains(path, dir) {
			path = append(path, dir)
		}
	}
	return setenv(env, "PATH", strings.Join(path, string(filepath.ListSeparator)))
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if filepath.Clean(x) == filepath.Clean(s) {
			return true
		}
	}
	return false
}
