package builder

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/tractstack/concierge/internal/sandbox"
	"github.com/tractstack/concierge/internal/syncbuf"
	"github.com/tractstack/concierge/internal/testtool"
)

func TestNewDefaults(t *testing.T) {
	t.Parallel()
	b := New(Config{})
	if b.cfg.StepTimeout != DefaultStepTimeout {
		t.Errorf("StepTimeout = %v, want %v", b.cfg.StepTimeout, DefaultStepTimeout)
	}
	b = New(Config{StepTimeout: time.Minute})
	if b.cfg.StepTimeout != time.Minute {
		t.Errorf("StepTimeout = %v, want 1m", b.cfg.StepTimeout)
	}
}

func TestDependsOn(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		json    string
		want    bool
		wantErr bool
	}{
		{name: "dependency", json: `{"dependencies":{"astro-tractstack":"^2.0.0"}}`, want: true},
		{name: "dev dependency", json: `{"devDependencies":{"astro-tractstack":"^2.0.0"}}`, want: true},
		{name: "absent", json: `{"dependencies":{"astro":"^5"}}`},
		{name: "only in scripts", json: `{"scripts":{"astro-tractstack":"x"}}`},
		{name: "no dependencies", json: `{"name":"x"}`},
		{name: "not json", json: `{`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := dependsOn([]byte(tt.json), "astro-tractstack")
			if got != tt.want || (err != nil) != tt.wantErr {
				t.Errorf("dependsOn = %t, %v; want %t, error %t", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func binaryVersion(t *testing.T, bin string) string {
	t.Helper()
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		t.Fatalf("%s --version: %v", bin, err)
	}
	return strings.TrimSpace(string(out))
}

func TestBuildBackend(t *testing.T) {
	t.Parallel()
	testtool.Require(t, "go")
	ctx := context.Background()
	h := newHome(t, sandbox.Options{BackendVersion: "v7"})
	b := New(Config{Env: testEnv(), GoBuildFlags: []string{"-ldflags", "-s -w"}, Log: zerolog.New(zerolog.NewTestWriter(t))})
	binDir := filepath.Join(t.TempDir(), "bin")
	bin := filepath.Join(binDir, "tractstack-go")
	var out syncbuf.Buffer
	if err := b.BuildBackend(ctx, h.BackendSrc(""), bin, &out); err != nil {
		t.Fatalf("BuildBackend: %v\n%s", err, out.String())
	}
	if got := binaryVersion(t, bin); got != "v7" {
		t.Errorf("--version = %q, want v7", got)
	}

	// A broken commit fails and leaves the previous binary as it was.
	if _, err := h.PushBackend(ctx, "", sandbox.BackendBroken()); err != nil {
		t.Fatal(err)
	}
	if _, err := b.PullBackend(ctx, h.BackendSrc(""), nil); err != nil {
		t.Fatal(err)
	}
	out = syncbuf.Buffer{}
	err := b.BuildBackend(ctx, h.BackendSrc(""), bin, &out)
	if err == nil {
		t.Fatal("BuildBackend of a broken commit succeeded")
	}
	if !strings.Contains(out.String(), "broken.go") {
		t.Errorf("compiler output not passed on: %q", out.String())
	}
	if got := binaryVersion(t, bin); got != "v7" {
		t.Errorf("after a failed build --version = %q, want v7", got)
	}
	entries, err := os.ReadDir(binDir)
	if err != nil || len(entries) != 1 {
		t.Errorf("bin dir holds %v (%v), want only the binary", entries, err)
	}
}

func TestBuildBackendBrokenLeavesNoBinary(t *testing.T) {
	t.Parallel()
	testtool.Require(t, "go")
	ctx := context.Background()
	h := newHome(t, sandbox.Options{})
	b := newTestBuilder(t)
	if _, err := h.PushBackend(ctx, "", sandbox.BackendBroken()); err != nil {
		t.Fatal(err)
	}
	if _, err := b.PullBackend(ctx, h.BackendSrc(""), nil); err != nil {
		t.Fatal(err)
	}
	binDir := t.TempDir()
	bin := filepath.Join(binDir, "tractstack-go")
	err := b.BuildBackend(ctx, h.BackendSrc(""), bin, nil)
	if err == nil || !strings.Contains(err.Error(), "exit status") {
		t.Fatalf("BuildBackend = %v, want an exit status error", err)
	}
	if _, err := os.Stat(bin); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("output path exists after a failed build: %v", err)
	}
	if entries, _ := os.ReadDir(binDir); len(entries) != 0 {
		t.Errorf("leftovers beside the binary: %v", entries)
	}
}

func TestBuildBackendTimeout(t *testing.T) {
	t.Parallel()
	testtool.Require(t, "go")
	h := newHome(t, sandbox.Options{})
	b := New(Config{Env: testEnv(), StepTimeout: time.Nanosecond, Log: zerolog.New(zerolog.NewTestWriter(t))})
	bin := filepath.Join(t.TempDir(), "tractstack-go")
	err := b.BuildBackend(context.Background(), h.BackendSrc(""), bin, nil)
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("BuildBackend = %v, want ErrTimeout", err)
	}
	if _, err := os.Stat(bin); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("output path exists after a timed-out build: %v", err)
	}
}

func TestBuildFrontend(t *testing.T) {
	t.Parallel()
	testtool.Require(t, "pnpm")
	h := newHome(t, sandbox.Options{FrontendVersion: "f3"})
	src := h.FrontendSrc("")
	// The sandbox package does not depend on it: the update is skipped.
	b := New(Config{Env: testEnv(), FrontendUpdate: "astro-tractstack", Log: zerolog.New(zerolog.NewTestWriter(t))})
	var out syncbuf.Buffer
	if err := b.BuildFrontend(context.Background(), src, &out); err != nil {
		t.Fatalf("BuildFrontend: %v\n%s", err, out.String())
	}
	entry := readFile(t, filepath.Join(src, "dist/server/entry.mjs"))
	if !strings.Contains(entry, `"f3"`) {
		t.Errorf("entry.mjs does not serve f3: %q", entry)
	}
	if !strings.Contains(out.String(), "building frontend f3") {
		t.Errorf("build output not passed on: %q", out.String())
	}
}

func TestBuildFrontendBrokenFails(t *testing.T) {
	t.Parallel()
	testtool.Require(t, "pnpm")
	h := newHome(t, sandbox.Options{})
	src := h.FrontendSrc("")
	if err := sandbox.WriteFrontendFiles(src, sandbox.FrontendBroken()); err != nil {
		t.Fatal(err)
	}
	err := newTestBuilder(t).BuildFrontend(context.Background(), src, nil)
	if err == nil || !strings.Contains(err.Error(), "build frontend") || !strings.Contains(err.Error(), "exit status") {
		t.Fatalf("BuildFrontend = %v, want a failed build", err)
	}
}

func TestBuildFrontendNoDistFails(t *testing.T) {
	t.Parallel()
	testtool.Require(t, "pnpm")
	src := t.TempDir()
	writeFile(t, filepath.Join(src, "package.json"), `{"name":"nodist","version":"0.0.0","private":true,"scripts":{"build":"node -e 0"}}`)
	err := newTestBuilder(t).BuildFrontend(context.Background(), src, nil)
	if err == nil || !strings.Contains(err.Error(), "dist") {
		t.Fatalf("BuildFrontend = %v, want an error saying dist is missing", err)
	}
}

func TestBuildFrontendRunsUpdateForDependency(t *testing.T) {
	t.Parallel()
	testtool.Require(t, "pnpm")
	// A dependency that pnpm resolves without the network: a local
	// directory package. `pnpm up --latest` on it runs and succeeds.
	root := t.TempDir()
	dep := filepath.Join(root, "dep")
	src := filepath.Join(root, "app")
	for _, d := range []string{dep, src} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(dep, "package.json"), `{"name":"localdep","version":"1.0.0"}`)
	writeFile(t, filepath.Join(src, "package.json"),
		`{"name":"app","version":"0.0.0","private":true,"dependencies":{"localdep":"link:../dep"},"scripts":{"build":"node -e \"require('fs').mkdirSync('dist')\""}}`)
	b := New(Config{Env: testEnv(), FrontendUpdate: "localdep", Log: zerolog.New(zerolog.NewTestWriter(t))})
	var out syncbuf.Buffer
	err := b.BuildFrontend(context.Background(), src, &out)
	t.Logf("output:\n%s", out.String())
	if err != nil {
		t.Fatalf("BuildFrontend: %v", err)
	}
}

func TestWhitelist(t *testing.T) {
	t.Parallel()
	testtool.Require(t, "python3")
	dir := t.TempDir()
	script := filepath.Join(dir, "extract.py")
	writeFile(t, script, "import sys, json\nopen(sys.argv[2], 'w').write(json.dumps(sys.argv[1:]))\n")
	jsonOut := filepath.Join(dir, "out.json")
	b := newTestBuilder(t)
	if err := b.Whitelist(context.Background(), script, filepath.Join(dir, "dist"), jsonOut, filepath.Join(dir, "tpl"), nil); err != nil {
		t.Fatalf("Whitelist: %v", err)
	}
	want := `["` + filepath.Join(dir, "dist") + `", "` + jsonOut + `", "` + filepath.Join(dir, "tpl") + `"]`
	if got := readFile(t, jsonOut); got != want {
		t.Errorf("script saw %s, want %s", got, want)
	}

	failing := filepath.Join(dir, "fail.py")
	writeFile(t, failing, "import sys\nsys.exit(4)\n")
	err := b.Whitelist(context.Background(), failing, dir, jsonOut, dir, nil)
	if err == nil || !strings.Contains(err.Error(), "exit status 4") {
		t.Errorf("Whitelist(failing) = %v, want exit status 4", err)
	}
}
