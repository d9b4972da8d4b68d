// Package pipeline carries out a job on a target: for a build, pull both
// source trees, build the backend and the frontend at once or in turn beside
// what is live, extract the Tailwind whitelist, swap the release in,
// restart the services and check them, rolling back when they do not
// answer; for a restart, only the last part; for a rollback, the previous
// release made live and checked. A release whose checks pass (or whose
// services restart, for a target without ports) is marked verified, and
// only verified releases are rollback targets; rollbacks carry the job id,
// so a job re-run after an interruption does not roll back twice. It
// implements runner.Executor.
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	"github.com/rs/zerolog"

	"github.com/tractstack/concierge/builder"
	"github.com/tractstack/concierge/deploy"
	"github.com/tractstack/concierge/hooks"
	"github.com/tractstack/concierge/queue"
	"github.com/tractstack/concierge/runner"
)

// Builder is what the pipeline needs of a builder (*builder.Builder).
type Builder interface {
	PullBackend(ctx context.Context, dir string, out io.Writer) (builder.PullResult, error)
	PullFrontend(ctx context.Context, dir string, out io.Writer) (builder.PullResult, error)
	BuildBackend(ctx context.Context, srcDir, outPath string, out io.Writer) error
	BuildFrontend(ctx context.Context, srcDir string, out io.Writer) error
	Whitelist(ctx context.Context, script, distDir, jsonOut, templatesDir string, out io.Writer) error
}

// Deployer is what the pipeline needs of a deployer (*deploy.Deployer).
type Deployer interface {
	Recover(ctx context.Context, p deploy.Paths) (deploy.Action, error)
	Prepare(ctx context.Context, p deploy.Paths, live deploy.Release) (deploy.Build, error)
	StageFrontend(ctx context.Context, p deploy.Paths, b deploy.Build, out io.Writer) error
	Abort(ctx context.Context, p deploy.Paths) error
	Swap(ctx context.Context, p deploy.Paths, b deploy.Build, next deploy.Release) error
	Rollback(ctx context.Context, p deploy.Paths, jobID string) (deploy.Release, error)
	MarkVerified(p deploy.Paths) error
	RestartBackend(ctx context.Context, p deploy.Paths, port int, out io.Writer) (deploy.Stop, error)
	ReloadFrontend(ctx context.Context, p deploy.Paths, out io.Writer) (deploy.Stop, error)
	ProbeBackend(ctx context.Context, port int, tenants []string) []deploy.Observation
	ProbeFrontend(ctx context.Context, p deploy.Paths, port int) []deploy.Observation
	CheckBackend(ctx context.Context, p deploy.Paths, port int, tenants []string, before []deploy.Observation) (deploy.CheckResult, error)
	CheckFrontend(ctx context.Context, p deploy.Paths, port int, before []deploy.Observation) (deploy.CheckResult, error)
}

var (
	_ Builder         = (*builder.Builder)(nil)
	_ Deployer        = (*deploy.Deployer)(nil)
	_ runner.Executor = (*Pipeline)(nil)
)

// Config shapes a Pipeline.
type Config struct {
	// Home is the TractStack home (/home/t8k).
	Home     string
	Builder  Builder
	Deployer Deployer
	// Hooks runs the operator's hooks (see hooks.go); nil runs none.
	Hooks *hooks.Runner
	Log   zerolog.Logger
	// Resources decides whether the two builds run at once
	// (concurrency.go).
	Resources Resources
}

// Pipeline runs jobs. It keeps no state between jobs.
type Pipeline struct {
	cfg Config
	log zerolog.Logger
}

// New returns a Pipeline for cfg.
func New(cfg Config) *Pipeline {
	return &Pipeline{cfg: cfg, log: cfg.Log.With().Str("component", "pipeline").Logger()}
}

// Execute runs job. See the package doc and PlanSteps for the steps.
func (pl *Pipeline) Execute(ctx context.Context, job queue.Job, s runner.Session) (err error) {
	p, err := pathsFor(pl.cfg.Home, job.Target)
	if err != nil {
		return err
	}
	ports, hasPorts, err := deploy.ReadPorts(p)
	if err != nil {
		return fmt.Errorf("read ports: %w", err)
	}
	if !hasPorts {
		s.Warn(fmt.Sprintf("no line for %s in %s: health checks skipped", p.PortsKey, p.PortsFile))
	}
	t := &target{pl: pl, p: p, s: s, job: job, ports: ports, hasPorts: hasPorts}
	defer func() { t.finish(ctx, err) }()
	switch job.Command {
	case queue.CommandBuild:
		return t.build(ctx)
	case queue.CommandRestart:
		t.probeBefore(ctx)
		return t.restartAndCheck(ctx, "")
	case queue.CommandRollback:
		return t.rollback(ctx)
	default:
		return fmt.Errorf("execute job: unknown command %q", job.Command)
	}
}

// target is one job's run on one target.
type target struct {
	pl       *Pipeline
	p        deploy.Paths
	s        runner.Session
	job      queue.Job
	ports    deploy.Ports
	hasPorts bool
	// What the services answered before this job restarted them: the
	// checks after the restart are judged against it.
	beforeBack, beforeFront []deploy.Observation
	// rolledBack is set once a release was taken back; next is the
	// release about to go live while the pre-swap hook runs.
	rolledBack bool
	next       *deploy.Release
}

func (t *target) recover(ctx context.Context) error {
	act, err := t.pl.cfg.Deployer.Recover(ctx, t.p)
	if err != nil {
		return err
	}
	if act != deploy.ActNone {
		t.s.Warn(fmt.Sprintf("recovered an interrupted deploy of %s: %s", t.p.Root, act))
	}
	return nil
}

// PullWarning says whether a frontend pull result deserves a warning on
// the job: a skip for any reason but the tree not being a git repository
// (the usual install) — local changes mean the frontend is not updated.
func PullWarning(res builder.PullResult) (string, bool) {
	if !res.Skipped || res.Note == "" || strings.Contains(res.Note, "not a git repository") {
		return "", false
	}
	return "frontend pull skipped: " + res.Note, true
}

func (t *target) build(ctx context.Context) error {
	b, d := t.pl.cfg.Builder, t.pl.cfg.Deployer
	if err := t.recover(ctx); err != nil {
		return err
	}
	if err := t.hook(ctx, hooks.PreBuild); err != nil {
		return err
	}
	var back, front builder.PullResult
	if err := t.s.Step(ctx, StepPullBackend, func(ctx context.Context, out io.Writer) error {
		var err error
		back, err = b.PullBackend(ctx, t.p.BackendSrc, out)
		if err == nil {
			fmt.Fprintf(out, "backend %s -> %s\n", back.Old, back.New)
			t.s.Log().Info().Str("old_commit", back.Old).Str("new_commit", back.New).Msgf("backend %s -> %s", back.Old, back.New)
		}
		return err
	}); err != nil {
		return err
	}
	if err := t.s.Step(ctx, StepPullFrontend, func(ctx context.Context, out io.Writer) error {
		var err error
		front, err = b.PullFrontend(ctx, t.p.FrontendSrc, out)
		if err == nil {
			msg := fmt.Sprintf("frontend %s -> %s", front.Old, front.New)
			if front.Skipped {
				msg = fmt.Sprintf("frontend pull skipped (%s); stays at %s", front.Note, front.Old)
			}
			fmt.Fprintln(out, msg)
			t.s.Log().Info().Str("old_commit", front.Old).Str("new_commit", front.New).Bool("skipped", front.Skipped).Msg(msg)
		}
		return err
	}); err != nil {
		return err
	}
	if msg, ok := PullWarning(front); ok {
		t.s.Warn(msg)
	}
	t.probeBefore(ctx)

	// What is live now, as the pulls saw it: on a host without releases
	// yet, the release that Prepare keeps for rollback.
	bld, err := d.Prepare(ctx, t.p, deploy.Release{Backend: back.Old, Frontend: front.Old})
	if err != nil {
		return fmt.Errorf("prepare build: %w", err)
	}
	// The two builds run at once when the host has room for both (see
	// concurrency.go), else one after the other. When one fails the
	// other is stopped or not started: the job fails either way, and
	// nothing of it may go live.
	buildCtx, stopBuilds := context.WithCancelCause(ctx)
	defer stopBuilds(nil)
	var backErr, frontErr error
	buildBack := func() {
		backErr = t.buildOne(buildCtx, stopBuilds, StepBuildBackend, func(ctx context.Context, out io.Writer) error {
			return b.BuildBackend(ctx, t.p.BackendSrc, bld.Binary, out)
		})
	}
	buildFront := func() {
		frontErr = t.buildOne(buildCtx, stopBuilds, StepBuildFrontend, func(ctx context.Context, out io.Writer) error {
			// The build runs in the release's own copy of the tree: the
			// live one keeps serving, and a failed build leaves it as it was.
			if err := d.StageFrontend(ctx, t.p, bld, out); err != nil {
				return err
			}
			if err := b.BuildFrontend(ctx, bld.Frontend, out); err != nil {
				return err
			}
			if _, err := os.Stat(bld.Entry); err != nil {
				return fmt.Errorf("check frontend build: %w", err)
			}
			return nil
		})
	}
	if t.buildsConcurrently() {
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); buildBack() }()
		go func() { defer wg.Done(); buildFront() }()
		wg.Wait()
	} else {
		buildBack()
		if backErr == nil {
			buildFront()
		}
	}
	if errors.Is(backErr, errStopped) {
		backErr = nil // only the build that failed explains the job
	}
	if errors.Is(frontErr, errStopped) {
		frontErr = nil
	}
	if backErr != nil || frontErr != nil {
		// Files only, and it must happen even when the job is being
		// cancelled: nothing live may keep a half build.
		if err := d.Abort(context.WithoutCancel(ctx), t.p); err != nil {
			return errors.Join(buildError(backErr, frontErr), err)
		}
		return buildError(backErr, frontErr)
	}

	if _, err := os.Stat(t.p.WhitelistScript); err == nil {
		if err := t.s.Step(ctx, StepWhitelist, func(ctx context.Context, out io.Writer) error {
			return b.Whitelist(ctx, t.p.WhitelistScript, bld.Dist, bld.Whitelist, t.p.Templates, out)
		}); err != nil {
			t.s.Warn(fmt.Sprintf("tailwind whitelist not updated: %v", err))
		}
	}

	next := deploy.Release{Backend: back.New, Frontend: front.New}
	if err := t.preSwap(ctx, bld.ID, next); err != nil {
		return err
	}
	if err := t.s.Step(ctx, StepSwap, func(ctx context.Context, out io.Writer) error {
		fmt.Fprintf(out, "release %s: backend %s, frontend %s\n", bld.ID, next.Backend, next.Frontend)
		return d.Swap(context.WithoutCancel(ctx), t.p, bld, next)
	}); err != nil {
		// Settle whatever the swap left into one consistent release.
		if _, rerr := d.Recover(context.WithoutCancel(ctx), t.p); rerr != nil {
			return errors.Join(err, rerr)
		}
		return err
	}
	return t.restartAndCheck(ctx, "roll back")
}

// errStopped marks a build stopped because the other one failed.
var errStopped = errors.New("stopped")

// buildOne runs one of the two concurrent builds as a step. Its failure
// stops the other build; a panic in it fails the step instead of
// crashing concierge (it runs in its own goroutine, out of the runner's
// reach).
func (t *target) buildOne(ctx context.Context, stop context.CancelCauseFunc, step string, fn func(ctx context.Context, out io.Writer) error) error {
	err := t.s.Step(ctx, step, func(ctx context.Context, out io.Writer) (err error) {
		defer func() {
			if p := recover(); p != nil {
				err = fmt.Errorf("internal error (panic) in %s: %v", step, p)
			}
		}()
		err = fn(ctx, out)
		if err != nil && errors.Is(context.Cause(ctx), errStopped) {
			return fmt.Errorf("%w: %w", context.Cause(ctx), err)
		}
		return err
	})
	if err != nil && !errors.Is(err, errStopped) {
		stop(fmt.Errorf("%w: the %s step failed", errStopped, step))
	}
	return err
}

func buildError(backErr, frontErr error) error {
	var parts []string
	if backErr != nil {
		parts = append(parts, "backend: "+backErr.Error())
	}
	if frontErr != nil {
		parts = append(parts, "frontend: "+frontErr.Error())
	}
	return &buildFailure{msg: "build failed, nothing live was changed: " + strings.Join(parts, "; "), errs: nonNil(backErr, frontErr)}
}

func nonNil(errs ...error) []error {
	var out []error
	for _, e := range errs {
		if e != nil {
			out = append(out, e)
		}
	}
	return out
}

// buildFailure says which builds failed once, and still lets callers
// test the causes with errors.Is.
type buildFailure struct {
	msg  string
	errs []error
}

func (e *buildFailure) Error() string   { return e.msg }
func (e *buildFailure) Unwrap() []error { return e.errs }

// restartAndCheck restarts the backend and reloads the frontend at the
// same time, then checks each as soon as it is back. With onFailure "roll
// back" (a build job), a failed restart or check brings the previous
// release back. When all pass (the checks are skipped for a target
// without ports), the live release is marked verified: only a verified
// release is kept for rollback when a later build replaces it.
func (t *target) restartAndCheck(ctx context.Context, onFailure string) error {
	err := t.restartBoth(ctx, StepRestartBackend, StepHealthBackend, StepReloadFrontend, StepHealthFrontend)
	if err != nil {
		if onFailure == "" {
			return err
		}
		return t.rollbackAfter(ctx, err)
	}
	t.markVerified()
	return nil
}

// restartBoth runs the backend's restart and check and the frontend's
// reload and check concurrently: neither waits for the other, so the site
// is back as soon as the slower of the two. The error says which failed.
func (t *target) restartBoth(ctx context.Context, restart, checkBack, reload, checkFront string) error {
	var backErr, frontErr error
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		backErr = guard(restart, func() error { return t.backend(ctx, restart, checkBack) })
	}()
	go func() {
		defer wg.Done()
		frontErr = guard(reload, func() error { return t.frontend(ctx, reload, checkFront) })
	}()
	wg.Wait()
	var errs []error
	if backErr != nil {
		errs = append(errs, fmt.Errorf("backend unhealthy after restart: %w", backErr))
	}
	if frontErr != nil {
		errs = append(errs, fmt.Errorf("frontend unhealthy after reload: %w", frontErr))
	}
	return joinErrors(errs)
}

// guard runs fn, turning a panic into an error: fn runs in a goroutine of
// its own, out of the runner's reach.
func guard(what string, fn func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("internal error (panic) in %s: %v", what, p)
		}
	}()
	return fn()
}

// joinErrors joins errs with "; " (one line, unlike errors.Join) and
// keeps them for errors.Is; nil for none.
func joinErrors(errs []error) error {
	switch len(errs) {
	case 0:
		return nil
	case 1:
		return errs[0]
	}
	parts := make([]string, len(errs))
	for i, e := range errs {
		parts[i] = e.Error()
	}
	return &buildFailure{msg: strings.Join(parts, "; "), errs: errs}
}

// markVerified records that the live release passed its checks. Failing
// to record it leaves the release unverified: it is live and healthy, but
// the next build discards it instead of keeping it for rollback; the job
// does not fail for that.
func (t *target) markVerified() {
	if err := t.pl.cfg.Deployer.MarkVerified(t.p); err != nil {
		t.s.Warn(fmt.Sprintf("live release not recorded as verified, so it will not be kept for rollback: %v", err))
	}
}

func (t *target) backend(ctx context.Context, restart, health string) error {
	d := t.pl.cfg.Deployer
	if err := t.s.Step(ctx, restart, func(ctx context.Context, out io.Writer) error {
		stop, err := d.RestartBackend(ctx, t.p, t.ports.Go, out)
		t.recordStop(restart, stop, out)
		return err
	}); err != nil {
		return err
	}
	if !t.hasPorts {
		return nil
	}
	return t.s.Step(ctx, health, func(ctx context.Context, out io.Writer) error {
		fmt.Fprintf(out, "GET http://127.0.0.1:%d/api/v1/health for tenants %v, judged against before the restart\n", t.ports.Go, t.tenants())
		res, err := d.CheckBackend(ctx, t.p, t.ports.Go, t.tenants(), t.beforeBack)
		t.report(out, res)
		return err
	})
}

func (t *target) frontend(ctx context.Context, reload, health string) error {
	d := t.pl.cfg.Deployer
	if err := t.s.Step(ctx, reload, func(ctx context.Context, out io.Writer) error {
		stop, err := d.ReloadFrontend(ctx, t.p, out)
		t.recordStop(reload, stop, out)
		return err
	}); err != nil {
		return err
	}
	if !t.hasPorts {
		return nil
	}
	return t.s.Step(ctx, health, func(ctx context.Context, out io.Writer) error {
		fmt.Fprintf(out, "frontend on port %d, judged against before the reload\n", t.ports.Astro)
		res, err := d.CheckFrontend(ctx, t.p, t.ports.Astro, t.beforeFront)
		t.report(out, res)
		return err
	})
}

func (t *target) tenants() []string {
	if len(t.job.Tenants) == 0 {
		return []string{"default"}
	}
	return t.job.Tenants
}

// rollbackAfter brings the previous release (binary and frontend) back
// after cause, restarts the backend and reloads the frontend, and checks
// both. The rollback carries the job's id: a re-run of the job after
// an interruption does not roll back a second time. The reload happens even when this attempt had not reloaded
// the frontend yet: an earlier attempt, killed after its swap, may have,
// and pm2 must serve the dist that is on disk.
func (t *target) rollbackAfter(ctx context.Context, cause error) error {
	if ctx.Err() != nil {
		// Shutting down: the runner re-runs the job, whose Recover and
		// build settle the target.
		return errors.Join(cause, ctx.Err())
	}
	rel, err := t.rollbackStep(ctx)
	if err != nil {
		return fmt.Errorf("%w; rollback failed: %w", cause, err)
	}
	rolled := fmt.Errorf("%w; rolled back to %s", cause, rel.Label())
	if err := t.restartBoth(ctx, StepRestartBackendPrevious, StepHealthBackendPrevious, StepReloadFrontendPrevious, StepHealthFrontendPrevious); err != nil {
		return fmt.Errorf("%w, but the previous release is not healthy either: %w", rolled, err)
	}
	return rolled
}

// rollbackStep makes the previous release live, as the rollback step.
func (t *target) rollbackStep(ctx context.Context) (deploy.Release, error) {
	var rel deploy.Release
	err := t.s.Step(ctx, StepRollback, func(ctx context.Context, out io.Writer) error {
		var err error
		rel, err = t.pl.cfg.Deployer.Rollback(ctx, t.p, t.job.ID)
		if err == nil {
			t.rolledBack = true
			fmt.Fprintf(out, "rolled back to %s (release %s)\n", rel.Label(), rel.ID)
		}
		return err
	})
	return rel, err
}

func (t *target) rollback(ctx context.Context) error {
	if err := t.recover(ctx); err != nil {
		return err
	}
	t.probeBefore(ctx)
	rel, err := t.rollbackStep(ctx)
	if err != nil {
		return err
	}
	t.s.Log().Info().Str("backend_commit", rel.Backend).Str("release", rel.ID).Msg("rolled back")
	return t.restartAndCheck(ctx, "")
}
