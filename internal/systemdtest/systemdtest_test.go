package systemdtest

import (
	"strings"
	"testing"
	"time"
)

func TestManagerRunsAUnit(t *testing.T) {
	m := Start(t)
	m.InstallUnit("hello.service", "[Service]\nExecStart=/bin/sleep 300\n")
	if out, err := m.Systemctl("start", "hello.service"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	out, err := m.Systemctl("is-active", "hello.service")
	if err != nil || strings.TrimSpace(out) != "active" {
		t.Fatalf("is-active = %q, %v", out, err)
	}
	pid := m.MainPID("hello.service")
	if pid == 0 {
		t.Fatal("no main pid")
	}
	if out, err := m.Systemctl("restart", "hello.service"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	deadline := time.Now().Add(10 * time.Second)
	for m.MainPID("hello.service") == pid || m.MainPID("hello.service") == 0 {
		if time.Now().After(deadline) {
			t.Fatal("restart did not change the main pid")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestManagersDoNotShareUnits(t *testing.T) {
	// Managers take turns (see serialize), so one after the other.
	var dirA string
	t.Run("a", func(t *testing.T) {
		a := Start(t)
		a.InstallUnit("only-a.service", "[Service]\nExecStart=/bin/true\n")
		dirA = a.UnitDir()
	})
	t.Run("b", func(t *testing.T) {
		b := Start(t)
		if b.UnitDir() == dirA {
			t.Fatal("managers share a unit dir")
		}
		if out, _ := b.Systemctl("cat", "only-a.service"); strings.Contains(out, "ExecStart") {
			t.Fatalf("b sees a's unit: %s", out)
		}
	})
}

func TestRequireJournal(t *testing.T) {
	RequireJournal(t)
}

func TestRebootStartsWhatIsEnabled(t *testing.T) {
	m := Start(t)
	unit := "[Service]\nExecStart=/bin/sleep 300\n\n[Install]\nWantedBy=default.target\n"
	m.InstallUnit("enabled.service", unit)
	m.InstallUnit("disabled.service", unit)
	if out, err := m.Systemctl("enable", "--now", "enabled.service"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if out, err := m.Systemctl("start", "disabled.service"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	before := m.MainPID("enabled.service")
	m.Reboot()
	deadline := time.Now().Add(10 * time.Second)
	for pid := m.MainPID("enabled.service"); pid == 0 || pid == before; pid = m.MainPID("enabled.service") {
		if time.Now().After(deadline) {
			t.Fatalf("enabled.service not started by the reboot (MainPID %d, before %d)", pid, before)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if out, _ := m.Systemctl("is-active", "disabled.service"); strings.TrimSpace(out) != "inactive" {
		t.Fatalf("disabled.service after reboot: %q, want inactive", out)
	}
}
