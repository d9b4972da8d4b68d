package main

import (
	"context"
	"io"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/tractstack/concierge/notify"
	"github.com/tractstack/concierge/queue"
	"github.com/tractstack/concierge/report"
	"github.com/tractstack/concierge/runner"
)

// reporter keeps the status file (and, when configured, the metrics
// file) in step with the job records. A report that cannot be written is
// logged; it never fails a job.
type reporter struct {
	home   string
	q      *queue.Queue
	status *report.StatusFile
	// metrics is the metrics file; "" when off.
	metrics string
	notify  *notify.Notifier // nil when off
	log     zerolog.Logger
	now     func() time.Time

	mu sync.Mutex // one snapshot and write at a time
}

func newReporter(cfg *Config, q *queue.Queue, log zerolog.Logger) (*reporter, error) {
	n, err := cfg.notifier()
	if err != nil {
		return nil, usageErr("CONCIERGE_NOTIFY: %v", err)
	}
	return &reporter{home: cfg.Home, q: q, log: log.With().Str("component", "report").Logger(), now: time.Now,
		status: report.NewStatusFile(filepath.Join(cfg.DataDir, report.StatusFileName)), metrics: cfg.MetricsFile,
		notify: n}, nil
}

// snapshot is the job records and the live releases now.
func (r *reporter) snapshot() report.Snapshot {
	jobs := r.q.Jobs()
	live, problems := report.ReadLive(r.home, jobs)
	for _, p := range problems {
		r.log.Warn().Err(p).Msg("status and metrics leave out a live release")
	}
	return report.Snapshot{Jobs: jobs, Live: live}
}

// changed rewrites the status file if what it says changed: a job was
// queued, claimed, started or ended a step, or ended.
func (r *reporter) changed() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.writeStatus(r.snapshot())
}

func (r *reporter) writeStatus(s report.Snapshot) {
	if err := r.status.Write(report.BuildStatus(s, r.now())); err != nil {
		r.log.Warn().Err(err).Str("path", r.status.Path()).Msg("status file not updated")
	}
}

// all rewrites the status file and the metrics file.
func (r *reporter) all() {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.snapshot()
	r.writeStatus(s)
	r.writeMetrics(s)
}

func (r *reporter) writeMetrics(s report.Snapshot) {
	if r.metrics == "" {
		return
	}
	if err := report.WriteMetricsFile(r.metrics, s); err != nil {
		r.log.Warn().Err(err).Str("path", r.metrics).Msg("metrics file not updated")
	}
}

// intake reports what an intake did: a rejected trigger counts in the
// metrics and is notified.
func (r *reporter) intake(ctx context.Context, res queue.IntakeResult) {
	switch {
	case len(res.Rejected) > 0:
		r.all()
		for _, j := range r.q.Jobs() {
			if slices.Contains(res.Rejected, j.ID) {
				r.notifyJob(ctx, j)
			}
		}
	case len(res.Created)+len(res.Merged) > 0:
		r.changed()
	}
}

// jobDone reports a job that ended (or went back to pending).
func (r *reporter) jobDone(ctx context.Context, job queue.Job) {
	r.all()
	r.notifyJob(ctx, job)
}

// notifyJob sends the job's notification when it is wanted. A
// notification that cannot be sent (bounded by CONCIERGE_NOTIFY_TIMEOUT,
// never retried) becomes a warning on the job.
func (r *reporter) notifyJob(ctx context.Context, job queue.Job) {
	if !r.notify.Wants(job) {
		return
	}
	title, text := notify.Message(job, r.notify.Host(), report.RolledBack(job))
	errs := r.notify.Send(ctx, title, text)
	log := r.log.With().Str("job_id", job.ID).Logger()
	if len(errs) == 0 {
		log.Info().Msg("notification sent: " + title)
		return
	}
	for _, err := range errs {
		msg := "notification not sent: " + err.Error()
		log.Warn().Msg(msg)
		if uerr := r.q.Update(job.ID, func(j *queue.Job) { j.Warnings = append(j.Warnings, msg) }); uerr != nil {
			log.Error().Err(uerr).Msg("record warning")
		}
	}
}

// gatherer serves the metrics of the records as they are at each scrape.
func (r *reporter) gatherer() prometheus.Gatherer {
	return report.Gatherer(func() report.Snapshot {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.snapshot()
	})
}

// reportingExecutor tells the reporter when a job starts and when each
// of its steps starts and ends, so the status file follows the job
// without the runner or the pipeline knowing of it.
type reportingExecutor struct {
	inner   runner.Executor
	changed func()
}

func (e reportingExecutor) Execute(ctx context.Context, job queue.Job, s runner.Session) error {
	e.changed()
	return e.inner.Execute(ctx, job, reportingSession{Session: s, changed: e.changed})
}

type reportingSession struct {
	runner.Session
	changed func()
}

func (s reportingSession) Step(ctx context.Context, name string, fn func(ctx context.Context, out io.Writer) error) error {
	err := s.Session.Step(ctx, name, func(ctx context.Context, out io.Writer) error {
		s.changed() // the step is recorded as running by now
		return fn(ctx, out)
	})
	s.changed()
	return err
}
