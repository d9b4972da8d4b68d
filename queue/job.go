package queue

import (
	"strings"
	"time"
)

// State is where a job is in its life.
type State string

// Job states. A job is pending until the runner claims it, running while
// it executes, then succeeded or failed; a trigger that could not be
// accepted becomes a job in state rejected so that status shows it.
const (
	Pending   State = "pending"
	Running   State = "running"
	Succeeded State = "succeeded"
	Failed    State = "failed"
	Rejected  State = "rejected"
)

// Done reports whether the job has reached a final state.
func (s State) Done() bool { return s == Succeeded || s == Failed || s == Rejected }

// Commands a trigger may ask for.
const (
	CommandBuild    = "build"
	CommandRestart  = "restart"
	CommandRollback = "rollback"
)

// MainTarget is the target of the main install (types main, prod, multi).
const MainTarget = "main"

// Site returns the dedicated site a target names, or "" for the main
// install: "dedicated:acme" → "acme".
func Site(target string) string {
	site, ok := strings.CutPrefix(target, "dedicated:")
	if !ok {
		return ""
	}
	return site
}

// Job is one unit of work: a command on a target, made of one or more
// triggers. Its JSON form is what `concierge status --json` prints.
type Job struct {
	ID       string   `json:"id"`
	State    State    `json:"state"`
	Target   string   `json:"target"`
	Command  string   `json:"command"`
	Tenants  []string `json:"tenants"`
	Triggers []string `json:"triggers"`
	// TriggerKeys identify the trigger files themselves (name@inode-
	// mtime-size), so a new trigger that reuses an old name is new.
	TriggerKeys []string   `json:"trigger_keys,omitempty"`
	CreatedAt   time.Time  `json:"created_at"`
	StartedAt   *time.Time `json:"started_at"`
	FinishedAt  *time.Time `json:"finished_at"`
	Error       string     `json:"error"`
	Warnings    []string   `json:"warnings,omitempty"`
	Steps       []Step     `json:"steps"`
	// Notes say what the job decided and why, e.g. whether the builds
	// ran at the same time.
	Notes []string `json:"notes,omitempty"`
	// Attempts counts how often a runner claimed the job; more than one
	// means it was recovered after a crash or a shutdown.
	Attempts int `json:"attempts"`
	// Interrupted counts how often a concierge found the job running
	// after the one running it died; see MaxInterrupted.
	Interrupted int `json:"interrupted,omitempty"`
	// RetryOf names the job a `concierge retry` copied.
	RetryOf string `json:"retry_of,omitempty"`
}

// Step is one recorded step of a job.
type Step struct {
	Name       string     `json:"name"`
	State      State      `json:"state"`
	StartedAt  *time.Time `json:"started_at"`
	FinishedAt *time.Time `json:"finished_at"`
	Error      string     `json:"error"`
	// DurationMS is how long the step took, once it ended.
	DurationMS int64 `json:"duration_ms,omitempty"`
	// Tail is the last lines of a failed step's output.
	Tail []string `json:"tail,omitempty"`
	// PeakMemoryKiB is the largest resident set of any one child
	// process of the step, their own children included (the kernel's
	// rusage maxrss); 0 when the step ran no child.
	PeakMemoryKiB int64 `json:"peak_memory_kib,omitempty"`
	// CPUMS is the CPU time (user + system) of the step's children.
	CPUMS int64 `json:"cpu_ms,omitempty"`
	// Stop, on a restart or reload step, is how the old process stopped.
	Stop *Stop `json:"stop,omitempty"`
}
