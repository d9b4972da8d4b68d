package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/tractstack/concierge/queue"
)

// planCmd parses and validates a trigger and prints the job(s) and steps
// that would run. It runs nothing and writes nothing.
func planCmd(ctx context.Context, a *App, cfg *Config, args []string) error {
	fs, err := parseFlags(a, cfg, "plan", args, nil)
	if err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageErr("plan takes one trigger file, or - for standard input")
	}
	name := fs.Arg(0)
	var data []byte
	if name == "-" {
		data, err = io.ReadAll(io.LimitReader(a.Stdin, queue.MaxTriggerSize+1))
		name = "stdin"
	} else {
		data, err = readTriggerFile(name)
	}
	if err != nil {
		return err
	}
	reqs, warnings, err := queue.Parse(name, data, siteChecker(cfg.Home))
	for _, w := range warnings {
		fmt.Fprintln(a.Stderr, "warning:", w)
	}
	if err != nil {
		return &exitError{code: exitFailed, err: fmt.Errorf("invalid trigger: %w", err)}
	}
	// Group as intake would.
	jobs := queue.Group(name, reqs)
	for i, j := range jobs {
		steps, err := planSteps(cfg, j)
		if err != nil {
			return &exitError{code: exitFailed, err: err}
		}
		fmt.Fprintf(a.Stdout, "job %d: %s %s (tenants %v)\n", i+1, j.Command, j.Target, j.Tenants)
		for n, s := range steps {
			fmt.Fprintf(a.Stdout, "  %d. %s\n", n+1, s)
		}
		for _, l := range planProbes(cfg, j) {
			fmt.Fprintf(a.Stdout, "  %s\n", l)
		}
	}
	return nil
}

// readTriggerFile reads a trigger named on the command line the way intake
// would: no links followed, no FIFO blocked on, at most the size limit.
func readTriggerFile(path string) ([]byte, error) {
	st, err := os.Lstat(path)
	if err != nil {
		return nil, fmt.Errorf("read trigger: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, &exitError{code: exitFailed, err: fmt.Errorf("invalid trigger: %s is not a regular file", path)}
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read trigger: %w", err)
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, queue.MaxTriggerSize+1))
}
