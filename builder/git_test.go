package builder

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/tractstack/concierge/internal/sandbox"
	"github.com/tractstack/concierge/internal/testtool"
)

func TestDecideFastForward(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name           string
		head, up       string
		headAnc, upAnc bool
		want           ffAction
	}{
		{name: "same commit", head: "a", up: "a", want: ffUpToDate},
		{name: "same commit whatever the flags", head: "a", up: "a", headAnc: true, upAnc: true, want: ffUpToDate},
		{name: "upstream ahead", head: "a", up: "b", headAnc: true, want: ffForward},
		{name: "local ahead", head: "b", up: "a", upAnc: true, want: ffLocalAhead},
		{name: "diverged", head: "b", up: "c", want: ffDiverged},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := decideFastForward(tt.head, tt.up, tt.headAnc, tt.upAnc); got != tt.want {
				t.Errorf("decideFastForward = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestListFew(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		names []string
		want  string
	}{
		{"one", []string{"a"}, "a"},
		{"three", []string{"a", "b", "c"}, "a, b, c"},
		{"five", []string{"a", "b", "c", "d", "e"}, "a, b, c and 2 more"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := listFew(tt.names, 3); got != tt.want {
				t.Errorf("listFew = %q, want %q", got, tt.want)
			}
		})
	}
}

func newTestBuilder(t *testing.T) *Builder {
	t.Helper()
	return New(Config{
		Env: testEnv(),
		Log: zerolog.New(zerolog.NewTestWriter(t)).With().Timestamp().Logger(),
	})
}

func newHome(t *testing.T, opts sandbox.Options) *sandbox.Home {
	t.Helper()
	testtool.Require(t, "git")
	h, err := sandbox.New(context.Background(), t.TempDir(), opts)
	if err != nil {
		t.Fatalf("make sandbox: %v", err)
	}
	return h
}

func gitOut(t *testing.T, dir string, args ...string) string {
	t.Helper()
	out, err := sandbox.GitOutput(context.Background(), dir, args...)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestPullBackendFastForward(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := newHome(t, sandbox.Options{})
	src := h.BackendSrc("")
	before := gitOut(t, src, "rev-parse", "HEAD")
	pushed, err := h.PushBackend(ctx, "", sandbox.BackendVersion("v2", true))
	if err != nil {
		t.Fatal(err)
	}
	res, err := newTestBuilder(t).PullBackend(ctx, src, nil)
	if err != nil {
		t.Fatalf("PullBackend: %v", err)
	}
	if res.Old != before || res.New != pushed || res.Skipped || res.Dir != src {
		t.Errorf("PullBackend = %+v, want Old %s New %s", res, before, pushed)
	}
	if got := readFile(t, filepath.Join(src, "cmd/tractstack-go/version.go")); !strings.Contains(got, `"v2"`) {
		t.Errorf("version.go not updated: %q", got)
	}
	// The git CLI agrees: HEAD moved, index and files clean.
	if got := gitOut(t, src, "rev-parse", "HEAD"); got != pushed {
		t.Errorf("git rev-parse HEAD = %s, want %s", got, pushed)
	}
	if got := gitOut(t, src, "status", "--porcelain"); got != "" {
		t.Errorf("git status after pull = %q, want clean", got)
	}
	if got, err := HeadCommit(src); err != nil || got != pushed {
		t.Errorf("HeadCommit = %q, %v; want %s", got, err, pushed)
	}
}

func TestPullBackendRemovesDeletedFiles(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := newHome(t, sandbox.Options{})
	src := h.BackendSrc("")
	b := newTestBuilder(t)
	if _, err := h.PushBackend(ctx, "", sandbox.BackendBroken()); err != nil {
		t.Fatal(err)
	}
	if _, err := b.PullBackend(ctx, src, nil); err != nil {
		t.Fatal(err)
	}
	broken := filepath.Join(src, "cmd/tractstack-go/broken.go")
	if _, err := os.Stat(broken); err != nil {
		t.Fatalf("added file missing: %v", err)
	}
	if _, err := h.PushBackend(ctx, "", sandbox.BackendVersion("v3", true)); err != nil {
		t.Fatal(err)
	}
	if _, err := b.PullBackend(ctx, src, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(broken); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("file removed upstream is still there: %v", err)
	}
	if got := gitOut(t, src, "status", "--porcelain"); got != "" {
		t.Errorf("git status after pull = %q, want clean", got)
	}
}

func TestPullBackendUpToDate(t *testing.T) {
	t.Parallel()
	h := newHome(t, sandbox.Options{})
	src := h.BackendSrc("")
	head := gitOut(t, src, "rev-parse", "HEAD")
	res, err := newTestBuilder(t).PullBackend(context.Background(), src, nil)
	if err != nil {
		t.Fatalf("PullBackend: %v", err)
	}
	if res.Old != head || res.New != head || res.Skipped {
		t.Errorf("PullBackend = %+v, want Old == New == %s", res, head)
	}
}

func TestPullBackendDirtyTrackedFileFails(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := newHome(t, sandbox.Options{})
	src := h.BackendSrc("")
	head := gitOut(t, src, "rev-parse", "HEAD")
	if _, err := h.PushBackend(ctx, "", sandbox.BackendVersion("v2", true)); err != nil {
		t.Fatal(err)
	}
	mainGo := filepath.Join(src, "cmd/tractstack-go/main.go")
	edited := readFile(t, mainGo) + "\n// local edit\n"
	writeFile(t, mainGo, edited)

	_, err := newTestBuilder(t).PullBackend(ctx, src, nil)
	t.Logf("error: %v", err)
	if err == nil {
		t.Fatal("PullBackend succeeded with a modified tracked file")
	}
	for _, want := range []string{src, "cmd/tractstack-go/main.go", "commit or discard the changes in " + src, "then retry"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if got := readFile(t, mainGo); got != edited {
		t.Error("the local change was touched")
	}
	if got := gitOut(t, src, "rev-parse", "HEAD"); got != head {
		t.Errorf("HEAD moved to %s", got)
	}
}

func TestPullBackendStagedChangeFails(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := newHome(t, sandbox.Options{})
	src := h.BackendSrc("")
	writeFile(t, filepath.Join(src, "new.go"), "package x\n")
	gitOut(t, src, "add", "new.go")
	_, err := newTestBuilder(t).PullBackend(ctx, src, nil)
	t.Logf("error: %v", err)
	if err == nil || !strings.Contains(err.Error(), "new.go") {
		t.Fatalf("PullBackend = %v, want an error naming the staged file", err)
	}
}

func TestPullBackendUntrackedAndTouchedDoNotBlock(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := newHome(t, sandbox.Options{})
	src := h.BackendSrc("")
	pushed, err := h.PushBackend(ctx, "", sandbox.BackendVersion("v2", true))
	if err != nil {
		t.Fatal(err)
	}
	lock := filepath.Join(src, "build.lock")
	writeFile(t, lock, "locked\n")
	// A tracked file whose stat changed but whose content did not.
	mainGo := filepath.Join(src, "cmd/tractstack-go/main.go")
	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(mainGo, later, later); err != nil {
		t.Fatal(err)
	}
	dirty, err := dirtyFilesIn(src)
	if err != nil || len(dirty) != 0 {
		t.Fatalf("dirty files = %q, %v; want none", dirty, err)
	}
	res, err := newTestBuilder(t).PullBackend(ctx, src, nil)
	if err != nil {
		t.Fatalf("PullBackend: %v", err)
	}
	if res.New != pushed {
		t.Errorf("New = %s, want %s", res.New, pushed)
	}
	if got := readFile(t, lock); got != "locked\n" {
		t.Errorf("untracked file changed: %q", got)
	}
	if got := gitOut(t, src, "status", "--porcelain"); got != "?? build.lock" {
		t.Errorf("git status after pull = %q, want only the untracked lock", got)
	}
}

func dirtyFilesIn(dir string) ([]string, error) {
	repo, err := openRepo(dir)
	if err != nil {
		return nil, err
	}
	return dirtyFiles(repo)
}

func TestPullBackendUntrackedWouldBeOverwrittenFails(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := newHome(t, sandbox.Options{})
	src := h.BackendSrc("")
	if _, err := h.PushBackend(ctx, "", sandbox.Change{Files: map[string]string{"notes.txt": "upstream\n"}}); err != nil {
		t.Fatal(err)
	}
	notes := filepath.Join(src, "notes.txt")
	writeFile(t, notes, "mine\n")
	_, err := newTestBuilder(t).PullBackend(ctx, src, nil)
	t.Logf("error: %v", err)
	if err == nil || !strings.Contains(err.Error(), "notes.txt") || !strings.Contains(err.Error(), "overwritten") {
		t.Fatalf("PullBackend = %v, want an error about overwriting notes.txt", err)
	}
	if got := readFile(t, notes); got != "mine\n" {
		t.Errorf("untracked file overwritten: %q", got)
	}
}

func TestPullBackendDivergedFails(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := newHome(t, sandbox.Options{})
	src := h.BackendSrc("")
	if _, err := h.PushBackend(ctx, "", sandbox.BackendVersion("v2", true)); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(src, "local.txt"), "local\n")
	gitOut(t, src, "add", "local.txt")
	gitOut(t, src, "commit", "-q", "-m", "local commit")
	local := gitOut(t, src, "rev-parse", "HEAD")

	_, err := newTestBuilder(t).PullBackend(ctx, src, nil)
	t.Logf("error: %v", err)
	if err == nil || !strings.Contains(err.Error(), "diverged") || !strings.Contains(err.Error(), src) {
		t.Fatalf("PullBackend = %v, want a diverged error naming %s", err, src)
	}
	if got := gitOut(t, src, "rev-parse", "HEAD"); got != local {
		t.Errorf("HEAD moved to %s", got)
	}
}

func TestPullBackendLocalAheadIsUpToDate(t *testing.T) {
	t.Parallel()
	h := newHome(t, sandbox.Options{})
	src := h.BackendSrc("")
	gitOut(t, src, "commit", "-q", "--allow-empty", "-m", "local commit")
	local := gitOut(t, src, "rev-parse", "HEAD")
	res, err := newTestBuilder(t).PullBackend(context.Background(), src, nil)
	if err != nil || res.Old != local || res.New != local {
		t.Fatalf("PullBackend = %+v, %v; want Old == New == %s", res, err, local)
	}
}

func TestPullBackendUnreachableOriginFails(t *testing.T) {
	t.Parallel()
	h := newHome(t, sandbox.Options{})
	src := h.BackendSrc("")
	origin := h.BackendOrigin("")
	if err := os.RemoveAll(origin); err != nil {
		t.Fatal(err)
	}
	_, err := newTestBuilder(t).PullBackend(context.Background(), src, nil)
	t.Logf("error: %v", err)
	if err == nil {
		t.Fatal("PullBackend succeeded without its origin")
	}
	for _, want := range []string{src, origin, "reachable", "then retry"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

func TestPullBackendDetachedHeadFails(t *testing.T) {
	t.Parallel()
	h := newHome(t, sandbox.Options{})
	src := h.BackendSrc("")
	gitOut(t, src, "checkout", "-q", "--detach")
	_, err := newTestBuilder(t).PullBackend(context.Background(), src, nil)
	t.Logf("error: %v", err)
	if err == nil || !strings.Contains(err.Error(), "detached HEAD") || !strings.Contains(err.Error(), src) {
		t.Fatalf("PullBackend = %v, want a detached HEAD error naming %s", err, src)
	}
}

func TestPullBackendNoUpstreamFails(t *testing.T) {
	t.Parallel()
	h := newHome(t, sandbox.Options{})
	src := h.BackendSrc("")
	gitOut(t, src, "branch", "--unset-upstream")
	_, err := newTestBuilder(t).PullBackend(context.Background(), src, nil)
	t.Logf("error: %v", err)
	if err == nil || !strings.Contains(err.Error(), "no upstream") || !strings.Contains(err.Error(), src) {
		t.Fatalf("PullBackend = %v, want a no-upstream error naming %s", err, src)
	}
}

func TestPullBackendNotARepositoryFails(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	_, err := newTestBuilder(t).PullBackend(context.Background(), dir, nil)
	if err == nil || !strings.Contains(err.Error(), dir) {
		t.Fatalf("PullBackend = %v, want an error naming %s", err, dir)
	}
}

func TestPullBackendCancelled(t *testing.T) {
	t.Parallel()
	h := newHome(t, sandbox.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := newTestBuilder(t).PullBackend(ctx, h.BackendSrc(""), nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("PullBackend = %v, want context.Canceled", err)
	}
}

func TestPullFrontendNotARepositorySkipped(t *testing.T) {
	t.Parallel()
	h := newHome(t, sandbox.Options{})
	src := h.FrontendSrc("")
	res, err := newTestBuilder(t).PullFrontend(context.Background(), src, nil)
	if err != nil {
		t.Fatalf("PullFrontend: %v", err)
	}
	want := PullResult{Dir: src, Skipped: true, Note: "not a git repository; the frontend is updated through its packages"}
	if res != want {
		t.Errorf("PullFrontend = %+v, want %+v", res, want)
	}
	if got, err := HeadCommit(src); got != "" || err != nil {
		t.Errorf("HeadCommit of a non-repository = %q, %v", got, err)
	}
}

func TestPullFrontendDirtySkipped(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := newHome(t, sandbox.Options{FrontendIsClone: true})
	src := h.FrontendSrc("")
	head := gitOut(t, src, "rev-parse", "HEAD")
	if _, err := h.PushFrontend(ctx, "", sandbox.FrontendVersion("v2")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(src, "src/version.txt"), "local\n")
	writeFile(t, filepath.Join(src, "untracked.txt"), "x\n")

	res, err := newTestBuilder(t).PullFrontend(ctx, src, nil)
	if err != nil {
		t.Fatalf("PullFrontend: %v", err)
	}
	t.Logf("note: %s", res.Note)
	if !res.Skipped || res.Old != head || res.New != head {
		t.Errorf("PullFrontend = %+v, want Skipped at %s", res, head)
	}
	for _, want := range []string{"src/version.txt", short(head), src} {
		if !strings.Contains(res.Note, want) {
			t.Errorf("Note %q does not say %q", res.Note, want)
		}
	}
	if strings.Contains(res.Note, "untracked.txt") {
		t.Errorf("Note %q names an untracked file", res.Note)
	}
	if got := readFile(t, filepath.Join(src, "src/version.txt")); got != "local\n" {
		t.Errorf("local change touched: %q", got)
	}
}

func TestPullFrontendCloneFastForward(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := newHome(t, sandbox.Options{FrontendIsClone: true})
	src := h.FrontendSrc("")
	pushed, err := h.PushFrontend(ctx, "", sandbox.FrontendVersion("v2"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := newTestBuilder(t).PullFrontend(ctx, src, nil)
	if err != nil || res.Skipped || res.New != pushed || res.Old == res.New {
		t.Fatalf("PullFrontend = %+v, %v; want New %s", res, err, pushed)
	}
	if got := readFile(t, filepath.Join(src, "src/version.txt")); got != "v2\n" {
		t.Errorf("version.txt = %q, want v2", got)
	}
}

func TestPullFrontendUnreachableFails(t *testing.T) {
	t.Parallel()
	h := newHome(t, sandbox.Options{FrontendIsClone: true})
	if err := os.RemoveAll(h.FrontendOrigin("")); err != nil {
		t.Fatal(err)
	}
	_, err := newTestBuilder(t).PullFrontend(context.Background(), h.FrontendSrc(""), nil)
	if err == nil || !strings.Contains(err.Error(), h.FrontendSrc("")) {
		t.Fatalf("PullFrontend = %v, want an error naming the frontend", err)
	}
}

func TestHeadCommitErrors(t *testing.T) {
	t.Parallel()
	testtool.Require(t, "git")
	dir := t.TempDir()
	if err := sandbox.Git(context.Background(), dir, "init", "-q"); err != nil {
		t.Fatal(err)
	}
	if got, err := HeadCommit(dir); err == nil {
		t.Errorf("HeadCommit of a repository without commits = %q, nil; want an error", got)
	}
}

// TestPullFromARemoteThatNeverAnswersTimesOut: a remote that accepts the
// connection and then says nothing must not hold the queue forever.
func TestPullFromARemoteThatNeverAnswersTimesOut(t *testing.T) {
	t.Parallel()
	h := newHome(t, sandbox.Options{})
	src := h.BackendSrc("")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		var held []net.Conn // accepted and never answered
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	if err := sandbox.Git(context.Background(), src, "remote", "set-url", "origin", "http://"+ln.Addr().String()+"/tractstack-go.git"); err != nil {
		t.Fatal(err)
	}
	b := New(Config{Env: testEnv(), StepTimeout: time.Second, Log: zerolog.New(zerolog.NewTestWriter(t))})
	done := make(chan error, 1)
	go func() {
		_, err := b.PullBackend(context.Background(), src, nil)
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "pull timed out after 1s") {
			t.Fatalf("error = %v; want a step timeout", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the pull is still waiting on a remote that never answers")
	}
}

// TestPullNeverShowsTheRemotesCredentials: an https remote with a user
// and token in its URL fails to fetch (a loopback server answering 401);
// neither the error, the step output nor the log holds the token.
func TestPullNeverShowsTheRemotesCredentials(t *testing.T) {
	t.Parallel()
	h := newHome(t, sandbox.Options{})
	src := h.BackendSrc("")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no", http.StatusUnauthorized)
	}))
	defer srv.Close()
	url := strings.Replace(srv.URL, "http://", "http://deploy:s3cr3tTOKEN@", 1) + "/tractstack-go.git"
	if err := sandbox.Git(context.Background(), src, "remote", "set-url", "origin", url); err != nil {
		t.Fatal(err)
	}
	var logs, out bytes.Buffer
	b := New(Config{Env: testEnv(), Log: zerolog.New(&logs)})
	_, err := b.PullBackend(context.Background(), src, &out)
	if err == nil {
		t.Fatal("the pull succeeded against a server that refuses it")
	}
	for name, text := range map[string]string{"error": err.Error(), "output": out.String(), "log": logs.String()} {
		if strings.Contains(text, "s3cr3tTOKEN") {
			t.Errorf("%s holds the token: %s", name, text)
		}
	}
	if !strings.Contains(err.Error(), "http://xxxxx:xxxxx@127.0.0.1") {
		t.Errorf("error %q does not name the remote (redacted)", err)
	}
}

// TestPullFastForwardsOnlyWhatChanged: the fast-forward writes the files
// the commits differ in, with their modes, leaves untracked and ignored
// files alone, and git agrees that the tree is clean at the new commit.
func TestPullFastForwardsOnlyWhatChanged(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := newHome(t, sandbox.Options{})
	src := h.BackendSrc("")
	if err := os.MkdirAll(filepath.Join(src, "node_modules", "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(src, "node_modules", "x", "index.js"), "ignored\n")
	writeFile(t, filepath.Join(src, ".gitignore"), "node_modules/\n")
	if err := sandbox.Git(ctx, src, "add", ".gitignore"); err != nil {
		t.Fatal(err)
	}
	if err := sandbox.Git(ctx, src, "commit", "-qm", "ignore"); err != nil {
		t.Fatal(err)
	}
	if err := sandbox.Git(ctx, src, "push", "-q", "origin", "HEAD:main"); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(src, "notes.txt"), "untracked\n")
	pushed, err := h.PushBackend(ctx, "", sandbox.Change{Files: map[string]string{
		"scripts/run.sh":               "#!/bin/sh\necho run\n",
		"internal/deep/dir/new.go":     "package dir\n",
		"cmd/tractstack-go/version.go": "package main\n\nconst Version = \"v9\"\n\nconst Healthy = true\n",
	}, Remove: []string{"internal/presentation/templates/base.html"}, Message: "several"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := newTestBuilder(t).PullBackend(ctx, src, nil); err != nil {
		t.Fatal(err)
	}
	if got := gitOut(t, src, "rev-parse", "HEAD"); got != pushed {
		t.Fatalf("HEAD %s, want %s", got, pushed)
	}
	if got := gitOut(t, src, "status", "--porcelain"); got != "?? notes.txt" {
		t.Fatalf("git status after pull = %q, want only the untracked file", got)
	}
	if fi, err := os.Stat(filepath.Join(src, "scripts/run.sh")); err != nil || fi.Mode().Perm()&0o100 == 0 {
		t.Fatalf("run.sh: %v, %v; want executable", fi, err)
	}
	if _, err := os.Stat(filepath.Join(src, "internal/presentation")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the emptied directories are left: %v", err)
	}
	if got := readFile(t, filepath.Join(src, "node_modules", "x", "index.js")); got != "ignored\n" {
		t.Fatalf("ignored file changed: %q", got)
	}
}
