package deploy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// Why the stop is bounded: the TractStack backend, on SIGTERM, closes its
// listener at once and then waits up to 30 s for open requests before it
// exits; its server-sent-event streams never end by themselves, so with
// one visitor connected `systemctl restart` leaves the port dead for 30 s.
// While restarting, concierge watches the old main process; once it no
// longer listens, the unit is still stopping after StopGrace, and it still
// holds established connections on its port (so only open requests keep
// it alive, not its tenant manager's close, which holds none), concierge
// asks systemd to end it with `systemctl kill --signal SIGKILL`. A stop
// without open requests is not touched and gains no wait.

// DefaultStopGrace is how long the old backend may keep open requests
// after closing its listener before it is ended.
const DefaultStopGrace = 500 * time.Millisecond

// stopPoll is how often the old process is looked at during a restart;
// askAfter is how long its port must have been closed before systemd is
// asked for its pid.
const (
	stopPoll = 20 * time.Millisecond
	askAfter = 2 * stopPoll
	// tablePoll bounds how often the TCP table is read: the kernel
	// formats every socket of the host into it (about 12 ms of CPU for
	// 4,000 sockets on the bench machine).
	tablePoll = 100 * time.Millisecond
)

// Stop is how the old process of a service stopped during a restart or
// reload.
type Stop struct {
	// Measured is false when there was no old process to watch (the
	// unit was not running, or the target has no port).
	Measured bool
	// Took is from the restart's start until the old process was gone
	// (when it was not seen going, until the restart returned).
	Took time.Duration
	// Ended says concierge had systemd kill it: it had closed its port
	// and only open requests (OpenConns of them) kept it alive.
	Ended     bool
	OpenConns int
	// EndError is why ending it failed (the polkit rule or sudoers file
	// not allowing kill, for example); the stop then took its course.
	EndError string
}

// String is the step's output line about the stop.
func (s Stop) String() string {
	switch {
	case !s.Measured:
		return "old process: none to watch"
	case s.Ended:
		return fmt.Sprintf("old process ended after %s: it had closed its port but held %d open connection(s)", s.Took.Round(time.Millisecond), s.OpenConns)
	case s.EndError != "":
		return fmt.Sprintf("old process stopped after %s; ending it failed: %s", s.Took.Round(time.Millisecond), s.EndError)
	default:
		return fmt.Sprintf("old process stopped by itself in %s", s.Took.Round(time.Millisecond))
	}
}

// StopAction is what to do next about an old process being stopped.
type StopAction int

// Stop actions, see DecideStop.
const (
	StopWait    StopAction = iota // keep watching
	StopAskUnit                   // it looks held by open requests: ask systemd whether the unit is stopping
	StopKill                      // end it
	StopGone                      // the old process is gone
)

func (a StopAction) String() string {
	return [...]string{"wait", "ask-unit", "kill", "gone"}[a]
}

// StopSeen is what was observed of an old process during a restart.
type StopSeen struct {
	Alive     bool          // the old main process still exists
	Listening bool          // something listens on the service's port
	Conns     int           // established connections of the old process on the port
	ClosedFor time.Duration // since the port was first seen closed with the old process alive
	State     string        // the unit's ActiveState; "" when not asked this time
	Ended     bool          // a kill was already asked for
}

// DecideStop says what to do about the old process given what was seen:
// end it only when it has closed its port for at least grace, still holds
// open connections on it, and the unit is deactivating. A process with no
// connections left is closing its databases and is left alone.
func DecideStop(s StopSeen, grace time.Duration) StopAction {
	switch {
	case !s.Alive:
		return StopGone
	case s.Ended, s.Listening, s.Conns == 0, s.ClosedFor < grace:
		return StopWait
	case s.State == "":
		return StopAskUnit
	case s.State == "deactivating":
		return StopKill
	default:
		return StopWait
	}
}

// restartWatched runs `systemctl restart unit` while watching the old
// main process, ending it when DecideStop says so. A fast restart pays
// for nothing but reads of /proc/net/tcp: systemd is asked for the old
// main pid only once the port has been closed for askAfter while
// connections on it are still open, concurrently with the restart, and
// the restart's end is never held up by that question. Without the pid,
// the stop is taken to last until the restart returned.
func (d *Deployer) restartWatched(ctx context.Context, unit string, port int, out io.Writer) (Stop, error) {
	var stop Stop
	if port <= 0 || !portListening(port) {
		// Nothing serves the port: no old process to watch (a first
		// start, or a backend already down).
		return stop, d.systemctl(ctx, out, "restart", unit)
	}
	stop.Measured = true
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- d.systemctl(ctx, out, "restart", unit) }()
	tick := time.NewTicker(stopPoll)
	defer tick.Stop()
	type unitSeen struct {
		pid   int
		state string
		err   error
	}
	var (
		asked    chan unitSeen // the old main pid, asked once the port closed
		pid      int
		closedAt time.Time
		gone     bool
		table    = &connTable{port: port}
	)
	for {
		select {
		case err := <-done:
			if !gone {
				stop.Took = time.Since(start)
			}
			return stop, err
		case u := <-asked:
			asked = nil
			if u.err != nil || u.pid <= 0 || u.state != "deactivating" {
				// Already stopped (or no longer the stop of this restart).
				gone, stop.Took = true, time.Since(start)
			} else {
				pid = u.pid
			}
			continue
		case <-tick.C:
		}
		if gone {
			continue
		}
		now := time.Now()
		if pid == 0 {
			if !portListening(port) {
				if closedAt.IsZero() {
					closedAt = now
				}
				// A process that stops by itself is gone within a poll or two
				// of closing its port; only one that lingers with open
				// connections (the only kind ever ended) is asked about.
				if asked == nil && now.Sub(closedAt) >= askAfter && len(table.established(now)) > 0 {
					asked = make(chan unitSeen, 1)
					go func(c chan<- unitSeen) {
						p, st, err := d.unitState(ctx, unit)
						c <- unitSeen{p, st, err}
					}(asked)
				}
			}
			continue
		}
		seen := observeStop(pid, port, table.established(now))
		if seen.Alive && !seen.Listening {
			if closedAt.IsZero() {
				closedAt = now
			}
			seen.ClosedFor = now.Sub(closedAt)
		} else {
			closedAt = time.Time{}
		}
		seen.Ended = stop.Ended || stop.EndError != ""
		act := DecideStop(seen, d.cfg.StopGrace)
		if act == StopAskUnit {
			// Asked again right before the kill, so that the kill cannot
			// reach a new process started meanwhile (but for the few
			// milliseconds between the two calls).
			main, st, err := d.unitState(ctx, unit)
			if err == nil && main == pid {
				seen.State = st
			}
			act = DecideStop(seen, d.cfg.StopGrace)
		}
		switch act {
		case StopGone:
			gone, stop.Took = true, now.Sub(start)
		case StopKill:
			d.cfg.Log.Warn().Str("unit", unit).Int("pid", pid).Int("open_conns", seen.Conns).
				Dur("closed_for", seen.ClosedFor).Msgf("old %s closed its port but open requests keep it stopping: ending it", unit)
			fmt.Fprintf(out, "old process %d closed its port %s ago and holds %d open connection(s): ending it\n",
				pid, seen.ClosedFor.Round(time.Millisecond), seen.Conns)
			stop.OpenConns = seen.Conns
			if err := d.systemctl(ctx, out, KillArgs(unit)...); err != nil {
				stop.EndError = err.Error()
				d.cfg.Log.Warn().Err(err).Str("unit", unit).Msg("could not end the old process; waiting for it to stop")
			} else {
				stop.Ended = true
			}
		}
	}
}

// KillArgs are the systemctl arguments that end an old backend, exactly
// as the shipped sudoers rule allows them.
func KillArgs(unit string) []string { return []string{"kill", "--signal", "SIGKILL", unit} }

// unitState asks systemd for a unit's main pid and ActiveState.
func (d *Deployer) unitState(ctx context.Context, unit string) (pid int, state string, err error) {
	args := append(append([]string{}, d.cfg.Systemctl[1:]...), "show", "-p", "MainPID", "-p", "ActiveState", unit)
	var buf bytes.Buffer
	if err := d.cfg.Run(ctx, "", d.cfg.Systemctl[0], args, d.cfg.Env, d.cfg.StepTimeout, &buf); err != nil {
		return 0, "", fmt.Errorf("show %s: %w", unit, err)
	}
	pid, state = ParseUnitState(buf.String())
	return pid, state, nil
}

// ParseUnitState reads MainPID and ActiveState from `systemctl show`
// output (KEY=VALUE lines).
func ParseUnitState(s string) (pid int, state string) {
	for _, l := range strings.Split(s, "\n") {
		k, v, _ := strings.Cut(strings.TrimSpace(l), "=")
		switch k {
		case "MainPID":
			pid, _ = strconv.Atoi(v)
		case "ActiveState":
			state = v
		}
	}
	return pid, state
}

// watchGone waits until every pid in pids is gone or done is closed, and
// returns the time since start at that moment (an upper bound of the
// stop when done came first).
func watchGone(pids []int, start time.Time, done <-chan struct{}) time.Duration {
	tick := time.NewTicker(stopPoll)
	defer tick.Stop()
	for {
		alive := false
		for _, pid := range pids {
			alive = alive || processAlive(pid)
		}
		if !alive {
			return time.Since(start)
		}
		select {
		case <-done:
			return time.Since(start)
		case <-tick.C:
		}
	}
}
