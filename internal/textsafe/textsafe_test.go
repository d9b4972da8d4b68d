package textsafe

import "testing"

func TestEscape(t *testing.T) {
	for _, tt := range []struct{ name, in, want string }{
		{"plain", "build-1.csv", "build-1.csv"},
		{"tab kept", "a\tb", "a\tb"},
		{"newline", "x\nINF job succeeded", `x\nINF job succeeded`},
		{"escape", "\x1b[2Jboom", `\x1b[2Jboom`},
		{"c1 csi", "a\u009b31m", `a\u009b31m`},
		{"bad utf8", "a\xffb", `a\xffb`},
		{"utf8 kept", "café ✓", "café ✓"},
		{"line separator", "a\u2028b", `a\u2028b`},
	} {
		if got := Escape(tt.in); got != tt.want {
			t.Errorf("%s: Escape(%q) = %q, want %q", tt.name, tt.in, got, tt.want)
		}
	}
}

func TestStripANSI(t *testing.T) {
	for in, want := range map[string]string{
		"\x1b[32m✓\x1b[39m built in 1.2s":      "✓ built in 1.2s",
		"\x1b[1m\x1b[38;5;208mwarn\x1b[0m":     "warn",
		"\x1b]8;;http://x\x07link\x1b]8;;\x07": "link",
		"no colour":                            "no colour",
	} {
		if got := StripANSI(in); got != want {
			t.Errorf("StripANSI(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"fetch origin (https://deploy:TOKEN@host/repo.git) failed": "fetch origin (https://xxxxx:xxxxx@host/repo.git) failed",
		"https://ghp_abc123@github.com/o/r.git":                    "https://xxxxx@github.com/o/r.git",
		"ssh://git@github.com/o/r.git":                             "ssh://git@github.com/o/r.git",
		"ssh://git:pw@host/r.git":                                  "ssh://git:xxxxx@host/r.git",
		"git@github.com:o/r.git":                                   "git@github.com:o/r.git",
		"mail me at a@b.c, see https://host/x":                     "mail me at a@b.c, see https://host/x",
		`"url":"https://u:p@h/r"`:                                  `"url":"https://xxxxx:xxxxx@h/r"`,
	} {
		if got := Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestClean(t *testing.T) {
	if got := Clean("\x1b[31mfatal: https://u:secret@h/r\x1b[0m\r"); got != `fatal: https://xxxxx:xxxxx@h/r\r` {
		t.Fatalf("Clean = %q", got)
	}
}

func TestEscapeJSON(t *testing.T) {
	in := `{"trigger":"build-\u001b` + "\u009b2J\u2028" + `.csv"}`
	want := `{"trigger":"build-\u001b\u009b2J\u2028.csv"}`
	if got := EscapeJSON(in); got != want {
		t.Fatalf("EscapeJSON(%q) = %q, want %q", in, got, want)
	}
}
