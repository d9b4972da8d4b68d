// Package report tells the operator what concierge does without being
// asked: the status file (<data>/status.json) that a site or a script
// reads to show "a build is running", and the Prometheus metrics (a
// node_exporter textfile, or a loopback HTTP endpoint). Both are pure
// functions of a Snapshot of the job records and the live releases, so
// what they say always matches `concierge status`; writing them is a thin
// wrapper over internal/atomicfile.
package report

import (
	"sort"
	"time"

	"github.com/tractstack/concierge/deploy"
	"github.com/tractstack/concierge/pipeline"
	"github.com/tractstack/concierge/queue"
)

// Snapshot is what the reports are made of: every kept job record,
// oldest first (queue.Queue.Jobs), and the live release of each target
// that has one recorded (deploy.Current).
type Snapshot struct {
	Jobs []queue.Job
	Live map[string]deploy.Release
}

// How a finished job ended, as the status file and the metrics name it.
const (
	ResultSucceeded  = "succeeded"
	ResultFailed     = "failed"
	ResultRolledBack = "rolled-back"
	ResultRejected   = "rejected"
)

// Result is how a finished job ended: rolled-back when its rollback step
// succeeded (a build whose new release failed its checks and was taken
// back, or the rollback command), else its state. "" for a job that has
// not ended.
func Result(j queue.Job) string {
	if !j.State.Done() {
		return ""
	}
	if j.State != queue.Rejected && RolledBack(j) {
		return ResultRolledBack
	}
	return string(j.State)
}

// RolledBack reports whether the job took a release back: its rollback
// step succeeded.
func RolledBack(j queue.Job) bool {
	for _, s := range j.Steps {
		if s.Name == pipeline.StepRollback && s.State == queue.Succeeded {
			return true
		}
	}
	return false
}

// targets are the targets the snapshot knows: those of its jobs and
// those with a live release, sorted.
func (s Snapshot) targets() []string {
	seen := map[string]bool{}
	for _, j := range s.Jobs {
		if j.Target != "" {
			seen[j.Target] = true
		}
	}
	for t := range s.Live {
		seen[t] = true
	}
	out := make([]string, 0, len(seen))
	for t := range seen {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// lastFinished is the job of target (any target when "") that finished
// last and was not rejected, and whether there is one; ok also requires
// the job to satisfy keep when keep is set.
func (s Snapshot) lastFinished(target string, keep func(queue.Job) bool) (queue.Job, bool) {
	var best queue.Job
	var at time.Time
	found := false
	for _, j := range s.Jobs {
		if !j.State.Done() || j.State == queue.Rejected || j.FinishedAt == nil {
			continue
		}
		if target != "" && j.Target != target {
			continue
		}
		if keep != nil && !keep(j) {
			continue
		}
		// Records are oldest first by id; a later one wins a tie.
		if !found || !j.FinishedAt.Before(at) {
			best, at, found = j, *j.FinishedAt, true
		}
	}
	return best, found
}
