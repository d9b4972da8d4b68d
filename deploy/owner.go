package deploy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The backend's answer must come from the process just started: a second
// instance on a busy port does not exit, it logs "address already in use"
// and runs on without listening, so a 200 on the port can come from a
// stray old process. These wrappers read who listens on a port from
// /proc and the unit's main process from systemd.

// ListenInodes parses the text of /proc/net/tcp or /proc/net/tcp6 and
// returns the socket inodes of the entries in state LISTEN (0A) on port.
func ListenInodes(table []byte, port int) []uint64 {
	var out []uint64
	sc := bufio.NewScanner(bytes.NewReader(table))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
		if len(f) < 10 || f[3] != "0A" {
			continue
		}
		_, hexPort, ok := strings.Cut(f[1], ":")
		if !ok {
			continue
		}
		p, err := strconv.ParseUint(hexPort, 16, 16)
		if err != nil || int(p) != port {
			continue
		}
		if ino, err := strconv.ParseUint(f[9], 10, 64); err == nil && ino != 0 {
			out = append(out, ino)
		}
	}
	return out
}

// listenInodes reads the listening sockets on port from /proc.
func listenInodes(port int) ([]uint64, error) {
	var out []uint64
	for _, name := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(name)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", name, err)
		}
		out = append(out, ListenInodes(b, port)...)
	}
	return out, nil
}

// holdsSocket reports whether pid has an open descriptor on one of the
// socket inodes.
func holdsSocket(pid int, inodes map[uint64]bool) (bool, error) {
	dir := filepath.Join("/proc", strconv.Itoa(pid), "fd")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false, err
	}
	for _, e := range entries {
		link, err := os.Readlink(filepath.Join(dir, e.Name()))
		if errors.Is(err, fs.ErrPermission) {
			// Listing another process's descriptors is allowed, reading
			// them is not (a process with more privileges than ours):
			// who holds the port cannot be told.
			return false, err
		}
		if err != nil {
			continue // closed meanwhile
		}
		s, ok := strings.CutPrefix(link, "socket:[")
		if !ok {
			continue
		}
		if ino, err := strconv.ParseUint(strings.TrimSuffix(s, "]"), 10, 64); err == nil && inodes[ino] {
			return true, nil
		}
	}
	return false, nil
}

// socketHolders lists the processes (that can be seen) holding one of
// the inodes.
func socketHolders(inodes map[uint64]bool) []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ok, _ := holdsSocket(pid, inodes); ok {
			out = append(out, pid)
		}
	}
	return out
}

// procParent is the parent pid of pid (0 when unknown).
func procParent(pid int) int {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}

// procName is a process's command name, for messages.
func procName(pid int) string {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "comm"))
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}

// descendsFrom reports whether pid is root or one of its descendants.
func descendsFrom(pid, root int) bool {
	for n := 0; pid > 1 && n < 64; n++ {
		if pid == root {
			return true
		}
		pid = procParent(pid)
	}
	return false
}

// errOwnerUnknown marks an owner check that could not be made (no /proc,
// no permission to read the main process's descriptors).
var errOwnerUnknown = errors.New("owner unknown")

// PortOwner checks that the socket listening on port belongs to mainPID
// or one of its descendants. It returns "" when it does, and otherwise
// says who holds the port; an error wrapping errOwnerUnknown when that
// cannot be told.
func PortOwner(port, mainPID int, unit string) (string, error) {
	inodes, err := listenInodes(port)
	if err != nil {
		return "", fmt.Errorf("%w: %w", errOwnerUnknown, err)
	}
	if len(inodes) == 0 {
		return fmt.Sprintf("nothing listens on port %d", port), nil
	}
	set := make(map[uint64]bool, len(inodes))
	for _, i := range inodes {
		set[i] = true
	}
	if mainPID > 0 {
		ok, err := holdsSocket(mainPID, set)
		if err != nil {
			return "", fmt.Errorf("%w: read descriptors of %s's main process %d: %w", errOwnerUnknown, unit, mainPID, err)
		}
		if ok {
			return "", nil
		}
	}
	holders := socketHolders(set)
	for _, h := range holders {
		if mainPID > 0 && descendsFrom(h, mainPID) {
			return "", nil
		}
	}
	main := fmt.Sprintf("%s's main process %d", unit, mainPID)
	if mainPID <= 0 {
		main = unit + ", which has no main process"
	}
	if len(holders) == 0 {
		return fmt.Sprintf("port %d is held by a process that cannot be seen, not by %s", port, main), nil
	}
	var names []string
	for _, h := range holders {
		names = append(names, fmt.Sprintf("pid %d (%s)", h, procName(h)))
	}
	return fmt.Sprintf("port %d is held by %s, not by %s", port, strings.Join(names, ", "), main), nil
}

// MainPID asks the service manager for the unit's main process (0 when
// it has none). systemctl show needs no privilege, so a "sudo" at the
// start of the prefix is left out: the sudoers rule allows only restart.
func (d *Deployer) MainPID(ctx context.Context, unit string) (int, error) {
	prefix := d.cfg.Systemctl
	if filepath.Base(prefix[0]) == "sudo" && len(prefix) > 1 {
		prefix = prefix[1:]
		for len(prefix) > 1 && strings.HasPrefix(prefix[0], "-") {
			prefix = prefix[1:]
		}
	}
	args := append(append([]string{}, prefix[1:]...), "show", "-p", "MainPID", "--value", unit)
	var out tail
	if err := d.cfg.Run(ctx, "", prefix[0], args, d.cfg.Env, min(d.cfg.StepTimeout, 30*time.Second), io.Writer(&out)); err != nil {
		return 0, fmt.Errorf("read main pid of %s: %w: %s", unit, err, strings.TrimSpace(out.String()))
	}
	s := strings.TrimSpace(out.String())
	s = strings.TrimPrefix(s, "MainPID=")
	pid, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("read main pid of %s: systemctl printed %q", unit, s)
	}
	return pid, nil
}
