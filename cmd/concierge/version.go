package main

import (
	"context"
	"fmt"
	"runtime/debug"
)

// versionCmd prints concierge's version: the module version it was
// installed at, or the VCS revision it was built from.
func versionCmd(ctx context.Context, a *App, cfg *Config, args []string) error {
	if _, err := parseFlags(a, cfg, "version", args, nil); err != nil {
		return err
	}
	fmt.Fprintln(a.Stdout, "concierge", buildVersion())
	return nil
}

func buildVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := bi.Main.Version
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			v += " (" + s.Value[:12] + ")"
		}
	}
	return v + " " + bi.GoVersion
}
