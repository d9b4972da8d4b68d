package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tractstack/concierge/deploy"
	"github.com/tractstack/concierge/internal/sandbox"
)

// stop: the backend's gap at a restart with server-sent-event streams
// open. The sandbox backend behaves as tractstack-go does on SIGTERM
// (closes its listener, then waits up to 30 s for open requests, which
// streams never stop being). The old way is a plain `systemctl restart`;
// concierge's is deploy.Deployer.RestartBackend, what its restart-backend
// step runs.
func (b *bench) stop(ctx context.Context) error {
	if os.Geteuid() != 0 {
		table("Backend gap at restart with open streams", []string{"case"}, [][]string{{"skipped: needs root (a systemd user manager)"}})
		return nil
	}
	m, err := startManager(ctx, filepath.Join(b.dir, "stop-manager"))
	if err != nil {
		return err
	}
	defer m.stop()
	port, err := freePort()
	if err != nil {
		return err
	}
	// A site of its own, so its unit name (and the cgroup a user manager
	// without systemd as PID 1 makes at the root of the hierarchy) is
	// none that tests running meanwhile use.
	const site = "benchstop"
	sb, err := sandbox.New(ctx, filepath.Join(b.dir, "stop-home"), sandbox.Options{Sites: []string{site}, Ports: map[string][2]int{site: {port, port + 1}}})
	if err != nil {
		return err
	}
	p, err := deploy.PathsFor(sb.Dir, site)
	if err != nil {
		return err
	}
	if _, err := output(ctx, p.BackendSrc, setEnv(os.Environ(), "GOFLAGS=", "GOPROXY=off"), "go", "build", "-o", p.Binary, "./cmd/tractstack-go"); err != nil {
		return err
	}
	unit := fmt.Sprintf("[Unit]\nDescription=tractstack-go (bench)\nStartLimitIntervalSec=0\n\n[Service]\nExecStart=%s --port %d\nRestart=no\n", p.Binary, port)
	if err := os.WriteFile(filepath.Join(m.unitDir, p.Unit), []byte(unit), 0o644); err != nil {
		return err
	}
	if _, err := m.systemctl(ctx, "daemon-reload"); err != nil {
		return err
	}
	if _, err := m.systemctl(ctx, "start", p.Unit); err != nil {
		return err
	}
	defer m.systemctl(context.Background(), "stop", p.Unit)
	if err := waitFor(20*time.Second, 20*time.Millisecond, func() bool { return healthy(port) }); err != nil {
		return fmt.Errorf("backend did not answer: %w", err)
	}
	d := deploy.New(deploy.Config{Systemctl: []string{"systemctl", "--user"},
		Env: append(m.env(), "PATH="+os.Getenv("PATH"), "SYSTEMD_PAGER="), StepTimeout: 2 * time.Minute})

	// Restarts without streams are quick, so there are more of them; the
	// two ways take turns, so that a load change on the machine hits both.
	reps := map[int]int{0: 50, 5: 3}
	if b.short {
		reps = map[int]int{0: 5, 5: 1}
	}
	// The unbounded deployer (no port to watch: a plain systemctl restart
	// through concierge's child runner) tells what the watch itself costs.
	const byHand, unbounded, bounded = "systemctl restart (by hand)", "concierge, unbounded (before)", "concierge"
	var rows [][]string
	for _, n := range []int{0, 5} {
		ways := []string{byHand, unbounded, bounded}
		if n > 0 {
			ways = []string{byHand, bounded} // unbounded is by hand's 30 s again
		}
		took, gaps, ended := map[string][]time.Duration{}, map[string][]time.Duration{}, map[string]int{}
		for range reps[n] {
			for _, way := range ways {
				r, err := restartGap(ctx, port, n, func() (bool, error) {
					switch way {
					case bounded:
						st, err := d.RestartBackend(ctx, p, port, io.Discard)
						return st.Ended, err
					case unbounded:
						_, err := d.RestartBackend(ctx, p, 0, io.Discard)
						return false, err
					}
					_, err := m.systemctl(ctx, "restart", p.Unit)
					return false, err
				})
				if err != nil {
					st, _ := m.systemctl(ctx, "status", "--no-pager", p.Unit)
					return fmt.Errorf("%s with %d streams: %w\n%s", way, n, err, st)
				}
				took[way], gaps[way] = append(took[way], r.took), append(gaps[way], r.gap)
				if r.ended {
					ended[way]++
				}
			}
		}
		for _, way := range ways {
			rows = append(rows, []string{strconv.Itoa(n), way, strconv.Itoa(reps[n]), ms(percentile(took[way], 50)), ms(percentile(took[way], 100)),
				ms(percentile(gaps[way], 50)), ms(percentile(gaps[way], 100)), strconv.Itoa(ended[way])})
		}
	}
	table("Backend gap at restart with open streams",
		[]string{"open SSE streams", "restart by", "n", "restart took p50 ms", "max ms", "backend answered nothing for p50 ms", "max ms", "old process ended"}, rows,
		"The sandbox backend, like tractstack-go, closes its listener on SIGTERM and then waits up to 30 s for open requests; its /api/v1/auth/sse streams never end by themselves. "+
			"The gap is the longest run of failed `GET /api/v1/health` probes (one every 20 ms) from just before the restart until the backend answers again. "+
			"concierge is deploy.Deployer.RestartBackend with the default CONCIERGE_STOP_GRACE (500 ms), what the restart-backend step runs; unbounded is the same call with no port to watch (a plain systemctl restart through concierge's child runner, as before this change). The ways take turns. Goal: at most 1 s against 30 s, and no slower restart without streams.")
	return nil
}

type gapResult struct {
	took, gap time.Duration
	ended     bool
}

// restartGap opens n streams, probes the backend's health every 20 ms,
// runs restart, and waits until the backend answers again.
func restartGap(ctx context.Context, port, n int, restart func() (bool, error)) (gapResult, error) {
	var r gapResult
	sctx, closeStreams := context.WithCancel(ctx)
	defer closeStreams()
	var wg sync.WaitGroup
	defer wg.Wait()
	for range n {
		if err := openSSE(sctx, &wg, port); err != nil {
			return r, err
		}
	}
	var mu sync.Mutex
	var downSince time.Time
	stopProbe := make(chan struct{})
	probed := make(chan struct{})
	go func() {
		defer close(probed)
		for {
			select {
			case <-stopProbe:
				return
			case <-time.After(20 * time.Millisecond):
			}
			ok := healthy(port)
			now := time.Now()
			mu.Lock()
			if !ok && downSince.IsZero() {
				downSince = now
			}
			if !ok {
				r.gap = max(r.gap, now.Sub(downSince))
			} else {
				downSince = time.Time{}
			}
			mu.Unlock()
		}
	}()
	start := time.Now()
	ended, err := restart()
	r.took, r.ended = time.Since(start), ended
	if err == nil {
		err = waitFor(60*time.Second, 5*time.Millisecond, func() bool {
			if !healthy(port) {
				return false
			}
			mu.Lock()
			defer mu.Unlock()
			return downSince.IsZero()
		})
	}
	close(stopProbe)
	<-probed
	return r, err
}

// openSSE opens one stream and reads it in the background until ctx
// ends or the server cuts it; it returns once the hello arrived.
func openSSE(ctx context.Context, wg *sync.WaitGroup, port int) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://127.0.0.1:"+strconv.Itoa(port)+"/api/v1/auth/sse", nil)
	if err != nil {
		return err
	}
	c := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("open stream: %w", err)
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() && !strings.HasPrefix(sc.Text(), "data: ") {
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer resp.Body.Close()
		for sc.Scan() {
		}
	}()
	return nil
}

// healthy reports whether the backend answers its health check now.
func healthy(port int) bool {
	c := &http.Client{Timeout: time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	req, err := http.NewRequest(http.MethodGet, "http://127.0.0.1:"+strconv.Itoa(port)+"/api/v1/health", nil)
	if err != nil {
		return false
	}
	req.Header.Set("X-Tenant-ID", "default")
	resp, err := c.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// freePort returns a loopback port that was free a moment ago, whose
// next one is free too (the ports file wants an Astro port).
func freePort() (int, error) {
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		p := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if l2, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p+1)); err == nil {
			l2.Close()
			if p+1 <= 65535 {
				return p, nil
			}
		}
	}
	return 0, fmt.Errorf("no free loopback port pair")
}
