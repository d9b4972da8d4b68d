package builder

import (
	"os"
	"path/filepath"
	"testing"
)

// TestInstallDone: pnpm install is skipped only when node_modules/ was
// installed from exactly the tree's manifests and the project runs no
// install script of its own.
func TestInstallDone(t *testing.T) {
	const pkg = `{"name":"site","dependencies":{"astro":"^5"}}`
	tests := []struct {
		name   string
		change func(t *testing.T, dir string) // after the install was marked
		want   bool
	}{
		{name: "manifests unchanged", change: func(*testing.T, string) {}, want: true},
		{name: "lock file changed", change: func(t *testing.T, dir string) {
			write(t, filepath.Join(dir, "pnpm-lock.yaml"), "lockfileVersion: '9.0'\nchanged: true\n")
		}, want: false},
		{name: "package.json changed", change: func(t *testing.T, dir string) {
			write(t, filepath.Join(dir, "package.json"), `{"name":"site","dependencies":{"astro":"^6"}}`)
		}, want: false},
		{name: "an .npmrc appeared", change: func(t *testing.T, dir string) {
			write(t, filepath.Join(dir, ".npmrc"), "node-linker=hoisted\n")
		}, want: false},
		{name: "the project has a postinstall script", change: func(t *testing.T, dir string) {
			p := `{"name":"site","scripts":{"postinstall":"astro sync"}}`
			write(t, filepath.Join(dir, "package.json"), p)
			if err := markInstalled(dir); err != nil {
				t.Fatal(err)
			}
		}, want: false},
		{name: "no mark", change: func(t *testing.T, dir string) {
			if err := os.Remove(filepath.Join(dir, "node_modules", InstalledMark)); err != nil {
				t.Fatal(err)
			}
		}, want: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			write(t, filepath.Join(dir, "package.json"), pkg)
			write(t, filepath.Join(dir, "pnpm-lock.yaml"), "lockfileVersion: '9.0'\n")
			if err := os.MkdirAll(filepath.Join(dir, "node_modules"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := markInstalled(dir); err != nil {
				t.Fatal(err)
			}
			tc.change(t, dir)
			if got, _ := installDone(dir); got != tc.want {
				t.Fatalf("installDone = %t, want %t", got, tc.want)
			}
		})
	}
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
