package atomicfile

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// The umask applies, as with os.WriteFile: under UMask=0027 a record
// written 0644 is not world-readable. (Not parallel: the umask belongs to
// the process.)
func TestWriteFileHonoursTheUmask(t *testing.T) {
	for _, tc := range []struct {
		name  string
		umask int
		perm  os.FileMode
		want  os.FileMode
	}{
		{"service umask", 0o027, 0o644, 0o640},
		{"common umask", 0o022, 0o644, 0o644},
		{"executable", 0o027, 0o755, 0o750},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old := syscall.Umask(tc.umask)
			defer syscall.Umask(old)
			path := filepath.Join(t.TempDir(), "record.json")
			if err := WriteFile(path, []byte("old\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := WriteFile(path, []byte("{}\n"), tc.perm); err != nil {
				t.Fatal(err)
			}
			st, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if got := st.Mode().Perm(); got != tc.want {
				t.Fatalf("mode %o, want %o", got, tc.want)
			}
			if data, _ := os.ReadFile(path); string(data) != "{}\n" {
				t.Fatalf("content %q", data)
			}
			entries, _ := os.ReadDir(filepath.Dir(path))
			if len(entries) != 1 {
				t.Fatalf("temp files left: %v", entries)
			}
		})
	}
}
