package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/tractstack/concierge/notify"
)

// validateReports checks the metrics settings: an absolute file path,
// and an HTTP address on loopback only (the metrics name commits and
// targets; they are not for the network at large).
func (c *Config) validateReports() error {
	if c.MetricsFile != "" {
		if !filepath.IsAbs(c.MetricsFile) {
			return usageErr("CONCIERGE_METRICS_FILE=%q must be an absolute path (for example /var/lib/node_exporter/textfile_collector/concierge.prom)", c.MetricsFile)
		}
		c.MetricsFile = filepath.Clean(c.MetricsFile)
	}
	if c.MetricsAddr != "" && !loopbackAddr(c.MetricsAddr) {
		return usageErr("CONCIERGE_METRICS_ADDR=%q must be a loopback host:port, for example 127.0.0.1:9469", c.MetricsAddr)
	}
	if c.NotifyTimeout <= 0 {
		return usageErr("CONCIERGE_NOTIFY_TIMEOUT must be positive")
	}
	// The URLs are checked (nothing is sent), so a typo stops concierge
	// at once rather than at the first failure; the error hides secrets.
	if _, err := c.notifier(); err != nil {
		return usageErr("CONCIERGE_NOTIFY: %v", err)
	}
	return nil
}

// notifier is the notifier the settings describe; nil without URLs.
func (c *Config) notifier() (*notify.Notifier, error) {
	host, _ := os.Hostname()
	return notify.New(notify.Config{URLs: c.Notify, On: c.NotifyOn, Timeout: c.NotifyTimeout, Host: host})
}

// loopbackAddr reports whether addr is host:port with a loopback host
// (localhost, 127.0.0.0/8, ::1) and a port.
func loopbackAddr(addr string) bool {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// childSafe is env without CONCIERGE_NOTIFY: its URLs hold tokens, and
// builds run third-party code (npm packages) that has no need of them.
func childSafe(env []string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		if !strings.HasPrefix(kv, "CONCIERGE_NOTIFY=") {
			out = append(out, kv)
		}
	}
	return out
}
