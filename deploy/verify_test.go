package deploy

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

// logged returns a test deployer whose log goes to buf.
func logged(buf *bytes.Buffer) *Deployer {
	d := testDeployer(nil)
	d.cfg.Log = zerolog.New(buf)
	return d
}

// kept returns the backend commits of the kept releases, oldest first.
func kept(t *testing.T, p Paths) string {
	t.Helper()
	rs, err := ListReleases(p)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range rs {
		out = append(out, r.Backend)
	}
	return strings.Join(out, ",")
}

func current(t *testing.T, p Paths) Release {
	t.Helper()
	cur, ok, err := Current(p)
	if err != nil || !ok {
		t.Fatalf("current = %+v, %t, %v", cur, ok, err)
	}
	return cur
}

func wantLive(t *testing.T, p Paths, version string) {
	t.Helper()
	if bin, dist := live(t, p); bin != version || dist != version {
		t.Fatalf("live binary %q, dist %q; want %q", bin, dist, version)
	}
}

// buildVerified builds v and records that it passed its checks.
func buildVerified(t *testing.T, d *Deployer, p Paths, v string) {
	t.Helper()
	if err := build(context.Background(), d, p, v); err != nil {
		t.Fatal(err)
	}
	if err := d.MarkVerified(p); err != nil {
		t.Fatal(err)
	}
}

// A build job interrupted after its swap, before its checks, is re-run:
// the same commit is swapped in again. The build that was live never
// passed its checks and must not become the rollback target.
func TestRerunSwapDiscardsUnverifiedRelease(t *testing.T) {
	ctx := context.Background()
	p := target(t)
	writeVersion(t, p.Binary, p.Dist, "v1")
	var logs bytes.Buffer
	d := logged(&logs)
	if err := build(ctx, d, p, "v2-broken"); err != nil {
		t.Fatal(err)
	}
	if cur := current(t, p); cur.Backend != "commit-v2-broken" || !cur.Unverified {
		t.Fatalf("current after swap = %+v, want commit-v2-broken unverified", cur)
	}
	// The re-run.
	if err := build(ctx, d, p, "v2-broken"); err != nil {
		t.Fatal(err)
	}
	if got := kept(t, p); got != "commit-v1" {
		t.Fatalf("kept %q, want only commit-v1", got)
	}
	if !strings.Contains(logs.String(), "discard replaced release commit-v2-broken") {
		t.Fatalf("no discard logged: %s", logs.String())
	}
	// Its health check fails: the rollback goes to the good release.
	r, err := d.Rollback(ctx, p, "job-build")
	if err != nil {
		t.Fatal(err)
	}
	if r.Backend != "commit-v1" {
		t.Fatalf("rolled back to %+v, want commit-v1", r)
	}
	wantLive(t, p, "v1")
	if cur := current(t, p); cur.Backend != "commit-v1" || cur.Unverified || cur.RolledBackBy != "job-build" {
		t.Fatalf("current after rollback = %+v", cur)
	}
}

func TestVerifiedReleaseIsKept(t *testing.T) {
	ctx := context.Background()
	p := target(t)
	writeVersion(t, p.Binary, p.Dist, "v1")
	d := testDeployer(nil)
	buildVerified(t, d, p, "v2")
	if cur := current(t, p); cur.Unverified {
		t.Fatalf("current after MarkVerified = %+v", cur)
	}
	if err := build(ctx, d, p, "v3"); err != nil {
		t.Fatal(err)
	}
	if got := kept(t, p); got != "commit-v1,commit-v2" {
		t.Fatalf("kept %q", got)
	}
	rs, _ := ListReleases(p)
	for _, r := range rs {
		if r.Unverified || r.RolledBackBy != "" {
			t.Fatalf("kept release %+v carries live-only state", r)
		}
	}
	if r, err := d.Rollback(ctx, p, "job-1"); err != nil || r.Backend != "commit-v2" {
		t.Fatalf("rollback = %+v, %v", r, err)
	}
	wantLive(t, p, "v2")
}

// A current.json written before the verification flag existed describes a
// release that was checked: it is kept.
func TestLegacyCurrentIsVerified(t *testing.T) {
	ctx := context.Background()
	p := target(t)
	writeVersion(t, p.Binary, p.Dist, "v1")
	if err := os.MkdirAll(p.Releases, 0o755); err != nil {
		t.Fatal(err)
	}
	legacy := `{"id":"20240101T000000.000000000Z","backend_commit":"commit-v1","frontend_commit":"f1","live_at":"2024-01-01T00:00:00Z"}` + "\n"
	if err := os.WriteFile(filepath.Join(p.Releases, currentFile), []byte(legacy), 0o644); err != nil {
		t.Fatal(err)
	}
	d := testDeployer(nil)
	if err := build(ctx, d, p, "v2"); err != nil {
		t.Fatal(err)
	}
	if got := kept(t, p); got != "commit-v1" {
		t.Fatalf("kept %q", got)
	}
	if r, err := d.Rollback(ctx, p, "job-1"); err != nil || r.Backend != "commit-v1" || r.Frontend != "f1" {
		t.Fatalf("rollback = %+v, %v", r, err)
	}
	wantLive(t, p, "v1")
}

// The swap over an unverified release, crashed at each point and
// recovered (also with a crash in the recovery): whichever release ends up
// live, the unverified one is never kept.
func TestUnverifiedSwapCrashDrill(t *testing.T) {
	ctx := context.Background()
	setup := func(t *testing.T) Paths {
		t.Helper()
		p := target(t)
		writeVersion(t, p.Binary, p.Dist, "v1")
		if err := build(ctx, testDeployer(nil), p, "v2"); err != nil {
			t.Fatal(err)
		}
		return p
	}
	points := crashPoints(t, func(d *Deployer) error { return build(ctx, d, setup(t), "v3") })
	for _, point := range points {
		for _, rp := range []string{"", "undo-dist-removed", "finish-swap-binary-kept", "finish-swap-recorded"} {
			t.Run(point+"/"+rp, func(t *testing.T) {
				p := setup(t)
				if err := build(ctx, testDeployer(crashAt(point)), p, "v3"); !errors.Is(err, errCrash) {
					t.Fatalf("build = %v, want the simulated crash", err)
				}
				if rp != "" {
					if _, err := testDeployer(crashAt(rp)).Recover(ctx, p); err != nil && !errors.Is(err, errCrash) {
						t.Fatalf("crashing recover: %v", err)
					}
				}
				if _, err := testDeployer(nil).Recover(ctx, p); err != nil {
					t.Fatal(err)
				}
				bin, dist := live(t, p)
				if bin != dist || (bin != "v2" && bin != "v3") {
					t.Fatalf("after recover: live binary %q, dist %q", bin, dist)
				}
				if cur := current(t, p); cur.Backend != "commit-"+bin || !cur.Unverified {
					t.Fatalf("current %+v, live %s", cur, bin)
				}
				if got := kept(t, p); got != "commit-v1" {
					t.Fatalf("kept %q, want only commit-v1", got)
				}
				if exists(p.Staging) {
					t.Fatal("staging left")
				}
				if r, err := testDeployer(nil).Rollback(ctx, p, "job-1"); err != nil || r.Backend != "commit-v1" {
					t.Fatalf("rollback = %+v, %v", r, err)
				}
				wantLive(t, p, "v1")
			})
		}
	}
}

func TestMarkVerified(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name  string
		setup func(t *testing.T, p Paths)
		// want is the current release after MarkVerified ("" none).
		want       string
		unverified bool
	}{
		{name: "nothing recorded", setup: func(t *testing.T, p Paths) {}},
		{name: "unverified", setup: func(t *testing.T, p Paths) {
			if err := build(ctx, testDeployer(nil), p, "v2"); err != nil {
				t.Fatal(err)
			}
		}, want: "commit-v2"},
		{name: "already verified", setup: func(t *testing.T, p Paths) {
			buildVerified(t, testDeployer(nil), p, "v2")
		}, want: "commit-v2"},
		{name: "after a rollback", setup: func(t *testing.T, p Paths) {
			buildVerified(t, testDeployer(nil), p, "v2")
			if _, err := testDeployer(nil).Rollback(ctx, p, "job-1"); err != nil {
				t.Fatal(err)
			}
		}, want: "commit-v1"},
		{name: "committed swap waiting for recovery", setup: func(t *testing.T, p Paths) {
			if err := build(ctx, testDeployer(nil), p, "v2"); err != nil {
				t.Fatal(err)
			}
			if err := build(ctx, testDeployer(crashAt("swap-committed")), p, "v3"); !errors.Is(err, errCrash) {
				t.Fatalf("build = %v", err)
			}
		}, want: "commit-v2", unverified: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := target(t)
			writeVersion(t, p.Binary, p.Dist, "v1")
			tc.setup(t, p)
			if err := testDeployer(nil).MarkVerified(p); err != nil {
				t.Fatal(err)
			}
			cur, ok, err := Current(p)
			if err != nil {
				t.Fatal(err)
			}
			if tc.want == "" {
				if ok {
					t.Fatalf("current %+v recorded from nothing", cur)
				}
				return
			}
			if !ok || cur.Backend != tc.want || cur.Unverified != tc.unverified {
				t.Fatalf("current %+v, %t; want %s unverified %t", cur, ok, tc.want, tc.unverified)
			}
		})
	}
	// The pending swap, recovered, discards the unverified v2 and leaves
	// v3 unverified.
	p := target(t)
	writeVersion(t, p.Binary, p.Dist, "v1")
	if err := build(ctx, testDeployer(nil), p, "v2"); err != nil {
		t.Fatal(err)
	}
	if err := build(ctx, testDeployer(crashAt("swap-committed")), p, "v3"); !errors.Is(err, errCrash) {
		t.Fatalf("build = %v", err)
	}
	if err := testDeployer(nil).MarkVerified(p); err != nil {
		t.Fatal(err)
	}
	if act, err := testDeployer(nil).Recover(ctx, p); err != nil || act != ActFinishSwap {
		t.Fatalf("recover = %s, %v", act, err)
	}
	if cur := current(t, p); cur.Backend != "commit-v3" || !cur.Unverified {
		t.Fatalf("current %+v", cur)
	}
	if got := kept(t, p); got != "commit-v1" {
		t.Fatalf("kept %q", got)
	}
}

// threeVerified is v1 → v2 → v3, each verified: v3 live, v1 and v2 kept.
func threeVerified(t *testing.T) Paths {
	t.Helper()
	p := target(t)
	writeVersion(t, p.Binary, p.Dist, "v1")
	d := testDeployer(nil)
	buildVerified(t, d, p, "v2")
	buildVerified(t, d, p, "v3")
	if got := kept(t, p); got != "commit-v1,commit-v2" {
		t.Fatalf("kept %q", got)
	}
	return p
}

// A rollback job re-run after an interruption does not go back twice.
func TestRollbackIdempotentPerJob(t *testing.T) {
	ctx := context.Background()
	p := threeVerified(t)
	var logs bytes.Buffer
	d := logged(&logs)
	r, err := d.Rollback(ctx, p, "job-A")
	if err != nil || r.Backend != "commit-v2" || r.RolledBackBy != "job-A" {
		t.Fatalf("rollback = %+v, %v", r, err)
	}
	// The re-run of job-A.
	again, err := d.Rollback(ctx, p, "job-A")
	if err != nil || again.Backend != "commit-v2" || again.ID != r.ID {
		t.Fatalf("re-run rollback = %+v, %v; want %+v", again, err, r)
	}
	wantLive(t, p, "v2")
	if got := kept(t, p); got != "commit-v1" {
		t.Fatalf("kept %q", got)
	}
	if !strings.Contains(logs.String(), "already rolled back by this job") {
		t.Fatalf("not logged: %s", logs.String())
	}
	// Another job rolls back further.
	if r, err := d.Rollback(ctx, p, "job-B"); err != nil || r.Backend != "commit-v1" {
		t.Fatalf("rollback job-B = %+v, %v", r, err)
	}
	wantLive(t, p, "v1")
}

func TestRollbackWithoutJobIDIsNeverSkipped(t *testing.T) {
	ctx := context.Background()
	p := threeVerified(t)
	d := testDeployer(nil)
	for _, want := range []string{"v2", "v1"} {
		if _, err := d.Rollback(ctx, p, ""); err != nil {
			t.Fatal(err)
		}
		wantLive(t, p, want)
	}
}

// A rollback crashed at each point (and in the recovery), then run again
// by the same job: exactly one release back.
func TestRollbackRerunCrashDrill(t *testing.T) {
	ctx := context.Background()
	points := crashPoints(t, func(d *Deployer) error {
		_, err := d.Rollback(ctx, threeVerified(t), "job-A")
		return err
	})
	for _, point := range points {
		for _, rp := range []string{"", "undo-dist-removed", "finish-rollback-dist-removed", "finish-rollback-recorded"} {
			t.Run(point+"/"+rp, func(t *testing.T) {
				p := threeVerified(t)
				if _, err := testDeployer(crashAt(point)).Rollback(ctx, p, "job-A"); !errors.Is(err, errCrash) {
					t.Fatalf("rollback = %v, want the simulated crash", err)
				}
				if rp != "" {
					if _, err := testDeployer(crashAt(rp)).Recover(ctx, p); err != nil && !errors.Is(err, errCrash) {
						t.Fatalf("crashing recover: %v", err)
					}
				}
				r, err := testDeployer(nil).Rollback(ctx, p, "job-A")
				if err != nil || r.Backend != "commit-v2" {
					t.Fatalf("re-run rollback = %+v, %v", r, err)
				}
				wantLive(t, p, "v2")
				if got := kept(t, p); got != "commit-v1" {
					t.Fatalf("kept %q", got)
				}
				if cur := current(t, p); cur.Backend != "commit-v2" || cur.RolledBackBy != "job-A" || cur.Unverified {
					t.Fatalf("current %+v", cur)
				}
			})
		}
	}
}

func TestRecoverTargets(t *testing.T) {
	tests := []struct {
		name  string
		names []string
		want  string
	}{
		{name: "no sites", want: "main"},
		{name: "valid sites in order", names: []string{"acme", "b-2c"}, want: "main,acme,b-2c"},
		{name: "invalid names skipped", names: []string{"ab", "Acme", "a_b", ".hidden", "toolongsitename", "ok1"}, want: "main,ok1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, s := range RecoverTargets(tc.names) {
				if s == "" {
					s = "main"
				}
				got = append(got, s)
			}
			if strings.Join(got, ",") != tc.want {
				t.Fatalf("RecoverTargets = %v, want %s", got, tc.want)
			}
		})
	}
}

// siteTarget is target for a site of home, v1 live.
func siteTarget(t *testing.T, home, site string) Paths {
	t.Helper()
	p, err := PathsFor(home, site)
	if err != nil {
		t.Fatal(err)
	}
	writeVersion(t, p.Binary, p.Dist, "v1")
	return p
}

func TestRecoverAll(t *testing.T) {
	ctx := context.Background()
	// Each state puts one target of home into a state.
	swapCommitted := func(t *testing.T, p Paths) {
		if err := build(ctx, testDeployer(crashAt("swap-committed")), p, "v2"); !errors.Is(err, errCrash) {
			t.Fatalf("build = %v", err)
		}
	}
	prepared := func(t *testing.T, p Paths) {
		if err := build(ctx, testDeployer(crashAt("build-partial-dist")), p, "v2"); !errors.Is(err, errCrash) {
			t.Fatalf("build = %v", err)
		}
	}
	rollbackCommitted := func(t *testing.T, p Paths) {
		buildVerified(t, testDeployer(nil), p, "v2")
		if _, err := testDeployer(crashAt("rollback-committed")).Rollback(ctx, p, "job-A"); !errors.Is(err, errCrash) {
			t.Fatalf("rollback = %v", err)
		}
	}
	settled := func(t *testing.T, p Paths) {
		buildVerified(t, testDeployer(nil), p, "v2")
	}
	stuck := func(t *testing.T, p Paths) {
		settled(t, p)
		if err := os.MkdirAll(p.Staging, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(p.Staging, phaseFile), []byte("{"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	neverDeployed := func(t *testing.T, p Paths) {}
	tests := []struct {
		name  string
		main  func(*testing.T, Paths)
		sites map[string]func(*testing.T, Paths)
		want  []string
		// live is the version live afterwards per target ("main" or site).
		live    map[string]string
		wantErr string
	}{
		{name: "nothing deployed", main: neverDeployed, want: nil, live: map[string]string{"main": "v1"}},
		{name: "main swap committed", main: swapCommitted, want: []string{"main: finished swap"}, live: map[string]string{"main": "v2"}},
		{name: "main and sites", main: prepared,
			sites: map[string]func(*testing.T, Paths){"acme": swapCommitted, "beta": rollbackCommitted, "calm": settled, "dull": neverDeployed},
			want: []string{
				"main: undid an interrupted build",
				"acme: finished swap",
				"beta: finished rollback",
				"calm: nothing to recover",
			},
			live: map[string]string{"main": "v1", "acme": "v2", "beta": "v1", "calm": "v2", "dull": "v1"}},
		{name: "a stuck site does not stop the others", main: settled,
			sites: map[string]func(*testing.T, Paths){"aaa": stuck, "bbb": swapCommitted},
			want:  []string{"main: nothing to recover", "aaa: failed: ", "bbb: finished swap"},
			live:  map[string]string{"main": "v2", "aaa": "v2", "bbb": "v2"}, wantErr: "unreadable"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			home := t.TempDir()
			targets := map[string]Paths{"main": siteTarget(t, home, "")}
			tc.main(t, targets["main"])
			for site, setup := range tc.sites {
				targets[site] = siteTarget(t, home, site)
				setup(t, targets[site])
			}
			// Directories that are not sites are never touched, even
			// with an interrupted deploy inside.
			for _, bad := range []string{"Bad_Name", "ab"} {
				staging := filepath.Join(home, "sites", bad, "bin", "releases", ".staging")
				if err := os.MkdirAll(staging, 0o755); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() {
					if !isDir(staging) {
						t.Errorf("%s touched", staging)
					}
				})
			}
			if err := os.WriteFile(filepath.Join(home, "sites", "file1"), nil, 0o644); err != nil {
				t.Fatal(err)
			}
			got, err := testDeployer(nil).RecoverAll(ctx, home)
			if tc.wantErr == "" && err != nil {
				t.Fatal(err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("err = %v, want containing %q", err, tc.wantErr)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("RecoverAll = %q, want %q", got, tc.want)
			}
			for i := range got {
				if !strings.HasPrefix(got[i], tc.want[i]) {
					t.Fatalf("RecoverAll = %q, want %q", got, tc.want)
				}
			}
			for name, want := range tc.live {
				p := targets[name]
				wantLive(t, p, want)
				if name != "aaa" && exists(p.Staging) {
					t.Errorf("%s: staging left", name)
				}
			}
		})
	}
	t.Run("relative home", func(t *testing.T) {
		if _, err := testDeployer(nil).RecoverAll(ctx, "home/t8k"); err == nil {
			t.Fatal("relative home accepted")
		}
	})
}
