package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// burst: many triggers for one target at once, and during a build.
func (b *bench) burst(ctx context.Context) error {
	var rows [][]string
	for _, c := range []struct {
		name   string
		n      int
		during bool
	}{{"1,000 at once, idle", 1000, false}, {"100 during a running build", 100, true}} {
		row, err := b.burstCase(c.name, c.n, c.during)
		if err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
		rows = append(rows, row)
	}
	table("Bursts of triggers for one target (watch mode, fake pipeline)",
		[]string{"case", "triggers", "write ms", "intake ms (last written → state/ empty)", "jobs", "builds"}, rows,
		"The fake build holds until the burst is taken in (a real build outlasts it). write ms is the time to create the files (this disk: ~0.5 ms per file even without concierge); intake ms is from the last file written until state/ is empty. Goal: one build (plus one follow-up for triggers that arrive during it); 1,000 triggers taken in under 2 s.")
	return nil
}

func (b *bench) burstCase(name string, n int, during bool) ([]string, error) {
	h, err := b.newHome("burst-" + strings.ReplaceAll(strings.Fields(name)[0], ",", ""))
	if err != nil {
		return nil, err
	}
	gate := filepath.Join(h.fakeDir, "gate")
	w, err := startWatch(b.fake, h.env)
	if err != nil {
		return nil, err
	}
	defer w.stop()
	// The fake build holds at the gate until the burst is taken in, as a
	// real build (minutes) would outlast it.
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		return nil, err
	}
	if during {
		if err := h.drop("build-0000-first.csv"); err != nil {
			return nil, err
		}
		err := waitFor(20*time.Second, time.Millisecond, func() bool {
			m, _ := filepath.Glob(filepath.Join(h.fakeDir, "running-*"))
			return len(m) > 0
		})
		if err != nil {
			return nil, fmt.Errorf("first build did not start: %w", err)
		}
	}
	t0 := time.Now()
	for i := range n {
		if err := h.drop(fmt.Sprintf("build-%05d.csv", i+1)); err != nil {
			return nil, err
		}
	}
	last := time.Now()
	if err := waitFor(time.Minute, time.Millisecond, h.stateEmpty); err != nil {
		return nil, fmt.Errorf("intake: %w", err)
	}
	intake := time.Since(last)
	os.Remove(gate)
	if err := waitFor(time.Minute, 5*time.Millisecond, h.idle); err != nil {
		return nil, fmt.Errorf("jobs did not finish: %w", err)
	}
	return []string{name, fmt.Sprint(n), ms(last.Sub(t0)), ms(intake), fmt.Sprint(len(h.jobs())), fmt.Sprint(h.builds())}, nil
}
