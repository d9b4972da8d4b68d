package deploy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tractstack/concierge/builder"
)

func TestPathsFor(t *testing.T) {
	tests := []struct {
		name, home, site                 string
		wantErr                          bool
		unit, process, key, binary, dist string
	}{
		{name: "main", home: "/home/t8k", unit: "tractstack-go.service", process: "astro-main", key: "main",
			binary: "/home/t8k/bin/tractstack-go", dist: "/home/t8k/src/my-tractstack/dist"},
		{name: "dedicated", home: "/home/t8k", site: "acme", unit: "tractstack-go@acme.service", process: "astro-acme", key: "acme",
			binary: "/home/t8k/sites/acme/bin/tractstack-go", dist: "/home/t8k/sites/acme/src/my-tractstack/dist"},
		{name: "dedicated with digits and dash", home: "/h/", site: "a-1-b", unit: "tractstack-go@a-1-b.service", process: "astro-a-1-b", key: "a-1-b",
			binary: "/h/sites/a-1-b/bin/tractstack-go", dist: "/h/sites/a-1-b/src/my-tractstack/dist"},
		{name: "traversal", home: "/home/t8k", site: "../x", wantErr: true},
		{name: "slash", home: "/home/t8k", site: "a/b/c", wantErr: true},
		{name: "too short", home: "/home/t8k", site: "ab", wantErr: true},
		{name: "too long", home: "/home/t8k", site: "abcdefghijklm", wantErr: true},
		{name: "upper case", home: "/home/t8k", site: "Acme", wantErr: true},
		{name: "unit injection", home: "/home/t8k", site: "a b;c", wantErr: true},
		{name: "relative home", home: "home/t8k", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := PathsFor(tc.home, tc.site)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("PathsFor(%q, %q) = %+v, want error", tc.home, tc.site, p)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := []string{p.Unit, p.Process, p.PortsKey, p.Binary, p.Dist}
			want := []string{tc.unit, tc.process, tc.key, tc.binary, tc.dist}
			for i := range got {
				if got[i] != want[i] {
					t.Errorf("field %d = %q, want %q", i, got[i], want[i])
				}
			}
			if !strings.HasPrefix(p.Releases, p.BinDir+"/") || !strings.HasPrefix(p.Staging, p.Releases+"/") {
				t.Errorf("releases %q / staging %q not under bin dir %q", p.Releases, p.Staging, p.BinDir)
			}
			if b := p.ReleaseDir("x"); !strings.HasPrefix(b.Binary, p.Releases+"/") || !strings.HasPrefix(b.Entry, b.Dir+"/frontend/dist/") {
				t.Errorf("release dir %+v not under releases %q", b, p.Releases)
			}
			if p.PortsFile != strings.TrimSuffix(tc.home, "/")+"/etc/t8k-ports.conf" {
				t.Errorf("ports file %q", p.PortsFile)
			}
		})
	}
}

func TestParsePorts(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    map[string]Ports
		wantErr string
	}{
		{name: "main", in: "main=10000,20000\n", want: map[string]Ports{"main": {10000, 20000}}},
		{name: "comments and blanks", in: "# SITE_ID=GO_PORT,ASTRO_PORT\n\nmain=10000,20000\n  # indented\nacme=10001,20001", want: map[string]Ports{"main": {10000, 20000}, "acme": {10001, 20001}}},
		{name: "spaces", in: " acme = 10001 , 20001 \r\n", want: map[string]Ports{"acme": {10001, 20001}}},
		{name: "later wins", in: "main=1,2\nmain=3,4\n", want: map[string]Ports{"main": {3, 4}}},
		{name: "empty", in: "", want: map[string]Ports{}},
		{name: "no equals", in: "main 10000,20000\n", wantErr: "line 1"},
		{name: "one port", in: "# x\nmain=10000\n", wantErr: "line 2"},
		{name: "not a number", in: "main=abc,20000\n", wantErr: "go port"},
		{name: "out of range", in: "main=10000,70000\n", wantErr: "astro port"},
		{name: "empty key", in: "=1,2\n", wantErr: "line 1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParsePorts(strings.NewReader(tc.in))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for k, v := range tc.want {
				if got[k] != v {
					t.Errorf("%s = %v, want %v", k, got[k], v)
				}
			}
		})
	}
}

func TestPortsOf(t *testing.T) {
	all := map[string]Ports{"main": {10000, 20000}, "acme": {10001, 20001}}
	tests := []struct {
		name, site string
		want       Ports
		ok         bool
	}{
		{name: "main", site: "", want: Ports{10000, 20000}, ok: true},
		{name: "site", site: "acme", want: Ports{10001, 20001}, ok: true},
		{name: "absent", site: "other", ok: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := PathsFor("/home/t8k", tc.site)
			if err != nil {
				t.Fatal(err)
			}
			got, ok := PortsOf(all, p)
			if got != tc.want || ok != tc.ok {
				t.Fatalf("PortsOf = %v, %t; want %v, %t", got, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestDecide(t *testing.T) {
	tests := []struct {
		name string
		f    Facts
		want Action
	}{
		{name: "nothing in flight", f: Facts{}, want: ActNone},
		{name: "build in progress or failed", f: Facts{Staging: true}, want: ActUndo},
		{name: "swap committed", f: Facts{Staging: true, Phase: "swap"}, want: ActFinishSwap},
		{name: "rollback committed", f: Facts{Staging: true, Phase: "rollback"}, want: ActFinishRollback},
		{name: "unreadable phase", f: Facts{Staging: true, Phase: "unreadable"}, want: ActStuck},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Decide(tc.f); got != tc.want {
				t.Fatalf("Decide(%+v) = %s, want %s", tc.f, got, tc.want)
			}
		})
	}
}

func TestRollbackTarget(t *testing.T) {
	r := func(id string, bin bool) Release { return Release{ID: id, HasBinary: bin, HasDist: true} }
	tests := []struct {
		name   string
		in     []Release
		want   string
		wantOK bool
	}{
		{name: "none", in: nil},
		{name: "newest", in: []Release{r("1", true), r("2", true)}, want: "2", wantOK: true},
		{name: "newest with binary", in: []Release{r("1", true), r("2", false)}, want: "1", wantOK: true},
		{name: "no binary anywhere", in: []Release{r("1", false)}},
		{name: "skips unverified", in: []Release{r("1", true), {ID: "2", HasBinary: true, HasDist: true, Unverified: true}}, want: "1", wantOK: true},
		{name: "only unverified", in: []Release{{ID: "1", HasBinary: true, Unverified: true}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := RollbackTarget(tc.in)
			if ok != tc.wantOK || got.ID != tc.want {
				t.Fatalf("RollbackTarget = %q, %t; want %q, %t", got.ID, ok, tc.want, tc.wantOK)
			}
		})
	}
}

func TestPruneList(t *testing.T) {
	rs := func(ids ...string) []Release {
		var out []Release
		for _, id := range ids {
			out = append(out, Release{ID: id})
		}
		return out
	}
	tests := []struct {
		name string
		in   []Release
		keep int
		want []string
	}{
		{name: "under keep", in: rs("a", "b"), keep: 3},
		{name: "at keep", in: rs("a", "b", "c"), keep: 3},
		{name: "over keep drops oldest", in: rs("d", "a", "c", "b"), keep: 3, want: []string{"a"}},
		{name: "keep one", in: rs("a", "b", "c"), keep: 1, want: []string{"a", "b"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, r := range PruneList(tc.in, tc.keep) {
				got = append(got, r.ID)
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Fatalf("PruneList = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestStartLimited(t *testing.T) {
	tests := []struct {
		msg  string
		want bool
	}{
		{"Job for tractstack-go.service failed because start of the service was attempted too often.", true},
		{"unit entered failed state: start-limit-hit", true},
		{"Unit tractstack-go.service not found.", false},
		{"Interactive authentication required.", false},
	}
	for _, tc := range tests {
		if got := StartLimited(tc.msg); got != tc.want {
			t.Errorf("StartLimited(%q) = %t", tc.msg, got)
		}
	}
}

func TestReloadLocked(t *testing.T) {
	for msg, want := range map[string]bool{
		"[PM2][ERROR] Reload already in progress, please try again in 27 seconds or use --force": true,
		"[PM2] Applying action reloadProcessId on app [astro-main](ids: [ 0 ])":                  false,
		"[PM2][ERROR] Process or Namespace astro-main not found":                                 false,
	} {
		if got := ReloadLocked(msg); got != want {
			t.Errorf("ReloadLocked(%q) = %v, want %v", msg, got, want)
		}
	}
}

func TestLocalPackage(t *testing.T) {
	for rel, want := range map[string]bool{
		".pnpm/greeting@file+..+deps+greeting":                true,
		".pnpm/mylib@link+..+lib":                             true,
		".pnpm/astro@5.18.2/node_modules/astro":               false,
		".pnpm/greeting@file+..+deps+greeting/node_modules":   false, // inside: skipped with its directory
		".pnpm/lock.yaml":                                     false,
		"greeting":                                            false,
		".pnpm/@astrojs+node@9.5.5_astro@5.18.2/node_modules": false,
	} {
		if got := localPackage(rel); got != want {
			t.Errorf("localPackage(%q) = %t, want %t", rel, got, want)
		}
	}
}

// TestLinkTreeKeepsTheInstalledMarkUnlessAPackageIsLeftOut: a release
// linked from another may skip pnpm install only when nothing was left
// out of its node_modules.
func TestLinkTreeKeepsTheInstalledMarkUnlessAPackageIsLeftOut(t *testing.T) {
	for _, local := range []bool{false, true} {
		src := filepath.Join(t.TempDir(), "node_modules")
		files := map[string]string{
			builder.InstalledMark:                                "digest",
			".pnpm/astro@5.18.2/node_modules/astro/package.json": "{}",
		}
		if local {
			files[".pnpm/greeting@file+..+greeting/node_modules/greeting/index.js"] = "export {}"
		}
		for name, content := range files {
			if err := os.MkdirAll(filepath.Dir(filepath.Join(src, name)), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(src, name), []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		dst := filepath.Join(t.TempDir(), "node_modules")
		if err := linkTree(src, dst); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(dst, builder.InstalledMark)); (err == nil) == local {
			t.Errorf("local package %t: mark present %t", local, err == nil)
		}
		if !sameFile(filepath.Join(src, ".pnpm/astro@5.18.2/node_modules/astro/package.json"), filepath.Join(dst, ".pnpm/astro@5.18.2/node_modules/astro/package.json")) {
			t.Errorf("a registry package was not hard linked")
		}
		if fi, err := os.Stat(filepath.Join(dst, builder.InstalledMark)); err == nil && sameFile(filepath.Join(src, builder.InstalledMark), filepath.Join(dst, builder.InstalledMark)) {
			t.Errorf("the mark is a hard link, not a copy: %v", fi.Name())
		}
	}
}
