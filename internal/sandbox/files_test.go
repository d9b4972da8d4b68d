package sandbox

import (
	"context"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// The frontend stand-in's build script and the server it writes are
// valid JavaScript, in each mode.
func TestFrontendFilesParse(t *testing.T) {
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("node not installed")
	}
	for _, mode := range []string{"", "hang", "maint"} {
		dir := t.TempDir()
		files := frontendFiles("v1", "/nowhere")
		if mode != "" {
			files["src/mode.txt"] = mode + "\n"
		}
		if err := writeFiles(dir, files); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for _, args := range [][]string{{"build.mjs"}, {"--check", filepath.Join("dist", "server", "entry.mjs")}} {
			cmd := exec.CommandContext(ctx, "node", args...)
			cmd.Dir = dir
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("mode %q: node %v: %v\n%s", mode, args, err, out)
			}
		}
	}
}
