package main

// End-to-end tests of frontend releases: every build runs in a release
// directory of its own, beside the live tree, and goes live as one unit
// (binary, dist, node_modules, package.json, lock file, whitelist JSON).
// What is checked is what a visitor sees while a job runs, and what an
// operator finds in the live tree.

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tractstack/concierge/deploy"
	"github.com/tractstack/concierge/internal/sandbox"
	"github.com/tractstack/concierge/internal/testtool"
	"github.com/tractstack/concierge/queue"
)

// whitelistScript stands in for extractTailwindWhitelist.py: it writes
// the version the dist was built from into the whitelist JSON.
const whitelistScript = `import json, pathlib, sys
dist, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text(json.dumps({"built_from": (dist / "client" / "index.html").read_text().strip()}) + "\n")
`

// probe asks a site's frontend for pages (round robin, so that each page
// module is loaded lazily on its first request), a public file, and its
// backend's health, every 50 ms, and records what failed and when.
type probe struct {
	ports [2]int
	stop  chan struct{}
	done  chan struct{}

	mu       sync.Mutex
	requests int
	failures []probeFailure
}

type probeFailure struct {
	at   time.Time
	what string
}

func startProbe(ports [2]int) *probe {
	pr := &probe{ports: ports, stop: make(chan struct{}), done: make(chan struct{})}
	go pr.loop()
	return pr
}

func (pr *probe) loop() {
	defer close(pr.done)
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	for n := 0; ; n++ {
		for _, path := range []string{"/p/" + strconv.Itoa(n%5+1), "/files/robots.txt"} {
			url := fmt.Sprintf("http://127.0.0.1:%d%s", pr.ports[1], path)
			resp, err := c.Get(url)
			what := ""
			switch {
			case err != nil:
				what = path + ": " + err.Error()
			case resp.StatusCode != http.StatusOK:
				body, _ := io.ReadAll(resp.Body)
				what = fmt.Sprintf("%s: status %d %s", path, resp.StatusCode, strings.TrimSpace(string(body)))
			}
			if resp != nil {
				resp.Body.Close()
			}
			pr.mu.Lock()
			pr.requests++
			if what != "" {
				pr.failures = append(pr.failures, probeFailure{at: time.Now(), what: what})
			}
			pr.mu.Unlock()
		}
		select {
		case <-pr.stop:
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// end stops the probe and returns how many requests it made and those
// that failed before t.
func (pr *probe) end(before time.Time) (requests int, failed []string) {
	close(pr.stop)
	<-pr.done
	pr.mu.Lock()
	defer pr.mu.Unlock()
	for _, f := range pr.failures {
		if f.at.Before(before) {
			failed = append(failed, f.at.Format("15:04:05.000")+" "+f.what)
		}
	}
	return pr.requests, failed
}

// hashTree hashes every entry of dir: its path, type, mode, and its
// content or link target. Links are not followed.
func hashTree(t *testing.T, dir string) string {
	t.Helper()
	h := sha256.New()
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		fmt.Fprintf(h, "%s %s\n", rel, info.Mode())
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			link, err := os.Readlink(path)
			if err != nil {
				return err
			}
			fmt.Fprintln(h, link)
		case info.Mode().IsRegular():
			f, err := os.Open(path)
			if err != nil {
				return err
			}
			defer f.Close()
			if _, err := io.Copy(h, f); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// diskUsage is what dirs take on disk together, each hard-linked file
// counted once (as du does).
func diskUsage(t *testing.T, dirs ...string) int64 {
	t.Helper()
	seen := map[[2]uint64]bool{}
	var total int64
	for _, dir := range dirs {
		err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			var st syscall.Stat_t
			if err := syscall.Lstat(path, &st); err != nil {
				return err
			}
			key := [2]uint64{st.Dev, st.Ino}
			if !seen[key] {
				seen[key] = true
				total += st.Blocks * 512
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return total
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestReleasesKeepTheSiteUp drives a main install whose frontend is
// edited in place (as the installer leaves it) through builds that
// succeed, fail and roll back, and checks what visitors and the operator
// see. The steps build on each other.
func TestReleasesKeepTheSiteUp(t *testing.T) {
	testtool.Require(t, "python3")
	h := &pe2eHost{startLiveHost(t, liveOptions{
		installs: []string{""},
		running:  true,
		env:      []string{"CONCIERGE_HEALTH_TIMEOUT=10s", "CONCIERGE_STEP_TIMEOUT=2m", "CONCIERGE_LOG_FORMAT=json"},
	})}
	p := h.paths("")
	mustWrite(t, p.WhitelistScript, whitelistScript)
	ports := h.ports["main"]

	steps := []struct {
		name string
		fn   func(t *testing.T)
	}{
		{"pages and files answer from the trigger until the swap", func(t *testing.T) {
			h.push("", changeOf(sandbox.BackendVersion("v2", true)), nil)
			if err := sandbox.WriteFrontendFiles(p.FrontendSrc, *mergeChanges(sandbox.FrontendVersion("v2"), sandbox.FrontendBuildDelay(1500))); err != nil {
				t.Fatal(err)
			}
			pr := startProbe(ports)
			h.drop(buildMain)
			j := h.runOK()
			swap := pe2eStep(t, j, "swap")
			n, failed := pr.end(*swap.StartedAt)
			if len(failed) != 0 {
				t.Fatalf("%d of %d requests failed before the swap:\n%s", len(failed), n, strings.Join(failed, "\n"))
			}
			if n < 20 {
				t.Fatalf("only %d requests were made during the job", n)
			}
			h.serves("", "v2", "v2")
			cur, ok, err := deploy.Current(p)
			if err != nil || !ok {
				t.Fatalf("current release: %+v, %t, %v", cur, ok, err)
			}
			link, err := os.Readlink(p.Dist)
			if err != nil || filepath.Join(p.FrontendSrc, link) != p.ReleaseDir(cur.ID).Dist {
				t.Fatalf("live dist links to %q (%v), want release %s", link, err, cur.ID)
			}
			if got := readFile(t, p.WhitelistJSON); !strings.Contains(got, "v2") {
				t.Fatalf("whitelist JSON %q, want v2's", got)
			}
			// The running server resolves its imports from the release's
			// node_modules: the operator's own may go.
			if err := os.RemoveAll(filepath.Join(p.FrontendSrc, "node_modules")); err != nil {
				t.Fatal(err)
			}
			h.restartByHand("")
			h.serves("", "v2", "v2")
		}},
		{"a broken frontend leaves the live tree byte for byte", func(t *testing.T) {
			if err := sandbox.WriteFrontendFiles(p.FrontendSrc, sandbox.FrontendBroken()); err != nil {
				t.Fatal(err)
			}
			before := hashTree(t, p.FrontendSrc)
			pr := startProbe(ports)
			h.drop(buildMain)
			j := h.runFailed()
			n, failed := pr.end(time.Now())
			pe2eSteps(t, j, map[string]queue.State{"build-frontend": queue.Failed})
			if after := hashTree(t, p.FrontendSrc); after != before {
				t.Fatalf("the live frontend tree changed")
			}
			if len(failed) != 0 {
				t.Fatalf("%d of %d requests failed:\n%s", len(failed), n, strings.Join(failed, "\n"))
			}
			if err := os.Remove(filepath.Join(p.FrontendSrc, "src", "broken")); err != nil {
				t.Fatal(err)
			}
			h.serves("", "v2", "v2")
		}},
		{"an unhealthy backend rolls the whole release back", func(t *testing.T) {
			link, _ := os.Readlink(p.Dist)
			bin, err := os.Stat(p.Binary)
			if err != nil {
				t.Fatal(err)
			}
			pkg, lock, wl := readFile(t, filepath.Join(p.FrontendSrc, "package.json")), readFile(t, filepath.Join(p.FrontendSrc, "pnpm-lock.yaml")), readFile(t, p.WhitelistJSON)
			// The new release changes the packages: a new version of the
			// dependency (the lock file) and package.json itself.
			// (A new file, as a release of a package is: pnpm hard links a
			// local dependency's files, so a change written into them in
			// place would reach every release that has them.)
			greeting := filepath.Join(h.sb.GreetingDir(), "package.json")
			mustWrite(t, greeting+".new", strings.Replace(readFile(t, greeting), `"1.0.0"`, `"1.1.0"`, 1))
			if err := os.Rename(greeting+".new", greeting); err != nil {
				t.Fatal(err)
			}
			mustWrite(t, filepath.Join(p.FrontendSrc, "package.json"), strings.Replace(pkg, `"version": "0.0.0"`, `"version": "0.0.3"`, 1))
			if err := sandbox.WriteFrontendFiles(p.FrontendSrc, sandbox.FrontendVersion("v3")); err != nil {
				t.Fatal(err)
			}
			h.push("", changeOf(sandbox.BackendVersion("v3", false)), nil)
			h.drop(buildMain)
			j := h.runFailed("CONCIERGE_HEALTH_TIMEOUT=3s")
			if !strings.Contains(j.Error, "rolled back to") {
				t.Fatalf("job error %q", j.Error)
			}
			if got, _ := os.Readlink(p.Dist); got != link {
				t.Fatalf("live dist links to %q after the rollback, want %q", got, link)
			}
			if after, err := os.Stat(p.Binary); err != nil || !os.SameFile(bin, after) {
				t.Fatalf("live binary is not the one before the build: %v", err)
			}
			for name, want := range map[string]string{
				filepath.Join(p.FrontendSrc, "package.json"):   pkg,
				filepath.Join(p.FrontendSrc, "pnpm-lock.yaml"): lock,
				p.WhitelistJSON: wl,
			} {
				if got := readFile(t, name); got != want {
					t.Fatalf("%s after the rollback:\n%s\nwant\n%s", name, got, want)
				}
			}
			dist, err := filepath.EvalSymlinks(p.Dist)
			if err != nil {
				t.Fatal(err)
			}
			if got := readFile(t, filepath.Join(dist, "..", "node_modules", "greeting", "package.json")); !strings.Contains(got, `"1.0.0"`) {
				t.Fatalf("the live release's node_modules hold greeting:\n%s\nwant 1.0.0", got)
			}
			h.serves("", "v2", "v2")
		}},
		{"kept releases share node_modules", func(t *testing.T) {
			for _, v := range []string{"v4", "v5", "v6"} {
				h.push("", changeOf(sandbox.BackendVersion(v, true)), nil)
				if err := sandbox.WriteFrontendFiles(p.FrontendSrc, sandbox.FrontendVersion(v)); err != nil {
					t.Fatal(err)
				}
				h.drop(buildMain)
				h.runOK()
				h.serves("", v, v)
			}
			rs := mustReleases(t, p)
			if len(rs) != 3 {
				t.Fatalf("%d kept releases, want 3: %+v", len(rs), rs)
			}
			cur, _, _ := deploy.Current(p)
			fronts := []string{p.ReleaseDir(cur.ID).Frontend}
			for _, r := range rs {
				fronts = append(fronts, p.ReleaseDir(r.ID).Frontend)
			}
			one, all := diskUsage(t, fronts[0]), diskUsage(t, fronts...)
			t.Logf("frontend trees: one release %d KiB, the live one and 3 kept %d KiB (%.2fx)", one>>10, all>>10, float64(all)/float64(one))
			if all >= 2*one {
				t.Fatalf("the live and 3 kept frontend trees take %d KiB, one takes %d KiB: want less than twice", all>>10, one>>10)
			}
		}},
	}
	for _, s := range steps {
		if !t.Run(s.name, s.fn) {
			return
		}
	}
}

func mustReleases(t *testing.T, p deploy.Paths) []deploy.Release {
	t.Helper()
	rs, err := deploy.ListReleases(p)
	if err != nil {
		t.Fatal(err)
	}
	sort.Slice(rs, func(i, j int) bool { return rs[i].ID < rs[j].ID })
	return rs
}
