package main

import (
	"slices"
	"strings"
	"testing"
)

func TestSplitWords(t *testing.T) {
	for _, tt := range []struct {
		name, in string
		want     []string
		err      string
	}{
		{"tags", "-tags sqlite_fts5", []string{"-tags", "sqlite_fts5"}, ""},
		{"double quotes", `-ldflags="-s -w"`, []string{"-ldflags=-s -w"}, ""},
		{"single quotes", `-ldflags '-s -w' -trimpath`, []string{"-ldflags", "-s -w", "-trimpath"}, ""},
		{"backslash", `-ldflags=-X\ main.v=1`, []string{"-ldflags=-X main.v=1"}, ""},
		{"spaces", "  -a   -b  ", []string{"-a", "-b"}, ""},
		{"unbalanced", `-ldflags="-s -w`, nil, "reached EOF without closing quote"},
		{"variable", `-ldflags=$LD`, nil, "$LD: variables and ~ are not expanded"},
		{"tilde", `-o ~/x`, nil, "not expanded"},
		{"command", `$(rm -rf /)`, nil, "split into words"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := splitWords(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("splitWords(%q) = %q, %v; want an error with %q", tt.in, got, err, tt.err)
				}
				return
			}
			if err != nil || !slices.Equal(got, tt.want) {
				t.Fatalf("splitWords(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestGoBuildFlagsAreSplitAsAShellWould(t *testing.T) {
	c := DefaultConfig()
	if err := c.applyEnv(map[string]string{"CONCIERGE_GO_BUILD_FLAGS": `-tags sqlite_fts5 -ldflags="-s -w"`}); err != nil {
		t.Fatal(err)
	}
	if want := []string{"-tags", "sqlite_fts5", "-ldflags=-s -w"}; !slices.Equal(c.GoBuildFlags, want) {
		t.Fatalf("GoBuildFlags = %q, want %q", c.GoBuildFlags, want)
	}
}

func TestNoColorInChildEnvironment(t *testing.T) {
	got := noColor([]string{"PATH=/bin", "FORCE_COLOR=1", "NO_COLOR=", "HOME=/h"})
	if want := []string{"PATH=/bin", "HOME=/h", "NO_COLOR=1"}; !slices.Equal(got, want) {
		t.Fatalf("noColor = %q, want %q", got, want)
	}
}

func TestJournalEntryEscapesControlCharacters(t *testing.T) {
	line := `{"level":"error","trigger":"build-1\nINF forged\u001b[2J.csv","url":"https://u:TOKEN@h/r","message":"rejected build-1\nINF forged"}`
	msg, _, vars, err := journalEntry([]byte(line), "t8k-concierge")
	if err != nil {
		t.Fatal(err)
	}
	if msg != `rejected build-1\nINF forged` || vars["TRIGGER"] != `build-1\nINF forged\x1b[2J.csv` || vars["URL"] != "https://xxxxx:xxxxx@h/r" {
		t.Fatalf("entry = %q %q", msg, vars)
	}
}

func TestSameFileSystem(t *testing.T) {
	dir := t.TempDir()
	if !sameFileSystem(dir, dir+"/not/yet") {
		t.Error("a directory and a path below it are on different file systems")
	}
	if sameFileSystem("/proc", dir) {
		t.Error("/proc and a temporary directory are on one file system")
	}
}
