package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tractstack/concierge/queue"
)

func TestRunProcessesTriggersInArrivalOrder(t *testing.T) {
	h := newHome(t)
	h.drop("build-1.csv", "type=main,tenant=aaa,command=build")
	h.drop("build-2.csv", "type=dedicated,site=acme,command=build")
	h.drop("build-3.csv", "type=prod,tenant=bbb,command=build\n")
	h.drop("build-4.csv", "type,tenant,site,command\r\ndedicated,,acme,restart\r\n")
	_, stderr, code := h.concierge("run")
	if code != 0 {
		t.Fatalf("run exit %d, want 0:\n%s", code, stderr)
	}
	ends := h.ends()
	var got []string
	for _, r := range ends {
		got = append(got, r.Target+" "+strings.Join(r.Triggers, "+"))
	}
	want := []string{"main build-1.csv+build-3.csv", "dedicated:acme build-2.csv", "dedicated:acme build-4.csv"}
	if !slices.Equal(got, want) {
		t.Fatalf("ran %q, want %q", got, want)
	}
	if !slices.Equal(ends[0].Tenants, []string{"aaa", "bbb"}) {
		t.Fatalf("main tenants = %v", ends[0].Tenants)
	}
	if left := h.stateEntries(); len(left) != 0 {
		t.Fatalf("state dir still holds %v", left)
	}
	for _, j := range h.status() {
		if j.State != queue.Succeeded || j.StartedAt == nil || j.FinishedAt == nil || len(j.Steps) != 1 || j.Steps[0].Name != "fake-build" {
			t.Fatalf("job record %+v", j)
		}
	}
}

func TestRunWithNothingToDoWritesNothingUnderState(t *testing.T) {
	h := newHome(t)
	state := filepath.Join(h.dir, "state")
	before, _ := os.Stat(state)
	_, stderr, code := h.concierge("run")
	if code != 0 {
		t.Fatalf("run exit %d:\n%s", code, stderr)
	}
	after, _ := os.Stat(state)
	if left := h.stateEntries(); len(left) != 0 || !after.ModTime().Equal(before.ModTime()) {
		t.Fatalf("an idle run changed the state dir: %v, mtime %v → %v", left, before.ModTime(), after.ModTime())
	}
}

func TestRejectedTriggersAreSetAsideAndTheQueueGoesOn(t *testing.T) {
	h := newHome(t)
	h.drop("build-1.csv", "type=dedicated,site=../../etc,command=build")
	h.drop("build-3.csv", "type=main,command=build")
	target := filepath.Join(h.dir, "elsewhere.csv")
	os.WriteFile(target, []byte("type=main,command=build"), 0o644)
	os.Symlink(target, filepath.Join(h.dir, "state", "build-2.csv"))
	if err := syscall.Mkfifo(filepath.Join(h.dir, "state", "build-0.csv"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, stderr, code := h.concierge("run")
	if code != 1 {
		t.Fatalf("run exit %d, want 1 (a trigger was rejected):\n%s", code, stderr)
	}
	if ends := h.ends(); len(ends) != 1 || ends[0].Target != "main" {
		t.Fatalf("good trigger did not run: %+v", ends)
	}
	if left := h.stateEntries(); len(left) != 0 {
		t.Fatalf("state dir still holds %v", left)
	}
	reasons := map[string]string{}
	for _, j := range h.status() {
		if j.State == queue.Rejected {
			reasons[j.Triggers[0]] = j.Error
		}
	}
	for name, want := range map[string]string{
		"build-0.csv": "FIFO", "build-1.csv": `line 1: site "../../etc" does not match`, "build-2.csv": "symbolic link",
	} {
		if !strings.Contains(reasons[name], want) {
			t.Errorf("%s: reason %q, want %q", name, reasons[name], want)
		}
	}
	if data, err := os.ReadFile(target); err != nil || string(data) != "type=main,command=build" {
		t.Fatalf("the link's target was touched: %q %v", data, err)
	}
	entries, _ := os.ReadDir(filepath.Join(h.dir, "concierge", "rejected"))
	if len(entries) != 6 {
		t.Fatalf("rejected dir holds %d entries, want 3 triggers + 3 reasons", len(entries))
	}
	if !strings.Contains(stderr, "rejected") {
		t.Fatalf("the rejection was not logged:\n%s", stderr)
	}
}

func TestTriggersDuringARunningJobMakeOneFollowUp(t *testing.T) {
	h := newHome(t)
	h.gate()
	watch, logs := h.start("watch")
	h.drop("build-1.csv", "type=main,command=build")
	first := h.runningJob()
	for i := 2; i <= 30; i++ {
		h.drop(fmt.Sprintf("build-%02d.csv", i), fmt.Sprintf("type=main,tenant=tenant-%02d,command=build", i))
	}
	eventually(t, "the triggers to be taken in", 20*time.Second, h.allTakenIn)
	// status works while the other concierge runs.
	jobs := h.status()
	if len(jobs) != 2 || jobs[0].ID != first || jobs[0].State != queue.Running || jobs[1].State != queue.Pending || len(jobs[1].Triggers) != 29 {
		t.Fatalf("status during the build = %+v", jobs)
	}
	table, _, _ := h.concierge("status")
	if !strings.Contains(table, "RUNNING  "+first+"  build main  step fake-build for") || !strings.Contains(table, "PENDING  1") {
		t.Fatalf("status table during the build:\n%s", table)
	}
	h.openGate()
	eventually(t, "two jobs to end", 20*time.Second, func() bool { return len(h.ends()) == 2 })
	watch.cmd.Process.Signal(syscall.SIGTERM)
	if code := waitExit(t, watch); code != 0 {
		t.Fatalf("watch exit %d after SIGTERM:\n%s", code, logs)
	}
	if ends := h.ends(); len(ends[1].Tenants) != 29 {
		t.Fatalf("follow-up tenants = %v", ends[1].Tenants)
	}
}

func TestSlowWriterIsNotReadHalfWritten(t *testing.T) {
	h := newHome(t)
	watch, _ := h.start("watch")
	f, err := os.Create(filepath.Join(h.dir, "state", "build-1.csv"))
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("type=main,tenant=ab")
	time.Sleep(500 * time.Millisecond) // the writer is slow; nothing may happen meanwhile
	if jobs := h.status(); len(jobs) != 0 {
		t.Fatalf("a half-written trigger was taken in: %+v", jobs)
	}
	f.WriteString("cde,command=build\n")
	f.Close()
	eventually(t, "the job to end", 20*time.Second, func() bool { return len(h.ends()) == 1 })
	if got := h.ends()[0].Tenants; !slices.Equal(got, []string{"abcde"}) {
		t.Fatalf("tenants = %v, want [abcde]", got)
	}
	watch.cmd.Process.Signal(syscall.SIGTERM)
	waitExit(t, watch)
}

func TestKill9MidJobThenRestartCompletesTheJobOnce(t *testing.T) {
	h := newHome(t)
	h.gate()
	h.drop("build-1.csv", "type=main,command=build")
	run, _ := h.start("run")
	id := h.runningJob()
	if err := run.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitExit(t, run)
	// status says the job's process is gone, not that it still runs.
	table, _, _ := h.concierge("status")
	if !strings.Contains(table, "STOPPED  "+id) || !strings.Contains(table, "no concierge is running it") {
		t.Fatalf("status after the kill:\n%s", table)
	}
	h.openGate()
	_, stderr, code := h.concierge("run")
	if code != 0 {
		t.Fatalf("second run exit %d:\n%s", code, stderr)
	}
	var starts, ends int
	for _, r := range h.runs() {
		if r.ID != id {
			t.Fatalf("a second job %s appeared: %+v", r.ID, h.runs())
		}
		if r.Event == "start" {
			starts++
		} else {
			ends++
		}
	}
	jobs := h.status()
	if starts != 2 || ends != 1 || len(jobs) != 1 || jobs[0].State != queue.Succeeded || jobs[0].Attempts != 2 {
		t.Fatalf("starts %d ends %d jobs %+v; want one job, re-run once, succeeded", starts, ends, jobs)
	}
	if !strings.Contains(stderr, "queued to run again") {
		t.Fatalf("recovery not logged:\n%s", stderr)
	}
}

func TestSigtermInWatchPutsTheJobBackToPending(t *testing.T) {
	h := newHome(t)
	h.gate()
	watch, logs := h.start("watch")
	h.drop("build-1.csv", "type=main,command=build")
	id := h.runningJob()
	watch.cmd.Process.Signal(syscall.SIGTERM)
	if code := waitExit(t, watch); code != 0 {
		t.Fatalf("watch exit %d:\n%s", code, logs)
	}
	if jobs := h.status(); len(jobs) != 1 || jobs[0].ID != id || jobs[0].State != queue.Pending {
		t.Fatalf("after SIGTERM: %+v; want the job pending", jobs)
	}
	h.openGate()
	if _, stderr, code := h.concierge("run"); code != 0 {
		t.Fatalf("run exit %d:\n%s", code, stderr)
	}
	if jobs := h.status(); jobs[0].State != queue.Succeeded {
		t.Fatalf("after restart: %+v", jobs)
	}
}

func TestTwoProcessesNeverRunJobsAtOnce(t *testing.T) {
	h := newHome(t)
	h.gate()
	h.drop("build-1.csv", "type=main,command=build")
	first, _ := h.start("run")
	h.runningJob()
	second, secondLogs := h.start("run")
	eventually(t, "the second process to wait for the lock", 20*time.Second, func() bool {
		return strings.Contains(secondLogs.String(), "waiting for it to finish")
	})
	h.drop("build-2.csv", "type=dedicated,site=acme,command=build")
	h.openGate()
	if code := waitExit(t, first); code != 0 {
		t.Fatalf("first run exit %d", code)
	}
	if code := waitExit(t, second); code != 0 {
		t.Fatalf("second run exit %d:\n%s", code, secondLogs)
	}
	// Starts and ends alternate: never two jobs at once, each job once.
	runs := h.runs()
	seen := map[string]int{}
	for i, r := range runs {
		want := "start"
		if i%2 == 1 {
			want = "end"
		}
		if r.Event != want {
			t.Fatalf("runs interleave: %+v", runs)
		}
		if r.Event == "start" {
			seen[r.ID]++
		}
	}
	if len(seen) != 2 {
		t.Fatalf("jobs run: %v, want 2 distinct jobs once each", seen)
	}
}

// The run lock is one per install: a concierge with another data dir (a
// manual run that did not read concierge.env, where CONCIERGE_DATA_DIR
// was set) waits for the one that runs, instead of building the same
// target beside it.
func TestTwoDataDirsOnOneHomeRunOneJobAtATime(t *testing.T) {
	h := newHome(t)
	h.gate()
	h.drop("build-1.csv", "type=main,command=build")
	first, _ := h.start("run")
	h.runningJob()
	// A trigger the second concierge would take in at once and build
	// beside the first if it took a lock of its own.
	h.drop("build-2.csv", "type=dedicated,site=acme,command=build")
	other := filepath.Join(t.TempDir(), "other-data")
	second := startProc(t, bins.fake, append(h.env(), "CONCIERGE_DATA_DIR="+other), "run")
	eventually(t, "the second process to wait for the lock", 20*time.Second, func() bool {
		return strings.Contains(second.out.String(), "waiting for it to finish")
	})
	if !strings.Contains(second.out.String(), filepath.Join(h.dir, "concierge.lock")) {
		t.Fatalf("the second process does not name <home>/concierge.lock:\n%s", second.out)
	}
	if got := h.stateEntries(); !slices.Contains(got, "build-2.csv") {
		t.Fatalf("build-2.csv taken in while the first job holds: state/ %q", got)
	}
	h.openGate()
	if code := waitExit(t, first); code != 0 {
		t.Fatalf("first run exit %d", code)
	}
	if code := waitExit(t, second); code != 0 {
		t.Fatalf("second run exit %d:\n%s", code, second.out)
	}
	runs := h.runs()
	for i, r := range runs {
		if want := []string{"start", "end"}[i%2]; r.Event != want {
			t.Fatalf("runs interleave: %+v", runs)
		}
	}
	if len(runs) != 4 {
		t.Fatalf("runs %+v, want 2 jobs each run once", runs)
	}
}

func TestEnqueuePlanAndRetry(t *testing.T) {
	h := newHome(t)
	out, stderr, code := h.concierge("enqueue", "--type", "dedicated", "--site", "acme")
	if code != 0 || !strings.Contains(out, filepath.Join(h.dir, "state", "build-")) {
		t.Fatalf("enqueue = %q %q %d", out, stderr, code)
	}
	data, _ := os.ReadFile(strings.TrimSpace(out))
	if string(data) != "type=dedicated,site=acme,command=build\n" {
		t.Fatalf("trigger content %q", data)
	}
	if _, stderr, code := h.concierge("enqueue", "--type", "dedicated", "--site", "../x"); code != 2 || !strings.Contains(stderr, "does not match") {
		t.Fatalf("bad enqueue: exit %d, %s", code, stderr)
	}
	// plan runs nothing.
	out, _, code = h.concierge("plan", strings.TrimSpace(string(out)))
	if code != 0 || !strings.Contains(out, "build dedicated:acme") {
		t.Fatalf("plan = %q, %d", out, code)
	}
	if len(h.runs()) != 0 || len(h.stateEntries()) != 1 {
		t.Fatal("plan ran or removed something")
	}
	bad := filepath.Join(h.dir, "bad.csv")
	os.WriteFile(bad, []byte("type=main,command=explode"), 0o644)
	if _, stderr, code := h.concierge("plan", bad); code != 1 || !strings.Contains(stderr, `command "explode"`) {
		t.Fatalf("plan of a bad trigger: exit %d, %s", code, stderr)
	}

	// A failing target fails its job, which is not retried by itself.
	os.WriteFile(filepath.Join(h.fake, "fail-targets"), []byte("dedicated:acme\n"), 0o644)
	if _, _, code := h.concierge("run"); code != 1 {
		t.Fatalf("run with a failing job exit %d, want 1", code)
	}
	if _, _, code := h.concierge("run"); code != 0 || len(h.runs()) != 1 {
		t.Fatalf("the failed job was retried by itself: runs %+v", h.runs())
	}
	failed := h.status()[0]
	if failed.State != queue.Failed || !strings.Contains(failed.Error, "fake build failed") || len(failed.Steps[0].Tail) == 0 {
		t.Fatalf("failed job = %+v", failed)
	}
	table, _, _ := h.concierge("status")
	if !strings.Contains(table, "FAILED") || !strings.Contains(table, "| error: fake failure") {
		t.Fatalf("status table does not show the failure and its output:\n%s", table)
	}
	os.Remove(filepath.Join(h.fake, "fail-targets"))
	out, stderr, code = h.concierge("retry", failed.ID)
	if code != 0 || !strings.Contains(out, "queued a retry of job "+failed.ID) {
		t.Fatalf("retry = %q %q %d", out, stderr, code)
	}
	if _, _, code := h.concierge("run"); code != 0 {
		t.Fatalf("run of the retry exit %d", code)
	}
	jobs := h.status()
	if len(jobs) != 2 || jobs[1].State != queue.Succeeded || jobs[1].RetryOf != failed.ID {
		t.Fatalf("after retry: %+v", jobs)
	}
	if _, stderr, code := h.concierge("retry", jobs[1].ID); code != 2 || !strings.Contains(stderr, "only a failed job") {
		t.Fatalf("retry of a succeeded job: %d %s", code, stderr)
	}
}

func TestUsageErrorsExit2(t *testing.T) {
	h := newHome(t)
	for _, args := range [][]string{{}, {"nope"}, {"run", "--log-format", "xml"}, {"--home", "relative", "run"}, {"retry"}} {
		if _, _, code := h.concierge(args...); code != 2 {
			t.Errorf("concierge %v exit %d, want 2", args, code)
		}
	}
	if out, _, code := h.concierge("version"); code != 0 || !strings.HasPrefix(out, "concierge ") {
		t.Errorf("version = %q %d", out, code)
	}
}

func TestLogsFollowsTheRunningJobToItsEnd(t *testing.T) {
	h := newHome(t)
	h.gate()
	h.drop("build-1.csv", "type=main,tenant=tenant-a,command=build")
	run, _ := h.start("run")
	id := h.runningJob()
	follow, followOut := h.start("logs", "-f")
	eventually(t, "logs -f to show the step's output", 20*time.Second, func() bool {
		return strings.Contains(followOut.String(), "[fake-build] building main for tenant-a")
	})
	h.openGate()
	if code := waitExit(t, follow); code != 0 {
		t.Fatalf("logs -f exit %d:\n%s", code, followOut)
	}
	waitExit(t, run)
	text := followOut.String()
	for _, want := range []string{"=== step fake-build succeeded", "=== job " + id + " succeeded"} {
		if !strings.Contains(text, want) {
			t.Errorf("logs -f output lacks %q:\n%s", want, text)
		}
	}
	out, _, code := h.concierge("logs", id)
	if code != 0 || !strings.Contains(out, "[fake-build] done") {
		t.Fatalf("logs %s = %d\n%s", id, code, out)
	}
}

func TestATriggerNameUsedTwiceMakesTwoJobs(t *testing.T) {
	h := newHome(t)
	// Producers name triggers build-$(date +%s).csv: two in one second
	// share a name once the first has been taken in.
	for i := 1; i <= 2; i++ {
		h.drop("build-1700000000.csv", "type=main,command=build")
		if _, stderr, code := h.concierge("run"); code != 0 {
			t.Fatalf("run %d exit %d:\n%s", i, code, stderr)
		}
	}
	if ends := h.ends(); len(ends) != 2 {
		t.Fatalf("%d builds ran, want 2", len(ends))
	}
}
