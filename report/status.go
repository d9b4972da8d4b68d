package report

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/tractstack/concierge/internal/atomicfile"
	"github.com/tractstack/concierge/pipeline"
	"github.com/tractstack/concierge/queue"
)

// StatusFileName is the status file's name in the data directory.
const StatusFileName = "status.json"

// StatusSchema is the version of the status file's layout; it changes
// only when a field changes meaning or goes away.
const StatusSchema = 1

// States of the status file.
const (
	StateIdle       = "idle"        // nothing runs or waits; the last job succeeded (or there was none)
	StateQueued     = "queued"      // jobs wait; none runs
	StateBuilding   = "building"    // a build job pulls and builds; nothing live has changed yet
	StateDeploying  = "deploying"   // a job swaps, restarts, checks or rolls back
	StateFailed     = "failed"      // nothing runs or waits; the last job failed
	StateRolledBack = "rolled-back" // nothing runs or waits; the last job took a release back
)

// Status is the content of <data>/status.json. See README "Status file".
type Status struct {
	Schema    int       `json:"schema"`
	State     string    `json:"state"`
	UpdatedAt time.Time `json:"updated_at"`
	// Job is the running job (building, deploying), the next one to run
	// (queued) or the last one that finished (idle, failed, rolled-back);
	// null when there has been none.
	Job *JobInfo `json:"job"`
	// Pending counts the jobs waiting to run.
	Pending int `json:"pending"`
	// Targets holds, per target ("main", "dedicated:<site>"), the last
	// finished job and the live release.
	Targets map[string]TargetStatus `json:"targets"`
}

// JobInfo is one job as the status file shows it.
type JobInfo struct {
	ID      string   `json:"id"`
	Target  string   `json:"target"`
	Command string   `json:"command"`
	Tenants []string `json:"tenants"`
	// Step is the step that started last among those running ("" before
	// the first step and once the job has ended).
	Step       string     `json:"step"`
	StartedAt  *time.Time `json:"started_at"`
	FinishedAt *time.Time `json:"finished_at"`
	// Result is how the job ended (succeeded, failed, rolled-back); ""
	// while it has not.
	Result string `json:"result"`
	Error  string `json:"error"`
}

// TargetStatus is what the status file says of one target.
type TargetStatus struct {
	// LastResult is the target's last finished job; null when none is kept.
	LastResult *JobInfo `json:"last_result"`
	// Live is the release that is live; null until concierge deployed one.
	Live *LiveRelease `json:"live"`
}

// LiveRelease is the live release of a target.
type LiveRelease struct {
	Release        string    `json:"release"`
	BackendCommit  string    `json:"backend_commit"`
	FrontendCommit string    `json:"frontend_commit"`
	LiveAt         time.Time `json:"live_at"`
	// Verified is false from the swap until the release passed its checks.
	Verified bool `json:"verified"`
}

// BuildStatus derives the status from a snapshot. Pure.
func BuildStatus(s Snapshot, now time.Time) Status {
	st := Status{Schema: StatusSchema, UpdatedAt: now.UTC(), Targets: map[string]TargetStatus{}}
	var running, next *queue.Job
	for i := range s.Jobs {
		j := &s.Jobs[i]
		switch j.State {
		case queue.Running:
			running = j
		case queue.Pending:
			st.Pending++
			if next == nil {
				next = j
			}
		}
	}
	switch {
	case running != nil:
		st.Job = jobInfo(*running)
		st.State = StateDeploying
		if building(*running) {
			st.State = StateBuilding
		}
	case next != nil:
		st.Job = jobInfo(*next)
		st.State = StateQueued
	default:
		st.State = StateIdle
		if last, ok := s.lastFinished("", nil); ok {
			st.Job = jobInfo(last)
			switch Result(last) {
			case ResultFailed:
				st.State = StateFailed
			case ResultRolledBack:
				st.State = StateRolledBack
			}
		}
	}
	for _, t := range s.targets() {
		var ts TargetStatus
		if last, ok := s.lastFinished(t, nil); ok {
			ts.LastResult = jobInfo(last)
		}
		if r, ok := s.Live[t]; ok {
			ts.Live = &LiveRelease{Release: r.ID, BackendCommit: r.Backend, FrontendCommit: r.Frontend,
				LiveAt: r.LiveAt.UTC(), Verified: !r.Unverified}
		}
		st.Targets[t] = ts
	}
	return st
}

// building reports whether a running job has not changed anything live
// yet: a build job before its swap step.
func building(j queue.Job) bool {
	if j.Command != queue.CommandBuild {
		return false
	}
	return !slices.ContainsFunc(j.Steps, func(s queue.Step) bool { return s.Name == pipeline.StepSwap })
}

func jobInfo(j queue.Job) *JobInfo {
	info := &JobInfo{ID: j.ID, Target: j.Target, Command: j.Command, Tenants: slices.Clone(j.Tenants),
		StartedAt: j.StartedAt, FinishedAt: j.FinishedAt, Result: Result(j), Error: j.Error}
	if info.Tenants == nil {
		info.Tenants = []string{}
	}
	if j.State == queue.Running {
		var at time.Time
		for _, s := range j.Steps {
			if s.State == queue.Running && s.StartedAt != nil && !s.StartedAt.Before(at) {
				info.Step, at = s.Name, *s.StartedAt
			}
		}
	}
	if j.State == queue.Pending {
		info.StartedAt = nil // a requeued job's start belongs to its last attempt
	}
	return info
}

// StatusFile writes the status file, atomically and only when what it
// says changed. Safe for concurrent use.
type StatusFile struct {
	path string

	mu   sync.Mutex
	last []byte // the last status written, without updated_at
}

// NewStatusFile returns a writer of the status file at path.
func NewStatusFile(path string) *StatusFile { return &StatusFile{path: path} }

// Path is where the file is written.
func (f *StatusFile) Path() string { return f.path }

// Write writes st (mode 0644: world-readable) unless it says what the
// file already says, updated_at aside.
func (f *StatusFile) Write(st Status) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	key := st
	key.UpdatedAt = time.Time{}
	k, err := json.Marshal(key)
	if err != nil {
		return fmt.Errorf("encode status: %w", err)
	}
	if bytes.Equal(k, f.last) {
		return nil
	}
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("encode status: %w", err)
	}
	if err := atomicfile.WriteFile(f.path, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("write status file: %w", err)
	}
	f.last = k
	return nil
}
