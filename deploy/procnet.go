package deploy

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
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

// connTable reads the established connections on a port from the TCP
// tables, at most every tablePoll.
type connTable struct {
	port  int
	read  time.Time
	conns []uint64
}

func (c *connTable) established(now time.Time) []uint64 {
	if c.read.IsZero() || now.Sub(c.read) >= tablePoll {
		c.conns, c.read = portSockets(c.port).Established, now
	}
	return c.conns
}

// portListening reports whether something accepts connections on the
// loopback port: only a refused connect says no (a full backlog or a slow
// machine is not a closed port). The connection is closed at once; the
// server sees a client that went before sending a request.
func portListening(port int) bool {
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), 200*time.Millisecond)
	if err != nil {
		return !errors.Is(err, syscall.ECONNREFUSED)
	}
	c.Close()
	return true
}

// observeStop looks at the old process pid, whether its loopback port
// accepts connections, and which of the established connections on the
// port (inodes from the TCP tables) are its own; when its descriptors
// cannot be read, every one counts (while the unit stops, no other
// process serves that port).
func observeStop(pid, port int, established []uint64) StopSeen {
	seen := StopSeen{Alive: processAlive(pid)}
	if !seen.Alive {
		return seen
	}
	seen.Listening = portListening(port)
	mine, ok := socketInodes(pid)
	for _, ino := range established {
		if !ok || mine[ino] {
			seen.Conns++
		}
	}
	return seen
}
