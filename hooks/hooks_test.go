package hooks

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tractstack/concierge/builder"
	"github.com/tractstack/concierge/internal/syncbuf"
	"github.com/tractstack/concierge/queue"
)

func TestRefusal(t *testing.T) {
	const self = 1000
	for _, c := range []struct {
		name string
		mode fs.FileMode
		uid  int
		dir  bool
		want string // part of the reason; "" may run
	}{
		{"own executable", 0o755, self, false, ""},
		{"root's executable", 0o700, 0, false, ""},
		{"another user's", 0o755, 1001, false, "owned by uid 1001"},
		{"group-writable", 0o775, self, false, "writable by group or others (mode 0775)"},
		{"world-writable", 0o757, 0, false, "writable by group or others"},
		{"not executable", 0o644, self, false, "not executable"},
		{"a link", fs.ModeSymlink | 0o777, self, false, "symbolic link"},
		{"a directory", fs.ModeDir | 0o755, self, false, "not a regular file"},
		{"a FIFO", fs.ModeNamedPipe | 0o755, self, false, "not a regular file"},
		{"own directory", fs.ModeDir | 0o755, self, true, ""},
		{"world-writable directory", fs.ModeDir | 0o777, self, true, "the hooks directory is writable"},
		{"another user's directory", fs.ModeDir | 0o755, 1001, true, "the hooks directory is owned by uid 1001"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := Refusal(c.mode, c.uid, self, c.dir)
			if (c.want == "") != (got == "") || !strings.Contains(got, c.want) {
				t.Fatalf("Refusal = %q, want %q", got, c.want)
			}
		})
	}
}

func TestEnv(t *testing.T) {
	started := time.Now()
	env := Env([]string{"PATH=/bin", "CONCIERGE_JOB_ID=stale"}, Info{
		Job:   queue.Job{ID: "01J", Target: "dedicated:acme", Command: "build", Tenants: []string{"a", "b"}, StartedAt: &started},
		State: "failed", Err: errors.New("it broke"), Release: "r1", Backend: "b1", Frontend: "f1", Duration: 1500 * time.Millisecond,
	})
	want := []string{"PATH=/bin", "CONCIERGE_JOB_ID=01J", "CONCIERGE_TARGET=dedicated:acme", "CONCIERGE_COMMAND=build",
		"CONCIERGE_STATE=failed", "CONCIERGE_ERROR=it broke", "CONCIERGE_RELEASE=r1", "CONCIERGE_BACKEND_COMMIT=b1",
		"CONCIERGE_FRONTEND_COMMIT=f1", "CONCIERGE_DURATION_MS=1500", "CONCIERGE_TENANTS=a,b"}
	if !slices.Equal(env, want) {
		t.Fatalf("Env =\n%q\nwant\n%q", env, want)
	}
}

// hookDir makes a hooks directory owned by the test's user.
func hookDir(t *testing.T) (string, *Runner) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "hooks")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir, New(Config{Dir: dir, Env: builder.ChildEnv(os.Environ(), os.Getenv("HOME")), Timeout: 2 * time.Second, UID: os.Geteuid()})
}

func writeHook(t *testing.T, dir, name, script string, mode fs.FileMode) {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(script), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil { // past the umask
		t.Fatal(err)
	}
}

func TestRun(t *testing.T) {
	dir, r := hookDir(t)
	in := Info{Job: queue.Job{ID: "01J", Target: "main", Command: "build", Tenants: []string{"default"}}, State: "building"}
	ctx := context.Background()

	if r.Exists(PreBuild) {
		t.Fatal("an absent hook exists")
	}
	var out syncbuf.Buffer
	if err := r.Run(ctx, PreBuild, in, &out); err != nil {
		t.Fatalf("an absent hook: %v", err)
	}

	writeHook(t, dir, PreBuild, "#!/bin/sh\necho \"job $CONCIERGE_JOB_ID $CONCIERGE_TARGET $CONCIERGE_STATE in $(pwd)\"\n", 0o755)
	out = syncbuf.Buffer{}
	if err := r.Run(ctx, PreBuild, in, &out); err != nil {
		t.Fatal(err)
	}
	if want := "job 01J main building in " + dir; !strings.Contains(out.String(), want) {
		t.Fatalf("output %q lacks %q", out.String(), want)
	}

	writeHook(t, dir, PreSwap, "#!/bin/sh\necho no; exit 3\n", 0o755)
	if err := r.Run(ctx, PreSwap, in, &syncbuf.Buffer{}); err == nil || !strings.Contains(err.Error(), "exit status 3") {
		t.Fatalf("a failing hook: %v", err)
	}

	writeHook(t, dir, PostDeploy, "#!/bin/sh\ntouch ran\n", 0o775)
	err := r.Run(ctx, PostDeploy, in, &syncbuf.Buffer{})
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "writable by group or others") {
		t.Fatalf("a group-writable hook: %v", err)
	}
	if _, serr := os.Stat(filepath.Join(dir, "ran")); serr == nil {
		t.Fatal("the refused hook ran")
	}

	writeHook(t, dir, OnFailure, "#!/bin/sh\nsleep 30\n", 0o755)
	if err := r.Run(ctx, OnFailure, in, &syncbuf.Buffer{}); !errors.Is(err, builder.ErrTimeout) {
		t.Fatalf("a hanging hook: %v", err)
	}

	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := r.Run(ctx, PreBuild, in, &syncbuf.Buffer{}); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "hooks directory is writable") {
		t.Fatalf("a world-writable hooks directory: %v", err)
	}
}
