package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/tractstack/concierge/deploy"
	"github.com/tractstack/concierge/hooks"
	"github.com/tractstack/concierge/queue"
)

// hookStep is the step name a hook's run is recorded under.
func hookStep(name string) string { return "hook-" + name }

// hook runs a pre-* hook as a step; its failure (or refusal) fails the
// job before anything live changes. No step is recorded when the hook is
// not there.
func (t *target) hook(ctx context.Context, name string) error {
	if !t.pl.cfg.Hooks.Exists(name) {
		return nil
	}
	in := t.hookInfo(name, nil)
	if err := t.s.Step(ctx, hookStep(name), func(ctx context.Context, out io.Writer) error {
		return t.pl.cfg.Hooks.Run(ctx, name, in, out)
	}); err != nil {
		return fmt.Errorf("%s hook failed, nothing live was changed: %w", name, err)
	}
	return nil
}

// preSwap runs the pre-swap hook; when it fails, the finished builds are
// undone (files only, even while cancelled) so nothing of them goes live.
func (t *target) preSwap(ctx context.Context, id string, next deploy.Release) error {
	next.ID = id
	t.next = &next
	err := t.hook(ctx, hooks.PreSwap)
	t.next = nil
	if err == nil {
		return nil
	}
	if aerr := t.pl.cfg.Deployer.Abort(context.WithoutCancel(ctx), t.p); aerr != nil {
		return errors.Join(err, aerr)
	}
	return err
}

// postHook runs a post-* or on-failure hook as a step; its failure is a
// warning on the job, never the job's failure.
func (t *target) postHook(ctx context.Context, name string, cause error) {
	if !t.pl.cfg.Hooks.Exists(name) {
		return
	}
	in := t.hookInfo(name, cause)
	// A job being cancelled still tells the hook: bounded by the step
	// timeout, like every child.
	if err := t.s.Step(context.WithoutCancel(ctx), hookStep(name), func(ctx context.Context, out io.Writer) error {
		return t.pl.cfg.Hooks.Run(ctx, name, in, out)
	}); err != nil {
		t.s.Warn(fmt.Sprintf("%s hook failed: %v", name, err))
	}
}

// finish runs the hooks of the job's end: post-deploy after a build that
// went live and passed its checks, post-rollback after a release was
// taken back, on-failure after any failure (after the rollback). A job
// stopped by a shutdown runs again later and is told then.
func (t *target) finish(ctx context.Context, err error) {
	if ctx.Err() != nil {
		return
	}
	if err == nil && t.job.Command == queue.CommandBuild {
		t.postHook(ctx, hooks.PostDeploy, nil)
	}
	if t.rolledBack {
		t.postHook(ctx, hooks.PostRollback, err)
	}
	if err != nil {
		t.postHook(ctx, hooks.OnFailure, err)
	}
}

// hookInfo is what a hook is told: the job, its state at this moment,
// the error and the release concerned.
func (t *target) hookInfo(name string, cause error) hooks.Info {
	in := hooks.Info{Job: t.job, Err: cause}
	if t.job.StartedAt != nil {
		in.Duration = time.Since(*t.job.StartedAt)
	}
	switch {
	case name == hooks.PreBuild || name == hooks.PreSwap:
		in.State = "building"
	case t.rolledBack:
		in.State = "rolled-back"
	case cause != nil:
		in.State = "failed"
	default:
		in.State = "succeeded"
	}
	if t.next != nil {
		in.Release, in.Backend, in.Frontend = t.next.ID, t.next.Backend, t.next.Frontend
	} else if cur, ok, err := deploy.Current(t.p); err == nil && ok {
		in.Release, in.Backend, in.Frontend = cur.ID, cur.Backend, cur.Frontend
	}
	return in
}
