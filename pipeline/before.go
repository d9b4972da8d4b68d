package pipeline

import (
	"context"
	"fmt"
	"io"
	"sync"

	"github.com/tractstack/concierge/deploy"
)

// probeBefore records what the backend (for each tenant) and the
// frontend answer before the job touches them, as the probe-before step:
// the health checks after the restart are judged against it (a target
// that did not answer before and still does not is a warning, not a
// rollback). It never fails the job: what it sees is only a reference.
// Without ports there is nothing to probe. When the live release never
// passed its checks (a job interrupted after its swap put it live), what
// it answers is no reference: the checks then want every target healthy.
func (t *target) probeBefore(ctx context.Context) {
	if !t.hasPorts {
		return
	}
	d := t.pl.cfg.Deployer
	_ = t.s.Step(ctx, StepProbeBefore, func(ctx context.Context, out io.Writer) error {
		if cur, ok, err := deploy.Current(t.p); err == nil && ok && cur.Unverified {
			fmt.Fprintln(out, "the live release never passed its checks: no reference; the checks want every target healthy")
			return nil
		}
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); t.beforeBack = d.ProbeBackend(ctx, t.ports.Go, t.tenants()) }()
		go func() { defer wg.Done(); t.beforeFront = d.ProbeFrontend(ctx, t.p, t.ports.Astro) }()
		wg.Wait()
		for _, o := range t.beforeBack {
			fmt.Fprintf(out, "backend %s\n", o)
		}
		for _, o := range t.beforeFront {
			fmt.Fprintf(out, "frontend %s\n", o)
		}
		return nil
	})
}

// report puts a passed check's warnings and notes on the job and in the
// step's output.
func (t *target) report(out io.Writer, res deploy.CheckResult) {
	for _, w := range append(res.Warnings, res.Notes...) {
		fmt.Fprintln(out, "warning: "+w)
		t.s.Warn(w)
	}
}
