package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tractstack/concierge/queue"
)

// retryCmd queues a failed job again by writing a trigger for it (with
// retry_of naming it), so the retry goes through the normal intake: it
// wakes the path unit or the watcher and merges with a pending job.
func retryCmd(ctx context.Context, a *App, cfg *Config, args []string) error {
	fs, err := parseFlags(a, cfg, "retry", args, nil)
	if err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageErr("retry takes one job id (see: concierge status)")
	}
	id := fs.Arg(0)
	job, err := queue.ReadStore(cfg.DataDir).Get(id)
	if errors.Is(err, queue.ErrNoJob) || errors.Is(err, queue.ErrBadID) {
		return usageErr("%v", err)
	}
	if err != nil {
		return err
	}
	lines, err := retryLines(*job)
	if err != nil {
		return usageErr("%v", err)
	}
	path, err := queue.WriteTrigger(cfg.StateDir(), lines, time.Now())
	if err != nil {
		return err
	}
	fmt.Fprintf(a.Stdout, "queued a retry of job %s (%s %s): %s\n", job.ID, job.Command, job.Target, path)
	return nil
}

// retryLines are the trigger lines that queue job again. Pure.
func retryLines(job queue.Job) ([]string, error) {
	switch job.State {
	case queue.Failed:
	case queue.Rejected:
		return nil, fmt.Errorf("job %s is a rejected trigger (%s); fix the producer and send a new trigger", job.ID, job.Error)
	default:
		return nil, fmt.Errorf("job %s is %s; only a failed job can be retried (to build again: concierge enqueue)", job.ID, job.State)
	}
	typ, site := "main", ""
	if s := queue.Site(job.Target); s != "" {
		typ, site = "dedicated", s
	}
	tenants := job.Tenants
	if len(tenants) == 0 {
		tenants = []string{"default"}
	}
	lines := make([]string, 0, len(tenants))
	for _, t := range tenants {
		lines = append(lines, queue.TriggerLine(typ, t, site, job.Command, job.ID))
	}
	return lines, nil
}
