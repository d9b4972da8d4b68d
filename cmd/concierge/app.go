package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// App is the command line: its streams and environment, so that tests run
// it in-process without touching the real ones.
type App struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	Env            []string
}

// Exit statuses.
const (
	exitOK      = 0
	exitFailed  = 1 // a job failed or a trigger was rejected
	exitUsage   = 2 // usage or configuration error
	exitRuntime = 1
)

// exitError carries an exit status chosen by a subcommand.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// command is one subcommand.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, a *App, cfg *Config, args []string) error
	hidden  bool
}

func (a *App) commands() []command {
	return []command{
		{"run", "process every trigger and queued job, then exit", runCmd, false},
		{"watch", "stay up and process triggers as they arrive", watchCmd, false},
		{"status", "show the running, pending and recent jobs", statusCmd, false},
		{"logs", "print a job's output; -f follows the running job", logsCmd, false},
		{"enqueue", "validate and write a trigger file", enqueueCmd, false},
		{"plan", "parse a trigger and show the job(s) and steps it would run", planCmd, false},
		{"retry", "queue a failed job again", retryCmd, false},
		{"units", "print the systemd units, adapted to this host", unitsCmd, false},
		{"demo", "run the whole pipeline on a throwaway home it sets up", demoCmd, false},
		{"version", "print the version", versionCmd, false},
		{"demo-ctl", "the demo's stand-in for systemctl and pm2", demoCtlCmd, true},
	}
}

// Main runs the command line and returns the exit status.
func (a *App) Main(ctx context.Context, args []string) int {
	err := a.run(ctx, args)
	if err == nil {
		return exitOK
	}
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil && ee.err.Error() != "" {
			fmt.Fprintln(a.Stderr, "concierge:", ee.err)
		}
		return ee.code
	}
	fmt.Fprintln(a.Stderr, "concierge:", err)
	if errors.Is(err, ErrUsage) {
		return exitUsage
	}
	return exitRuntime
}

func (a *App) run(ctx context.Context, args []string) error {
	cfg := DefaultConfig()
	if err := cfg.applyEnv(envMap(a.Env)); err != nil {
		return err
	}
	cfg.Env = a.Env
	fs := flag.NewFlagSet("concierge", flag.ContinueOnError)
	fs.SetOutput(a.Stderr)
	cfg.registerGlobal(fs)
	fs.Usage = func() { a.usage(fs) }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageErr("%v", err)
	}
	rest := fs.Args()
	if len(rest) == 0 {
		a.usage(fs)
		return usageErr("no command given")
	}
	for _, c := range a.commands() {
		if c.name == rest[0] {
			return c.run(ctx, a, &cfg, rest[1:])
		}
	}
	a.usage(fs)
	return usageErr("unknown command %q", rest[0])
}

func (a *App) usage(fs *flag.FlagSet) {
	var b strings.Builder
	b.WriteString("usage: concierge [global flags] <command> [flags]\n\ncommands:\n")
	for _, c := range a.commands() {
		if !c.hidden {
			fmt.Fprintf(&b, "  %-8s %s\n", c.name, c.summary)
		}
	}
	b.WriteString("\nglobal flags (also accepted after the command):\n")
	fmt.Fprint(a.Stderr, b.String())
	fs.PrintDefaults()
}

// parseFlags parses a subcommand's flags (the global ones included, so
// `concierge run --home X` works too) and validates the configuration.
func parseFlags(a *App, cfg *Config, name string, args []string, setup func(fs *flag.FlagSet)) (*flag.FlagSet, error) {
	fs := flag.NewFlagSet("concierge "+name, flag.ContinueOnError)
	fs.SetOutput(a.Stderr)
	cfg.registerGlobal(fs)
	if setup != nil {
		setup(fs)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, usageErr("%v", err)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return fs, nil
}
