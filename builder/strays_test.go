package builder

import (
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

func TestKillStraysEndsMarkedGroupsOnly(t *testing.T) {
	dataDir := t.TempDir()
	start := func(env []string) *exec.Cmd {
		t.Helper()
		cmd := exec.Command("sh", "-c", "sleep 300 & sleep 300")
		cmd.Env = env
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); cmd.Wait() })
		return cmd
	}
	marked := start(WithOwner(os.Environ(), dataDir))
	other := start(WithOwner(os.Environ(), dataDir+"-other"))
	// Wait for the grandchild to exist, so the sweep has a group to end.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if live, ok := liveMembers(marked.Process.Pid); ok && live >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the marked group never had two members")
		}
		time.Sleep(10 * time.Millisecond)
	}
	found, err := KillStrays(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(found) < 2 {
		t.Fatalf("found %v, want the shell and its sleep", found)
	}
	marked.Wait()
	for time.Now().Before(deadline) && !groupGone(marked.Process.Pid) {
		time.Sleep(10 * time.Millisecond)
	}
	if !groupGone(marked.Process.Pid) {
		t.Fatal("the marked group is still alive")
	}
	if groupGone(other.Process.Pid) {
		t.Fatal("a group with another owner mark was killed")
	}
}
