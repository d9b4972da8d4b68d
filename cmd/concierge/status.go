package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tractstack/concierge/internal/textsafe"
	"github.com/tractstack/concierge/queue"
	"github.com/tractstack/concierge/runner"
)

// statusCmd shows the jobs. It reads the records without the run lock, so
// it works while another concierge runs; records are written atomically,
// so it never sees half of one.
func statusCmd(ctx context.Context, a *App, cfg *Config, args []string) error {
	var asJSON bool
	var recent int
	_, err := parseFlags(a, cfg, "status", args, func(fs *flag.FlagSet) {
		fs.BoolVar(&asJSON, "json", false, "print {\"jobs\":[...]} oldest first")
		fs.IntVar(&recent, "recent", 10, "how many finished jobs the table shows")
	})
	if err != nil {
		return err
	}
	jobs, problems, err := queue.ReadStore(cfg.DataDir).Load()
	if err != nil {
		return err
	}
	for _, p := range problems {
		fmt.Fprintln(a.Stderr, "concierge: warning:", p)
	}
	if asJSON {
		list := make([]*queue.Job, 0, len(jobs))
		list = append(list, jobs...)
		enc := json.NewEncoder(a.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(map[string]any{"jobs": list})
	}
	writeStatus(a.Stdout, jobs, recent, time.Now(), orphaned(cfg, jobs))
	writeIgnored(a.Stdout, cfg.StateDir())
	return nil
}

// writeIgnored lists the .csv files in state/ that are not triggers, with
// the name concierge expects.
func writeIgnored(w io.Writer, stateDir string) {
	names, err := queue.IgnoredFiles(stateDir)
	if err != nil {
		return
	}
	for _, n := range names {
		fmt.Fprintf(w, "IGNORED  %s\n", textsafe.Escape(queue.IgnoredWhy(n)))
	}
}

// writeStatus prints the readable status: the running job with its step
// and elapsed time, the pending jobs, and the recent results with the
// tail of a failed step's output.
func writeStatus(w io.Writer, jobs []*queue.Job, recent int, now time.Time, orphaned bool) {
	var running, pending, done []*queue.Job
	// What records hold came partly from outside (trigger names, errors,
	// build output): escape it so it cannot drive the terminal.
	e := textsafe.Escape
	for _, j := range jobs {
		switch j.State {
		case queue.Running:
			running = append(running, j)
		case queue.Pending:
			pending = append(pending, j)
		default:
			done = append(done, j)
		}
	}
	if len(jobs) == 0 {
		fmt.Fprintln(w, "no jobs yet")
		return
	}
	for _, j := range running {
		step, since := "starting", j.StartedAt
		for _, s := range j.Steps {
			if s.State == queue.Running {
				step, since = s.Name, s.StartedAt
			}
		}
		if orphaned {
			fmt.Fprintf(w, "STOPPED  %s  %s %s  at step %s: no concierge is running it (it died or was killed); "+
				"it runs again at the next start, e.g. concierge run\n", j.ID, e(j.Command), e(j.Target), e(step))
			continue
		}
		fmt.Fprintf(w, "RUNNING  %s  %s %s  step %s for %s  (job %s)\n", j.ID, e(j.Command), e(j.Target), e(step),
			elapsed(since, now), elapsed(j.StartedAt, now))
		for _, n := range j.Notes {
			fmt.Fprintf(w, "  %s\n", n)
		}
	}
	if len(running) == 0 {
		fmt.Fprintln(w, "RUNNING  none")
	}
	fmt.Fprintf(w, "PENDING  %d\n", len(pending))
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	for _, j := range pending {
		fmt.Fprintf(tw, "  %s\t%s %s\ttenants %s\t%d trigger(s)\tsince %s\n", j.ID, e(j.Command), e(j.Target),
			e(strings.Join(j.Tenants, ",")), len(j.Triggers), j.CreatedAt.Local().Format("2006-01-02 15:04:05"))
	}
	tw.Flush()
	if len(done) > recent {
		done = done[len(done)-recent:]
	}
	fmt.Fprintf(w, "RECENT   %d shown\n", len(done))
	tw = tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	for _, j := range done {
		when := ""
		if j.FinishedAt != nil {
			when = j.FinishedAt.Local().Format("2006-01-02 15:04:05")
		}
		took := ""
		if j.StartedAt != nil && j.FinishedAt != nil {
			took = j.FinishedAt.Sub(*j.StartedAt).Round(100 * time.Millisecond).String()
		}
		what := strings.TrimSpace(j.Command + " " + j.Target)
		if what == "" {
			what = strings.Join(j.Triggers, ",")
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\n", j.ID, strings.ToUpper(string(j.State)), e(what), when, took, peakMemory(j))
	}
	tw.Flush()
	for _, j := range done {
		if j.State == queue.Succeeded && len(j.Warnings) == 0 {
			writeStops(w, j)
			continue
		}
		if j.Error != "" {
			fmt.Fprintf(w, "\n%s %s: %s\n", j.ID, j.State, e(textsafe.Redact(j.Error)))
		}
		for _, warn := range j.Warnings {
			fmt.Fprintf(w, "%s warning: %s\n", j.ID, e(textsafe.Redact(warn)))
		}
		for _, n := range j.Notes {
			fmt.Fprintf(w, "%s note: %s\n", j.ID, n)
		}
		writeStops(w, j)
		for _, s := range j.Steps {
			if s.State != queue.Failed || len(s.Tail) == 0 {
				continue
			}
			tail := s.Tail
			if len(tail) > 10 {
				tail = tail[len(tail)-10:]
			}
			fmt.Fprintf(w, "  last output of step %s:\n", e(s.Name))
			for _, l := range tail {
				fmt.Fprintf(w, "    | %s\n", e(textsafe.Redact(l)))
			}
		}
	}
}

// peakMemory is the largest peak memory of a job's steps ("peak 812 MiB",
// the largest child process; see queue.Step), "" when none ran a child.
func peakMemory(j *queue.Job) string {
	var peak int64
	for _, s := range j.Steps {
		peak = max(peak, s.PeakMemoryKiB)
	}
	if peak == 0 {
		return ""
	}
	return "peak " + runner.MiB(peak)
}

func elapsed(since *time.Time, now time.Time) string {
	if since == nil {
		return "?"
	}
	return now.Sub(*since).Round(time.Second).String()
}

// orphaned reports whether a job is recorded running while no concierge
// holds the run lock: its process died. Taking the lock for an instant to
// find out is harmless; a concierge that starts meanwhile waits for it.
func orphaned(cfg *Config, jobs []*queue.Job) bool {
	running := false
	for _, j := range jobs {
		running = running || j.State == queue.Running
	}
	if !running {
		return false
	}
	l, err := queue.TryLock(cfg.LockPath())
	if err != nil {
		return false // held (or unreadable): someone is running it
	}
	l.Release()
	return true
}
