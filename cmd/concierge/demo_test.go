package main

import (
	"bytes"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/tractstack/concierge/internal/testtool"
)

// TestDemoShowsTheFourOutcomes runs `concierge demo` as a newcomer would
// and checks its output for the four outcomes, and that it leaves no
// service running.
func TestDemoShowsTheFourOutcomes(t *testing.T) {
	testtool.Require(t, "git", "go", "node")
	dir := t.TempDir()
	cmd := exec.Command(bins.real, "demo", "--dir", dir)
	cmd.Env = os.Environ()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("demo failed: %v\n%s", err, out.String())
	}
	text := out.String()
	for _, want := range []string{
		`OUTCOME first-deploy +ok +job \w+ succeeded; backend answers v1, frontend answers "frontend v1"`,
		`OUTCOME upgrade +ok +job \w+ succeeded; backend answers v2, frontend answers "frontend v2"`,
		`OUTCOME broken-commit +ok +kept out; job \w+ failed; backend answers v2, frontend answers "frontend v2"`,
		`OUTCOME unhealthy-commit +ok +rolled back; job \w+ failed; backend answers v2, .*rolled back to [0-9a-f]{40}`,
		// While v2 builds, the site answers from v1, lazily loaded pages
		// and public files included.
		`site up +\d\d:\d\d:\d\d: "frontend v1", "page \d v1", robots.txt "ok"; backend v1`,
		`RECENT +4 shown`,
		`NOTIFICATION received by the demo's webhook at /demo-webhook:\n +\| concierge on .*: build of main failed\n +\| job \w+`,
		`\| concierge on .*: build of main failed and was rolled back`,
		`OUTCOME notifications +ok +2 received`,
		`concierge_jobs\{command="build",result="rolled-back",target="main"\} 1`,
		`concierge_live_release_info\{backend_commit="[0-9a-f]{40}",frontend_commit="[0-9a-f]{40}",release="[^"]+",target="main"\} 1`,
		`status file: +` + regexp.QuoteMeta(dir),
		`job records: +` + regexp.QuoteMeta(dir),
		`stopped the demo's backend and frontend`,
	} {
		if !regexp.MustCompile(want).MatchString(text) {
			t.Errorf("demo output lacks %q", want)
		}
	}
	if t.Failed() {
		t.Log(text)
	}
	// Nothing the demo started is still running.
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		cmdline, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil || !strings.Contains(string(cmdline), dir) {
			continue
		}
		stat, _ := os.ReadFile("/proc/" + e.Name() + "/stat")
		_, rest, _ := strings.Cut(string(stat), ") ") // the state follows the command name
		if !strings.HasPrefix(rest, "Z") {
			t.Errorf("process left running: %s", strings.ReplaceAll(string(cmdline), "\x00", " "))
		}
	}
}
