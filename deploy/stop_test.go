package deploy

import (
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestDecideStop(t *testing.T) {
	const grace = 500 * time.Millisecond
	held := StopSeen{Alive: true, Conns: 2, ClosedFor: grace}
	with := func(f func(*StopSeen)) StopSeen { s := held; f(&s); return s }
	tests := []struct {
		name string
		seen StopSeen
		want StopAction
	}{
		{"old process gone", StopSeen{}, StopGone},
		{"gone even if connections were counted", StopSeen{Conns: 3, ClosedFor: time.Minute, State: "deactivating"}, StopGone},
		{"still listening: not stopping yet", with(func(s *StopSeen) { s.Listening = true; s.State = "deactivating" }), StopWait},
		{"closed, no connections: closing its databases", with(func(s *StopSeen) { s.Conns = 0; s.State = "deactivating" }), StopWait},
		{"closed with connections, within grace", with(func(s *StopSeen) { s.ClosedFor = grace - time.Millisecond; s.State = "deactivating" }), StopWait},
		{"closed with connections, grace over, state unknown", held, StopAskUnit},
		{"closed with connections, unit deactivating", with(func(s *StopSeen) { s.State = "deactivating" }), StopKill},
		{"long past grace, deactivating", with(func(s *StopSeen) { s.ClosedFor = time.Minute; s.State = "deactivating" }), StopKill},
		{"unit active (not a stop)", with(func(s *StopSeen) { s.State = "active" }), StopWait},
		{"unit activating (a new process)", with(func(s *StopSeen) { s.State = "activating" }), StopWait},
		{"unit failed", with(func(s *StopSeen) { s.State = "failed" }), StopWait},
		{"already ended once", with(func(s *StopSeen) { s.Ended = true; s.State = "deactivating" }), StopWait},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := DecideStop(tc.seen, grace); got != tc.want {
				t.Fatalf("DecideStop(%+v) = %s, want %s", tc.seen, got, tc.want)
			}
		})
	}
}

func TestParseUnitState(t *testing.T) {
	tests := []struct {
		in    string
		pid   int
		state string
	}{
		{"MainPID=1234\nActiveState=deactivating\n", 1234, "deactivating"},
		{"ActiveState=active\nMainPID=7", 7, "active"},
		{"MainPID=0\nActiveState=inactive\n", 0, "inactive"},
		{"", 0, ""},
		{"MainPID=x\n", 0, ""},
	}
	for _, tc := range tests {
		pid, state := ParseUnitState(tc.in)
		if pid != tc.pid || state != tc.state {
			t.Errorf("ParseUnitState(%q) = %d %q, want %d %q", tc.in, pid, state, tc.pid, tc.state)
		}
	}
}

// A /proc/net/tcp table: a listener on 10000 (0x2710), two established
// connections accepted on it, a client connection to it (local port
// ephemeral), one in TIME_WAIT and a listener on another port.
const procNetTCP = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:2710 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1 0000000000000000 100 0 0 10 0
   1: 0100007F:2710 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 222 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:2710 0100007F:D432 01 00000000:00000000 00:00000000 00000000     0        0 333 1 0000000000000000 20 4 30 10 -1
   3: 0100007F:D431 0100007F:2710 01 00000000:00000000 00:00000000 00000000     0        0 444 1 0000000000000000 20 4 30 10 -1
   4: 0100007F:2710 0100007F:D433 06 00000000:00000000 03:00000F3C 00000000     0        0 0 3 0000000000000000
   5: 0100007F:4E20 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 555 1 0000000000000000 100 0 0 10 0
   6: garbage
`

func TestParseProcNetTCP(t *testing.T) {
	tests := []struct {
		port   int
		listen bool
		est    string
	}{
		{10000, true, "222,333"},
		{20000, true, ""},
		{54321, false, "444"}, // 0xD431: the client side, local port ephemeral
		{30000, false, ""},
	}
	for _, tc := range tests {
		ps := ParseProcNetTCP(strings.NewReader(procNetTCP), tc.port)
		var est []string
		for _, i := range ps.Established {
			est = append(est, strconv.FormatUint(i, 10))
		}
		if ps.Listening != tc.listen || strings.Join(est, ",") != tc.est {
			t.Errorf("port %d: listening %t established %v, want %t %s", tc.port, ps.Listening, est, tc.listen, tc.est)
		}
	}
}

// TestObserveStop looks at this test process as at an old backend: it
// listens, accepts a connection, then closes its listener and keeps the
// connection, as the TractStack backend does on SIGTERM.
func TestObserveStop(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	pid := os.Getpid()
	// Accept everything, as a server does; the probes' connections end
	// at once, the client's is kept.
	accepted := make(chan net.Conn, 64)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	observe := func() StopSeen { return observeStop(pid, port, portSockets(port).Established) }
	if s := observe(); !s.Alive || !s.Listening || s.Conns != 0 {
		t.Fatalf("listening, no client: %+v", s)
	}
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	var server net.Conn
	for server == nil {
		c := <-accepted
		if c.RemoteAddr().String() == client.LocalAddr().String() {
			server = c
		} else {
			c.Close()
		}
	}
	// Both ends are this process; only the accepted one has the port as
	// its local port.
	if s := observe(); !s.Listening || s.Conns != 1 {
		t.Fatalf("listening, one client: %+v", s)
	}
	ln.Close()
	for c := range accepted {
		c.Close()
	}
	if s := observe(); s.Listening || s.Conns != 1 || !s.Alive {
		t.Fatalf("closed, one open request: %+v", s)
	}
	server.Close()
	if s := observe(); s.Listening || s.Conns != 0 {
		t.Fatalf("closed, request done: %+v", s)
	}
	if s := observeStop(1<<30, port, nil); s.Alive {
		t.Fatalf("a pid that does not exist is alive: %+v", s)
	}
}

// connTable reads the tables at most every tablePoll.
func TestConnTableThrottles(t *testing.T) {
	c := &connTable{port: 1}
	t0 := time.Now()
	c.established(t0)
	c.conns = []uint64{42} // what a read at t0 would have kept
	if got := c.established(t0.Add(tablePoll - time.Millisecond)); len(got) != 1 {
		t.Fatalf("read again within tablePoll: %v", got)
	}
	if got := c.established(t0.Add(tablePoll)); len(got) != 0 {
		t.Fatalf("not read again after tablePoll: %v", got)
	}
}

func TestPM2PIDFiles(t *testing.T) {
	names := []string{"astro-main-0.pid", "astro-main-1.pid", "astro-main-extra-2.pid", "astro-mainx-0.pid",
		"astro-main-.pid", "astro-main-0.pid.bak", "astro-acme-3.pid", "astro-main-0"}
	if got := strings.Join(PM2PIDFiles(names, "astro-main"), ","); got != "astro-main-0.pid,astro-main-1.pid" {
		t.Fatalf("astro-main: %s", got)
	}
	if got := strings.Join(PM2PIDFiles(names, "astro-acme"), ","); got != "astro-acme-3.pid" {
		t.Fatalf("astro-acme: %s", got)
	}
}

func TestPM2Home(t *testing.T) {
	tests := []struct {
		env  []string
		want string
	}{
		{[]string{"HOME=/home/t8k", "PM2_HOME=/srv/pm2"}, "/srv/pm2"},
		{[]string{"PM2_HOME=", "HOME=/home/t8k"}, "/home/t8k/.pm2"},
		{[]string{"PATH=/bin"}, ""},
	}
	for _, tc := range tests {
		if got := pm2Home(tc.env); got != tc.want {
			t.Errorf("pm2Home(%q) = %q, want %q", tc.env, got, tc.want)
		}
	}
}

func TestStopString(t *testing.T) {
	tests := []struct {
		s    Stop
		want string
	}{
		{Stop{}, "old process: none to watch"},
		{Stop{Measured: true, Took: 31 * time.Millisecond}, "old process stopped by itself in 31ms"},
		{Stop{Measured: true, Took: 612 * time.Millisecond, Ended: true, OpenConns: 3}, "old process ended after 612ms: it had closed its port but held 3 open connection(s)"},
		{Stop{Measured: true, Took: 30 * time.Second, EndError: "access denied"}, "old process stopped after 30s; ending it failed: access denied"},
	}
	for _, tc := range tests {
		if got := tc.s.String(); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.s, got, tc.want)
		}
	}
}

func TestPM2Daemon(t *testing.T) {
	for _, c := range []struct {
		cmdline, home string
		want          bool
	}{
		{"PM2 v6.0.14: God Daemon (/home/t8k/.pm2)" + strings.Repeat(" ", 14), "/home/t8k/.pm2", true},
		{"PM2 v5.4.2: God Daemon (/tmp/pm2-1)\x00", "/tmp/pm2-1", true},
		{"PM2 v6.0.14: God Daemon (/tmp/pm2-1)", "/tmp/pm2-2", false}, // another home
		{"node\x00/usr/bin/pm2\x00jlist\x00", "/tmp/pm2-1", false},    // a CLI, not the daemon
		{"nginx: worker process", "/tmp/pm2-1", false},                // a pid reused
		{"", "/tmp/pm2-1", false},
	} {
		if got := PM2Daemon(c.cmdline, c.home); got != c.want {
			t.Errorf("PM2Daemon(%q, %q) = %v, want %v", c.cmdline, c.home, got, c.want)
		}
	}
}
