package main

import (
	"errors"
	"flag"
	"fmt"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/tractstack/concierge/deploy"
	"github.com/tractstack/concierge/notify"
)

// Config is everything concierge is told by flags and CONCIERGE_*
// environment variables. Flags win over the environment.
type Config struct {
	Home      string // --home, T8K_HOME
	DataDir   string // --data-dir, CONCIERGE_DATA_DIR; default <home>/concierge
	LogFormat string // --log-format, CONCIERGE_LOG_FORMAT: auto|console|json|journald
	LogLevel  string // --log-level, CONCIERGE_LOG_LEVEL

	GoBuildFlags   []string      // CONCIERGE_GO_BUILD_FLAGS
	FrontendUpdate string        // CONCIERGE_FRONTEND_UPDATE (set but empty: off)
	StepTimeout    time.Duration // CONCIERGE_STEP_TIMEOUT
	HealthTimeout  time.Duration // CONCIERGE_HEALTH_TIMEOUT
	StopGrace      time.Duration // CONCIERGE_STOP_GRACE
	KeepReleases   int           // CONCIERGE_KEEP_RELEASES
	KeepJobs       int           // CONCIERGE_KEEP_JOBS
	Systemctl      []string      // CONCIERGE_SYSTEMCTL, e.g. "sudo systemctl" or "systemctl --user"
	PM2            []string      // CONCIERGE_PM2
	SyslogID       string        // CONCIERGE_SYSLOG_IDENTIFIER
	MetricsFile    string        // CONCIERGE_METRICS_FILE; "" is off
	MetricsAddr    string        // CONCIERGE_METRICS_ADDR (watch); "" is off
	Notify         []string      // CONCIERGE_NOTIFY: notification URLs
	NotifyOn       string        // CONCIERGE_NOTIFY_ON: failure or all
	NotifyTimeout  time.Duration // CONCIERGE_NOTIFY_TIMEOUT
	// BuildConcurrency is CONCIERGE_BUILD_CONCURRENCY: auto, on or off.
	BuildConcurrency string

	// HealthRequestTimeout bounds one health request (a hang):
	// CONCIERGE_HEALTH_REQUEST_TIMEOUT.
	HealthRequestTimeout time.Duration
	// FrontendHealthPaths replace what the frontend check asks for:
	// CONCIERGE_FRONTEND_HEALTH_PATHS (comma or space separated).
	FrontendHealthPaths []string

	// Env is concierge's own environment, handed to children.
	Env []string
}

// DefaultConfig is the configuration of a stock TractStack host.
func DefaultConfig() Config {
	return Config{
		Home:           "/home/t8k",
		LogFormat:      "auto",
		LogLevel:       "info",
		FrontendUpdate: "astro-tractstack",
		StepTimeout:    15 * time.Minute,
		HealthTimeout:  30 * time.Second,
		StopGrace:      deploy.DefaultStopGrace,
		KeepReleases:   3,
		KeepJobs:       200,
		Systemctl:      []string{"systemctl"},
		PM2:            []string{"pm2"},
		SyslogID:       "t8k-concierge",
		NotifyOn:       notify.OnFailure,
		NotifyTimeout:  notify.DefaultTimeout,

		HealthRequestTimeout: 5 * time.Second,
		BuildConcurrency:     "auto",
	}
}

// ErrUsage marks a usage or configuration error (exit status 2).
var ErrUsage = errors.New("usage")

func usageErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrUsage, fmt.Sprintf(format, args...))
}

// envMap turns KEY=VALUE pairs into a lookup.
func envMap(env []string) map[string]string {
	m := make(map[string]string, len(env))
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}

// applyEnv reads the CONCIERGE_* settings from env into c.
func (c *Config) applyEnv(env map[string]string) error {
	if v, ok := env["T8K_HOME"]; ok && v != "" {
		c.Home = v
	}
	str := map[string]*string{
		"CONCIERGE_DATA_DIR":          &c.DataDir,
		"CONCIERGE_LOG_FORMAT":        &c.LogFormat,
		"CONCIERGE_LOG_LEVEL":         &c.LogLevel,
		"CONCIERGE_SYSLOG_IDENTIFIER": &c.SyslogID,
		"CONCIERGE_BUILD_CONCURRENCY": &c.BuildConcurrency,
		"CONCIERGE_METRICS_FILE":      &c.MetricsFile,
		"CONCIERGE_METRICS_ADDR":      &c.MetricsAddr,
		"CONCIERGE_NOTIFY_ON":         &c.NotifyOn,
	}
	for k, p := range str {
		if v, ok := env[k]; ok && v != "" {
			*p = v
		}
	}
	// An empty CONCIERGE_FRONTEND_UPDATE turns the package update off.
	if v, ok := env["CONCIERGE_FRONTEND_UPDATE"]; ok {
		c.FrontendUpdate = strings.TrimSpace(v)
	}
	c.Notify = notify.Fields(env["CONCIERGE_NOTIFY"])
	if v := env["CONCIERGE_GO_BUILD_FLAGS"]; strings.TrimSpace(v) != "" {
		flags, err := splitWords(v)
		if err != nil {
			return usageErr("CONCIERGE_GO_BUILD_FLAGS=%q: %v", v, err)
		}
		c.GoBuildFlags = flags
	}
	for k, p := range map[string]*[]string{"CONCIERGE_SYSTEMCTL": &c.Systemctl, "CONCIERGE_PM2": &c.PM2} {
		if v := strings.Fields(env[k]); len(v) > 0 {
			*p = v
		}
	}
	if v := strings.FieldsFunc(env["CONCIERGE_FRONTEND_HEALTH_PATHS"], func(r rune) bool { return r == ',' || unicode.IsSpace(r) }); len(v) > 0 {
		for _, path := range v {
			if u, err := url.Parse(path); err != nil || !strings.HasPrefix(path, "/") || strings.HasPrefix(path, "//") || u.Fragment != "" {
				return usageErr("CONCIERGE_FRONTEND_HEALTH_PATHS: %q is not a path starting with / (for example /,/robots.txt)", path)
			}
		}
		c.FrontendHealthPaths = v
	}
	for k, p := range map[string]*time.Duration{"CONCIERGE_STEP_TIMEOUT": &c.StepTimeout, "CONCIERGE_HEALTH_TIMEOUT": &c.HealthTimeout,
		"CONCIERGE_HEALTH_REQUEST_TIMEOUT": &c.HealthRequestTimeout, "CONCIERGE_STOP_GRACE": &c.StopGrace,
		"CONCIERGE_NOTIFY_TIMEOUT": &c.NotifyTimeout} {
		if v := env[k]; v != "" {
			d, err := time.ParseDuration(v)
			if err != nil {
				return usageErr("%s=%q is not a duration (for example 90s or 15m)", k, v)
			}
			*p = d
		}
	}
	for k, p := range map[string]*int{"CONCIERGE_KEEP_RELEASES": &c.KeepReleases, "CONCIERGE_KEEP_JOBS": &c.KeepJobs} {
		if v := env[k]; v != "" {
			n, err := strconv.Atoi(v)
			if err != nil {
				return usageErr("%s=%q is not a whole number", k, v)
			}
			*p = n
		}
	}
	return nil
}

// registerGlobal adds the global flags to fs, writing into c.
func (c *Config) registerGlobal(fs *flag.FlagSet) {
	fs.StringVar(&c.Home, "home", c.Home, "TractStack home `dir` (env T8K_HOME)")
	fs.StringVar(&c.DataDir, "data-dir", c.DataDir, "concierge's own data `dir` (default <home>/concierge)")
	fs.StringVar(&c.LogFormat, "log-format", c.LogFormat, "log `format`: auto, console, json or journald")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "log `level`: debug, info, warn or error")
}

// Validate checks c and fills in what derives from other settings.
func (c *Config) Validate() error {
	if c.Home == "" || !filepath.IsAbs(c.Home) {
		return usageErr("--home %q must be an absolute path", c.Home)
	}
	c.Home = filepath.Clean(c.Home)
	if c.DataDir == "" {
		c.DataDir = filepath.Join(c.Home, "concierge")
	}
	if !filepath.IsAbs(c.DataDir) {
		return usageErr("--data-dir %q must be an absolute path", c.DataDir)
	}
	c.DataDir = filepath.Clean(c.DataDir)
	state := filepath.Join(c.Home, "state")
	if c.DataDir == state || strings.HasPrefix(c.DataDir, state+string(filepath.Separator)) {
		// Writes there would fire the path unit again and again.
		return usageErr("--data-dir %s must not be inside the state directory %s", c.DataDir, state)
	}
	switch c.LogFormat {
	case "auto", "console", "json", "journald":
	default:
		return usageErr("--log-format %q: use auto, console, json or journald", c.LogFormat)
	}
	switch c.LogLevel {
	case "trace", "debug", "info", "warn", "error":
	default:
		return usageErr("--log-level %q: use debug, info, warn or error", c.LogLevel)
	}
	if c.StepTimeout <= 0 || c.HealthTimeout <= 0 || c.HealthRequestTimeout <= 0 || c.StopGrace <= 0 {
		return usageErr("CONCIERGE_STEP_TIMEOUT, CONCIERGE_HEALTH_TIMEOUT, CONCIERGE_HEALTH_REQUEST_TIMEOUT and CONCIERGE_STOP_GRACE must be positive")
	}
	if c.KeepReleases < 1 {
		return usageErr("CONCIERGE_KEEP_RELEASES must be at least 1 (rollback needs one previous release)")
	}
	switch c.BuildConcurrency {
	case "auto", "on", "off":
	default:
		return usageErr("CONCIERGE_BUILD_CONCURRENCY=%q: use auto, on or off", c.BuildConcurrency)
	}
	if c.KeepJobs < 1 {
		return usageErr("CONCIERGE_KEEP_JOBS must be at least 1")
	}
	return c.validateReports()
}

// StateDir is where triggers arrive.
func (c *Config) StateDir() string { return filepath.Join(c.Home, "state") }

// LockPath is the run lock: one per install, derived from the home alone,
// so that every concierge on this home (whatever its data dir, whether or
// not it read concierge.env) takes the same lock. It sits in the home,
// which the hardened units may write, and not in state/, where a write
// would fire the path unit.
func (c *Config) LockPath() string { return filepath.Join(c.Home, "concierge.lock") }

// LogFile is the compat log file the old script appended to.
func (c *Config) LogFile() string { return filepath.Join(c.Home, "log", "concierge.log") }
