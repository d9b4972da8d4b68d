package queue

import (
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/rs/zerolog"
)

func TestAssign(t *testing.T) {
	req := func(typ, tenant, site, cmd string) Request {
		return Request{Type: typ, Tenant: tenant, Site: site, Command: cmd}
	}
	tests := []struct {
		name        string
		existing    []*Job
		reqs        []Request
		wantCreated int
		wantMerged  []string // ids merged into
	}{
		{"first trigger creates", nil, []Request{req("main", "default", "", "build")}, 1, nil},
		{"merges into pending same target and command",
			[]*Job{{ID: "A", State: Pending, Target: "main", Command: "build"}},
			[]Request{req("prod", "t2x", "", "build")}, 0, []string{"A"}},
		{"running job never absorbs",
			[]*Job{{ID: "A", State: Running, Target: "main", Command: "build"}},
			[]Request{req("main", "default", "", "build")}, 1, nil},
		{"follow-up of a running job absorbs",
			[]*Job{{ID: "A", State: Running, Target: "main", Command: "build"}, {ID: "B", State: Pending, Target: "main", Command: "build"}},
			[]Request{req("main", "default", "", "build")}, 0, []string{"B"}},
		{"other command is another job",
			[]*Job{{ID: "A", State: Pending, Target: "main", Command: "build"}},
			[]Request{req("main", "default", "", "restart")}, 1, nil},
		{"other site is another job",
			[]*Job{{ID: "A", State: Pending, Target: "dedicated:acme", Command: "build"}},
			[]Request{req("dedicated", "default", "bravo", "build")}, 1, nil},
		{"finished jobs are left alone",
			[]*Job{{ID: "A", State: Failed, Target: "main", Command: "build"}, {ID: "B", State: Succeeded, Target: "main", Command: "build"}},
			[]Request{req("main", "default", "", "build")}, 1, nil},
		{"a build after a pending rollback runs after it",
			[]*Job{{ID: "A", State: Pending, Target: "main", Command: "build"}, {ID: "B", State: Pending, Target: "main", Command: "rollback"}},
			[]Request{req("main", "default", "", "build")}, 1, nil},
		{"merges into the newest pending job of the target",
			[]*Job{{ID: "A", State: Pending, Target: "main", Command: "build"}, {ID: "B", State: Pending, Target: "main", Command: "rollback"}, {ID: "C", State: Pending, Target: "main", Command: "build"}},
			[]Request{req("main", "default", "", "build")}, 0, []string{"C"}},
		{"two lines same target make one job", nil,
			[]Request{req("main", "aaa", "", "build"), req("multi", "bbb", "", "build")}, 1, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := 0
			created, merged := assign(tt.existing, "build-9.csv", "build-9.csv", tt.reqs, func(r Request) *Job {
				n++
				return &Job{ID: "new", State: Pending, Target: r.Target(), Command: r.Command}
			})
			if len(created) != tt.wantCreated || n != tt.wantCreated {
				t.Fatalf("created %d jobs, want %d", len(created), tt.wantCreated)
			}
			var ids []string
			for _, j := range merged {
				ids = append(ids, j.ID)
			}
			if !slices.Equal(ids, tt.wantMerged) {
				t.Fatalf("merged into %v, want %v", ids, tt.wantMerged)
			}
			for _, j := range append(created, merged...) {
				if !slices.Contains(j.Triggers, "build-9.csv") {
					t.Errorf("job %s does not list the trigger: %v", j.ID, j.Triggers)
				}
			}
		})
	}
	// Tenants of the main install share one job and are all listed.
	created, _ := assign(nil, "t", "t", []Request{req("main", "aaa", "", "build"), req("prod", "bbb", "", "build"), req("main", "aaa", "", "build")},
		func(r Request) *Job { return &Job{State: Pending, Target: r.Target(), Command: r.Command} })
	if len(created) != 1 || !slices.Equal(created[0].Tenants, []string{"aaa", "bbb"}) {
		t.Fatalf("tenants = %v", created[0].Tenants)
	}
}

func TestPruneList(t *testing.T) {
	jobs := []*Job{{ID: "1", State: Succeeded}, {ID: "2", State: Pending}, {ID: "3", State: Failed}, {ID: "4", State: Rejected}, {ID: "5", State: Running}}
	for _, tt := range []struct {
		keep int
		want []string
	}{{10, nil}, {3, nil}, {2, []string{"1"}}, {1, []string{"1", "3"}}} {
		var got []string
		for _, j := range pruneList(jobs, tt.keep) {
			got = append(got, j.ID)
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("keep %d: dropped %v, want %v", tt.keep, got, tt.want)
		}
	}
}

type fixture struct {
	t     *testing.T
	state string
	data  string
	now   time.Time
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	home := t.TempDir()
	f := &fixture{t: t, state: filepath.Join(home, "state"), data: filepath.Join(home, "concierge"), now: time.Date(2026, 11, 30, 1, 0, 0, 0, time.UTC)}
	if err := os.MkdirAll(f.state, 0o755); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) open() *Queue {
	f.t.Helper()
	q, err := Open(Config{DataDir: f.data, StateDir: f.state, SiteExists: sites("acme"), Keep: 5,
		Now: func() time.Time { f.now = f.now.Add(time.Millisecond); return f.now }, Log: zerolog.Nop()})
	if err != nil {
		f.t.Fatal(err)
	}
	return q
}

// drop writes a trigger file and returns it as the watcher would hand it.
func (f *fixture) drop(name, content string) Incoming {
	f.t.Helper()
	if err := os.WriteFile(filepath.Join(f.state, name), []byte(content), 0o644); err != nil {
		f.t.Fatal(err)
	}
	return Incoming{Name: name, Data: []byte(content)}
}

func (f *fixture) stateFiles() []string {
	f.t.Helper()
	entries, err := os.ReadDir(f.state)
	if err != nil {
		f.t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestIntakeOrderCoalesceAndClaim(t *testing.T) {
	f := newFixture(t)
	q := f.open()
	res, err := q.Intake([]Incoming{
		f.drop("build-3.csv", "type=dedicated,site=acme,command=build"),
		f.drop("build-1.csv", "type=main,tenant=aaa,command=build"),
		f.drop("build-2.csv", "type=prod,tenant=bbb,command=build"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Created) != 2 || len(res.Merged) != 1 {
		t.Fatalf("intake = %+v, want 2 created and 1 merge", res)
	}
	if left := f.stateFiles(); len(left) != 0 {
		t.Fatalf("triggers left in state dir: %v", left)
	}
	job, ok, err := q.Claim()
	if err != nil || !ok {
		t.Fatalf("Claim = %v, %v", ok, err)
	}
	if job.Target != "main" || !slices.Equal(job.Triggers, []string{"build-1.csv", "build-2.csv"}) || !slices.Equal(job.Tenants, []string{"aaa", "bbb"}) {
		t.Fatalf("first job = %+v; want main from build-1 and build-2 (name order)", job)
	}
	if _, ok, _ := q.Claim(); ok {
		t.Fatal("a second job was claimed while one runs")
	}
	// Triggers during the running job make exactly one follow-up.
	for _, n := range []string{"build-4.csv", "build-5.csv", "build-6.csv"} {
		if _, err := q.Intake([]Incoming{f.drop(n, "type=main,command=build")}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := q.Finish(job.ID, nil); err != nil {
		t.Fatal(err)
	}
	var mains []Job
	for _, j := range q.Jobs() {
		if j.Target == "main" {
			mains = append(mains, j)
		}
	}
	if len(mains) != 2 || mains[1].State != Pending || len(mains[1].Triggers) != 3 {
		t.Fatalf("main jobs = %+v; want the finished one and one pending follow-up with 3 triggers", mains)
	}
	next, _, _ := q.Claim()
	if next.Target != "dedicated:acme" {
		t.Fatalf("second claim = %s; want the older dedicated job first", next.Target)
	}
}

func TestIntakeIsIdempotentAcrossACrash(t *testing.T) {
	f := newFixture(t)
	q := f.open()
	in := f.drop("build-1.csv", "type=main,command=build")
	if _, err := q.Intake([]Incoming{in}); err != nil {
		t.Fatal(err)
	}
	// A crash after the record was written but before the trigger was
	// removed leaves the trigger: put it back and start over.
	f.drop("build-1.csv", "type=main,command=build")
	q2 := f.open()
	res, err := q2.Intake([]Incoming{in})
	if err != nil {
		t.Fatal(err)
	}
	if res.Known != 1 || len(res.Created)+len(res.Merged) != 0 || len(q2.Jobs()) != 1 {
		t.Fatalf("second intake = %+v with %d jobs; want the trigger recognised and no new job", res, len(q2.Jobs()))
	}
	if left := f.stateFiles(); len(left) != 0 {
		t.Fatalf("trigger not removed: %v", left)
	}
}

func TestRejectedTriggerIsSetAside(t *testing.T) {
	f := newFixture(t)
	q := f.open()
	res, err := q.Intake([]Incoming{
		f.drop("build-1.csv", "type=dedicated,site=../../etc,command=build"),
		f.drop("build-2.csv", "type=main,command=build"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Rejected) != 1 || len(res.Created) != 1 {
		t.Fatalf("intake = %+v", res)
	}
	jobs := q.Jobs()
	rej := jobs[0]
	if rej.State != Rejected || !strings.Contains(rej.Error, `build-1.csv line 1: site "../../etc" does not match`) {
		t.Fatalf("rejected job = %+v", rej)
	}
	moved := filepath.Join(f.data, "rejected", rej.ID+"-build-1.csv")
	if _, err := os.Stat(moved); err != nil {
		t.Fatalf("trigger not set aside: %v", err)
	}
	reason, err := os.ReadFile(moved + ".reason")
	if err != nil || !strings.Contains(string(reason), "does not match") {
		t.Fatalf("reason file = %q, %v", reason, err)
	}
	if left := f.stateFiles(); len(left) != 0 {
		t.Fatalf("state dir still holds %v", left)
	}
	// The record survives a restart and is shown by a reader.
	jobsOnDisk, _, err := ReadStore(f.data).Load()
	if err != nil || len(jobsOnDisk) != 2 || jobsOnDisk[0].State != Rejected {
		t.Fatalf("store = %+v, %v", jobsOnDisk, err)
	}
}

func TestOpenRequeuesAJobLeftRunning(t *testing.T) {
	f := newFixture(t)
	q := f.open()
	if _, err := q.Intake([]Incoming{f.drop("build-1.csv", "type=main,command=build")}); err != nil {
		t.Fatal(err)
	}
	job, _, _ := q.Claim()
	if err := q.Update(job.ID, func(j *Job) { j.Steps = append(j.Steps, Step{Name: "pull-backend", State: Running}) }); err != nil {
		t.Fatal(err)
	}
	// The process dies here. The next one finds the job running.
	q2 := f.open()
	jobs := q2.Jobs()
	if len(jobs) != 1 || jobs[0].State != Pending || jobs[0].Steps[0].State != Failed {
		t.Fatalf("after restart = %+v; want the job pending with its step closed", jobs)
	}
	again, ok, _ := q2.Claim()
	if !ok || again.ID != job.ID || again.Attempts != 2 || len(again.Steps) != 0 {
		t.Fatalf("re-claim = %+v", again)
	}
}

func TestPruneKeepsNewestFinished(t *testing.T) {
	f := newFixture(t)
	q := f.open()
	for i := 0; i < 8; i++ {
		if _, err := q.Intake([]Incoming{f.drop("build-"+string(rune('a'+i))+".csv", "type=main,command=build")}); err != nil {
			t.Fatal(err)
		}
		j, _, _ := q.Claim()
		if _, err := q.Finish(j.ID, errors.New("x")); err != nil {
			t.Fatal(err)
		}
	}
	n, err := q.Prune()
	if err != nil || n != 3 {
		t.Fatalf("Prune = %d, %v; want 3 of 8 dropped (keep 5)", n, err)
	}
	onDisk, _, _ := ReadStore(f.data).Load()
	if len(onDisk) != 5 {
		t.Fatalf("%d records on disk, want 5", len(onDisk))
	}
}

func TestLockIsExclusive(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock")
	l, err := TryLock(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := TryLock(path); !errors.Is(err, ErrLocked) {
		t.Fatalf("second TryLock = %v, want ErrLocked", err)
	}
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
	l2, err := TryLock(path)
	if err != nil {
		t.Fatalf("TryLock after release = %v", err)
	}
	l2.Release()
}

func TestWriteTrigger(t *testing.T) {
	dir := t.TempDir()
	path, err := WriteTrigger(dir, []string{"type=main,command=build"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if !IsTriggerName(filepath.Base(path)) {
		t.Fatalf("wrote %s, not a trigger name", path)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("dir holds %d entries; the temp file was left", len(entries))
	}
}

func TestANewTriggerMayReuseAName(t *testing.T) {
	f := newFixture(t)
	q := f.open()
	first := f.drop("build-1700000000.csv", "type=main,command=build")
	first.Key = "11-100-23"
	if _, err := q.Intake([]Incoming{first}); err != nil {
		t.Fatal(err)
	}
	job, _, _ := q.Claim()
	q.Finish(job.ID, nil)
	// The same second, a second trigger: same name, another file.
	second := f.drop("build-1700000000.csv", "type=main,command=build")
	second.Key = "12-200-23"
	res, err := q.Intake([]Incoming{second})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Created) != 1 || res.Known != 0 {
		t.Fatalf("intake = %+v; want a new job, not the name mistaken for a leftover", res)
	}
	// A leftover of an interrupted intake is the same file: same key.
	f.drop("build-1700000000.csv", "type=main,command=build")
	again := second
	res, err = f.open().Intake([]Incoming{again})
	if err != nil || res.Known != 1 || len(res.Created)+len(res.Merged) != 0 {
		t.Fatalf("leftover intake = %+v, %v", res, err)
	}
}

func TestArrivalTime(t *testing.T) {
	for _, tt := range []struct {
		name string
		want time.Time
		ok   bool
	}{
		{"build-1700000000.csv", time.Unix(1700000000, 0), true},
		{"build-1700000000123.csv", time.UnixMilli(1700000000123), true},
		{"build-1700000000123456789.csv", time.Unix(0, 1700000000123456789), true},
		{"build-01ARZ3NDEKTSV4RRFFQ69G5FAV.csv", time.UnixMilli(1469922850259), true},
		{"build-7.csv", time.Unix(7, 0), true},
		{"build-abc.csv", time.Time{}, false},
		{"build-.csv", time.Time{}, false},
		{"build-12345678901.csv", time.Time{}, false},
	} {
		got, ok := ArrivalTime(tt.name)
		if ok != tt.ok || !got.Equal(tt.want) {
			t.Errorf("ArrivalTime(%q) = %v, %v; want %v, %v", tt.name, got, ok, tt.want, tt.ok)
		}
	}
}

func TestSortArrivalMixesULIDAndUnixNames(t *testing.T) {
	at := time.Unix(1764464000, 0)
	ulidAt := func(d time.Duration) string {
		return "build-" + ulid.MustNew(ulid.Timestamp(at.Add(d)), rand.Reader).String() + ".csv"
	}
	names := []string{
		"build-1764464002.csv",  // a producer, two seconds in
		ulidAt(3 * time.Second), // enqueue, three seconds in
		ulidAt(1 * time.Second),
		"build-1764464000.csv",
		"build-999.csv", // fewer digits is still earlier
	}
	SortArrival(names, func(s string) string { return s })
	if names[0] != "build-999.csv" || names[1] != "build-1764464000.csv" || !strings.HasPrefix(names[2], "build-01") ||
		names[3] != "build-1764464002.csv" || !strings.HasPrefix(names[4], "build-01") {
		t.Fatalf("order = %v; want by the time each name carries", names)
	}
}

func TestAFailedWriteLeavesTheTriggerAndNothingInMemory(t *testing.T) {
	f := newFixture(t)
	q := f.open()
	jobs := filepath.Join(f.data, "jobs")
	// Make the jobs directory unusable: a file where it should be.
	if err := os.Rename(jobs, jobs+".away"); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(jobs, nil, 0o644)
	in := f.drop("build-1.csv", "type=main,command=build")
	if _, err := q.Intake([]Incoming{in}); err == nil {
		t.Fatal("intake succeeded without a jobs directory")
	}
	if left := f.stateFiles(); len(left) != 1 {
		t.Fatalf("the trigger went: %v", left)
	}
	if _, ok, err := q.Claim(); ok || err == nil {
		t.Fatalf("Claim = %v, %v; want a refusal while the records cannot be read", ok, err)
	}
	// The disk recovers: the trigger is taken in once and wakes the runner.
	os.Remove(jobs)
	os.Rename(jobs+".away", jobs)
	changed := q.Changed()
	res, err := q.Intake([]Incoming{in})
	if err != nil || len(res.Created) != 1 || res.Known != 0 {
		t.Fatalf("intake after recovery = %+v, %v", res, err)
	}
	select {
	case <-changed:
	default:
		t.Fatal("the runner was not woken")
	}
	if n := len(q.Jobs()); n != 1 {
		t.Fatalf("%d jobs, want 1", n)
	}
}

func TestAJobThatKeepsKillingConciergeFails(t *testing.T) {
	f := newFixture(t)
	q := f.open()
	if _, err := q.Intake([]Incoming{f.drop("build-1.csv", "type=main,command=build")}); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= MaxInterrupted; i++ {
		if _, ok, _ := q.Claim(); !ok {
			t.Fatalf("attempt %d: nothing to claim", i)
		}
		q = f.open() // the process died; a new one starts
	}
	j := q.Jobs()[0]
	if j.State != Failed || j.Interrupted != MaxInterrupted || !strings.Contains(j.Error, "concierge retry "+j.ID) {
		t.Fatalf("job = %+v", j)
	}
}

func TestPruneRemovesSetAsideTriggers(t *testing.T) {
	f := newFixture(t)
	q := f.open()
	if _, err := q.Intake([]Incoming{f.drop("build-1.csv", "type=nope")}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 6; i++ {
		if _, err := q.Intake([]Incoming{f.drop(fmt.Sprintf("build-%d.csv", 10+i), "type=main,command=build")}); err != nil {
			t.Fatal(err)
		}
		j, _, _ := q.Claim()
		q.Finish(j.ID, nil)
	}
	if _, err := q.Prune(); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(filepath.Join(f.data, "rejected")); len(entries) != 0 {
		t.Fatalf("rejected dir still holds %d entries after its job was pruned", len(entries))
	}
}

func TestGroupIsWhatIntakeMakes(t *testing.T) {
	reqs, _, err := Parse("build-1.csv", []byte("type=main,tenant=aaa,command=build\ntype=main,command=rollback\ntype=prod,tenant=bbb,command=build\n"), sites())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, j := range Group("build-1.csv", reqs) {
		got = append(got, j.Command+" "+j.Target+" "+strings.Join(j.Tenants, ","))
	}
	// The second build comes after the rollback, so it does not join the
	// first build: the same three jobs intake makes.
	want := []string{"build main aaa", "rollback main default", "build main bbb"}
	if !slices.Equal(got, want) {
		t.Fatalf("Group = %q, want %q", got, want)
	}
	f := newFixture(t)
	q := f.open()
	if _, err := q.Intake([]Incoming{f.drop("build-1.csv", "type=main,tenant=aaa,command=build\ntype=main,command=rollback\ntype=prod,tenant=bbb,command=build\n")}); err != nil {
		t.Fatal(err)
	}
	if n := len(q.Jobs()); n != len(want) {
		t.Fatalf("intake made %d jobs, Group %d", n, len(want))
	}
}

func TestATriggerThatCannotBeSetAsideIsRecordedAndTheOthersGoOn(t *testing.T) {
	f := newFixture(t)
	q := f.open()
	rejected := filepath.Join(f.data, "rejected")
	// The rejected directory is unusable: a file where it should be.
	if err := os.Remove(rejected); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(rejected, nil, 0o644)
	res, err := q.Intake([]Incoming{
		f.drop("build-1.csv", "type=nope"),
		f.drop("build-2.csv", "type=main,command=build"),
	})
	if err != nil {
		t.Fatalf("intake stopped at one trigger: %v", err)
	}
	if len(res.Rejected) != 1 || len(res.Created) != 1 {
		t.Fatalf("intake = %+v; want one rejected and one job", res)
	}
	jobs, _, _ := ReadStore(f.data).Load()
	if len(jobs) != 2 || jobs[0].State != Rejected || !strings.Contains(jobs[0].Error, "not set aside: write rejection reason") {
		t.Fatalf("records = %+v; want the rejected one to say it was not set aside", jobs)
	}
	if left := f.stateFiles(); !slices.Equal(left, []string{"build-1.csv"}) {
		t.Fatalf("state dir holds %v; want only the trigger that could not be set aside", left)
	}
	// Taken in again later, it is recognised, and set aside once it can be.
	os.Remove(rejected)
	os.Mkdir(rejected, 0o750)
	res, err = q.Intake([]Incoming{{Name: "build-1.csv", Data: []byte("type=nope")}})
	if err != nil || res.Known != 1 || len(res.Rejected) != 0 {
		t.Fatalf("second intake = %+v, %v", res, err)
	}
	if entries, _ := os.ReadDir(rejected); len(entries) != 2 {
		t.Fatalf("rejected dir holds %d entries; want the trigger and its reason", len(entries))
	}
}

func TestPruneRemovesASetAsideDirectory(t *testing.T) {
	f := newFixture(t)
	q := f.open()
	os.MkdirAll(filepath.Join(f.state, "build-1.csv", "sub"), 0o755)
	os.WriteFile(filepath.Join(f.state, "build-1.csv", "sub", "x"), nil, 0o644)
	if _, err := q.Intake([]Incoming{{Name: "build-1.csv", Refuse: "is a directory"}}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 6; i++ {
		if _, err := q.Intake([]Incoming{f.drop(fmt.Sprintf("build-%d.csv", 10+i), "type=main,command=build")}); err != nil {
			t.Fatal(err)
		}
		j, _, _ := q.Claim()
		q.Finish(j.ID, nil)
		if _, err := q.Prune(); err != nil {
			t.Fatalf("prune %d: %v", i, err)
		}
	}
	if entries, _ := os.ReadDir(filepath.Join(f.data, "rejected")); len(entries) != 0 {
		t.Fatalf("rejected dir still holds %d entries after its job was pruned", len(entries))
	}
}
