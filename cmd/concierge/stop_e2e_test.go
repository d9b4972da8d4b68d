package main

// End-to-end test of the bounded backend stop: the sandbox backend, like
// tractstack-go, closes its listener on SIGTERM and then waits up to 30 s
// for open requests, and its server-sent-event streams never end by
// themselves. With streams open, a build job must still bring the new
// backend up at once, end the old one (saying so in the job record and
// in status), and the streams must reconnect to the new release.

import (
	"bufio"
	"context"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tractstack/concierge/internal/sandbox"
	"github.com/tractstack/concierge/queue"
)

// sseStream is one open server-sent-event stream to a backend.
type sseStream struct {
	version string        // the version the backend said hello with
	ended   chan struct{} // closed when the stream ends
	cancel  context.CancelFunc
}

// close ends the stream from the visitor's side and waits for it.
func (s *sseStream) close() { s.cancel(); <-s.ended }

// openStream opens /api/v1/auth/sse on port and waits for its hello; the
// stream is read in the background until it ends. t.Cleanup closes it.
func openStream(t *testing.T, port int) *sseStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://127.0.0.1:"+strconv.Itoa(port)+"/api/v1/auth/sse", nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("open stream: %v", err)
	}
	s := &sseStream{ended: make(chan struct{}), cancel: cancel}
	hello := make(chan string, 1)
	go func() {
		defer close(s.ended)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				select {
				case hello <- v:
				default:
				}
			}
		}
	}()
	t.Cleanup(s.close)
	select {
	case s.version = <-hello:
	case <-s.ended:
		t.Fatal("stream ended before its hello")
	case <-time.After(10 * time.Second):
		t.Fatal("no hello on the stream within 10s")
	}
	return s
}

func (s *sseStream) isEnded() bool {
	select {
	case <-s.ended:
		return true
	default:
		return false
	}
}

// outage probes a backend's health every 20 ms and keeps the longest run
// of failed probes.
type outage struct {
	mu      sync.Mutex
	longest time.Duration
	fails   int
	stop    chan struct{}
	done    chan struct{}
}

func probeBackend(port int) *outage {
	o := &outage{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(o.done)
		var downSince time.Time
		for {
			select {
			case <-o.stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			_, err := loopbackGet(port, "/api/v1/health")
			now := time.Now()
			o.mu.Lock()
			if err != nil {
				o.fails++
				if downSince.IsZero() {
					downSince = now
				}
				o.longest = max(o.longest, now.Sub(downSince))
			} else {
				downSince = time.Time{}
			}
			o.mu.Unlock()
		}
	}()
	return o
}

func (o *outage) end() (longest time.Duration, fails int) {
	close(o.stop)
	<-o.done
	return o.longest, o.fails
}

func TestRestartEndsOldBackendHeldByStreams(t *testing.T) {
	h := startLiveHost(t, liveOptions{installs: []string{""}, running: true,
		env: []string{"CONCIERGE_HEALTH_TIMEOUT=20s", "CONCIERGE_STEP_TIMEOUT=2m", "CONCIERGE_LOG_FORMAT=json"}})
	port := h.ports["main"][0]
	var streams []*sseStream
	for range 3 {
		s := openStream(t, port)
		if s.version != "v1" {
			t.Fatalf("stream said hello from %q, want v1", s.version)
		}
		streams = append(streams, s)
	}
	oldPID := h.sd.MainPID(h.paths("").Unit)

	h.push("", changeOf(sandbox.BackendVersion("v2", true)), nil)
	h.drop(buildMain)
	probe := probeBackend(port)
	logs, code := h.run()
	gap, fails := probe.end()
	jobs := h.jobs()
	j := jobs[len(jobs)-1]
	if code != 0 || j.State != queue.Succeeded {
		t.Fatalf("run exit %d, job %s (%s)\n%s\n%s", code, j.State, j.Error, pe2eJSON(j), logs)
	}
	h.serves("", "v2", "v1")
	t.Logf("backend answered nothing for %s (%d failed probes) with 3 streams open", gap, fails)

	// Had the old process been left to its 30 s wait, the job could not
	// have passed its health check before it ended: the gap would be
	// about 30 s. Bounded, it is about the grace (0.5 s) plus a start.
	if gap >= 15*time.Second {
		t.Fatalf("backend answered nothing for %s: the old process's 30 s wait was not cut", gap)
	}
	st := pe2eStep(t, j, "restart-backend").Stop
	if st == nil || !st.Ended || st.OpenConns < 3 {
		t.Fatalf("restart-backend stop %+v, want ended with at least 3 open connections\n%s", st, pe2eJSON(j))
	}
	if got := h.sd.MainPID(h.paths("").Unit); got == oldPID || got == 0 {
		t.Fatalf("main pid %d -> %d", oldPID, got)
	}
	if out := h.concierge("status"); !strings.Contains(out, j.ID+" restart-backend: old process ended after") {
		t.Fatalf("status does not name the ended old backend:\n%s", out)
	}
	if fs := pe2eStep(t, j, "reload-frontend").Stop; fs == nil || fs.Ended {
		t.Fatalf("reload-frontend stop %+v, want measured", fs)
	}

	// The old streams were cut, and a visitor's EventSource reconnects to
	// the new release.
	eventually(t, "the old streams to end", 10*time.Second, func() bool {
		for _, s := range streams {
			if !s.isEnded() {
				return false
			}
		}
		return true
	})
	again := openStream(t, port)
	if again.version != "v2" {
		t.Fatalf("reconnected stream said hello from %q, want v2", again.version)
	}

	// A restart with no request open is left to stop by itself: the
	// backend closes its databases undisturbed.
	again.close()
	h.drop("type=main,tenant=default,command=restart")
	logs, code = h.run()
	jobs = h.jobs()
	j = jobs[len(jobs)-1]
	if code != 0 || j.State != queue.Succeeded || j.Command != queue.CommandRestart {
		t.Fatalf("restart: exit %d, job %s %s (%s)\n%s", code, j.Command, j.State, j.Error, logs)
	}
	if st := pe2eStep(t, j, "restart-backend").Stop; st == nil || st.Ended || st.EndError != "" {
		t.Fatalf("restart with no open request: stop %+v, want measured and not ended\n%s", st, pe2eJSON(j))
	}
	h.serves("", "v2", "v1")
}
