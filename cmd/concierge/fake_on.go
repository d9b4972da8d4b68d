//go:build concierge_fake

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/tractstack/concierge/queue"
	"github.com/tractstack/concierge/runner"
)

// fakeExecutor, in a binary built with -tags concierge_fake (the queue's
// integration tests), stands in for the build pipeline so the queue can be
// driven end to end without git or go. Its directory is
// CONCIERGE_FAKE_DIR: it appends one JSON line per job to runs.jsonl;
// while a file named gate exists there, a job holds in its step after
// creating running-<id>; a target listed in fail-targets fails; the
// content of a file named say is printed as step output.
func fakeExecutor(cfg *Config) runner.Executor {
	dir := envMap(cfg.Env)["CONCIERGE_FAKE_DIR"]
	if dir == "" {
		return nil
	}
	return &fake{dir: dir}
}

type fake struct{ dir string }

type fakeRun struct {
	Event    string   `json:"event"`
	ID       string   `json:"id"`
	Target   string   `json:"target"`
	Command  string   `json:"command"`
	Tenants  []string `json:"tenants"`
	Triggers []string `json:"triggers"`
	Attempts int      `json:"attempts"`
	PID      int      `json:"pid"`
}

func (f *fake) record(ev string, job queue.Job) error {
	b, _ := json.Marshal(fakeRun{ev, job.ID, job.Target, job.Command, job.Tenants, job.Triggers, job.Attempts, os.Getpid()})
	fh, err := os.OpenFile(filepath.Join(f.dir, "runs.jsonl"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open runs.jsonl: %w", err)
	}
	defer fh.Close()
	_, err = fh.Write(append(b, '\n'))
	return err
}

func (f *fake) Execute(ctx context.Context, job queue.Job, s runner.Session) error {
	if err := f.record("start", job); err != nil {
		return err
	}
	err := s.Step(ctx, "fake-build", func(ctx context.Context, out io.Writer) error {
		fmt.Fprintf(out, "building %s for %s\n", job.Target, strings.Join(job.Tenants, ","))
		if say, err := os.ReadFile(filepath.Join(f.dir, "say")); err == nil {
			fmt.Fprintf(out, "%s\n", say) // what a tool printed, as it printed it
		}
		gate := filepath.Join(f.dir, "gate")
		if _, err := os.Stat(gate); err == nil {
			if err := os.WriteFile(filepath.Join(f.dir, "running-"+job.ID), nil, 0o644); err != nil {
				return err
			}
			for {
				if _, err := os.Stat(gate); errors.Is(err, os.ErrNotExist) {
					break
				}
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(10 * time.Millisecond):
				}
			}
		}
		fails, _ := os.ReadFile(filepath.Join(f.dir, "fail-targets"))
		if slices.Contains(strings.Fields(string(fails)), job.Target) {
			fmt.Fprintln(out, "error: fake failure")
			return errors.New("fake build failed")
		}
		fmt.Fprintln(out, "done")
		return nil
	})
	if err != nil {
		return err
	}
	return f.record("end", job)
}
