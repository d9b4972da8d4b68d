package builder

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// OwnerEnv is the variable that marks a child process (and every process
// it starts, which inherit it) as belonging to one concierge data
// directory. A concierge killed with SIGKILL cannot end its children; the
// next one, holding the run lock, finds them by this mark and ends them.
const OwnerEnv = "CONCIERGE_OWNER"

// WithOwner returns env with the owner mark for dataDir set.
func WithOwner(env []string, dataDir string) []string {
	return setenv(env, OwnerEnv, dataDir)
}

// KillStrays sends SIGKILL to every process group that holds a process
// marked with dataDir's owner mark, and returns the pids it found. It
// must only be called by the holder of the run lock before it starts any
// child: then every marked process is a leftover of a dead concierge.
// Processes it may not read (other users) are skipped.
func KillStrays(dataDir string) ([]int, error) {
	mark := []byte(OwnerEnv + "=" + dataDir + "\x00")
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	self := os.Getpid()
	var found []int
	groups := map[int]bool{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil || !bytes.Contains(append(env, 0), mark) {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		state, pgrp, ok := parseStat(string(stat))
		if !ok || state == "Z" {
			continue
		}
		found = append(found, pid)
		if pgrp > 1 && pgrp != syscall.Getpgrp() {
			groups[pgrp] = true
		} else {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	for pgrp := range groups {
		syscall.Kill(-pgrp, syscall.SIGKILL)
	}
	return found, nil
}
