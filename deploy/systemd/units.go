// Package systemd holds the files concierge ships for a host: the systemd
// units (the t8k-build-watcher path/service pair and the long-running
// concierge.service), and, beside it under deploy/, the polkit rule, the
// sudoers alternative and the logrotate snippet. `concierge units` prints
// them, so an installed binary carries its own units.
package systemd

import (
	"embed"
	"fmt"
	"io/fs"
	"sort"
	"strings"
)

//go:embed *.path *.service
var files embed.FS

// Names lists the shipped unit files.
func Names() []string {
	entries, _ := fs.ReadDir(files, ".")
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names
}

// Unit returns one shipped unit file.
func Unit(name string) (string, error) {
	b, err := files.ReadFile(name)
	if err != nil {
		return "", fmt.Errorf("read unit %s: %w (shipped: %s)", name, err, strings.Join(Names(), ", "))
	}
	return string(b), nil
}

// Options adapt the units to a host.
type Options struct {
	// Binary is where concierge is installed (default /usr/local/bin/concierge).
	Binary string
	// Home is the TractStack home (default /home/t8k).
	Home string
	// User runs the service (default t8k). Empty with UserManager.
	User string
	// UserManager adapts the units for a systemd user manager: no User=
	// or Group=, and no sandboxing options a user manager cannot apply.
	UserManager bool
	// Sandboxed, with UserManager, keeps the sandboxing options: a user
	// manager that runs as root (the tests' private one) applies them.
	Sandboxed bool
}

// Render returns the unit name with opts applied. Pure.
func Render(name string, opts Options) (string, error) {
	text, err := Unit(name)
	if err != nil {
		return "", err
	}
	return render(text, opts), nil
}

// userManagerDrops are the lines a user manager cannot honour: it runs
// as the user it is for.
var userManagerDrops = []string{"User=", "Group="}

// sandboxKeys are the sandboxing options, which an unprivileged user
// manager cannot apply.
var sandboxKeys = []string{"NoNewPrivileges=", "CapabilityBoundingSet=", "AmbientCapabilities=", "ProtectSystem=",
	"ProtectHome=", "BindPaths=", "ReadWritePaths=", "PrivateTmp=", "PrivateDevices=", "ProtectKernelTunables=",
	"ProtectKernelModules=", "ProtectKernelLogs=", "ProtectClock=", "ProtectHostname=", "ProtectControlGroups=",
	"RestrictNamespaces=", "RestrictRealtime=", "RestrictSUIDSGID=", "LockPersonality=", "RestrictAddressFamilies=",
	"SystemCallArchitectures=", "SystemCallFilter=", "SystemCallErrorNumber="}

// SandboxKeys lists the sandboxing options the shipped services set.
func SandboxKeys() []string {
	out := make([]string, len(sandboxKeys))
	for i, k := range sandboxKeys {
		out[i] = strings.TrimSuffix(k, "=")
	}
	return out
}

func render(text string, opts Options) string {
	bin := opts.Binary
	if bin == "" {
		bin = "/usr/local/bin/concierge"
	}
	home := opts.Home
	if home == "" {
		home = "/home/t8k"
	}
	user := opts.User
	if user == "" {
		user = "t8k"
	}
	var out []string
	for _, line := range strings.Split(text, "\n") {
		if opts.UserManager {
			drops := userManagerDrops
			if !opts.Sandboxed {
				drops = append(drops[:len(drops):len(drops)], sandboxKeys...)
			}
			drop := false
			for _, d := range drops {
				if strings.HasPrefix(line, d) {
					drop = true
				}
			}
			if drop {
				continue
			}
			if strings.HasPrefix(line, "WantedBy=multi-user.target") {
				line = "WantedBy=default.target"
			}
		}
		line = strings.ReplaceAll(line, "/usr/local/bin/concierge", bin)
		line = strings.ReplaceAll(line, "/home/t8k", home)
		if strings.HasPrefix(line, "User=") || strings.HasPrefix(line, "Group=") {
			k, _, _ := strings.Cut(line, "=")
			line = k + "=" + user
		}
		out = append(out, line)
	}
	return strings.Join(out, "\n")
}
