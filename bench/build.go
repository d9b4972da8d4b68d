package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tractstack/concierge/builder"
	"github.com/tractstack/concierge/deploy"
	"github.com/tractstack/concierge/internal/sandbox"
	"github.com/tractstack/concierge/queue"
)

// genFiles is a generated package that makes the backend's build take a
// few seconds with a the user's warm GOCACHE, so the standard library is cached; seed changes force its
// recompilation.
func genFiles(seed int) map[string]string {
	files := map[string]string{
		"internal/gen/seed.go":     fmt.Sprintf("// Package gen is generated bulk for the build benchmark.\npackage gen\n\n// Seed changes every build.\nconst Seed = %d\n", seed),
		"cmd/tractstack-go/gen.go": "package main\n\nimport _ \"tractstack-go/internal/gen\"\n",
	}
	for f := range 60 {
		var b strings.Builder
		fmt.Fprintf(&b, "package gen\n\n")
		for i := range 60 {
			fmt.Fprintf(&b, "// F%d_%d is generated.\nfunc F%d_%d(x []int) (s int) {\n\tfor k, v := range x {\n\t\tswitch {\n\t\tcase v%%3 == 0:\n\t\t\ts += v * k * Seed\n\t\tcase v%%5 == 1:\n\t\t\ts ^= v << 2\n\t\tdefault:\n\t\t\ts -= %d\n\t\t}\n\t}\n\tm := map[string]int{\"a%d\": s}\n\tfor key, v := range m {\n\t\ts += len(key) + v\n\t}\n\treturn s\n}\n\n", f, i, f, i, i, i)
		}
		files[fmt.Sprintf("internal/gen/f%02d.go", f)] = b.String()
	}
	return files
}

// build: wall time of the build phase of one job, concurrent (the real
// pipeline, via `concierge run`) against the same two builds in a row.
func (b *bench) build(ctx context.Context) error {
	reps := 3
	if b.short {
		reps = 1
	}
	h, err := sandbox.New(ctx, filepath.Join(b.dir, "build-home"), sandbox.Options{FrontendIsClone: true})
	if err != nil {
		return err
	}
	p, err := deploy.PathsFor(h.Dir, "")
	if err != nil {
		return err
	}
	cache, err := output(ctx, "", nil, "go", "env", "GOCACHE")
	if err != nil {
		return err
	}
	env := setEnv(os.Environ(), "GOCACHE="+strings.TrimSpace(cache), "T8K_HOME="+h.Dir, "CONCIERGE_SYSTEMCTL=true", "CONCIERGE_PM2=true",
		"CONCIERGE_FRONTEND_UPDATE=", "CONCIERGE_LOG_FORMAT=json", "CONCIERGE_LOG_LEVEL=warn", "CONCIERGE_FAKE_DIR=")
	seed := 0
	trigger := func() error {
		_, err := queue.WriteTrigger(h.StateDir(), []string{"type=main,tenant=default,command=build"}, time.Now())
		return err
	}
	push := func(delayMS int) error {
		seed++
		if _, err := h.PushBackend(ctx, "", sandbox.Change{Files: genFiles(seed), Message: "gen"}); err != nil {
			return err
		}
		c := sandbox.FrontendVersion(fmt.Sprintf("b%d", seed))
		c.Files["src/build-delay-ms"] = fmt.Sprintf("%d\n", delayMS)
		_, err := h.PushFrontend(ctx, "", c)
		return err
	}
	// Calibrate: the frontend build takes as long as the backend's.
	if err := push(0); err != nil {
		return err
	}
	if err := trigger(); err != nil {
		return err
	}
	if _, err := output(ctx, "", env, b.real, "run"); err != nil {
		return fmt.Errorf("warm-up run: %w", err)
	}
	warm, err := lastJob(h.Dir)
	if err != nil {
		return err
	}
	back := stepDur(warm, "build-backend")
	delay := max(int(back.Milliseconds()), 3000)

	var rows [][]string
	for r := range reps {
		if err := push(delay); err != nil {
			return err
		}
		if err := trigger(); err != nil {
			return err
		}
		if _, err := output(ctx, "", env, b.real, "run"); err != nil {
			return fmt.Errorf("run: %w", err)
		}
		j, err := lastJob(h.Dir)
		if err != nil {
			return err
		}
		s, e := stepSpan(j, "build-backend", "build-frontend")
		rows = append(rows, []string{fmt.Sprintf("concurrent (pipeline) #%d", r+1), ms(stepDur(j, "build-backend")), ms(stepDur(j, "build-frontend")), ms(e.Sub(s))})
	}
	bl := builder.New(builder.Config{Env: builder.ChildEnv(env, h.Dir)})
	for r := range reps {
		if err := push(delay); err != nil {
			return err
		}
		for _, dir := range []string{p.BackendSrc, p.FrontendSrc} {
			if err := sandbox.Git(ctx, dir, "pull", "-q", "--ff-only"); err != nil {
				return err
			}
		}
		out := filepath.Join(b.dir, "seq-binary")
		t0 := time.Now()
		if err := bl.BuildBackend(ctx, p.BackendSrc, out, io.Discard); err != nil {
			return err
		}
		t1 := time.Now()
		if err := bl.BuildFrontend(ctx, p.FrontendSrc, io.Discard); err != nil {
			return err
		}
		t2 := time.Now()
		rows = append(rows, []string{fmt.Sprintf("sequential #%d", r+1), ms(t1.Sub(t0)), ms(t2.Sub(t1)), ms(t2.Sub(t0))})
	}
	table("Build wall time of one job: concurrent against sequential",
		[]string{"run", "backend build ms", "frontend build ms", "build phase wall ms"}, rows,
		fmt.Sprintf("Backend: the sandbox backend plus a generated 3,600-function package recompiled each time (the user's warm GOCACHE, so the standard library is cached; %s on the warm-up). Frontend: pnpm install + pnpm build of the sandbox package with a %d ms build delay (a sleep, so it needs no CPU: the best case for concurrency; a real Astro build competes for the CPUs). The pipeline's wall time is from the first build step's start to the last one's end; the pipeline runs with `true` as systemctl and pm2.", back.Round(time.Millisecond), delay))
	return nil
}

func lastJob(home string) (*queue.Job, error) {
	jobs, _, err := queue.ReadStore(filepath.Join(home, "concierge")).Load()
	if err != nil || len(jobs) == 0 {
		return nil, fmt.Errorf("no job record: %v", err)
	}
	j := jobs[len(jobs)-1]
	if j.State != queue.Succeeded {
		return nil, fmt.Errorf("job %s %s: %s", j.ID, j.State, j.Error)
	}
	return j, nil
}

func stepDur(j *queue.Job, name string) time.Duration {
	for _, s := range j.Steps {
		if s.Name == name && s.StartedAt != nil && s.FinishedAt != nil {
			return s.FinishedAt.Sub(*s.StartedAt)
		}
	}
	return 0
}

func stepSpan(j *queue.Job, names ...string) (start, end time.Time) {
	for _, s := range j.Steps {
		for _, n := range names {
			if s.Name == n && s.StartedAt != nil && s.FinishedAt != nil {
				if start.IsZero() || s.StartedAt.Before(start) {
					start = *s.StartedAt
				}
				if s.FinishedAt.After(end) {
					end = *s.FinishedAt
				}
			}
		}
	}
	return start, end
}
