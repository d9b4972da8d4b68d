package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tractstack/concierge/queue"
)

// TestAnOverlongRejectedNameDoesNotStopTheQueue: a rejected trigger whose
// name leaves no room for the set-aside name used to stop the whole run
// before any job ran; now it is set aside under a shortened name and the
// valid trigger beside it runs.
func TestAnOverlongRejectedNameDoesNotStopTheQueue(t *testing.T) {
	h := newHome(t)
	long := "build-" + strings.Repeat("x", 240) + ".csv"
	h.drop(long, "type=nope")
	h.drop("build-1.csv", "type=main,command=build")
	_, stderr, code := h.concierge("run")
	if code != 1 {
		t.Fatalf("run exit %d, want 1 (a trigger was rejected):\n%s", code, stderr)
	}
	if ends := h.ends(); len(ends) != 1 || !slices.Equal(ends[0].Triggers, []string{"build-1.csv"}) {
		t.Fatalf("ran %+v; want the valid trigger's job", ends)
	}
	if left := h.stateEntries(); len(left) != 0 {
		t.Fatalf("state dir still holds %v", left)
	}
	var rejected []queue.Job
	for _, j := range h.status() {
		if j.State == queue.Rejected {
			rejected = append(rejected, j)
		}
	}
	if len(rejected) != 1 || !strings.Contains(rejected[0].Error, `type "nope"`) {
		t.Fatalf("rejected jobs %+v", rejected)
	}
	reason, err := os.ReadFile(filepath.Join(h.dir, "concierge", "rejected", queue.AsideName(rejected[0].ID, rejected[0].Triggers[0])+".reason"))
	if err != nil || !strings.Contains(string(reason), "xxxxxxxxxx") {
		t.Fatalf("reason file: %q, %v", reason, err)
	}
}

// TestATriggerRewrittenAfterItWasClaimedIsTakenInToo: the documented
// `echo ... > build-$(date +%s).csv` run twice in one second writes the
// same name twice. Once concierge has claimed the first file, the second
// write makes a new file that is taken in on its own.
func TestATriggerRewrittenAfterItWasClaimedIsTakenInToo(t *testing.T) {
	h := newHome(t)
	h.gate()
	watch, logs := h.start("watch")
	h.drop("build-1.csv", "type=main,command=build")
	first := h.runningJob()
	h.drop("build-1.csv", "type=dedicated,site=acme,command=build") // the same name, a second request
	eventually(t, "the second write to be taken in", 20*time.Second, func() bool {
		return h.allTakenIn() && len(h.status()) == 2
	})
	h.openGate()
	eventually(t, "both jobs to end", 20*time.Second, func() bool { return len(h.ends()) == 2 })
	stopWatch(t, watch, logs)
	ends := h.ends()
	if ends[0].ID != first || ends[0].Target != "main" || ends[1].Target != "dedicated:acme" {
		t.Fatalf("ran %+v; want main, then acme from the rewritten name", ends)
	}
	if left := dirNames(t, filepath.Join(h.dir, "concierge", "incoming")); len(left) != 0 {
		t.Fatalf("claim dir still holds %v", left)
	}
}

// TestATriggerLeftClaimedByACrashIsTakenInOnce: a concierge killed after
// claiming a trigger leaves it in the claim directory; the next run takes
// it in, once.
func TestATriggerLeftClaimedByACrashIsTakenInOnce(t *testing.T) {
	h := newHome(t)
	claim := filepath.Join(h.dir, "concierge", "incoming")
	if err := os.MkdirAll(claim, 0o750); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, filepath.Join(claim, "1764464000000000000-build-7.csv"), "type=main,command=build")
	if _, stderr, code := h.concierge("run"); code != 0 {
		t.Fatalf("run exit %d:\n%s", code, stderr)
	}
	if ends := h.ends(); len(ends) != 1 || !slices.Equal(ends[0].Triggers, []string{"build-7.csv"}) {
		t.Fatalf("ran %+v; want one job of build-7.csv", ends)
	}
	if left := dirNames(t, claim); len(left) != 0 {
		t.Fatalf("claim dir still holds %v", left)
	}
}

// TestRunWaitsWhileTheDataDirCannotBeWritten: job records cannot be
// written. run says so and tries again with a growing pause, keeping the
// trigger, instead of exiting (which the path unit would answer by
// starting it again at once); once the fault is gone it takes the trigger
// in and runs it.
func TestRunWaitsWhileTheDataDirCannotBeWritten(t *testing.T) {
	h := newHome(t)
	jobsDir := filepath.Join(h.dir, "concierge", "jobs")
	if err := os.MkdirAll(jobsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	undo := fdReadOnly(t, jobsDir)
	h.drop("build-1.csv", "type=main,command=build")
	run, logs := h.start("run")
	waitFor(t, "run to say it will try again", 20*time.Second, func() (bool, string) {
		return strings.Count(logs.String(), "cannot take in triggers; trying again in") >= 2, logs.String()
	})
	if run.exited() {
		t.Fatalf("run exited while the data dir could not be written:\n%s", logs)
	}
	if !strings.Contains(logs.String(), "read-only file system") {
		t.Fatalf("the log does not say what failed:\n%s", logs)
	}
	if n := len(h.runs()); n != 0 {
		t.Fatalf("%d job(s) ran without a record", n)
	}
	undo()
	if code := run.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("run exit %d after the fault went:\n%s", code, logs)
	}
	if ends := h.ends(); len(ends) != 1 || !slices.Equal(ends[0].Triggers, []string{"build-1.csv"}) {
		t.Fatalf("ran %+v; want one job of build-1.csv", ends)
	}
	fdEveryTriggerOnce(t, h.status(), []string{"build-1.csv"})
	if left := h.stateEntries(); len(left) != 0 {
		t.Fatalf("state dir still holds %v", left)
	}
}

// TestPruneRemovesARejectedDirectory: a directory dropped as a trigger is
// set aside; when its job is pruned, the directory and its reason go too,
// and later prunes go on.
func TestPruneRemovesARejectedDirectory(t *testing.T) {
	h := newHome(t)
	dir := filepath.Join(h.dir, "state", "build-1.csv")
	if err := os.MkdirAll(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, filepath.Join(dir, "sub", "f"), "x")
	env := append(h.env(), "CONCIERGE_KEEP_JOBS=1")
	if _, stderr, code := runConcierge(t, bins.fake, env, "run"); code != 1 {
		t.Fatalf("run exit %d, want 1 (rejected):\n%s", code, stderr)
	}
	rejected := filepath.Join(h.dir, "concierge", "rejected")
	if n := len(dirNames(t, rejected)); n != 2 {
		t.Fatalf("rejected dir holds %v; want the directory and its reason", dirNames(t, rejected))
	}
	for i := 2; i <= 3; i++ {
		h.drop(fmt.Sprintf("build-%d.csv", i), "type=main,command=build")
		if _, stderr, code := runConcierge(t, bins.fake, env, "run"); code != 0 {
			t.Fatalf("run %d exit %d:\n%s", i, code, stderr)
		}
	}
	if left := dirNames(t, rejected); len(left) != 0 {
		t.Fatalf("rejected dir still holds %v after its job was pruned", left)
	}
	if jobs := h.status(); len(jobs) != 1 || !slices.Equal(jobs[0].Triggers, []string{"build-3.csv"}) {
		t.Fatalf("jobs after prunes: %+v; want only the newest", jobs)
	}
}

// TestAFileThatIsNotATriggerIsLoggedOnceAndShown: main_build.csv (what a
// published setup page writes) is not taken in; concierge says so once,
// with the name it expects, and status shows it.
func TestAFileThatIsNotATriggerIsLoggedOnceAndShown(t *testing.T) {
	h := newHome(t)
	h.drop("main_build.csv", "type=main,command=build")
	h.drop("build-1.csv", "type=main,command=build")
	_, stderr, code := h.concierge("run")
	if code != 0 {
		t.Fatalf("run exit %d:\n%s", code, stderr)
	}
	if n := strings.Count(stderr, `\"main_build.csv\" is ignored`); n != 1 {
		t.Fatalf("main_build.csv logged %d times, want once:\n%s", n, stderr)
	}
	if !strings.Contains(stderr, "build-*.csv") {
		t.Fatalf("the log does not say what name is expected:\n%s", stderr)
	}
	out, _, _ := h.concierge("status")
	if !strings.Contains(out, `IGNORED  "main_build.csv" is ignored: it is not a trigger; concierge takes in files named build-*.csv`) {
		t.Fatalf("status does not show the ignored file:\n%s", out)
	}
	if left := h.stateEntries(); !slices.Equal(left, []string{"main_build.csv"}) {
		t.Fatalf("state dir holds %v; the ignored file must stay", left)
	}
}

// TestAForgedLogLineInATriggerNameStaysOnItsLine: a trigger name with a
// newline and a fake log line, and one with terminal escapes, reach
// concierge.log, the console log and status escaped.
func TestAForgedLogLineInATriggerNameStaysOnItsLine(t *testing.T) {
	h := newHome(t)
	forged := "build-1\nINF job succeeded job_id=01FAKE.csv"
	escape := "build-2\x1b]0;pwned\x07\x1b[2J.csv"
	h.drop(forged, "type=nope")
	h.drop(escape, "type=nope")
	env := append(h.env(), "CONCIERGE_LOG_FORMAT=console")
	_, stderr, code := runConcierge(t, bins.fake, env, "run")
	if code != 1 {
		t.Fatalf("run exit %d:\n%s", code, stderr)
	}
	logFile, err := os.ReadFile(filepath.Join(h.dir, "log", "concierge.log"))
	if err != nil {
		t.Fatal(err)
	}
	out, _, _ := h.concierge("status")
	for name, text := range map[string]string{"concierge.log": string(logFile), "console": stderr, "status": out} {
		for _, l := range strings.Split(text, "\n") {
			if strings.HasPrefix(strings.TrimSpace(l), "INF job succeeded") {
				t.Errorf("%s holds a forged line %q", name, l)
			}
		}
		if strings.ContainsAny(text, "\x1b\x07") {
			t.Errorf("%s holds raw escape characters:\n%q", name, text)
		}
		if !strings.Contains(text, `build-1\nINF job succeeded`) {
			t.Errorf("%s does not show the name escaped:\n%s", name, text)
		}
	}
}

// TestJSONLogLinesHaveOneOfEachKey: every JSON log line of run and watch
// holds each key once (a consumer keeps one of two at random).
func TestJSONLogLinesHaveOneOfEachKey(t *testing.T) {
	h := newHome(t)
	h.drop("build-1.csv", "type=main,command=build")
	h.drop("build-2.csv", "type=nope")
	_, stderr, _ := h.concierge("run")
	watch, logs := h.start("watch")
	h.drop("build-3.csv", "type=main,command=build")
	eventually(t, "the watched trigger to run", 20*time.Second, func() bool { return len(h.ends()) == 2 })
	stopWatch(t, watch, logs)
	lines := strings.Split(strings.TrimSpace(stderr+"\n"+logs.String()), "\n")
	components := map[string]bool{}
	for _, l := range lines {
		if l == "" || strings.HasPrefix(l, "concierge: ") {
			continue // the closing summary, printed as text
		}
		keys, err := jsonKeys(l)
		if err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		seen := map[string]bool{}
		for _, k := range keys {
			if seen[k] {
				t.Errorf("key %q twice in %s", k, l)
			}
			seen[k] = true
		}
		var ev struct{ Component string }
		json.Unmarshal([]byte(l), &ev)
		components[ev.Component] = true
	}
	for _, c := range []string{"concierge", "queue", "runner"} {
		if !components[c] {
			t.Errorf("no line from component %s in:\n%s", c, strings.Join(lines, "\n"))
		}
	}
}

// jsonKeys lists the top-level keys of one JSON object in order, repeats
// included (encoding/json would keep only the last).
func jsonKeys(line string) ([]string, error) {
	d := json.NewDecoder(strings.NewReader(line))
	if tok, err := d.Token(); err != nil || tok != json.Delim('{') {
		return nil, fmt.Errorf("not a JSON object: %v", err)
	}
	var keys []string
	for d.More() {
		tok, err := d.Token()
		if err != nil {
			return nil, err
		}
		keys = append(keys, tok.(string))
		var v json.RawMessage
		if err := d.Decode(&v); err != nil {
			return nil, err
		}
	}
	return keys, nil
}

// TestRecordsAndLogsAreNotWorldReadable: job records and the compat log
// are 0640, recorded build output 0600, the data directory 0750.
func TestRecordsAndLogsAreNotWorldReadable(t *testing.T) {
	h := newHome(t)
	h.drop("build-1.csv", "type=main,command=build")
	h.drop("build-2.csv", "type=nope")
	if _, stderr, code := h.concierge("run"); code != 1 {
		t.Fatalf("run exit %d:\n%s", code, stderr)
	}
	data := filepath.Join(h.dir, "concierge")
	want := map[string]os.FileMode{data: 0o750, filepath.Join(data, "jobs"): 0o750, filepath.Join(data, "rejected"): 0o750,
		filepath.Join(h.dir, "log", "concierge.log"): 0o640}
	for _, j := range h.status() {
		want[filepath.Join(data, "jobs", j.ID+".json")] = 0o640
		if j.State == queue.Rejected {
			want[filepath.Join(data, "rejected", queue.AsideName(j.ID, j.Triggers[0])+".reason")] = 0o640
		} else {
			want[filepath.Join(data, "jobs", j.ID+".log")] = 0o600
		}
	}
	for p, m := range want {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != m {
			t.Errorf("%s is %v, want %v", p, st.Mode().Perm(), m)
		}
	}
}

// TestUnbalancedQuotesInGoBuildFlagsAreAUsageError: the flags are split
// as a shell would; a value a shell could not split stops concierge at
// start with a clear error.
func TestUnbalancedQuotesInGoBuildFlagsAreAUsageError(t *testing.T) {
	h := newHome(t)
	env := append(h.env(), `CONCIERGE_GO_BUILD_FLAGS=-ldflags="-s -w`)
	_, stderr, code := runConcierge(t, bins.fake, env, "run")
	if code != 2 || !strings.Contains(stderr, "CONCIERGE_GO_BUILD_FLAGS") || !strings.Contains(stderr, "reached EOF without closing quote") {
		t.Fatalf("run exit %d, want 2 naming the setting and the quote:\n%s", code, stderr)
	}
}

// TestRecordedStepOutputHasNoColour: colour codes a tool prints are
// stripped from the job's output, its log lines and status.
func TestRecordedStepOutputHasNoColour(t *testing.T) {
	h := newHome(t)
	mustWrite(t, filepath.Join(h.fake, "fail-targets"), "main")
	mustWrite(t, filepath.Join(h.fake, "say"), "\x1b[31mred\x1b[0m https://deploy:TOKEN@host/repo.git")
	h.drop("build-1.csv", "type=main,command=build")
	_, stderr, _ := h.concierge("run")
	jobs := h.status()
	if len(jobs) != 1 {
		t.Fatalf("jobs %+v", jobs)
	}
	output, err := os.ReadFile(filepath.Join(h.dir, "concierge", "jobs", jobs[0].ID+".log"))
	if err != nil {
		t.Fatal(err)
	}
	status, _, _ := h.concierge("status")
	record, _ := os.ReadFile(filepath.Join(h.dir, "concierge", "jobs", jobs[0].ID+".json"))
	for name, text := range map[string]string{"output": string(output), "log": stderr, "status": status, "record": string(record)} {
		if strings.Contains(text, "\x1b") || strings.Contains(text, `\u001b`) || strings.Contains(text, "TOKEN") {
			t.Errorf("%s keeps colour codes or the token:\n%s", name, text)
		}
		if !strings.Contains(text, "red https://xxxxx:xxxxx@host/repo.git") {
			t.Errorf("%s lost the line:\n%s", name, text)
		}
	}
}

func stopWatch(t *testing.T, p *proc, logs io.Writer) {
	t.Helper()
	p.cmd.Process.Signal(os.Interrupt)
	if code := waitExit(t, p); code != 0 {
		t.Fatalf("watch exit %d:\n%s", code, logs)
	}
}

// allTakenIn reports whether every trigger was taken in: none is left in
// state/, nor claimed in <data>/incoming and waiting for intake.
func (h *home) allTakenIn() bool {
	claimed, err := os.ReadDir(filepath.Join(h.dir, "concierge", "incoming"))
	return len(h.stateEntries()) == 0 && (err == nil && len(claimed) == 0)
}
