package deploy

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var errCrash = errors.New("simulated kill -9")

// target is a main install in a temp dir whose live binary and dist say
// which version they are.
func target(t *testing.T) Paths {
	t.Helper()
	p, err := PathsFor(t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(p.BinDir, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func writeVersion(t *testing.T, binary, dist, version string) {
	t.Helper()
	if binary != "" {
		if err := os.MkdirAll(filepath.Dir(binary), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(binary, []byte("bin "+version), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if dist != "" {
		if err := os.MkdirAll(filepath.Join(dist, "server"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dist, "server", "entry.mjs"), []byte("dist "+version), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// live returns the versions of the live binary and dist ("" if absent).
func live(t *testing.T, p Paths) (bin, dist string) {
	t.Helper()
	if b, err := os.ReadFile(p.Binary); err == nil {
		bin = strings.TrimPrefix(string(b), "bin ")
	}
	if d, err := os.ReadFile(p.Entry); err == nil {
		dist = strings.TrimPrefix(string(d), "dist ")
	}
	return bin, dist
}

func testDeployer(fault func(string) error) *Deployer {
	n := 0
	d := New(Config{Keep: 3, Now: func() time.Time {
		n++
		return time.Date(2025, 1, 1, 0, 0, n, 0, time.UTC)
	}})
	d.fault = fault
	return d
}

// build runs a whole build of version v: Prepare, the two builds (the
// frontend staged from the live tree, then a partial dist), Swap.
func build(ctx context.Context, d *Deployer, p Paths, v string) error {
	b, err := d.Prepare(ctx, p, Release{Backend: "commit-v1"})
	if err != nil {
		return err
	}
	if err := d.StageFrontend(ctx, p, b, nil); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(b.Dist, "server"), 0o755); err != nil {
		return err
	}
	if err := d.crashPoint("build-partial-dist"); err != nil {
		return err
	}
	if err := os.WriteFile(b.Entry, []byte("dist "+v), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(b.Binary+".tmp", []byte("partial"), 0o755); err != nil {
		return err
	}
	if err := d.crashPoint("build-partial-binary"); err != nil {
		return err
	}
	if err := os.WriteFile(b.Binary+".tmp", []byte("bin "+v), 0o755); err != nil {
		return err
	}
	if err := os.Rename(b.Binary+".tmp", b.Binary); err != nil {
		return err
	}
	if err := d.crashPoint("build-done"); err != nil {
		return err
	}
	return d.Swap(ctx, p, b, Release{Backend: "commit-" + v})
}

// crashPoints lists the crash points op passes through.
func crashPoints(t *testing.T, op func(d *Deployer) error) []string {
	t.Helper()
	var points []string
	d := testDeployer(func(p string) error { points = append(points, p); return nil })
	if err := op(d); err != nil {
		t.Fatal(err)
	}
	return points
}

// crashAt returns a fault that fails at the n-th crash point named point.
func crashAt(point string) func(string) error {
	return func(p string) error {
		if p == point {
			return errCrash
		}
		return nil
	}
}

func TestBuildCrashDrill(t *testing.T) {
	ctx := context.Background()
	points := crashPoints(t, func(d *Deployer) error {
		p := target(t)
		writeVersion(t, p.Binary, p.Dist, "v1")
		return build(ctx, d, p, "v2")
	})
	if len(points) < 6 {
		t.Fatalf("only %d crash points: %v", len(points), points)
	}
	// Crashes during Recover itself are drilled too: crash once in the
	// operation, then once in the first Recover, then recover cleanly.
	recoverPoints := []string{"", "undo-release-removed", "apply-binary", "apply-dist", "finish-swap-recorded"}
	for _, point := range points {
		for _, rp := range recoverPoints {
			t.Run(point+"/"+rp, func(t *testing.T) {
				p := target(t)
				writeVersion(t, p.Binary, p.Dist, "v1")
				err := build(ctx, testDeployer(crashAt(point)), p, "v2")
				if !errors.Is(err, errCrash) {
					t.Fatalf("build = %v, want the simulated crash", err)
				}
				if rp != "" {
					if _, err := testDeployer(crashAt(rp)).Recover(ctx, p); err != nil && !errors.Is(err, errCrash) {
						t.Fatalf("crashing recover: %v", err)
					}
				}
				act, err := testDeployer(nil).Recover(ctx, p)
				if err != nil {
					t.Fatalf("recover (%s): %v", act, err)
				}
				bin, dist := live(t, p)
				if bin != dist || (bin != "v1" && bin != "v2") {
					t.Fatalf("after recover (%s): live binary %q, dist %q", act, bin, dist)
				}
				if exists(p.Staging) {
					t.Fatalf("staging left after recover")
				}
				if left, _ := filepath.Glob(filepath.Join(p.FrontendSrc, distLink+"*")); len(left) != 0 {
					t.Fatalf("left in the live tree: %v", left)
				}
				if fi, err := os.Lstat(p.Dist); err != nil || (bin == "v2") != (fi.Mode()&os.ModeSymlink != 0) {
					t.Fatalf("live dist after recover (%s, live %s): %v, %v; want a link to the release exactly when v2 is live", act, bin, fi, err)
				}
				rs, err := ListReleases(p)
				if err != nil {
					t.Fatal(err)
				}
				if bin == "v2" {
					if len(rs) != 1 || !rs[0].HasBinary || !rs[0].HasDist || rs[0].Backend != "commit-v1" {
						t.Fatalf("releases after a committed swap: %+v", rs)
					}
					cur, ok, err := Current(p)
					if err != nil || !ok || cur.Backend != "commit-v2" || !cur.Unverified {
						t.Fatalf("current = %+v, %t, %v; want commit-v2 unverified", cur, ok, err)
					}
				} else if len(rs) != 0 {
					t.Fatalf("releases after an undone build: %+v", rs)
				}
				// The target works again: the live release passes its
				// checks, then a build and a rollback.
				if err := testDeployer(nil).MarkVerified(p); err != nil {
					t.Fatal(err)
				}
				if err := build(ctx, testDeployer(nil), p, "v3"); err != nil {
					t.Fatal(err)
				}
				if bin, dist := live(t, p); bin != "v3" || dist != "v3" {
					t.Fatalf("after a new build: %q %q", bin, dist)
				}
				r, err := testDeployer(nil).Rollback(ctx, p, "job-drill")
				if err != nil {
					t.Fatal(err)
				}
				if b, d := live(t, p); b != bin || d != bin || r.Backend != "commit-"+bin {
					t.Fatalf("rollback made %q %q live (release %+v), want %q", b, d, r, bin)
				}
			})
		}
	}
}

func TestRollbackCrashDrill(t *testing.T) {
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
	points := crashPoints(t, func(d *Deployer) error {
		_, err := d.Rollback(ctx, setup(t), "job-drill")
		return err
	})
	if len(points) < 4 {
		t.Fatalf("only %d crash points: %v", len(points), points)
	}
	for _, point := range points {
		for _, rp := range []string{"", "undo-release-removed", "apply-binary", "apply-dist", "finish-rollback-recorded"} {
			t.Run(point+"/"+rp, func(t *testing.T) {
				p := setup(t)
				_, err := testDeployer(crashAt(point)).Rollback(ctx, p, "job-drill")
				if !errors.Is(err, errCrash) {
					t.Fatalf("rollback = %v, want the simulated crash", err)
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
				if bin != dist || (bin != "v1" && bin != "v2") {
					t.Fatalf("after recover: live binary %q, dist %q", bin, dist)
				}
				rs, err := ListReleases(p)
				if err != nil {
					t.Fatal(err)
				}
				cur, _, _ := Current(p)
				switch bin {
				case "v1":
					if len(rs) != 0 || cur.Backend != "commit-v1" {
						t.Fatalf("rolled back, releases %+v current %+v", rs, cur)
					}
				case "v2":
					if len(rs) != 1 || rs[0].Backend != "commit-v1" || cur.Backend != "commit-v2" {
						t.Fatalf("not rolled back, releases %+v current %+v", rs, cur)
					}
				}
			})
		}
	}
}

func TestBuildFailureChangesNothing(t *testing.T) {
	ctx := context.Background()
	p := target(t)
	writeVersion(t, p.Binary, p.Dist, "v1")
	d := testDeployer(nil)
	b, err := d.Prepare(ctx, p, Release{Backend: "commit-v1"})
	if err != nil {
		t.Fatal(err)
	}
	if bin, dist := live(t, p); bin != "v1" || dist != "v1" {
		t.Fatalf("after Prepare: %q %q", bin, dist)
	}
	if err := d.StageFrontend(ctx, p, b, nil); err != nil {
		t.Fatal(err)
	}
	writeVersion(t, b.Binary, b.Dist, "v2-half")
	if err := d.Abort(ctx, p); err != nil {
		t.Fatal(err)
	}
	if bin, dist := live(t, p); bin != "v1" || dist != "v1" {
		t.Fatalf("after abort: %q %q", bin, dist)
	}
	if exists(p.Staging) || exists(b.Dir) {
		t.Fatal("staging or the half release left")
	}
	if err := d.Swap(ctx, p, b, Release{}); err == nil {
		t.Fatal("Swap without Prepare succeeded")
	}
}

func TestFirstBuildWithoutLiveBinaryOrDist(t *testing.T) {
	ctx := context.Background()
	p := target(t)
	if err := os.MkdirAll(p.FrontendSrc, 0o755); err != nil {
		t.Fatal(err)
	}
	d := testDeployer(nil)
	if err := build(ctx, d, p, "v1"); err != nil {
		t.Fatal(err)
	}
	if bin, dist := live(t, p); bin != "v1" || dist != "v1" {
		t.Fatalf("live %q %q", bin, dist)
	}
	rs, err := ListReleases(p)
	if err != nil || len(rs) != 0 {
		t.Fatalf("releases %+v, %v", rs, err)
	}
	_, err = d.Rollback(ctx, p, "job-1")
	if err == nil || !strings.Contains(err.Error(), "no previous release to roll back to in "+p.Releases) {
		t.Fatalf("rollback = %v", err)
	}
	// A failed first build leaves nothing behind.
	p2 := target(t)
	if err := os.MkdirAll(p2.FrontendSrc, 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := d.Prepare(ctx, p2, Release{})
	if err != nil {
		t.Fatal(err)
	}
	writeVersion(t, "", b.Dist, "half")
	if err := d.Abort(ctx, p2); err != nil {
		t.Fatal(err)
	}
	if exists(p2.Dist) || exists(b.Dir) {
		t.Fatal("half dist or release left after abort of a first build")
	}
}

func TestKeepPrunesOldReleases(t *testing.T) {
	ctx := context.Background()
	p := target(t)
	writeVersion(t, p.Binary, p.Dist, "v1")
	d := testDeployer(nil)
	for _, v := range []string{"v2", "v3", "v4", "v5", "v6"} {
		if err := build(ctx, d, p, v); err != nil {
			t.Fatal(err)
		}
		if err := d.MarkVerified(p); err != nil {
			t.Fatal(err)
		}
	}
	rs, err := ListReleases(p)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range rs {
		got = append(got, r.Backend)
	}
	if strings.Join(got, ",") != "commit-v3,commit-v4,commit-v5" {
		t.Fatalf("kept %v", got)
	}
	for _, want := range []string{"v5", "v4", "v3"} {
		r, err := d.Rollback(ctx, p, "job-rollback-"+want)
		if err != nil {
			t.Fatal(err)
		}
		if bin, dist := live(t, p); bin != want || dist != want || r.Backend != "commit-"+want {
			t.Fatalf("rollback: live %q %q, release %+v, want %s", bin, dist, r, want)
		}
	}
	if _, err := d.Rollback(ctx, p, "job-rollback-past"); err == nil {
		t.Fatal("rollback past the history succeeded")
	}
}
