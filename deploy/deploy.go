// Package deploy puts a release live for one target of a TractStack host:
// where its files are (Paths), which services it has (systemd unit, pm2
// process, ports), the atomic swap of a new backend binary and frontend
// dist with the previous releases kept for rollback, crash recovery of an
// interrupted swap, service restarts through systemctl and pm2, and health
// checks over loopback HTTP. A release made live by a swap is unverified
// until MarkVerified records that it passed its checks; only verified
// releases are kept for rollback. A rollback records the job that made it,
// so that the same job run again does not roll back twice.
//
// The decisions (paths and names for a target, parsing the ports file,
// what Recover does for what it finds on disk, what to roll back to, what
// to prune) are pure functions; the rest are thin wrappers around files,
// child processes and HTTP.
package deploy

import (
	"context"
	"io"
	"time"

	"github.com/rs/zerolog"
)

// RunFunc runs a child process: name with args in dir (may be ""), with
// exactly env as its environment, its output to out, killed with its whole
// process group when timeout passes or ctx ends. builder.Run fits it.
type RunFunc func(ctx context.Context, dir, name string, args, env []string, timeout time.Duration, out io.Writer) error

// Config shapes a Deployer. Zero fields take the defaults of
// DefaultConfig.
type Config struct {
	// Systemctl is the service manager command prefix: ["systemctl"] on
	// a host running as root, ["sudo","systemctl"] as t8k with the
	// installer's sudoers rule, ["systemctl","--user"] in tests.
	Systemctl []string
	// PM2 is the pm2 command prefix.
	PM2 []string
	// HealthTimeout bounds each health check; HealthInterval is the
	// longest wait between two probes within it.
	HealthTimeout  time.Duration
	HealthInterval time.Duration
	// RequestTimeout bounds each health request (at most a third of
	// HealthTimeout is used): a request that runs out of it is a hang.
	RequestTimeout time.Duration
	// FrontendPaths, when set, are the paths the frontend check asks
	// for instead of "/" and one file of the release (FrontendProbes).
	FrontendPaths []string
	// Keep is how many previous releases are kept.
	Keep int
	// StopGrace is how long an old backend may hold open requests after
	// closing its port, while it stops, before it is ended (stop.go).
	StopGrace time.Duration
	// StepTimeout bounds each systemctl or pm2 child.
	StepTimeout time.Duration
	// Env is the whole environment of systemctl and pm2 children (PATH,
	// HOME, PM2_HOME, XDG_RUNTIME_DIR...); nothing is inherited.
	Env []string
	// Log receives the deployer's events.
	Log zerolog.Logger
	// Run runs children; nil uses the package's own process-group runner.
	Run RunFunc
	// Now is the clock for release ids; nil is time.Now.
	Now func() time.Time
}

// DefaultConfig is the configuration of a host.
func DefaultConfig() Config {
	return Config{
		Systemctl:      []string{"systemctl"},
		PM2:            []string{"pm2"},
		HealthTimeout:  30 * time.Second,
		HealthInterval: 100 * time.Millisecond,
		RequestTimeout: 5 * time.Second,
		Keep:           3,
		StopGrace:      DefaultStopGrace,
		StepTimeout:    15 * time.Minute,
		Log:            zerolog.Nop(),
	}
}

// Deployer carries out the deploy operations of Config on any target.
// Operations on one target must not run concurrently (the runner runs one
// job at a time); different targets are independent.
type Deployer struct {
	cfg Config
	// fault, when set by tests, is called at each crash point of the
	// staging state machine; an error stops the operation there as a
	// kill -9 would.
	fault func(point string) error
}

// New returns a Deployer for cfg, with defaults for zero fields.
func New(cfg Config) *Deployer {
	def := DefaultConfig()
	if len(cfg.Systemctl) == 0 {
		cfg.Systemctl = def.Systemctl
	}
	if len(cfg.PM2) == 0 {
		cfg.PM2 = def.PM2
	}
	if cfg.HealthTimeout <= 0 {
		cfg.HealthTimeout = def.HealthTimeout
	}
	if cfg.HealthInterval <= 0 {
		cfg.HealthInterval = def.HealthInterval
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = def.RequestTimeout
	}
	if cfg.Keep <= 0 {
		cfg.Keep = def.Keep
	}
	if cfg.StopGrace <= 0 {
		cfg.StopGrace = def.StopGrace
	}
	if cfg.StepTimeout <= 0 {
		cfg.StepTimeout = def.StepTimeout
	}
	if cfg.Run == nil {
		cfg.Run = runChild
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cfg.Log = cfg.Log.With().Str("component", "deploy").Logger()
	return &Deployer{cfg: cfg}
}

// Config returns the effective configuration.
func (d *Deployer) Config() Config { return d.cfg }

func (d *Deployer) crashPoint(point string) error {
	if d.fault == nil {
		return nil
	}
	return d.fault(point)
}
