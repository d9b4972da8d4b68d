package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/tractstack/concierge/queue"
)

// enqueueCmd validates a trigger and writes it atomically to the state
// directory as build-<ULID>.csv, as a producer would.
func enqueueCmd(ctx context.Context, a *App, cfg *Config, args []string) error {
	var typ, tenant, site, cmd string
	_, err := parseFlags(a, cfg, "enqueue", args, func(fs *flag.FlagSet) {
		fs.StringVar(&typ, "type", "", "trigger `type`: main, prod, multi or dedicated (required)")
		fs.StringVar(&tenant, "tenant", "", "`tenant` id (default: default)")
		fs.StringVar(&site, "site", "", "dedicated `site` id (required for --type dedicated)")
		fs.StringVar(&cmd, "command", queue.CommandBuild, "`command`: build, restart or rollback")
	})
	if err != nil {
		return err
	}
	line := queue.TriggerLine(typ, tenant, site, cmd, "")
	if _, _, err := queue.Parse("trigger", []byte(line), siteChecker(cfg.Home)); err != nil {
		return usageErr("%v", err)
	}
	path, err := queue.WriteTrigger(cfg.StateDir(), []string{line}, time.Now())
	if err != nil {
		return err
	}
	fmt.Fprintln(a.Stdout, path)
	return nil
}
