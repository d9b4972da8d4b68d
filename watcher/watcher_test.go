package watcher

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

func match(name string) bool {
	return strings.HasPrefix(name, "build-") && strings.HasSuffix(name, ".csv")
}

func opts(dir string) Options {
	return Options{Dir: dir, Match: match, MaxSize: 64, Quiet: 200 * time.Millisecond}
}

func TestReadRefusesWhatIsNotARegularFile(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "secret")
	os.WriteFile(target, []byte("type=main,command=build"), 0o644)
	if err := os.Symlink(target, filepath.Join(dir, "build-link.csv")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "build-fifo.csv"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Mkdir(filepath.Join(dir, "build-dir.csv"), 0o755)
	os.WriteFile(filepath.Join(dir, "build-big.csv"), []byte(strings.Repeat("x", 65)), 0o644)
	for name, want := range map[string]string{
		"build-link.csv": "symbolic link", "build-fifo.csv": "FIFO", "build-dir.csv": "directory", "build-big.csv": "more than the 64",
	} {
		t.Run(name, func(t *testing.T) {
			done := make(chan struct{})
			var (
				f       File
				settled bool
				err     error
			)
			go func() { f, settled, err = Read(opts(dir), name); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("Read blocked")
			}
			if err != nil || !settled || !strings.Contains(f.Refuse, want) || f.Data != nil {
				t.Fatalf("Read = %+v, settled %v, %v; want refused: %s", f, settled, err, want)
			}
		})
	}
}

func TestReadWaitsForTheWriterToClose(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "build-1.csv")
	w, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w.WriteString("type=main,ten")
	_, settled, err := Read(opts(dir), "build-1.csv")
	if err != nil || settled {
		t.Fatalf("half-written file: settled %v, %v; want not settled", settled, err)
	}
	w.WriteString("ant=default,command=build\n")
	w.Close()
	f, settled, err := Read(opts(dir), "build-1.csv")
	if err != nil || !settled || string(f.Data) != "type=main,tenant=default,command=build\n" {
		t.Fatalf("closed file: %q settled %v, %v", f.Data, settled, err)
	}
}

func TestScanSortsAndSkipsOthers(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"build-2.csv", "build-1.csv", "notes.txt", ".build-3.csv.tmp"} {
		os.WriteFile(filepath.Join(dir, n), []byte("x"), 0o644)
	}
	files, unsettled, err := Scan(opts(dir))
	if err != nil || len(unsettled) != 0 || len(files) != 2 || files[0].Name != "build-1.csv" || files[1].Name != "build-2.csv" {
		t.Fatalf("Scan = %+v, %v, %v", files, unsettled, err)
	}
}

// collect gathers delivered file names until want are all seen.
func collect(t *testing.T, w *Watcher, want ...string) map[string]File {
	t.Helper()
	got := map[string]File{}
	deadline := time.After(10 * time.Second)
	for {
		missing := false
		for _, n := range want {
			if _, ok := got[n]; !ok {
				missing = true
			}
		}
		if !missing {
			return got
		}
		select {
		case batch := <-w.Files():
			for _, f := range batch {
				got[f.Name] = f
			}
		case <-deadline:
			t.Fatalf("delivered %v, still waiting for %v", keys(got), want)
		}
	}
}

func keys(m map[string]File) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestWatcherDeliversExistingAndNewFiles(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "build-0.csv"), []byte("old"), 0o644)
	w := New(opts(dir), zerolog.Nop())
	if err := w.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	collect(t, w, "build-0.csv")

	// Written in two parts through one open file: not delivered until closed.
	fh, err := os.Create(filepath.Join(dir, "build-1.csv"))
	if err != nil {
		t.Fatal(err)
	}
	fh.WriteString("part one,")
	select {
	case batch := <-w.Files():
		t.Fatalf("delivered %+v while its writer had it open", batch)
	case <-time.After(300 * time.Millisecond):
	}
	fh.WriteString("part two\n")
	fh.Close()
	got := collect(t, w, "build-1.csv")
	if string(got["build-1.csv"].Data) != "part one,part two\n" {
		t.Fatalf("delivered %q", got["build-1.csv"].Data)
	}
}

func TestWatcherSurvivesTheDirectoryBeingRecreated(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "state")
	os.Mkdir(dir, 0o755)
	w := New(opts(dir), zerolog.Nop())
	if err := w.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	os.Mkdir(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "build-9.csv"), []byte("x"), 0o644)
	collect(t, w, "build-9.csv")
}

func TestWatcherRescanFindsFiles(t *testing.T) {
	dir := t.TempDir()
	w := New(opts(dir), zerolog.Nop())
	if err := w.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for i := 0; i < 300; i++ {
		os.WriteFile(filepath.Join(dir, "build-"+strings.Repeat("a", i%5)+string(rune('a'+i%26))+time.Now().Format("150405.000000000")+".csv"), []byte("x"), 0o644)
	}
	w.Rescan()
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	collect(t, w, names...)
}

func TestReadClaimsTheFileBeforeReadingIt(t *testing.T) {
	dir, claim := t.TempDir(), t.TempDir()
	o := opts(dir)
	o.ClaimDir = claim
	o.Now = func() time.Time { return time.Now().Add(time.Hour) }
	path := filepath.Join(dir, "build-1.csv")
	os.WriteFile(path, []byte("first"), 0o644)
	f, settled, err := Read(o, "build-1.csv")
	if err != nil || !settled || string(f.Data) != "first" || filepath.Dir(f.Path) != claim {
		t.Fatalf("Read = %+v, %v, %v; want the content, claimed into %s", f, settled, err, claim)
	}
	// The producer writes the same name again: a new file, not the claimed one.
	os.WriteFile(path, []byte("second"), 0o644)
	if data, _ := os.ReadFile(f.Path); string(data) != "first" {
		t.Fatalf("the claimed file changed to %q", data)
	}
	g, _, err := Read(o, "build-1.csv")
	if err != nil || string(g.Data) != "second" || g.Key == f.Key || g.Path == f.Path {
		t.Fatalf("second Read = %+v, %v; want the new file with its own key", g, err)
	}
	// A claimed file left by a crash is read again, with the same key.
	left, err := Claimed(o)
	if err != nil || len(left) != 2 {
		t.Fatalf("Claimed = %+v, %v", left, err)
	}
	for _, c := range left {
		if c.Name != "build-1.csv" || (c.Key != f.Key && c.Key != g.Key) {
			t.Fatalf("claimed file %+v; want build-1.csv with the key it was claimed under", c)
		}
	}
}

func TestReadClaimsWhatItRefusesAndCutsLongNames(t *testing.T) {
	dir, claim := t.TempDir(), t.TempDir()
	o := opts(dir)
	o.ClaimDir = claim
	os.Symlink("/etc/passwd", filepath.Join(dir, "build-link.csv"))
	long := "build-" + strings.Repeat("y", 240) + ".csv"
	os.WriteFile(filepath.Join(dir, long), []byte(strings.Repeat("x", 65)), 0o644)
	files, unsettled, err := Scan(o)
	if err != nil || len(unsettled) != 0 || len(files) != 2 {
		t.Fatalf("Scan = %+v, %v, %v", files, unsettled, err)
	}
	for _, f := range files {
		if f.Refuse == "" || filepath.Dir(f.Path) != claim || len(f.Name) > 180 {
			t.Errorf("file %+v; want refused, claimed, its name at most 180 bytes", f)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("state dir still holds %d entries", len(entries))
	}
	if st, err := os.Lstat(filepath.Join(claim, filepath.Base(files[0].Path))); err != nil || st.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("the link was not moved as a link: %v", err)
	}
}

func TestAClaimDirThatCannotBeWrittenStopsTheScan(t *testing.T) {
	dir := t.TempDir()
	o := opts(dir)
	o.ClaimDir = filepath.Join(t.TempDir(), "file")
	os.WriteFile(o.ClaimDir, nil, 0o644) // a file where the directory should be
	o.Now = func() time.Time { return time.Now().Add(time.Hour) }
	os.WriteFile(filepath.Join(dir, "build-1.csv"), []byte("x"), 0o644)
	if _, _, err := Scan(o); !errors.Is(err, ErrClaimDir) {
		t.Fatalf("Scan err = %v; want ErrClaimDir", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "build-1.csv")); err != nil {
		t.Fatalf("the trigger went: %v", err)
	}
}
