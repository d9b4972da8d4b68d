package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
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
	log := component(logs.log, "concierge")

	svc, err := openService(ctx, cfg, logs.log, nil)
	if err != nil {
		return err
	}
	defer svc.close()

	sum, err := svc.drain(ctx)
	if err != nil {
		return err
	}
	succeeded, failed, rejected := sum.succeeded, sum.failed, sum.rejected
	if succeeded+failed+rejected > 0 {
		log.Info().Int("succeeded", succeeded).Int("failed", failed).Int("rejected", rejected).
			Msgf("run done: %d succeeded, %d failed, %d rejected", succeeded, failed, rejected)
	}
	if failed+rejected > 0 {
		return &exitError{code: exitFailed, err: fmt.Errorf("%d job(s) failed, %d trigger(s) rejected; see: concierge status", failed, rejected)}
	}
	return nil
}
