package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/tractstack/concierge/builder"
	"github.com/tractstack/concierge/queue"
	"github.com/tractstack/concierge/runner"
	"github.com/tractstack/concierge/watcher"
)

// service is what run and watch share: the run lock, the queue, the
// runner and how triggers are read.
type service struct {
	cfg    *Config
	log    zerolog.Logger
	base   zerolog.Logger // without a component, for parts that add their own
	lock   *queue.Lock
	q      *queue.Queue
	runner *runner.Runner
	read   watcher.Options
	// ignored holds the .csv names in state/ that are not triggers and
	// were already logged, so each is logged once.
	ignored map[string]bool
	report  *reporter
}

// openService takes the run lock (waiting for another concierge to finish)
// and opens the queue, which re-queues a job a dead process left running.
// base is the logger without a component: each part gets its own from it.
func openService(ctx context.Context, cfg *Config, base zerolog.Logger, onStatus func(string)) (*service, error) {
	log := component(base, "concierge")
	st, err := os.Stat(cfg.StateDir())
	if err != nil || !st.IsDir() {
		return nil, usageErr("state directory %s does not exist (is --home right? create it with: mkdir -p %s)", cfg.StateDir(), cfg.StateDir())
	}
	if err := os.MkdirAll(cfg.DataDir, queue.DirMode); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	lockPath := cfg.LockPath()
	lock, err := queue.AcquireLock(ctx, lockPath, func() {
		log.Info().Str("lock", lockPath).Msg("another concierge is running jobs; waiting for it to finish")
	})
	if err != nil {
		return nil, err
	}
	// Holding the lock, no child of ours runs yet: any process marked as
	// ours is left over from a concierge that was killed mid-build.
	if strays, err := builder.KillStrays(cfg.DataDir); err != nil {
		log.Warn().Err(err).Msg("look for build processes left by a killed concierge")
	} else if len(strays) > 0 {
		log.Warn().Ints("pids", strays).Msg("ended build processes left running by a concierge that was killed")
	}
	q, err := queue.Open(queue.Config{
		DataDir: cfg.DataDir, StateDir: cfg.StateDir(), Keep: cfg.KeepJobs,
		SiteExists: siteChecker(cfg.Home), Log: component(base, "queue"),
	})
	if err != nil {
		lock.Release()
		return nil, err
	}
	exec, recoverAll, err := newExecutor(cfg, base)
	if err != nil {
		lock.Release()
		return nil, err
	}
	// A go-live interrupted by a crash or a reboot is settled now, before
	// any trigger, so the site serves one whole release even if no job
	// for its target comes (the job's own Recover would do it otherwise).
	if recoverAll != nil {
		done, err := recoverAll(ctx)
		for _, d := range done {
			if !strings.HasSuffix(d, "nothing to recover") {
				log.Warn().Msg("recovered interrupted deploy: " + d)
			}
		}
		if err != nil {
			log.Error().Err(err).Msg("recover interrupted deploys; each target's next job tries again")
		}
	}
	rep, err := newReporter(cfg, q, log)
	if err != nil {
		lock.Release()
		return nil, err
	}
	exec = reportingExecutor{inner: exec, changed: rep.changed}
	r := runner.New(runner.Config{Queue: q, Executor: exec, OnStatus: onStatus,
		Log: component(base, "runner")})
	rep.all()
	svc := &service{cfg: cfg, log: log, base: base, lock: lock, q: q, runner: r, read: readOptions(cfg), ignored: map[string]bool{}, report: rep}
	if !sameFileSystem(cfg.StateDir(), q.Store().ClaimDir()) {
		log.Warn().Str("state_dir", cfg.StateDir()).Str("data_dir", cfg.DataDir).
			Msg("the state directory and the data directory are on different file systems: triggers are read in place " +
				"instead of being claimed by a rename first, so a trigger rewritten under the same name while it is " +
				"taken in can be lost; put the data directory on the state directory's file system")
	}
	return svc, nil
}

func readOptions(cfg *Config) watcher.Options {
	return watcher.Options{Dir: cfg.StateDir(), Match: queue.IsTriggerName, MaxSize: queue.MaxTriggerSize,
		ClaimDir: queue.ReadStore(cfg.DataDir).ClaimDir()}
}

// siteChecker reports whether <home>/sites/<site> is a directory. The site
// is validated against the id pattern before it is asked about.
func siteChecker(home string) queue.SiteChecker {
	return func(site string) bool {
		if !queue.ValidID(site) {
			return false
		}
		st, err := os.Stat(filepath.Join(home, "sites", site))
		return err == nil && st.IsDir()
	}
}

// intake hands files to the queue and logs what came of them.
func (s *service) intake(ctx context.Context, files []watcher.File) (queue.IntakeResult, error) {
	in := make([]queue.Incoming, len(files))
	for i, f := range files {
		in[i] = queue.Incoming{Name: f.Name, Key: f.Key, Data: f.Data, Refuse: f.Refuse, Path: f.Path}
	}
	res, err := s.q.Intake(in)
	if err != nil {
		s.log.Error().Err(err).Msg("intake failed; the triggers stay in place and are tried again")
	}
	s.report.intake(ctx, res)
	return res, err
}

// runNext runs the next pending job (see runner.RunNext); once it has
// run, old records are pruned and the job's end is reported.
func (s *service) runNext(ctx context.Context) (queue.Job, bool, error) {
	job, ran, err := s.runner.RunNext(ctx)
	if ran {
		s.prune()
		s.report.jobDone(ctx, job)
	}
	return job, ran, err
}

// prune drops old job records and logs how many.
func (s *service) prune() {
	n, err := s.q.Prune()
	if err != nil {
		s.log.Warn().Err(err).Msg("prune old job records")
	} else if n > 0 {
		s.log.Debug().Int("pruned", n).Msg("pruned old job records")
	}
}

func (s *service) close() {
	if err := s.lock.Release(); err != nil {
		s.log.Warn().Err(err).Msg("release run lock")
	}
}

func isNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }

// summary counts what a drain did.
type summary struct {
	succeeded, failed, rejected int
	jobs                        []queue.Job
}

// drain takes in every trigger and runs every queued job, one at a time,
// scanning again after each job so that triggers that arrived meanwhile
// are taken in by the same run; it returns when a scan finds nothing new
// and nothing is pending. A trigger still being written is waited for.
// When the data directory cannot be written, nothing can be taken in: it
// says so and tries again with a growing pause (up to maxRetryWait)
// rather than exit and be started again at once by the path unit.
func (s *service) drain(ctx context.Context) (summary, error) {
	var sum summary
	wait := 20 * time.Millisecond
	retry := firstRetryWait
	for {
		s.noteIgnored()
		files, unsettled, err := watcher.Scan(s.read)
		var res queue.IntakeResult
		if err == nil {
			res, err = s.intake(ctx, files)
		}
		if err != nil {
			s.log.Error().Err(err).Dur("retry_in", retry).
				Msgf("cannot take in triggers; trying again in %s (the triggers are kept)", retry)
			select {
			case <-ctx.Done():
				return sum, &exitError{code: exitFailed, err: errors.New("interrupted")}
			case <-time.After(retry):
			}
			retry = min(retry*2, maxRetryWait)
			continue
		}
		retry = firstRetryWait
		sum.rejected += len(res.Rejected)
		job, ran, err := s.runNext(ctx)
		if errors.Is(err, runner.ErrInterrupted) {
			s.log.Warn().Msg("stopped by a signal; the interrupted job is pending again")
			return sum, &exitError{code: exitFailed, err: errors.New("interrupted")}
		}
		if err != nil {
			return sum, err
		}
		if ran {
			wait = 20 * time.Millisecond
			sum.jobs = append(sum.jobs, job)
			if job.State == queue.Succeeded {
				sum.succeeded++
			} else {
				sum.failed++
			}
			continue
		}
		if len(unsettled) > 0 {
			// A writer still has a trigger open: wait for it, briefly.
			s.log.Debug().Strs("triggers", unsettled).Msg("waiting for triggers still being written")
			select {
			case <-ctx.Done():
				return sum, &exitError{code: exitFailed, err: errors.New("interrupted")}
			case <-time.After(wait):
			}
			wait = min(wait*2, 500*time.Millisecond)
			continue
		}
		// Files that came to nothing new (taken in before, and stuck where
		// they are) do not keep the run going.
		if len(res.Created)+len(res.Merged)+len(res.Rejected) == 0 && s.q.Pending() == 0 {
			return sum, nil
		}
	}
}

// How long drain waits before it tries again to take triggers in when the
// data directory cannot be written.
const (
	firstRetryWait = time.Second
	maxRetryWait   = 5 * time.Minute
)

// noteIgnored logs, once per name, each file in state/ that ends in .csv
// but is not a trigger, with the name concierge expects.
func (s *service) noteIgnored() {
	names, err := queue.IgnoredFiles(s.cfg.StateDir())
	if err != nil {
		return // the scan that follows reports it
	}
	for _, n := range names {
		if s.ignored[n] {
			continue
		}
		s.ignored[n] = true
		s.log.Warn().Str("file", n).Msg(queue.IgnoredWhy(n))
	}
}
