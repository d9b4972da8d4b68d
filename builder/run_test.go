package builder

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tractstack/concierge/internal/syncbuf"
)

// TestMain makes the test binary a child subreaper, as a service manager
// is on a host: grandchildren orphaned by a killed group are reparented to
// it and reaped, rather than staying zombies under a PID 1 that (in some
// containers) never reaps them and so keeps their process group alive.
func TestMain(m *testing.M) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		fmt.Fprintln(os.Stderr, "set child subreaper:", err)
		os.Exit(2)
	}
	os.Exit(m.Run())
}

func TestChildEnv(t *testing.T) {
	t.Parallel()
	const tail = "/usr/local/go/bin:/h/go/bin:/h/.local/share/pnpm:/usr/local/bin:/usr/bin:/bin"
	tests := []struct {
		name string
		base []string
		home string
		want []string
	}{
		{
			name: "empty base",
			home: "/h",
			want: []string{"HOME=/h", "GOCACHE=/h/.cache/go-build", "PATH=" + tail},
		},
		{
			name: "empty HOME is replaced in place",
			base: []string{"A=1", "HOME=", "B=2"},
			home: "/h",
			want: []string{"A=1", "HOME=/h", "B=2", "GOCACHE=/h/.cache/go-build", "PATH=" + tail},
		},
		{
			name: "set HOME and GOCACHE are kept",
			base: []string{"HOME=/other", "GOCACHE=/cache"},
			home: "/h",
			want: []string{"HOME=/other", "GOCACHE=/cache", "PATH=" + tail},
		},
		{
			name: "PATH keeps its entries first and gains only missing ones",
			base: []string{"PATH=/opt/bin:/usr/bin:/h/go/bin/"},
			home: "/h",
			want: []string{"PATH=/opt/bin:/usr/bin:/h/go/bin/:/usr/local/go/bin:/h/.local/share/pnpm:/usr/local/bin:/bin",
				"HOME=/h", "GOCACHE=/h/.cache/go-build"},
		},
		{
			name: "complete PATH is unchanged",
			base: []string{"HOME=/h", "GOCACHE=/c", "PATH=" + tail},
			home: "/h",
			want: []string{"HOME=/h", "GOCACHE=/c", "PATH=" + tail},
		},
		{
			name: "duplicate keys collapse to one, the later value for HOME wins",
			base: []string{"HOME=", "HOME=/x", "PATH=/a", "PATH=/b"},
			home: "/h",
			want: []string{"HOME=/x", "PATH=/b:" + tail, "GOCACHE=/h/.cache/go-build"},
		},
		{
			name: "no home argument falls back to HOME",
			base: []string{"HOME=/u"},
			home: "",
			want: []string{"HOME=/u", "GOCACHE=/u/.cache/go-build",
				"PATH=/usr/local/go/bin:/u/go/bin:/u/.local/share/pnpm:/usr/local/bin:/usr/bin:/bin"},
		},
		{
			name: "other variables pass through untouched",
			base: []string{"LANG=C.UTF-8", "SSH_AUTH_SOCK=/s", "GOCACHE="},
			home: "/h",
			want: []string{"LANG=C.UTF-8", "SSH_AUTH_SOCK=/s", "GOCACHE=/h/.cache/go-build", "HOME=/h", "PATH=" + tail},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := append([]string{}, tt.base...)
			got := ChildEnv(tt.base, tt.home)
			if !reflect.DeepEqual(sortedCopy(got), sortedCopy(tt.want)) {
				t.Errorf("ChildEnv(%q, %q)\n got %q\nwant %q", tt.base, tt.home, got, tt.want)
			}
			if !slices.Equal(base, tt.base) {
				t.Errorf("ChildEnv changed its input: %q", tt.base)
			}
		})
	}
}

func sortedCopy(s []string) map[string]bool {
	m := map[string]bool{}
	for _, x := range s {
		m[x] = true
	}
	if len(m) != len(s) {
		m["<duplicate entries>"] = true
	}
	return m
}

func TestLookPathUsesChildPath(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	prog := filepath.Join(dir, "myprog")
	if err := os.WriteFile(prog, []byte("#!/bin/sh\necho hi\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "notexec"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, prog string
		env        []string
		want       string
		wantErr    bool
	}{
		{name: "found in child PATH", prog: "myprog", env: []string{"PATH=/nonexistent:" + dir}, want: prog},
		{name: "not in child PATH", prog: "myprog", env: []string{"PATH=/nonexistent"}, wantErr: true},
		{name: "relative PATH entry ignored", prog: "myprog", env: []string{"PATH=."}, wantErr: true},
		{name: "not executable", prog: "notexec", env: []string{"PATH=" + dir}, wantErr: true},
		{name: "path with slash used as is", prog: prog, env: nil, want: prog},
		{name: "empty name", prog: "", env: []string{"PATH=" + dir}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := lookPath(tt.prog, tt.env)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("lookPath(%q) = %q, %v; want %q, error %v", tt.prog, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func testEnv() []string { return ChildEnv(os.Environ(), os.Getenv("HOME")) }

func TestRunOutputAndExitStatus(t *testing.T) {
	t.Parallel()
	var out syncbuf.Buffer
	err := Run(context.Background(), Command{Name: "sh", Args: []string{"-c", "echo out; echo err >&2"}, Env: testEnv(), Output: &out})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got := out.String(); !strings.Contains(got, "out\n") || !strings.Contains(got, "err\n") {
		t.Errorf("output = %q, want stdout and stderr", got)
	}

	err = Run(context.Background(), Command{Name: "sh", Args: []string{"-c", "exit 3"}, Env: testEnv()})
	if err == nil || !strings.Contains(err.Error(), "exit status 3") {
		t.Errorf("Run(exit 3) = %v, want an error with the exit status", err)
	}
	if errors.Is(err, ErrTimeout) {
		t.Errorf("exit status error wraps ErrTimeout: %v", err)
	}

	dir := t.TempDir()
	err = Run(context.Background(), Command{Dir: dir, Name: "pwd", Env: testEnv(), Output: &out})
	if err != nil || !strings.Contains(out.String(), dir) {
		t.Errorf("Run(pwd) in %s: %v, output %q", dir, err, out.String())
	}

	err = Run(context.Background(), Command{Name: "no-such-program-here", Env: testEnv()})
	if err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("Run(missing program) = %v, want not found", err)
	}
}

func TestRunUsesOnlyGivenEnv(t *testing.T) {
	t.Parallel()
	var out syncbuf.Buffer
	env := append(testEnv(), "CONCIERGE_TEST_MARK=yes")
	if err := Run(context.Background(), Command{Name: "env", Env: env, Output: &out}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "CONCIERGE_TEST_MARK=yes") {
		t.Errorf("child env lacks the given variable: %q", out.String())
	}
	out = syncbuf.Buffer{}
	if err := Run(context.Background(), Command{Name: "/usr/bin/env", Env: []string{"ONLY=1"}, Output: &out}); err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(out.String()); got != "ONLY=1" {
		t.Errorf("child env = %q, want only ONLY=1", got)
	}
}

// startGroup runs script in the background through Run and returns the
// process group id once the script has written it, and Run's result.
func startGroup(t *testing.T, ctx context.Context, script string, timeout time.Duration) (int, <-chan error) {
	t.Helper()
	pidFile := filepath.Join(t.TempDir(), "pid")
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Command{
			Name:    "sh",
			Args:    []string{"-c", "echo $$ > " + pidFile + ".tmp && mv " + pidFile + ".tmp " + pidFile + "; " + script},
			Env:     testEnv(),
			Timeout: timeout,
			Output:  &syncbuf.Buffer{},
		})
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		data, err := os.ReadFile(pidFile)
		if err == nil {
			pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
			if err != nil {
				t.Fatalf("pid file %q: %v", data, err)
			}
			return pid, done
		}
		if time.Now().After(deadline) {
			t.Fatal("the child did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// assertGroupGone polls until no process of group pgid exists.
func assertGroupGone(t *testing.T, pgid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		// Orphans of the group are reparented to this (subreaper) process.
		for {
			pid, err := syscall.Wait4(-pgid, nil, syscall.WNOHANG, nil)
			if err != nil || pid <= 0 {
				break
			}
		}
		err := syscall.Kill(-pgid, 0)
		if errors.Is(err, syscall.ESRCH) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process group %d still exists (kill 0: %v)", pgid, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func waitRun(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return")
		return nil
	}
}

func TestRunTimeoutKillsGroup(t *testing.T) {
	t.Parallel()
	pgid, done := startGroup(t, context.Background(), "sleep 300 & sleep 300", 300*time.Millisecond)
	err := waitRun(t, done)
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("Run = %v, want ErrTimeout", err)
	}
	if want := "sh timed out after 300ms"; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not say %q", err, want)
	}
	assertGroupGone(t, pgid)
}

func TestRunCancelKillsGroup(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pgid, done := startGroup(t, ctx, "sleep 300 & sleep 300", 0)
	cancel()
	err := waitRun(t, done)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want context.Canceled", err)
	}
	if errors.Is(err, ErrTimeout) {
		t.Errorf("cancel error wraps ErrTimeout: %v", err)
	}
	assertGroupGone(t, pgid)
}

func TestRunKillsGroupIgnoringTerm(t *testing.T) {
	t.Parallel()
	// Both the shell and its sleeps ignore SIGTERM: only SIGKILL ends them.
	pgid, done := startGroup(t, context.Background(), `trap "" TERM; sleep 300 & sleep 300`, 200*time.Millisecond)
	err := waitRun(t, done)
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("Run = %v, want ErrTimeout", err)
	}
	assertGroupGone(t, pgid)
}

func TestRunEndsLeftoverGrandchild(t *testing.T) {
	t.Parallel()
	// The child exits at once but leaves a grandchild holding the output
	// pipe: Run returns without waiting for it and ends it.
	pgid, done := startGroup(t, context.Background(), "sleep 300 &", 0)
	if err := waitRun(t, done); err != nil {
		t.Fatalf("Run = %v", err)
	}
	assertGroupGone(t, pgid)
}

func TestRunCancelledBeforeStart(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := Run(ctx, Command{Name: "true", Env: testEnv()})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want context.Canceled", err)
	}
}

func TestParseStat(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, stat string
		state      string
		pgrp       int
		ok         bool
	}{
		{name: "plain", stat: "123 (sleep) S 1 120 120 0", state: "S", pgrp: 120, ok: true},
		{name: "comm with spaces and parens", stat: "9 (a) b (c)) Z 1 77 77 0", state: "Z", pgrp: 77, ok: true},
		{name: "truncated", stat: "9 (x) R", ok: false},
		{name: "garbage", stat: "nothing", ok: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			state, pgrp, ok := parseStat(tt.stat)
			if state != tt.state && tt.ok || pgrp != tt.pgrp && tt.ok || ok != tt.ok {
				t.Errorf("parseStat(%q) = %q, %d, %t; want %q, %d, %t", tt.stat, state, pgrp, ok, tt.state, tt.pgrp, tt.ok)
			}
		})
	}
}
