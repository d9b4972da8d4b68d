package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/tractstack/concierge/deploy/systemd"
)

// unitsCmd prints the shipped systemd units, adapted to this host's
// paths, ready to be written to /etc/systemd/system.
func unitsCmd(ctx context.Context, a *App, cfg *Config, args []string) error {
	var opts systemd.Options
	var name string
	fs, err := parseFlags(a, cfg, "units", args, func(fs *flag.FlagSet) {
		fs.StringVar(&opts.Binary, "binary", "/usr/local/bin/concierge", "installed concierge `path` for ExecStart")
		fs.StringVar(&opts.User, "user", "t8k", "`user` the services run as")
		fs.BoolVar(&opts.UserManager, "user-manager", false, "adapt for a systemd user manager (systemctl --user)")
		fs.StringVar(&name, "name", "", "print only this unit `file`")
	})
	if err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErr("units takes no arguments (use --name)")
	}
	opts.Home = cfg.Home
	names := systemd.Names()
	if name != "" {
		names = []string{name}
	}
	for i, n := range names {
		text, err := systemd.Render(n, opts)
		if err != nil {
			return usageErr("%v", err)
		}
		if len(names) > 1 {
			if i > 0 {
				fmt.Fprintln(a.Stdout)
			}
			fmt.Fprintf(a.Stdout, "### %s\n", n)
		}
		fmt.Fprint(a.Stdout, text)
	}
	return nil
}
