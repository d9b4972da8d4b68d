package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/tractstack/concierge/queue"
)

// logsCmd prints a job's recorded output. With -f it follows the running
// (or given) job live, step by step, and ends when the job ends, with its
// result. It only reads, so it works beside a running concierge.
func logsCmd(ctx context.Context, a *App, cfg *Config, args []string) error {
	var follow bool
	fs, err := parseFlags(a, cfg, "logs", args, func(fs *flag.FlagSet) {
		fs.BoolVar(&follow, "f", false, "follow the running (or given) job until it ends")
	})
	if err != nil {
		return err
	}
	store := queue.ReadStore(cfg.DataDir)
	var id string
	switch {
	case fs.NArg() == 1:
		id = fs.Arg(0)
	case fs.NArg() == 0 && follow:
		id, err = jobToFollow(store)
		if err != nil {
			return err
		}
		if id == "" {
			fmt.Fprintln(a.Stdout, "no job is running or pending")
			return nil
		}
	default:
		return usageErr("logs takes one job id (see: concierge status), or -f to follow the running job")
	}
	job, err := store.Get(id)
	if errors.Is(err, queue.ErrNoJob) || errors.Is(err, queue.ErrBadID) {
		return usageErr("%v", err)
	}
	if err != nil {
		return err
	}
	if !follow {
		if _, err := copyFrom(store.OutputPath(id), 0, a.Stdout); err != nil && !isNotExist(err) {
			return err
		}
		return jobResult(a, job)
	}
	return followJob(ctx, a, store, id)
}

// jobToFollow is the running job, else the oldest pending one, else "".
func jobToFollow(store *queue.Store) (string, error) {
	jobs, _, err := store.Load()
	if err != nil {
		return "", err
	}
	for _, j := range jobs {
		if j.State == queue.Running {
			return j.ID, nil
		}
	}
	for _, j := range jobs {
		if j.State == queue.Pending {
			return j.ID, nil
		}
	}
	return "", nil
}

// followJob prints the job's output as it grows until the job is done.
func followJob(ctx context.Context, a *App, store *queue.Store, id string) error {
	var offset int64
	announced := map[string]bool{}
	for {
		job, err := store.Get(id)
		if err != nil {
			return err
		}
		n, err := copyFrom(store.OutputPath(id), offset, a.Stdout)
		if err != nil && !isNotExist(err) {
			return err
		}
		offset += n
		for _, s := range job.Steps {
			key := s.Name + string(s.State)
			if s.State.Done() && !announced[key] {
				announced[key] = true
				fmt.Fprintf(a.Stdout, "=== step %s %s (%s)\n", s.Name, s.State, time.Duration(s.DurationMS)*time.Millisecond)
			}
		}
		if job.State.Done() {
			// The output may have grown between the read and the check.
			if n, err := copyFrom(store.OutputPath(id), offset, a.Stdout); err == nil {
				offset += n
			}
			return jobResult(a, job)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// jobResult prints the job's end and maps it to the exit status.
func jobResult(a *App, job *queue.Job) error {
	switch job.State {
	case queue.Succeeded:
		fmt.Fprintf(a.Stdout, "=== job %s succeeded\n", job.ID)
		return nil
	case queue.Failed, queue.Rejected:
		fmt.Fprintf(a.Stdout, "=== job %s %s: %s\n", job.ID, job.State, job.Error)
		return &exitError{code: exitFailed, err: errors.New("")}
	default:
		fmt.Fprintf(a.Stdout, "=== job %s is %s\n", job.ID, job.State)
		return nil
	}
}

func copyFrom(path string, offset int64, w io.Writer) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return 0, err
	}
	return io.Copy(w, f)
}
