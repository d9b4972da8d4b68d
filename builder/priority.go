package builder

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// What a build child runs with (Command.Background): the kernel's OOM
// killer prefers it to the live services (which keep 0 or whatever their
// units set), the scheduler gives the live site the CPU first, and its
// disk I/O waits until no one else needs the disk.
const (
	BuildOOMScoreAdj = 500
	BuildNice        = 10
	// BuildIOClass is the I/O scheduling class idle (IOPRIO_CLASS_IDLE).
	BuildIOClass = 3
)

const (
	ioprioWhoProcess = 1
	ioprioClassShift = 13
)

// IOPrio is ioprio_get(IOPRIO_WHO_PROCESS, pid) split into class and
// level; pid may be a thread id.
func IOPrio(pid int) (class, level int, err error) {
	r, _, e := unix.Syscall(unix.SYS_IOPRIO_GET, ioprioWhoProcess, uintptr(pid), 0)
	if e != 0 {
		return 0, 0, fmt.Errorf("ioprio_get %d: %w", pid, e)
	}
	return int(r) >> ioprioClassShift, int(r) & (1<<ioprioClassShift - 1), nil
}

// startBackground starts cmd from a goroutine locked to its own OS
// thread, after lowering that thread's CPU priority (nice is per thread
// on Linux) and I/O priority (so is the I/O context): the child is cloned
// from that thread and inherits both from its first instruction, and so
// do its children. The goroutine ends without unlocking, so the Go
// runtime ends the thread with it and no other goroutine ever runs with
// the lowered priorities. oom_score_adj is per process and cannot be set
// this way without touching concierge itself; cmd already goes through
// choom for it (see backgroundArgs).
//
// The main thread is the exception: the runtime cannot end it and parks
// it instead, and its nice value is what ps shows for concierge. When the
// goroutine lands there, it keeps the main thread (unchanged) while
// another goroutine, which then cannot run on it, does the work.
//
// When the priorities cannot be lowered (a seccomp filter, say), the child
// starts anyway and note says so: the build matters more than its manners.
func startBackground(cmd *exec.Cmd) (note string, err error) {
	type result struct {
		note string
		err  error
	}
	res := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked after lowering: the thread dies with this goroutine
		if unix.Gettid() == unix.Getpid() {
			note, err := startBackground(cmd)
			runtime.UnlockOSThread()
			res <- result{note, err}
			return
		}
		var note string
		if err := lowerThread(); err != nil {
			note = fmt.Sprintf("%v: this build runs at concierge's own CPU and I/O priority", err)
		}
		res <- result{note, cmd.Start()}
	}()
	r := <-res
	return r.note, r.err
}

// lowerThread sets the calling thread's nice value to at least BuildNice
// and its I/O class to idle. Both only lower priority, which needs no
// privilege.
func lowerThread() error {
	tid := unix.Gettid()
	// The raw getpriority returns 20-nice.
	cur, err := unix.Getpriority(unix.PRIO_PROCESS, tid)
	if err != nil {
		return fmt.Errorf("lower build priority: getpriority: %w", err)
	}
	if nice := 20 - cur; nice < BuildNice {
		if err := unix.Setpriority(unix.PRIO_PROCESS, tid, BuildNice); err != nil {
			return fmt.Errorf("lower build priority: setpriority: %w", err)
		}
	}
	prio := BuildIOClass << ioprioClassShift
	if _, _, e := unix.Syscall(unix.SYS_IOPRIO_SET, ioprioWhoProcess, uintptr(tid), uintptr(prio)); e != 0 {
		return fmt.Errorf("lower build priority: ioprio_set: %w", e)
	}
	return nil
}

// backgroundArgs returns the program and argv (argv[0] included) that
// run path with argv under a raised oom_score_adj: util-linux's choom, which sets its
// own score and execs path, so the score holds from the program's first
// instruction on. When concierge's own score is already at least
// BuildOOMScoreAdj nothing is needed. Without choom the program runs with
// concierge's score, and note says so.
func backgroundArgs(path string, argv, env []string) (string, []string, string) {
	if cur, err := ownOOMScoreAdj(); err == nil && cur >= BuildOOMScoreAdj {
		return path, argv, ""
	}
	choom, err := lookPath("choom", env)
	if err != nil {
		return path, argv, "choom (util-linux) not found: this build runs with concierge's own OOM score"
	}
	return choom, append([]string{"choom", "-n", strconv.Itoa(BuildOOMScoreAdj), "--", path}, argv[1:]...), ""
}

func ownOOMScoreAdj() (int, error) { return oomScoreAdj("self") }

// oomScoreAdj reads /proc/<pid>/oom_score_adj ("self" for this process).
func oomScoreAdj(pid string) (int, error) {
	data, err := os.ReadFile("/proc/" + pid + "/oom_score_adj")
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(data)))
}

// Priorities are what a process runs with, as /proc and ioprio_get show
// them: what build children get and deploy children do not.
type Priorities struct {
	OOMScoreAdj int
	Nice        int
	IOClass     int
}

// ReadPriorities reads the priorities of pid (a process or a thread).
func ReadPriorities(pid int) (Priorities, error) {
	var p Priorities
	var err error
	if p.OOMScoreAdj, err = oomScoreAdj(strconv.Itoa(pid)); err != nil {
		return p, fmt.Errorf("read oom_score_adj of %d: %w", pid, err)
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return p, fmt.Errorf("read stat of %d: %w", pid, err)
	}
	// After "pid (comm)": field 3 (state) is f[0], field 19 (nice) f[16].
	f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	if len(f) < 17 {
		return p, fmt.Errorf("read stat of %d: %d fields", pid, len(f))
	}
	if p.Nice, err = strconv.Atoi(f[16]); err != nil {
		return p, fmt.Errorf("read nice of %d: %w", pid, err)
	}
	if p.IOClass, _, err = IOPrio(pid); err != nil {
		return p, err
	}
	return p, nil
}

// oomKills is the kernel's count of processes its OOM killer ended
// (oom_kill in /proc/vmstat, global and memory-cgroup kills alike);
// ok is false when it cannot be read.
func oomKills() (n int64, ok bool) {
	data, err := os.ReadFile("/proc/vmstat")
	if err != nil {
		return 0, false
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if v, found := strings.CutPrefix(sc.Text(), "oom_kill "); found {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}

// ErrKilled is wrapped by the error of a child that a signal ended
// without concierge sending it (the OOM killer, or someone's kill -9).
var ErrKilled = errors.New("killed")

// ErrOutOfMemory is wrapped too when the kernel's OOM killer ended a
// process while the child ran.
var ErrOutOfMemory = errors.New("out of memory")

// KillReason explains how a child ended, for a child that failed by
// itself (not by concierge's timeout or cancellation): ws is its wait
// status, oomDelta how many processes the OOM killer ended while it ran
// (-1: unknown). It is a pure function of those facts. err is nil when
// nothing is to be said beyond the exit status.
//
// The OOM counter is global, so a kill elsewhere on the host at the same
// moment would be taken for ours; the words say "out of memory" only when
// the counter moved, and otherwise leave the cause open.
func KillReason(ws syscall.WaitStatus, oomDelta int64) error {
	switch {
	case ws.Signaled() && ws.Signal() == syscall.SIGKILL && oomDelta > 0:
		return fmt.Errorf("%w: %w (the kernel's OOM killer ended it)", ErrKilled, ErrOutOfMemory)
	case ws.Signaled() && ws.Signal() == syscall.SIGKILL && oomDelta == 0:
		return fmt.Errorf("%w (signal 9, not sent by concierge; the OOM killer counted no kill)", ErrKilled)
	case ws.Signaled() && ws.Signal() == syscall.SIGKILL:
		return fmt.Errorf("%w (signal 9, not sent by concierge; out of memory?)", ErrKilled)
	case ws.Signaled():
		return fmt.Errorf("%w (signal %d: %s)", ErrKilled, int(ws.Signal()), ws.Signal())
	case oomDelta > 0:
		// A grandchild (go's compile, pnpm's node) was the victim and
		// the child exited with an error status.
		return fmt.Errorf("exit status %d; the kernel's OOM killer ended a process meanwhile: %w", ws.ExitStatus(), ErrOutOfMemory)
	}
	return nil
}
