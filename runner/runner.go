// Package runner runs queued jobs one at a time through an Executor and
// records what they do: each step's start, end and error on the job
// record, and each line of step output in the log and in the job's output
// file, bounded in size.
package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/tractstack/concierge/internal/rusage"
	"github.com/tractstack/concierge/queue"
)

// Config configures a Runner.
type Config struct {
	Queue    *queue.Queue
	Executor Executor
	Log      zerolog.Logger
	// OutputLimit bounds what one job's output file keeps (default 4 MiB);
	// past it, only each step's last lines are kept.
	OutputLimit int64
	// TailLines is how many last lines of a failed step the record keeps
	// (default 30).
	TailLines int
	// OnStatus, when set, hears a one-line summary of what runs now (the
	// systemd STATUS= text).
	OnStatus func(string)
	Now      func() time.Time
}

// Runner claims and runs jobs. It is driven by one goroutine at a time.
type Runner struct {
	cfg Config
}

// New returns a Runner.
func New(cfg Config) *Runner {
	if cfg.OutputLimit <= 0 {
		cfg.OutputLimit = 4 << 20
	}
	if cfg.TailLines <= 0 {
		cfg.TailLines = 30
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Runner{cfg: cfg}
}

// ErrInterrupted marks a job put back to pending because ctx ended.
var ErrInterrupted = errors.New("interrupted; the job is pending again")

// RunNext claims the oldest pending job and runs it to its end. ran is
// false when nothing was pending. The returned job is its final record.
// When ctx ends mid-job, the job goes back to pending and the error wraps
// ErrInterrupted. Other errors are failures to record (the data
// directory), not job failures: a failed job is a nil error and a job in
// state failed.
func (r *Runner) RunNext(ctx context.Context) (job queue.Job, ran bool, err error) {
	q := r.cfg.Queue
	job, ok, err := q.Claim()
	if err != nil || !ok {
		return job, false, err
	}
	log := r.cfg.Log.With().Str("job_id", job.ID).Str("target", job.Target).Str("command", job.Command).Logger()
	out, err := os.OpenFile(q.Store().OutputPath(job.ID), os.O_WRONLY|os.O_CREATE|os.O_APPEND, queue.OutputMode)
	if err != nil {
		_, _ = q.Requeue(job.ID, "could not open the output file")
		return job, true, fmt.Errorf("open job output: %w", err)
	}
	defer out.Close()
	s := &session{r: r, job: job, log: log, out: out}
	if st, err := out.Stat(); err == nil {
		s.written = st.Size()
	}
	if job.Attempts > 1 {
		s.writeLine("concierge", fmt.Sprintf("--- attempt %d ---", job.Attempts))
	}
	log.Info().Strs("tenants", job.Tenants).Strs("triggers", job.Triggers).Int("attempt", job.Attempts).
		Msgf("job started: %s %s", job.Command, job.Target)
	r.status(fmt.Sprintf("job %s: %s %s", job.ID, job.Command, job.Target))
	start := r.cfg.Now()

	runErr := r.execute(ctx, job, s)
	dur := r.cfg.Now().Sub(start)
	defer r.status("idle")
	if runErr != nil && ctx.Err() != nil {
		final, err := q.Requeue(job.ID, "interrupted by shutdown; will run again")
		if err != nil {
			return job, true, err
		}
		log.Warn().Int64("duration_ms", dur.Milliseconds()).Msg("job interrupted by shutdown; it is pending again and runs at the next start")
		return final, true, fmt.Errorf("run job %s: %w", job.ID, ErrInterrupted)
	}
	final, err := q.Finish(job.ID, runErr)
	if err != nil {
		return job, true, err
	}
	if runErr != nil {
		log.Error().Int64("duration_ms", dur.Milliseconds()).Str("error", runErr.Error()).
			Msgf("job failed after %s: %s", round(dur), runErr)
	} else {
		log.Info().Int64("duration_ms", dur.Milliseconds()).Msgf("job succeeded in %s", round(dur))
	}
	return final, true, nil
}

// execute runs the executor, turning a panic into a job failure so one
// bad job cannot stop the queue.
func (r *Runner) execute(ctx context.Context, job queue.Job, s *session) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("internal error (panic): %v", p)
		}
	}()
	return r.cfg.Executor.Execute(ctx, job, s)
}

func (r *Runner) status(msg string) {
	if r.cfg.OnStatus != nil {
		r.cfg.OnStatus(msg)
	}
}

// MiB formats a size in KiB as MiB, for people.
func MiB(kib int64) string { return fmt.Sprintf("%.0f MiB", float64(kib)/1024) }

func round(d time.Duration) time.Duration {
	if d > time.Second {
		return d.Round(100 * time.Millisecond)
	}
	return d.Round(time.Millisecond)
}

// session is the Session of one running job.
type session struct {
	r   *Runner
	job queue.Job
	log zerolog.Logger

	mu      sync.Mutex // guards out and written
	out     *os.File
	written int64
}

var _ Session = (*session)(nil)

func (s *session) Log() *zerolog.Logger { return &s.log }

func (s *session) Warn(msg string) {
	s.log.Warn().Msg(msg)
	s.writeLine("warning", msg)
	if err := s.r.cfg.Queue.Update(s.job.ID, func(j *queue.Job) { j.Warnings = append(j.Warnings, msg) }); err != nil {
		s.log.Error().Err(err).Msg("record warning")
	}
}

func (s *session) Note(msg string) {
	s.log.Info().Msg(msg)
	s.writeLine("note", msg)
	if err := s.r.cfg.Queue.Update(s.job.ID, func(j *queue.Job) { j.Notes = append(j.Notes, msg) }); err != nil {
		s.log.Error().Err(err).Msg("record note")
	}
}

func (s *session) RecordStop(step string, stop queue.Stop) {
	if err := s.r.cfg.Queue.Update(s.job.ID, func(j *queue.Job) {
		for i := len(j.Steps) - 1; i >= 0; i-- {
			if j.Steps[i].Name == step {
				j.Steps[i].Stop = &stop
				return
			}
		}
	}); err != nil {
		s.log.Error().Err(err).Str("step", step).Msg("record stop")
	}
}

func (s *session) Step(ctx context.Context, name string, fn func(ctx context.Context, out io.Writer) error) error {
	q := s.r.cfg.Queue
	start := s.r.cfg.Now().UTC()
	var idx int
	if err := q.Update(s.job.ID, func(j *queue.Job) {
		idx = len(j.Steps)
		j.Steps = append(j.Steps, queue.Step{Name: name, State: queue.Running, StartedAt: &start})
	}); err != nil {
		return fmt.Errorf("record step %s: %w", name, err)
	}
	log := s.log.With().Str("step", name).Logger()
	log.Info().Msgf("step %s started", name)
	w := newLineWriter(s, name, log, s.r.cfg.TailLines)
	mctx, meter := rusage.WithMeter(ctx)
	err := fn(mctx, w)
	w.Flush()
	usage, measured := meter.Usage()
	end := s.r.cfg.Now().UTC()
	dur := end.Sub(start)
	if uerr := q.Update(s.job.ID, func(j *queue.Job) {
		st := &j.Steps[idx]
		st.FinishedAt = &end
		st.DurationMS = dur.Milliseconds()
		if measured {
			st.PeakMemoryKiB = usage.MaxRSSKiB
			st.CPUMS = usage.CPU.Milliseconds()
		}
		if err != nil {
			st.State = queue.Failed
			st.Error = err.Error()
			st.Tail = w.Tail()
		} else {
			st.State = queue.Succeeded
		}
	}); uerr != nil {
		log.Error().Err(uerr).Msg("record step end")
	}
	ev, what := log.Info(), fmt.Sprintf("step %s done in %s", name, round(dur))
	if err != nil {
		ev, what = log.Error().Str("error", err.Error()), fmt.Sprintf("step %s failed after %s: %s", name, round(dur), err)
	}
	if measured {
		ev = ev.Int64("peak_memory_kib", usage.MaxRSSKiB).Int64("cpu_ms", usage.CPU.Milliseconds())
		what += fmt.Sprintf(" (children: peak memory %s, CPU %s)", MiB(usage.MaxRSSKiB), round(usage.CPU))
	}
	ev.Int64("duration_ms", dur.Milliseconds()).Msg(what)
	return err
}

// writeLine appends one line to the job's output file unless the file
// has reached its limit; it reports whether the line was kept.
func (s *session) writeLine(step, line string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.written >= s.r.cfg.OutputLimit {
		return false
	}
	rec := fmt.Sprintf("%s [%s] %s\n", s.r.cfg.Now().UTC().Format(time.RFC3339Nano), step, line)
	n, err := s.out.WriteString(rec)
	s.written += int64(n)
	if err != nil {
		s.log.Error().Err(err).Msg("write job output")
		return false
	}
	return true
}
