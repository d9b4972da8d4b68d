package sandbox

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestNewBuildsAndServes(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not installed")
	}
	ctx := context.Background()
	h, err := New(ctx, t.TempDir(), Options{Sites: []string{"acme"}, Ports: map[string][2]int{"main": {10000, 20000}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(h.BackendSrc("acme"), "cmd", "tractstack-go", "main.go")); err != nil {
		t.Fatalf("backend clone missing: %v", err)
	}
	if _, err := os.Stat(filepath.Join(h.FrontendSrc(""), ".git")); !os.IsNotExist(err) {
		t.Fatalf("frontend should not be a clone by default, stat .git: %v", err)
	}
	commit, err := h.PushBackend(ctx, "", BackendVersion("v2", true))
	if err != nil {
		t.Fatal(err)
	}
	out, err := GitOutput(ctx, h.BackendOrigin(""), "rev-parse", "main")
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(out) != commit {
		t.Fatalf("origin main = %s, pushed %s", out, commit)
	}
	ports, err := os.ReadFile(filepath.Join(h.Dir, "etc", "t8k-ports.conf"))
	if err != nil || !strings.Contains(string(ports), "main=10000,20000") {
		t.Fatalf("ports file = %q, %v", ports, err)
	}
}
