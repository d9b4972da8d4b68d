// Package systemdtest starts a private systemd user manager for a test, as
// TESTING.md describes: its own XDG_RUNTIME_DIR (so its bus and private
// socket are the test's) and its own XDG_CONFIG_HOME (so the unit files of
// test packages running at the same time do not collide). The manager is
// ended by the pid the test started, never by name.
package systemdtest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tractstack/concierge/internal/testtool"
)

// Binary is the systemd executable the manager runs.
const Binary = "/lib/systemd/systemd"

// JournalSocket is where journald listens; the test script starts one
// journald for all tests.
const JournalSocket = "/run/systemd/journal/socket"

// Manager is a running private systemd user manager.
type Manager struct {
	t          testing.TB
	runtimeDir string
	configHome string
	cmd        *exec.Cmd
	done       chan error
	logPath    string
}

// Start starts a user manager and waits until it is running (or degraded),
// at most 20 seconds. It skips t (or fails it under CI) when systemd is not
// installed or the test does not run as root. t.Cleanup stops it.
func Start(t testing.TB) *Manager {
	t.Helper()
	if _, err := os.Stat(Binary); err != nil {
		testtool.Missing(t, Binary+" is not installed")
	}
	if os.Geteuid() != 0 {
		testtool.Missing(t, "a private systemd user manager needs root here")
	}
	testtool.Require(t, "systemctl")
	if err := os.MkdirAll("/run/systemd/system", 0o755); err != nil {
		t.Fatalf("create /run/systemd/system: %v", err)
	}
	serialize(t)
	// Short paths: sockets live in the runtime dir and a unix socket path
	// is limited to 108 bytes, which t.TempDir() can exceed.
	runtimeDir, err := os.MkdirTemp("", "sdrt-")
	if err != nil {
		t.Fatalf("create runtime dir: %v", err)
	}
	if err := os.Chmod(runtimeDir, 0o700); err != nil {
		t.Fatalf("chmod runtime dir: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(runtimeDir) })
	configHome := filepath.Join(t.TempDir(), "config")
	m := &Manager{t: t, runtimeDir: runtimeDir, configHome: configHome, logPath: filepath.Join(t.TempDir(), "systemd-user.log")}
	if err := os.MkdirAll(m.UnitDir(), 0o755); err != nil {
		t.Fatalf("create unit dir: %v", err)
	}
	t.Cleanup(m.stop)
	m.launch()
	return m
}

// Reboot stops the manager (it stops its units) and starts a fresh one on
// the same unit configuration and runtime dir, as a host boots: the new
// manager starts default.target, so what is enabled starts and nothing
// else does.
func (m *Manager) Reboot() {
	m.t.Helper()
	m.stop()
	m.launch()
}

// launch starts systemd --user and waits until it is running (or
// degraded), at most 20 seconds.
func (m *Manager) launch() {
	t := m.t
	t.Helper()
	logFile, err := os.OpenFile(m.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatalf("create manager log: %v", err)
	}
	defer logFile.Close()
	cmd := exec.Command(Binary, "--user")
	cmd.Env = append(m.Env(), "PATH="+os.Getenv("PATH"), "HOME="+filepath.Dir(m.configHome))
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s --user: %v", Binary, err)
	}
	m.cmd = cmd
	m.done = make(chan error, 1)
	go func() { m.done <- cmd.Wait() }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, _ := m.Systemctl("is-system-running")
		state := strings.TrimSpace(out)
		if state == "running" || state == "degraded" {
			break
		}
		select {
		case err := <-m.done:
			m.done <- err
			t.Fatalf("systemd --user exited: %v\n%s", err, m.managerLog())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("systemd --user not running within 20s (state %q)\n%s", state, m.managerLog())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (m *Manager) managerLog() string {
	b, _ := os.ReadFile(m.logPath)
	return string(b)
}

// stop asks the manager to exit (it stops its units), then kills it by
// pid if it has not exited within 15 seconds, and waits for it.
func (m *Manager) stop() {
	if m.cmd == nil || m.cmd.Process == nil {
		return
	}
	defer func() { m.cmd = nil }()
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.done:
		return
	case <-time.After(15 * time.Second):
	}
	m.t.Logf("systemd --user (pid %d) did not exit on SIGTERM; killing it", m.cmd.Process.Pid)
	_ = m.cmd.Process.Kill()
	<-m.done
}

// Env is the environment a child needs to talk to this manager with
// `systemctl --user`.
func (m *Manager) Env() []string {
	env := []string{"XDG_RUNTIME_DIR=" + m.runtimeDir, "XDG_CONFIG_HOME=" + m.configHome}
	if _, err := os.Stat(filepath.Join(m.runtimeDir, "bus")); err == nil {
		env = append(env, "DBUS_SESSION_BUS_ADDRESS=unix:path="+filepath.Join(m.runtimeDir, "bus"))
	}
	return env
}

// RuntimeDir is the manager's XDG_RUNTIME_DIR.
func (m *Manager) RuntimeDir() string { return m.runtimeDir }

// UnitDir is where user unit files go.
func (m *Manager) UnitDir() string { return filepath.Join(m.configHome, "systemd", "user") }

// Systemctl runs `systemctl --user args...` against this manager and
// returns its combined output.
func (m *Manager) Systemctl(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "systemctl", append([]string{"--user"}, args...)...)
	cmd.Env = append(m.Env(), "PATH="+os.Getenv("PATH"), "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("systemctl --user %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// InstallUnit writes a unit file into the unit dir and reloads the
// manager.
func (m *Manager) InstallUnit(name, content string) {
	m.t.Helper()
	if err := os.WriteFile(filepath.Join(m.UnitDir(), name), []byte(content), 0o644); err != nil {
		m.t.Fatalf("write unit %s: %v", name, err)
	}
	m.DaemonReload()
}

// DaemonReload runs `systemctl --user daemon-reload`.
func (m *Manager) DaemonReload() {
	m.t.Helper()
	if out, err := m.Systemctl("daemon-reload"); err != nil {
		m.t.Fatalf("daemon-reload: %v\n%s", err, out)
	}
}

// MainPID returns the main pid of a unit (0 when it is not running).
func (m *Manager) MainPID(unit string) int {
	m.t.Helper()
	out, err := m.Systemctl("show", "-p", "MainPID", "--value", unit)
	if err != nil {
		m.t.Fatalf("show MainPID of %s: %v", unit, err)
	}
	var pid int
	fmt.Sscanf(strings.TrimSpace(out), "%d", &pid)
	return pid
}

// RequireJournal skips t (or fails it under CI) unless journald is
// listening on its socket; the test script starts one for all tests.
func RequireJournal(t testing.TB) {
	t.Helper()
	// A socket file left by a journald that was killed refuses the
	// connection; only a live journald accepts it.
	conn, err := net.Dial("unixgram", JournalSocket)
	if err != nil {
		testtool.Missing(t, "journald is not running ("+err.Error()+")")
		return
	}
	conn.Close()
}

// lockPath serialises private managers across test processes.
const lockPath = "/run/concierge-systemdtest.lock"

// serialize holds an exclusive lock for the rest of the test: user
// managers started without systemd as PID 1 put their units' cgroups at
// the root of the hierarchy, so two managers running a unit of the same
// name share its cgroup, and stopping one kills the other's. `go test
// ./...` runs packages in parallel, so the managers take turns.
func serialize(t testing.TB) {
	t.Helper()
	f, err := os.OpenFile(lockPath, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatalf("open %s: %v", lockPath, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		t.Fatalf("lock %s: %v", lockPath, err)
	}
	t.Cleanup(func() { f.Close() })
}
