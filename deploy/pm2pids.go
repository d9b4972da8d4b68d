package deploy

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// pm2Home is the PM2_HOME of the deployer's pm2 children: PM2_HOME from
// their environment, else $HOME/.pm2 as pm2 itself defaults.
func pm2Home(env []string) string {
	var home string
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PM2_HOME="); ok && v != "" {
			return v
		}
		if v, ok := strings.CutPrefix(kv, "HOME="); ok {
			home = v
		}
	}
	if home == "" {
		return ""
	}
	return filepath.Join(home, ".pm2")
}

// PM2PIDFiles picks, among the names in pm2's pids directory, those of a
// process: pm2 writes <name>-<pm_id>.pid for each instance.
func PM2PIDFiles(names []string, process string) []string {
	var out []string
	for _, n := range names {
		id, ok := strings.CutPrefix(n, process+"-")
		if !ok {
			continue
		}
		id, ok = strings.CutSuffix(id, ".pid")
		if _, err := strconv.Atoi(id); ok && err == nil {
			out = append(out, n)
		}
	}
	return out
}

// pm2PIDs returns the pids pm2 recorded for a process (none when it
// cannot tell).
func pm2PIDs(home, process string) []int {
	if home == "" {
		return nil
	}
	dir := filepath.Join(home, "pids")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	var pids []int
	for _, n := range PM2PIDFiles(names, process) {
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			continue
		}
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
			pids = append(pids, pid)
		}
	}
	return pids
}

// pm2DaemonUp reports whether pm2's daemon runs for home: the pid in
// home/pm2.pid is a live process titled as pm2's daemon (a pid file left
// by a reboot may name a pid reused by something else).
func pm2DaemonUp(home string) bool {
	if home == "" {
		return false
	}
	b, err := os.ReadFile(filepath.Join(home, "pm2.pid"))
	if err != nil {
		return false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return false
	}
	cmdline, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	return err == nil && PM2Daemon(string(cmdline), home)
}

// PM2Daemon says whether a process's command line (as /proc shows it) is
// that of pm2's daemon for home: pm2 sets its title to
// "PM2 v<version>: God Daemon (<home>)". Pure.
func PM2Daemon(cmdline, home string) bool {
	title := strings.TrimRight(strings.ReplaceAll(cmdline, "\x00", " "), " ")
	return strings.HasPrefix(title, "PM2 ") && strings.HasSuffix(title, "God Daemon ("+home+")")
}
