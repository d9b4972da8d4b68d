package deploy

import (
	"bufio"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// TCP states in /proc/net/tcp{,6} (include/net/tcp_states.h).
const (
	tcpEstablished = "01"
	tcpListen      = "0A"
)

// PortSockets is what /proc/net/tcp{,6} says about one local port.
type PortSockets struct {
	Listening   bool
	Established []uint64 // socket inodes of established connections
}

// ParseProcNetTCP reads a /proc/net/tcp or tcp6 table and picks the
// sockets whose local port is port: whether one listens, and the inodes
// of the established ones. Malformed lines are skipped.
func ParseProcNetTCP(r io.Reader, port int) PortSockets {
	var ps PortSockets
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
		if len(f) < 10 {
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
		switch f[3] {
		case tcpListen:
			ps.Listening = true
		case tcpEstablished:
			if ino, err := strconv.ParseUint(f[9], 10, 64); err == nil {
				ps.Established = append(ps.Established, ino)
			}
		}
	}
	return ps
}

// portSockets reads both TCP tables of this network namespace.
func portSockets(port int) PortSockets {
	var all PortSockets
	for _, name := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(name)
		if err != nil {
			continue
		}
		ps := ParseProcNetTCP(f, port)
		f.Close()
		all.Listening = all.Listening || ps.Listening
		all.Established = append(all.Established, ps.Established...)
	}
	return all
}

// socketInodes lists the socket inodes pid has open; ok is false when its
// descriptors cannot be read (another user's process).
func socketInodes(pid int) (map[uint64]bool, bool) {
	dir := filepath.Join("/proc", strconv.Itoa(pid), "fd")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, false
	}
	out := map[uint64]bool{}
	for _, e := range entries {
		link, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		if s, ok := strings.CutPrefix(link, "socket:["); ok {
			if ino, err := strconv.ParseUint(strings.TrimSuffix(s, "]"), 10, 64); err == nil {
				out[ino] = true
			}
		}
	}
	return out, true
}

// processAlive reports whether pid exists and is not a zombie.
func processAlive(pid int) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return false
	}
	st := s[i+2]
	return st != 'Z' && st != 'X'
}

// observeStop looks at the old process pid and the port it served. Its
// established connections are those whose sockets it holds; when its
// descriptors cannot be read, every established connection on the port
// counts (while the unit stops, no other process serves that port).
func observeStop(pid, port int) StopSeen {
	seen := StopSeen{Alive: processAlive(pid)}
	if !seen.Alive {
		return seen
	}
	ps := portSockets(port)
	seen.Listening = ps.Listening
	mine, ok := socketInodes(pid)
	for _, ino := range ps.Established {
		if !ok || mine[ino] {
			seen.Conns++
		}
	}
	return seen
}
