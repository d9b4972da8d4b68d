// Package queue owns the trigger format (parse, validate), the durable job
// records on disk, their order, coalescing, claiming, crash recovery and
// the run lock. It knows nothing of git, go, pnpm or systemd.
//
// Locking: a Queue is used by the process that holds the run lock; its
// methods are safe for concurrent use (intake and the runner call it from
// different goroutines) and serialise on one mutex. Every change is
// written to disk before the method returns.
package queue

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/rs/zerolog"

	"github.com/tractstack/concierge/internal/atomicfile"
	"github.com/tractstack/concierge/internal/textsafe"
)

// Config configures a Queue.
type Config struct {
	// DataDir is concierge's own directory (job records, rejected
	// triggers, the lock). It must not be the state directory.
	DataDir string
	// StateDir is where trigger files arrive.
	StateDir string
	// SiteExists tells whether a dedicated site exists.
	SiteExists SiteChecker
	// Keep is how many finished jobs Prune keeps (default 200).
	Keep int
	// Now is the clock (tests set it).
	Now func() time.Time
	Log zerolog.Logger
}

// Queue is the durable, serialised job queue.
type Queue struct {
	mu        sync.Mutex
	cfg       Config
	store     *Store
	jobs      []*Job              // every known job, oldest first
	byTrigger map[string][]string // trigger identity (see identity) → ids of jobs it went into
	entropy   *ulid.MonotonicEntropy
	changed   chan struct{} // closed and replaced when a job becomes pending
	stale     bool          // a write failed; reload from disk before going on
}

// Open loads the records in cfg.DataDir. The caller must hold the run
// lock: Open takes over jobs left running by a dead process and puts them
// back to pending, so they run again, once.
func Open(cfg Config) (*Queue, error) {
	if cfg.Keep <= 0 {
		cfg.Keep = 200
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	st, err := OpenStore(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	q := &Queue{cfg: cfg, store: st, entropy: ulid.Monotonic(rand.Reader, 0), changed: make(chan struct{})}
	if err := q.load(); err != nil {
		return nil, err
	}
	for _, j := range q.jobs {
		if j.State == Running {
			recoverRunning(j, cfg.Now().UTC())
			if err := st.Save(j); err != nil {
				return nil, err
			}
			if j.State == Failed {
				cfg.Log.Error().Str("job_id", j.ID).Str("target", j.Target).Int("interrupted", j.Interrupted).Msg(j.Error)
			} else {
				cfg.Log.Warn().Str("job_id", j.ID).Str("target", j.Target).Int("attempts", j.Attempts).
					Msg("job was running when concierge last stopped; queued to run again")
			}
		}
	}
	return q, nil
}

// freshLocked makes what the queue holds in memory what is on disk again
// after a write failed part way (q.stale): a record that was written lists
// its triggers (so they count as taken in), one that was not leaves its
// triggers to be taken in again. While the records cannot be read the
// queue stays stale and refuses to take in or hand out work, so memory
// never runs ahead of the disk. q.mu must be held.
func (q *Queue) freshLocked() error {
	if !q.stale {
		return nil
	}
	if err := q.load(); err != nil {
		return fmt.Errorf("reload job records after a failed write: %w", err)
	}
	q.stale = false
	for _, j := range q.jobs {
		if j.State == Pending {
			q.signal()
			break
		}
	}
	return nil
}

// load replaces the jobs and the trigger index with the records on disk.
func (q *Queue) load() error {
	jobs, problems, err := q.store.Load()
	if err != nil {
		return err
	}
	for _, p := range problems {
		q.cfg.Log.Warn().Err(p).Msg("unreadable job record left alone")
	}
	q.jobs = jobs
	q.byTrigger = map[string][]string{}
	for _, j := range jobs {
		q.index(j, j.identities()...)
	}
	return nil
}

// Store is the queue's store.
func (q *Queue) Store() *Store { return q.store }

// MaxInterrupted is how many times a job may be found running by a new
// concierge (the one before died, or the host rebooted) before it is
// failed instead of run again: a job that kills concierge every time must
// not loop.
const MaxInterrupted = 3

// recoverRunning decides what becomes of a job a dead process left
// running: pending again, or failed once it was interrupted too often.
func recoverRunning(j *Job, now time.Time) {
	j.Interrupted++
	markInterrupted(j, "interrupted: concierge stopped during this step")
	if j.Interrupted >= MaxInterrupted {
		j.State = Failed
		j.FinishedAt = &now
		j.Error = fmt.Sprintf("interrupted %d times while running (concierge died or the host rebooted each time); "+
			"not run again by itself: see concierge logs %s, then concierge retry %s", j.Interrupted, j.ID, j.ID)
		return
	}
	j.State = Pending
}

// markInterrupted closes the steps an interrupted attempt left open.
func markInterrupted(j *Job, why string) {
	for i := range j.Steps {
		if j.Steps[i].State == Running {
			j.Steps[i].State = Failed
			j.Steps[i].Error = why
		}
	}
}

func (q *Queue) newID() string {
	return ulid.MustNew(ulid.Timestamp(q.cfg.Now()), q.entropy).String()
}

// Incoming is a trigger file as the watcher hands it over: whole and
// settled, or refused unread (Refuse says why: a link, a FIFO, too large).
type Incoming struct {
	Name string
	// Key identifies the file itself (see identity); may be empty.
	Key    string
	Data   []byte
	Refuse string
	// Path is where the file is (its claimed copy in the data directory);
	// empty means StateDir/Name.
	Path string
}

func (q *Queue) pathOf(f Incoming) string {
	if f.Path != "" {
		return f.Path
	}
	return filepath.Join(q.cfg.StateDir, f.Name)
}

// IntakeResult says what an intake did.
type IntakeResult struct {
	Created  []string // new pending job ids
	Merged   []string // ids of pending jobs that absorbed a trigger
	Rejected []string // ids of rejected-trigger records
	Known    int      // triggers already taken in by an earlier, interrupted intake
}

// Intake turns trigger files into job records, in arrival order (see
// SortArrival). Each job record is written durably before its trigger is
// removed, so a crash in between leaves a trigger that the next intake
// recognises and only removes. Rejected triggers are moved aside with
// their reason and recorded as rejected jobs. What goes wrong with one
// trigger (it cannot be set aside or removed) is logged and recorded on
// that trigger's job; the others are taken in all the same. An error here
// is a job record that could not be written (the data directory): triggers
// it did not finish stay where they are, and the queue reloads its records
// from disk, so what it holds in memory never runs ahead of what is on
// disk.
func (q *Queue) Intake(files []Incoming) (res IntakeResult, err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if err := q.freshLocked(); err != nil {
		return res, err
	}
	defer func() {
		if err != nil {
			q.stale = true
			q.freshLocked() //nolint:errcheck // a failed reload keeps it stale for the next call
		}
	}()
	files = slices.Clone(files)
	SortArrival(files, func(f Incoming) string { return f.Name })

	var (
		touched  []*Job // records to write before any trigger goes
		remove   []Incoming
		setAside = map[*Job]Incoming{} // rejected record → its trigger
	)
	touch := func(j *Job) {
		if !slices.Contains(touched, j) {
			touched = append(touched, j)
		}
	}
	now := q.cfg.Now().UTC()
	for _, f := range files {
		id := identity(f.Name, f.Key)
		if ids, ok := q.byTrigger[id]; ok {
			res.Known++
			if j := q.find(ids[0]); j != nil && j.State == Rejected {
				setAside[j] = f
			} else {
				remove = append(remove, f)
			}
			continue
		}
		reqs, warnings, err := q.parse(f)
		for _, w := range warnings {
			q.cfg.Log.Warn().Str("trigger", f.Name).Msg(w)
		}
		if err != nil {
			j := &Job{ID: q.newID(), State: Rejected, Triggers: []string{f.Name}, TriggerKeys: []string{id}, CreatedAt: now,
				FinishedAt: &now, Error: err.Error(), Warnings: warnings, Tenants: []string{}, Steps: []Step{}}
			q.add(j)
			touch(j)
			setAside[j] = f
			res.Rejected = append(res.Rejected, j.ID)
			q.cfg.Log.Error().Str("job_id", j.ID).Str("trigger", f.Name).Str("reason", j.Error).
				Msg("trigger rejected and set aside: " + j.Error)
			continue
		}
		created, merged := assign(q.jobs, f.Name, id, reqs, func(r Request) *Job {
			j := &Job{ID: q.newID(), State: Pending, Target: r.Target(), Command: r.Command,
				CreatedAt: now, Tenants: []string{}, Triggers: []string{}, Steps: []Step{}, RetryOf: r.RetryOf}
			q.jobs = append(q.jobs, j)
			return j
		})
		for _, j := range created {
			q.index(j, id)
			touch(j)
			res.Created = append(res.Created, j.ID)
			q.cfg.Log.Info().Str("job_id", j.ID).Str("target", j.Target).Str("command", j.Command).
				Str("trigger", f.Name).Msgf("queued %s of %s from %s", j.Command, j.Target, f.Name)
		}
		for _, j := range merged {
			q.index(j, id)
			touch(j)
			res.Merged = append(res.Merged, j.ID)
			q.cfg.Log.Info().Str("job_id", j.ID).Str("target", j.Target).Str("command", j.Command).
				Str("trigger", f.Name).Int("triggers", len(j.Triggers)).
				Msgf("merged %s into pending job (%d triggers)", f.Name, len(j.Triggers))
		}
		remove = append(remove, f)
	}
	for _, j := range touched {
		if err := q.store.Save(j); err != nil {
			return res, err
		}
	}
	dirs := map[string]bool{}
	for _, j := range sortedJobs(setAside) {
		f := setAside[j]
		dirs[filepath.Dir(q.pathOf(f))] = true
		if err := q.setAside(f, j); err != nil {
			// This trigger alone: say so on its record and go on.
			q.cfg.Log.Error().Str("job_id", j.ID).Str("trigger", f.Name).Err(err).
				Msg("rejected trigger could not be set aside; it stays where it is")
			note := "not set aside: " + err.Error()
			if !strings.Contains(j.Error, note) {
				j.Error += " (" + note + ")"
				if err := q.store.Save(j); err != nil {
					return res, err
				}
			}
		}
	}
	for _, f := range remove {
		dirs[filepath.Dir(q.pathOf(f))] = true
		if err := os.Remove(q.pathOf(f)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			q.cfg.Log.Error().Str("trigger", f.Name).Err(err).
				Msg("trigger taken in but not removed; it is recognised and not taken in twice")
		}
	}
	for d := range dirs {
		if err := atomicfile.SyncDir(d); err != nil {
			q.cfg.Log.Warn().Err(err).Msg("sync trigger directory")
		}
	}
	if len(res.Created)+len(res.Merged) > 0 {
		q.signal()
	}
	return res, nil
}

func (q *Queue) parse(f Incoming) ([]Request, []string, error) {
	if f.Refuse != "" {
		return nil, nil, &Problem{File: f.Name, Msg: f.Refuse}
	}
	return Parse(f.Name, f.Data, q.cfg.SiteExists)
}

// setAside moves a rejected trigger into <data>/rejected, next to a file
// that states the reason. Rename moves a link or a FIFO itself without
// opening it. The name there keeps at most maxAsideName bytes of the
// trigger's name, so that it fits whatever the trigger was called.
func (q *Queue) setAside(f Incoming, j *Job) error {
	base := AsideName(j.ID, f.Name)
	reason := fmt.Sprintf("trigger: %q\njob: %s\nrejected: %s\nreason: %s\n", f.Name, j.ID,
		j.CreatedAt.UTC().Format(time.RFC3339Nano), j.Error)
	if err := atomicfile.WriteFile(filepath.Join(q.store.RejectedDir(), base+".reason"), []byte(reason), 0o640); err != nil {
		return fmt.Errorf("write rejection reason: %w", err)
	}
	err := os.Rename(q.pathOf(f), filepath.Join(q.store.RejectedDir(), base))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("set aside rejected trigger: %w", err)
	}
	return nil
}

// maxAsideName bounds the part of a trigger's name kept in the name of
// its set-aside copy: with the job id, ".reason" and a temporary suffix
// it stays well within the 255 bytes of a file name.
const maxAsideName = 160

// AsideName is the name a rejected trigger is set aside under:
// <JOB>-<name>, the name cut to maxAsideName bytes.
func AsideName(id, name string) string {
	if len(name) > maxAsideName {
		name = name[:maxAsideName]
	}
	return id + "-" + name
}

// sortedJobs is the keys of m in id order, so set-asides happen in a
// stable order.
func sortedJobs(m map[*Job]Incoming) []*Job {
	out := make([]*Job, 0, len(m))
	for j := range m {
		out = append(out, j)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].ID < out[b].ID })
	return out
}

// assign places one accepted trigger's requests: each merges into the
// newest pending job of its target when that job has the same command,
// and otherwise starts a new job. A running job never absorbs a trigger,
// and a trigger never jumps over a newer pending job of its target: a
// build that arrives after a pending rollback runs after it. It returns
// the jobs it created and those it merged into; it mutates them and
// nothing else.
func assign(jobs []*Job, trigger, id string, reqs []Request, create func(Request) *Job) (created, merged []*Job) {
	for _, r := range reqs {
		var j *Job
		for _, c := range jobs {
			if c.State == Pending && c.Target == r.Target() {
				j = c // the newest pending job of the target wins
			}
		}
		if j != nil && j.Command != r.Command {
			j = nil
		}
		if j == nil {
			j = create(r)
			jobs = append(jobs, j)
			created = append(created, j)
		} else if !slices.Contains(created, j) && !slices.Contains(merged, j) {
			merged = append(merged, j)
		}
		if !slices.Contains(j.Triggers, trigger) {
			j.Triggers = append(j.Triggers, trigger)
		}
		if !slices.Contains(j.TriggerKeys, id) {
			j.TriggerKeys = append(j.TriggerKeys, id)
		}
		if !slices.Contains(j.Tenants, r.Tenant) {
			j.Tenants = append(j.Tenants, r.Tenant)
		}
		if j.RetryOf == "" && r.RetryOf != "" {
			j.RetryOf = r.RetryOf
		}
	}
	return created, merged
}

// Group is the jobs intake would make of one trigger's requests on an
// empty queue (what `concierge plan` shows). Pure.
func Group(trigger string, reqs []Request) []Job {
	created, _ := assign(nil, trigger, trigger, reqs, func(r Request) *Job {
		return &Job{State: Pending, Target: r.Target(), Command: r.Command}
	})
	out := make([]Job, len(created))
	for i, j := range created {
		out[i] = clone(j)
	}
	return out
}

func (q *Queue) add(j *Job) {
	q.jobs = append(q.jobs, j)
	q.index(j, j.identities()...)
}

// identity names one trigger file: its name, and the key of the file
// (inode, modification time, size) when the watcher gave one. Names alone
// repeat: producers name triggers build-$(date +%s).csv, so two triggers
// written in the same second share a name. The key tells the leftover of
// an interrupted intake (the same file) from a new trigger that reuses
// the name.
func identity(name, key string) string {
	if key == "" {
		return name
	}
	return name + "@" + key
}

// identities are the trigger identities a job was made of; records from
// before keys were kept fall back to the names.
func (j *Job) identities() []string {
	if len(j.TriggerKeys) > 0 {
		return j.TriggerKeys
	}
	return j.Triggers
}

func (q *Queue) index(j *Job, triggers ...string) {
	for _, t := range triggers {
		if !slices.Contains(q.byTrigger[t], j.ID) {
			q.byTrigger[t] = append(q.byTrigger[t], j.ID)
		}
	}
}

func (q *Queue) find(id string) *Job {
	for _, j := range q.jobs {
		if j.ID == id {
			return j
		}
	}
	return nil
}

// signal wakes whoever waits in Changed.
func (q *Queue) signal() {
	close(q.changed)
	q.changed = make(chan struct{})
}

// Changed returns a channel that is closed the next time a job becomes
// pending.
func (q *Queue) Changed() <-chan struct{} {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.changed
}

// Claim marks the oldest pending job running and returns a copy of it; ok
// is false when nothing is pending. One job runs at a time: Claim refuses
// while another job is running.
func (q *Queue) Claim() (Job, bool, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if err := q.freshLocked(); err != nil {
		return Job{}, false, err
	}
	var next *Job
	for _, j := range q.jobs {
		if j.State == Running {
			return Job{}, false, nil
		}
		if j.State == Pending && next == nil {
			next = j
		}
	}
	if next == nil {
		return Job{}, false, nil
	}
	now := q.cfg.Now().UTC()
	next.State = Running
	next.StartedAt = &now
	next.FinishedAt = nil
	next.Error = ""
	next.Attempts++
	next.Steps = []Step{}
	if err := q.store.Save(next); err != nil {
		next.State = Pending
		return Job{}, false, err
	}
	return clone(next), true, nil
}

// Pending reports how many jobs wait to run.
func (q *Queue) Pending() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := 0
	for _, j := range q.jobs {
		if j.State == Pending {
			n++
		}
	}
	return n
}

// Update applies fn to the running job id and saves it. Steps and
// warnings are recorded through it.
func (q *Queue) Update(id string, fn func(*Job)) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	j := q.find(id)
	if j == nil {
		return fmt.Errorf("update job %s: %w", id, ErrNoJob)
	}
	fn(j)
	return q.store.Save(j)
}

// Finish ends the running job id: succeeded when runErr is nil, failed
// with its text otherwise.
func (q *Queue) Finish(id string, runErr error) (Job, error) {
	var out Job
	err := q.Update(id, func(j *Job) {
		now := q.cfg.Now().UTC()
		j.FinishedAt = &now
		if runErr == nil {
			j.State = Succeeded
		} else {
			j.State = Failed
			j.Error = textsafe.Redact(runErr.Error())
		}
		markInterrupted(j, "not finished: the job ended first")
		out = clone(j)
	})
	return out, err
}

// Requeue puts the running job id back to pending, for a shutdown that
// cancelled it: it will run again, from the start, at the next start. It
// returns the job as recorded.
func (q *Queue) Requeue(id, why string) (Job, error) {
	var out Job
	err := q.Update(id, func(j *Job) {
		j.State = Pending
		markInterrupted(j, why)
		out = clone(j)
	})
	if err == nil {
		q.mu.Lock()
		q.signal()
		q.mu.Unlock()
	}
	return out, err
}

// Jobs returns copies of every job, oldest first.
func (q *Queue) Jobs() []Job {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := make([]Job, len(q.jobs))
	for i, j := range q.jobs {
		out[i] = clone(j)
	}
	return out
}

// Prune removes the records and output of the oldest finished jobs beyond
// the newest cfg.Keep, so the data directory does not grow without bound.
// Pending and running jobs are never pruned.
func (q *Queue) Prune() (int, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	drop := pruneList(q.jobs, q.cfg.Keep)
	for _, j := range drop {
		if err := q.store.Remove(j.ID); err != nil {
			return 0, err
		}
		for _, t := range j.identities() {
			ids := slices.DeleteFunc(q.byTrigger[t], func(id string) bool { return id == j.ID })
			if len(ids) == 0 {
				delete(q.byTrigger, t)
			} else {
				q.byTrigger[t] = ids
			}
		}
	}
	q.jobs = slices.DeleteFunc(q.jobs, func(j *Job) bool { return slices.Contains(drop, j) })
	return len(drop), nil
}

// pruneList picks the finished jobs to drop so that at most keep finished
// jobs remain, oldest first.
func pruneList(jobs []*Job, keep int) []*Job {
	var done []*Job
	for _, j := range jobs {
		if j.State.Done() {
			done = append(done, j)
		}
	}
	if len(done) <= keep {
		return nil
	}
	return done[:len(done)-keep]
}

func clone(j *Job) Job {
	c := *j
	c.Tenants = slices.Clone(j.Tenants)
	c.Triggers = slices.Clone(j.Triggers)
	c.Warnings = slices.Clone(j.Warnings)
	c.Steps = slices.Clone(j.Steps)
	return c
}

// TriggerLine renders requests as a key=value trigger, one line per
// tenant, as `enqueue` and `retry` write it.
func TriggerLine(typ, tenant, site, command, retryOf string) string {
	parts := []string{"type=" + typ}
	if tenant != "" {
		parts = append(parts, "tenant="+tenant)
	}
	if site != "" {
		parts = append(parts, "site="+site)
	}
	parts = append(parts, "command="+command)
	if retryOf != "" {
		parts = append(parts, "retry_of="+retryOf)
	}
	return strings.Join(parts, ",")
}

// WriteTrigger writes lines as a new trigger file build-<ULID>.csv in
// stateDir, atomically (a temporary name that is not a trigger, then a
// rename), and returns its path.
func WriteTrigger(stateDir string, lines []string, now time.Time) (string, error) {
	id := ulid.MustNew(ulid.Timestamp(now), rand.Reader).String()
	path := filepath.Join(stateDir, "build-"+id+".csv")
	if err := atomicfile.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("write trigger: %w", err)
	}
	return path, nil
}

// IsTriggerName reports whether name is a trigger file name: build-*.csv.
func IsTriggerName(name string) bool {
	return strings.HasPrefix(name, "build-") && strings.HasSuffix(name, ".csv")
}

// ArrivalTime is when a trigger name says it was made: build-<ULID>.csv
// carries milliseconds, build-<unix time>.csv seconds (10 digits or
// fewer), milliseconds (13), microseconds (16) or nanoseconds (19).
func ArrivalTime(name string) (time.Time, bool) {
	s := strings.TrimSuffix(strings.TrimPrefix(name, "build-"), ".csv")
	if ulidPattern.MatchString(s) {
		id, err := ulid.ParseStrict(s)
		if err != nil {
			return time.Time{}, false
		}
		return ulid.Time(id.Time()), true
	}
	if s == "" || strings.Trim(s, "0123456789") != "" {
		return time.Time{}, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	switch {
	case len(s) <= 10:
		return time.Unix(n, 0), true
	case len(s) == 13:
		return time.UnixMilli(n), true
	case len(s) == 16:
		return time.UnixMicro(n), true
	case len(s) == 19:
		return time.Unix(0, n), true
	}
	return time.Time{}, false
}

// SortArrival sorts triggers into arrival order: by the time their names
// carry (see ArrivalTime), then by name. Producers name triggers with a
// ULID or a unix time, and the two do not sort together by name (every
// ULID name sorts before every unix-time name). Names that carry no time
// keep plain name order, before the others.
func SortArrival[T any](items []T, name func(T) string) {
	type keyed struct {
		item T
		name string
		at   time.Time
	}
	// Parse each name once, not at every comparison: a burst is thousands.
	ks := make([]keyed, len(items))
	for i, it := range items {
		ks[i].item, ks[i].name = it, name(it)
		ks[i].at, _ = ArrivalTime(ks[i].name)
	}
	sort.SliceStable(ks, func(a, b int) bool {
		if !ks[a].at.Equal(ks[b].at) {
			return ks[a].at.Before(ks[b].at)
		}
		return ks[a].name < ks[b].name
	})
	for i := range ks {
		items[i] = ks[i].item
	}
}
