package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/tractstack/concierge/queue"
	"github.com/tractstack/concierge/runner"
	"github.com/tractstack/concierge/watcher"
)

// runCmd processes every trigger and queued job, including triggers that
// arrive while it runs, then exits: 0 when every job succeeded or there was
// nothing to do, 1 when a job failed or a trigger was rejected. This is
// what the path unit starts.
func runCmd(ctx context.Context, a *App, cfg *Config, args []string) error {
	if _, err := parseFlags(a, cfg, "run", args, nil); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	logs := newLogger(cfg, envMap(cfg.Env), a.Stderr, true)
	defer logs.Close()
	log := logs.log.With().Str("component", "concierge").Logger()

	svc, err := openService(ctx, cfg, log, nil)
	if err != nil {
		return err
	}
	defer svc.close()

	var failed, rejected, succeeded int
	wait := 20 * time.Millisecond
	for {
		files, unsettled, err := watcher.Scan(svc.read)
		if err != nil {
			return fmt.Errorf("scan for triggers: %w", err)
		}
		res, err := svc.intake(files)
		if err != nil {
			return fmt.Errorf("take in triggers: %w", err)
		}
		rejected += len(res.Rejected)
		job, ran, err := svc.runner.RunNext(ctx)
		if errors.Is(err, runner.ErrInterrupted) {
			log.Warn().Msg("stopped by a signal; the interrupted job is pending again")
			return &exitError{code: exitFailed, err: errors.New("interrupted")}
		}
		if err != nil {
			return err
		}
		if ran {
			wait = 20 * time.Millisecond
			svc.prune()
			switch job.State {
			case queue.Succeeded:
				succeeded++
			default:
				failed++
			}
			continue
		}
		if len(unsettled) > 0 {
			// A writer still has a trigger open: wait for it, briefly.
			log.Debug().Strs("triggers", unsettled).Msg("waiting for triggers still being written")
			select {
			case <-ctx.Done():
				return &exitError{code: exitFailed, err: errors.New("interrupted")}
			case <-time.After(wait):
			}
			wait = min(wait*2, 500*time.Millisecond)
			continue
		}
		if len(files) == 0 && svc.q.Pending() == 0 {
			break
		}
	}
	if succeeded+failed+rejected > 0 {
		log.Info().Int("succeeded", succeeded).Int("failed", failed).Int("rejected", rejected).
			Msgf("run done: %d succeeded, %d failed, %d rejected", succeeded, failed, rejected)
	}
	if failed+rejected > 0 {
		return &exitError{code: exitFailed, err: fmt.Errorf("%d job(s) failed, %d trigger(s) rejected; see: concierge status", failed, rejected)}
	}
	return nil
}
