package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/rs/zerolog"

	"github.com/tractstack/concierge/builder"
	"github.com/tractstack/concierge/deploy"
	"github.com/tractstack/concierge/hooks"
	"github.com/tractstack/concierge/pipeline"
	"github.com/tractstack/concierge/queue"
	"github.com/tractstack/concierge/runner"
)

// newPipeline wires the build pipeline (builder and deploy) for cfg. base
// has no component field: builder, deploy and pipeline add their own.
// Children get concierge's environment with HOME, GOCACHE and the usual Go
// and pnpm locations on PATH filled in: a systemd service starts with
// almost none of them.
func newPipeline(cfg *Config, base zerolog.Logger) (runner.Executor, recoverFunc, error) {
	env := noColor(builder.ChildEnv(childSafe(cfg.Env), cfg.Home))
	// Build children carry the owner mark, so the next concierge can end
	// any that outlive a SIGKILL. Deploy children do not: `pm2 reload` may
	// start pm2's daemon, which must outlive concierge.
	b := builder.New(builder.Config{
		Env: builder.WithOwner(env, cfg.DataDir), StepTimeout: cfg.StepTimeout, GoBuildFlags: cfg.GoBuildFlags,
		FrontendUpdate: cfg.FrontendUpdate, Log: base,
	})
	d := deploy.New(deploy.Config{
		Systemctl: cfg.Systemctl, PM2: cfg.PM2, HealthTimeout: cfg.HealthTimeout, Keep: cfg.KeepReleases,
		RequestTimeout: cfg.HealthRequestTimeout, FrontendPaths: cfg.FrontendHealthPaths,
		StopGrace:   cfg.StopGrace,
		StepTimeout: cfg.StepTimeout, Env: env, Log: base,
	})
	h := hooks.New(hooks.Config{Dir: hooks.Dir(cfg.Home), Env: builder.WithOwner(env, cfg.DataDir),
		Timeout: cfg.StepTimeout, UID: os.Geteuid()})
	pl := pipeline.New(pipeline.Config{Home: cfg.Home, Builder: b, Deployer: d, Hooks: h,
		Log:       base,
		Resources: buildResources(cfg)})
	recoverAll := func(ctx context.Context) ([]string, error) { return d.RecoverAll(ctx, cfg.Home) }
	return pl, recoverAll, nil
}

// buildResources decides, per job, whether the builds run at once: from
// the setting, the host, and the peaks recorded in earlier job records.
func buildResources(cfg *Config) pipeline.Resources {
	return pipeline.Resources{
		Concurrency: cfg.BuildConcurrency,
		History: func() ([]*queue.Job, error) {
			jobs, _, err := queue.ReadStore(cfg.DataDir).Load()
			return jobs, err
		},
	}
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

// planProbes says what the health checks of job ask for on this host:
// the backend's health per tenant and the frontend's paths, each judged
// against the same probes made before the restart.
func planProbes(cfg *Config, job queue.Job) []string {
	p, err := deploy.PathsFor(cfg.Home, queue.Site(job.Target))
	if err != nil {
		return nil
	}
	ports, ok, err := deploy.ReadPorts(p)
	if err != nil || !ok {
		return []string{fmt.Sprintf("no health checks: no line for %s in %s", p.PortsKey, p.PortsFile)}
	}
	tenants := job.Tenants
	if len(tenants) == 0 {
		tenants = []string{"default"}
	}
	d := deploy.New(deploy.Config{RequestTimeout: cfg.HealthRequestTimeout, HealthTimeout: cfg.HealthTimeout, FrontendPaths: cfg.FrontendHealthPaths})
	var front []string
	for _, pr := range d.FrontendProbes(p) {
		front = append(front, pr.Path)
	}
	out := []string{
		fmt.Sprintf("health-backend: GET http://127.0.0.1:%d/api/v1/health with X-Tenant-ID %s: healthy is 2xx with \"healthy\":true and that tenantId, answered by %s's main process",
			ports.Go, strings.Join(tenants, ", "), p.Unit),
		fmt.Sprintf("health-frontend: GET http://127.0.0.1:%d %s: %s", ports.Astro, strings.Join(front, " "), d.FrontendDescription()),
		fmt.Sprintf("probe-before asks the same before the restart; the checks are judged against it (within %s, each request within %s)",
			cfg.HealthTimeout, min(cfg.HealthRequestTimeout, cfg.HealthTimeout/3)),
	}
	return out
}

// noColor sets NO_COLOR=1 (and drops FORCE_COLOR, which some tools let
// win over it) in a child environment: step output is recorded and
// logged, where colour codes are noise.
func noColor(env []string) []string {
	out := make([]string, 0, len(env)+1)
	for _, kv := range env {
		if k, _, _ := strings.Cut(kv, "="); k != "NO_COLOR" && k != "FORCE_COLOR" {
			out = append(out, kv)
		}
	}
	return append(out, "NO_COLOR=1")
}
