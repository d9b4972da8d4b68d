package main

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/rs/zerolog"

	"github.com/tractstack/concierge/runner"
	"github.com/tractstack/concierge/watcher"
)

// watchCmd stays up and reacts to new triggers through fsnotify. On
// SIGTERM or SIGINT it stops taking jobs, cancels the running step (its
// job goes back to pending and runs at the next start) and exits 0.
func watchCmd(ctx context.Context, a *App, cfg *Config, args []string) error {
	if _, err := parseFlags(a, cfg, "watch", args, nil); err != nil {
		return err
	}
	sigCtx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	logs := newLogger(cfg, envMap(cfg.Env), a.Stderr, true)
	defer logs.Close()
	log := component(logs.log, "concierge")
	notify := sdNotifier(log)

	svc, err := openService(sigCtx, cfg, logs.log, func(s string) { notify("STATUS=" + s) })
	if err != nil {
		if sigCtx.Err() != nil {
			log.Info().Msg("stopped while waiting for the run lock")
			return nil // asked to stop before it started: a clean stop
		}
		return err
	}
	defer svc.close()
	if cfg.MetricsAddr != "" {
		stopMetrics, err := serveMetrics(cfg.MetricsAddr, svc.report.gatherer(), log)
		if err != nil {
			return err
		}
		defer stopMetrics()
	}

	w := watcher.New(svc.read, logs.log)
	if err := w.Start(sigCtx); err != nil {
		return err
	}
	defer w.Close()
	notify("READY=1\nSTATUS=idle")
	log.Info().Str("state_dir", cfg.StateDir()).Msg("watching for triggers")

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		runJobs(sigCtx, svc, log)
	}()

	var keepAlive <-chan time.Time
	if d, err := daemon.SdWatchdogEnabled(false); err == nil && d > 0 {
		t := time.NewTicker(d / 2)
		defer t.Stop()
		keepAlive = t.C
	}
	var retry <-chan time.Time
	for done := false; !done; {
		select {
		case <-sigCtx.Done():
			done = true
		case files := <-w.Files():
			if _, err := svc.intake(sigCtx, files); err != nil {
				// The triggers stay; look again in a while.
				retry = time.After(5 * time.Second)
			}
		case <-retry:
			retry = nil
			w.Rescan()
		case <-keepAlive:
			notify("WATCHDOG=1")
		}
	}
	notify("STOPPING=1\nSTATUS=stopping")
	log.Info().Msg("stopping: no new jobs; the running step is cancelled and its job stays pending")
	wg.Wait()
	log.Info().Msg("stopped")
	return nil
}

// runJobs runs pending jobs one at a time until ctx ends, sleeping while
// nothing is pending.
func runJobs(ctx context.Context, svc *service, log zerolog.Logger) {
	for ctx.Err() == nil {
		changed := svc.q.Changed() // before looking, so no wake-up is lost
		_, ran, err := svc.runNext(ctx)
		switch {
		case errors.Is(err, runner.ErrInterrupted):
			return
		case err != nil:
			log.Error().Err(err).Msg("run job; will try again")
			select {
			case <-ctx.Done():
				return
			case <-time.After(5 * time.Second):
			}
		case ran:
		default:
			select {
			case <-ctx.Done():
				return
			case <-changed:
			}
		}
	}
}

// sdNotifier returns a function that sends state to systemd; a no-op when
// not started by systemd with NOTIFY_SOCKET.
func sdNotifier(log zerolog.Logger) func(string) {
	return func(state string) {
		if _, err := daemon.SdNotify(false, state); err != nil {
			log.Debug().Err(err).Msg("sd_notify")
		}
	}
}
