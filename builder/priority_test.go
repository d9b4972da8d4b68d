package builder

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tractstack/concierge/internal/rusage"
	"github.com/tractstack/concierge/internal/syncbuf"
	"github.com/tractstack/concierge/internal/testtool"
)

func TestKillReason(t *testing.T) {
	t.Parallel()
	// Wait statuses as the kernel encodes them: low 7 bits the signal,
	// or the exit status in bits 8-15.
	killed := syscall.WaitStatus(int(syscall.SIGKILL))
	segv := syscall.WaitStatus(int(syscall.SIGSEGV))
	exit1 := syscall.WaitStatus(1 << 8)
	tests := []struct {
		name     string
		ws       syscall.WaitStatus
		oomDelta int64
		want     string // "" = nothing to add
		oom      bool
	}{
		{"SIGKILL while the OOM killer acted", killed, 1, "killed: out of memory (the kernel's OOM killer ended it)", true},
		{"SIGKILL, no OOM kill counted", killed, 0, "killed (signal 9, not sent by concierge; the OOM killer counted no kill)", false},
		{"SIGKILL, counter unreadable", killed, -1, "killed (signal 9, not sent by concierge; out of memory?)", false},
		{"another signal", segv, 0, "killed (signal 11: segmentation fault)", false},
		{"exit status while a grandchild was OOM-killed", exit1, 2, "exit status 1; the kernel's OOM killer ended a process meanwhile: out of memory", true},
		{"plain exit status", exit1, 0, "", false},
		{"plain exit status, counter unreadable", exit1, -1, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := KillReason(tt.ws, tt.oomDelta)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("KillReason = %v, want nil", err)
				}
				return
			}
			if err == nil || err.Error() != tt.want {
				t.Fatalf("KillReason = %v, want %q", err, tt.want)
			}
			if errors.Is(err, ErrOutOfMemory) != tt.oom {
				t.Fatalf("errors.Is(ErrOutOfMemory) = %v, want %v", !tt.oom, tt.oom)
			}
		})
	}
}

func readAttrs(t *testing.T, pid int) Priorities {
	t.Helper()
	p, err := ReadPriorities(pid)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// pidsDuringRun runs a shell that starts a sleeping grandchild and
// records both pids, reads their attributes while they run, then cancels.
func pidsDuringRun(t *testing.T, background bool) (child, grandchild Priorities) {
	t.Helper()
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "pids")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Command{Dir: dir, Name: "sh", Env: testEnv(), Background: background,
			Args: []string{"-c", `sleep 60 & echo "$$ $!" > pids.tmp && mv pids.tmp pids; wait`}})
	}()
	var pids []string
	deadline := time.Now().Add(10 * time.Second)
	for {
		if data, err := os.ReadFile(pidFile); err == nil {
			pids = strings.Fields(string(data))
			break
		}
		select {
		case err := <-done:
			t.Fatalf("child ended before it wrote its pids: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("no pids written within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	sh, _ := strconv.Atoi(pids[0])
	sleep, _ := strconv.Atoi(pids[1])
	child, grandchild = readAttrs(t, sh), readAttrs(t, sleep)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run after cancel = %v", err)
	}
	return child, grandchild
}

// TestBackgroundChildPriorities reads a build child's and its own child's
// attributes from /proc while they run: OOM score raised, nice 10, idle
// I/O class, as the README says.
func TestBackgroundChildPriorities(t *testing.T) {
	testtool.Require(t, "sh", "sleep", "choom")
	t.Parallel()
	want := Priorities{OOMScoreAdj: BuildOOMScoreAdj, Nice: BuildNice, IOClass: BuildIOClass}
	before := readAttrs(t, os.Getpid())
	child, grandchild := pidsDuringRun(t, true)
	if child != want || grandchild != want {
		t.Fatalf("build child %+v, its child %+v; want both %+v", child, grandchild, want)
	}
	// Concierge itself keeps its own: only the starting thread, which
	// is gone, had them lowered.
	if after := readAttrs(t, os.Getpid()); after != before {
		t.Fatalf("the test process had %+v and now has %+v", before, after)
	}
}

// TestForegroundChildKeepsPriorities: a deploy child (systemctl, pm2)
// runs with concierge's own attributes.
func TestForegroundChildKeepsPriorities(t *testing.T) {
	testtool.Require(t, "sh", "sleep")
	t.Parallel()
	self := readAttrs(t, os.Getpid())
	child, grandchild := pidsDuringRun(t, false)
	if child != self || grandchild != self {
		t.Fatalf("deploy child %+v, its child %+v; want concierge's own %+v", child, grandchild, self)
	}
}

// TestRunReportsKill: a child ended by a SIGKILL concierge did not send
// fails saying it was killed.
func TestRunReportsKill(t *testing.T) {
	testtool.Require(t, "sh")
	t.Parallel()
	for _, background := range []bool{false, true} {
		err := Run(context.Background(), Command{Dir: t.TempDir(), Name: "sh", Env: testEnv(), Background: background,
			Args: []string{"-c", "kill -9 $$"}})
		if !errors.Is(err, ErrKilled) || !strings.Contains(err.Error(), "run sh -c kill -9 $$: killed") {
			t.Fatalf("background %v: Run = %v, want a killed error", background, err)
		}
	}
}

// TestRunMeasuresUsage: the child's peak memory and CPU time reach the
// meter its context carries.
func TestRunMeasuresUsage(t *testing.T) {
	testtool.Require(t, "sh", "head", "tr")
	t.Parallel()
	ctx, m := rusage.WithMeter(context.Background())
	var out syncbuf.Buffer
	// The shell holds a 32 MiB string: its resident set passes that.
	err := Run(ctx, Command{Dir: t.TempDir(), Name: "sh", Env: testEnv(), Background: true, Output: &out,
		Args: []string{"-c", `x=$(head -c 33554432 /dev/zero | tr '\0' a); echo ${#x}`}})
	if err != nil {
		t.Fatalf("Run: %v (%s)", err, out.String())
	}
	u, ok := m.Usage()
	if !ok || u.MaxRSSKiB < 32<<10 || u.CPU <= 0 {
		t.Fatalf("usage = %+v (%v); want at least 32768 KiB and some CPU time", u, ok)
	}
}

// TestBackgroundLeavesConciergeAlone: after many build children, no
// thread of concierge runs with their priorities, the main thread (what
// ps shows) included.
func TestBackgroundLeavesConciergeAlone(t *testing.T) {
	testtool.Require(t, "true", "choom")
	before := readAttrs(t, os.Getpid())
	for range 40 {
		if err := Run(context.Background(), Command{Dir: t.TempDir(), Name: "true", Env: testEnv(), Background: true}); err != nil {
			t.Fatal(err)
		}
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		tid, _ := strconv.Atoi(task.Name())
		if tid != os.Getpid() && !threadLive(tid) {
			continue
		}
		if got := readAttrs(t, tid); got.Nice != before.Nice || got.IOClass != before.IOClass {
			t.Errorf("thread %d has %+v; the process started with %+v", tid, got, before)
		}
	}
	if after := readAttrs(t, os.Getpid()); after != before {
		t.Fatalf("concierge had %+v and now has %+v", before, after)
	}
}

// threadLive says whether thread tid of this process still exists (one
// that ended meanwhile is skipped).
func threadLive(tid int) bool {
	_, err := os.Stat("/proc/self/task/" + strconv.Itoa(tid))
	return err == nil
}
