package main

import (
	"context"
	"os"

	"github.com/rs/zerolog"

	"github.com/tractstack/concierge/builder"
	"github.com/tractstack/concierge/deploy"
	"github.com/tractstack/concierge/hooks"
	"github.com/tractstack/concierge/pipeline"
	"github.com/tractstack/concierge/queue"
	"github.com/tractstack/concierge/runner"
)

// newPipeline wires the build pipeline (builder and deploy) for cfg.
// Children get concierge's environment with HOME, GOCACHE and the usual Go
// and pnpm locations on PATH filled in: a systemd service starts with
// almost none of them.
func newPipeline(cfg *Config, log zerolog.Logger) (runner.Executor, recoverFunc, error) {
	env := builder.ChildEnv(childSafe(cfg.Env), cfg.Home)
	// Build children carry the owner mark, so the next concierge can end
	// any that outlive a SIGKILL. Deploy children do not: `pm2 reload` may
	// start pm2's daemon, which must outlive concierge.
	b := builder.New(builder.Config{
		Env: builder.WithOwner(env, cfg.DataDir), StepTimeout: cfg.StepTimeout, GoBuildFlags: cfg.GoBuildFlags,
		FrontendUpdate: cfg.FrontendUpdate, Log: log.With().Str("component", "builder").Logger(),
	})
	d := deploy.New(deploy.Config{
		Systemctl: cfg.Systemctl, PM2: cfg.PM2, HealthTimeout: cfg.HealthTimeout, Keep: cfg.KeepReleases,
		StepTimeout: cfg.StepTimeout, Env: env, Log: log.With().Str("component", "deploy").Logger(),
	})
	h := hooks.New(hooks.Config{Dir: hooks.Dir(cfg.Home), Env: builder.WithOwner(env, cfg.DataDir),
		Timeout: cfg.StepTimeout, UID: os.Geteuid()})
	pl := pipeline.New(pipeline.Config{Home: cfg.Home, Builder: b, Deployer: d, Hooks: h,
		Log: log.With().Str("component", "pipeline").Logger()})
	recoverAll := func(ctx context.Context) ([]string, error) { return d.RecoverAll(ctx, cfg.Home) }
	return pl, recoverAll, nil
}

// planSteps lists the steps job would run on this host: the whitelist
// step only when the script exists, health checks only when the ports
// file names the target. It reads, and writes nothing.
func planSteps(cfg *Config, job queue.Job) ([]string, error) {
	if _, err := pipeline.Plan(cfg.Home, job); err != nil {
		return nil, err
	}
	p, err := deploy.PathsFor(cfg.Home, queue.Site(job.Target))
	if err != nil {
		return nil, err
	}
	var facts pipeline.Facts
	if _, err := os.Stat(p.WhitelistScript); err == nil {
		facts.Whitelist = true
	}
	if _, ok, err := deploy.ReadPorts(p); err == nil && ok {
		facts.Ports = true
	}
	return pipeline.PlanSteps(job, facts), nil
}
