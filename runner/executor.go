package runner

import (
	"context"
	"io"

	"github.com/rs/zerolog"

	"github.com/tractstack/concierge/queue"
)

// Executor carries out one job. It returns nil when the job succeeded;
// an error fails the job with that error's text, except that an error
// caused by ctx being cancelled puts the job back to pending (shutdown).
type Executor interface {
	Execute(ctx context.Context, job queue.Job, s Session) error
}

// Session is what an Executor may do to the record of the job it runs.
// All methods are safe for concurrent use, so steps may run in parallel.
type Session interface {
	// Step runs fn as the named step. It records the step's start, end
	// and error on the job record (durably, so status sees it), and hands
	// fn a writer whose lines are logged with job_id and step and kept in
	// the job's output (bounded). The resource use of the child processes
	// that fn's ctx reaches builder.Run with is recorded on the step too.
	// Step returns fn's error.
	Step(ctx context.Context, name string, fn func(ctx context.Context, out io.Writer) error) error
	// Warn records a warning on the job, shown by status, and logs it.
	Warn(msg string)
	// Note records a decision on the job (Job.Notes), shown by status,
	// and logs it.
	Note(msg string)
	// RecordStop records on the job's latest step of that name how the
	// old process of a restarted or reloaded service stopped.
	RecordStop(step string, stop queue.Stop)
	// Log is the job's logger (job_id, target and command fields set).
	Log() *zerolog.Logger
}
