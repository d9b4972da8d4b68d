package main

import (
	"net"
	"path/filepath"
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
	return nil
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
