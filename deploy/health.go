package deploy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// loopbackClient is an HTTP client that can only reach loopback addresses:
// no proxy from the environment, no redirects, and a dialer that refuses
// anything else. timeout bounds each request.
func loopbackClient(timeout time.Duration) *http.Client {
	dialer := &net.Dialer{Timeout: timeout}
	tr := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, _, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
				return nil, fmt.Errorf("dial %s: health checks reach loopback only", addr)
			}
			return dialer.DialContext(ctx, network, addr)
		},
		DisableKeepAlives: true,
	}
	return &http.Client{
		Transport:     tr,
		Timeout:       timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// probe is one round of a check: nil when it is decided.
type probe func(ctx context.Context, c *http.Client) error

// poll runs check until it passes or timeout passes, at once and then
// with a back-off from 5 ms up to interval; the error then is the last
// failure. Each request of check is bounded by reqTimeout.
func poll(ctx context.Context, timeout, interval, reqTimeout time.Duration, check probe) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c := loopbackClient(reqTimeout)
	// The first probe at once, then a short back-off up to interval: a
	// service that is up within milliseconds is seen within milliseconds.
	wait := min(5*time.Millisecond, interval)
	var last error
	for {
		err := check(ctx, c)
		if err == nil {
			return nil
		}
		// A request cut by the deadline says less than the failure before it.
		if ctx.Err() == nil || last == nil {
			last = err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("not healthy within %s: %w", timeout, last)
		case <-t.C:
		}
		wait = min(2*wait, interval)
	}
}

// answer is one HTTP answer, or why there was none.
type answer struct {
	status   int
	location string
	body     []byte
	err      error
	hung     bool // the request timed out on its own timeout
}

// get requests url; a request that runs out of its own time is a hang,
// one cut because ctx ended is neither a hang nor an answer (cut).
func get(ctx context.Context, c *http.Client, url string, header http.Header) (a answer, cut bool) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return answer{err: fmt.Errorf("make request: %w", err)}, false
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return answer{err: err}, true
		}
		var ne net.Error
		return answer{err: err, hung: errors.As(err, &ne) && ne.Timeout()}, false
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return answer{status: resp.StatusCode, location: resp.Header.Get("Location"), body: body}, false
}

func loopbackURL(port int, path string) string {
	return "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) + path
}

// requestTimeout bounds one health request: RequestTimeout, but at most
// a third of HealthTimeout, so that a check always completes rounds.
func (d *Deployer) requestTimeout() time.Duration {
	return min(d.cfg.RequestTimeout, d.cfg.HealthTimeout/3)
}

// each runs fn for 0..n-1 concurrently (a hanging request must not hold
// up the others) and reports whether none was cut.
func each(n int, fn func(i int) (cut bool)) bool {
	var wg sync.WaitGroup
	cuts := make([]bool, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cuts[i] = fn(i)
		}()
	}
	wg.Wait()
	for _, c := range cuts {
		if c {
			return false
		}
	}
	return true
}

func defaultTenants(tenants []string) []string {
	if len(tenants) == 0 {
		return []string{"default"}
	}
	return tenants
}

// observeBackend asks GET /api/v1/health once for each tenant; ok is
// false when ctx ended mid-way.
func (d *Deployer) observeBackend(ctx context.Context, c *http.Client, port int, tenants []string) ([]Observation, bool) {
	url := loopbackURL(port, "/api/v1/health")
	obs := make([]Observation, len(tenants))
	ok := each(len(tenants), func(i int) bool {
		a, cut := get(ctx, c, url, http.Header{"X-Tenant-Id": {tenants[i]}})
		if a.err != nil {
			obs[i] = Unanswered(TenantTarget(tenants[i]), a.hung, c.Timeout, a.err)
		} else {
			obs[i] = ClassifyBackend(tenants[i], a.status, a.body)
		}
		return cut
	})
	return obs, ok
}

// ProbeBackend is what the backend answers now for each tenant ("default"
// when none are given), asked once: the "before" of CheckBackend.
func (d *Deployer) ProbeBackend(ctx context.Context, port int, tenants []string) []Observation {
	obs, _ := d.observeBackend(ctx, loopbackClient(d.requestTimeout()), port, defaultTenants(tenants))
	return obs
}

// CheckResult is a check that let the release go live: Warnings are the
// targets that were not healthy before the restart and still are not;
// Notes say what the check could not verify.
type CheckResult struct {
	Warnings []string
	Notes    []string
}

// CheckBackend judges GET /api/v1/health on the Go port for every tenant
// ("default" when none are given) against before (ProbeBackend before
// the restart), polling within HealthTimeout; see Judge. A healthy answer
// counts only when the port's listening socket belongs to the unit's main
// process (or a descendant): otherwise the check fails naming the
// process that holds the port. The error says why the check failed.
func (d *Deployer) CheckBackend(ctx context.Context, p Paths, port int, tenants []string, before []Observation) (CheckResult, error) {
	tenants = defaultTenants(tenants)
	var notes []string
	observe := func(ctx context.Context, c *http.Client) ([]Observation, bool) {
		obs, ok := d.observeBackend(ctx, c, port, tenants)
		if !ok || !anyOK(obs) {
			return obs, ok
		}
		foreign, err := d.foreignOwner(ctx, p, port)
		if err != nil {
			if len(notes) == 0 {
				notes = append(notes, fmt.Sprintf("could not verify that %s's main process answers on port %d: %v", p.Unit, port, err))
			}
			return obs, ctx.Err() == nil
		}
		if foreign != "" {
			for i := range obs {
				if obs[i].OK {
					obs[i] = Observation{Target: obs[i].Target, State: foreign, Answered: true, Foreign: true}
				}
			}
		}
		return obs, ctx.Err() == nil
	}
	v, err := d.await(ctx, before, observe)
	if err != nil {
		return CheckResult{}, fmt.Errorf("check backend %s: %w", loopbackURL(port, "/api/v1/health"), err)
	}
	if v.Outcome == Fail {
		return CheckResult{Notes: notes}, fmt.Errorf("check backend %s: not healthy within %s: %s", loopbackURL(port, "/api/v1/health"), d.cfg.HealthTimeout, strings.Join(v.Reasons, "; "))
	}
	return CheckResult{Warnings: prefixed("backend ", v.Reasons), Notes: notes}, nil
}

func anyOK(obs []Observation) bool {
	for _, o := range obs {
		if o.OK {
			return true
		}
	}
	return false
}

func prefixed(prefix string, ss []string) []string {
	var out []string
	for _, s := range ss {
		out = append(out, prefix+s)
	}
	return out
}

// foreignOwner says who holds the port when it is not the unit's main
// process ("" when it is); an error when that cannot be told.
func (d *Deployer) foreignOwner(ctx context.Context, p Paths, port int) (string, error) {
	pid, err := d.MainPID(ctx, p.Unit)
	if err != nil {
		return "", err
	}
	msg, err := PortOwner(port, pid, p.Unit)
	if err != nil {
		return "", err
	}
	return msg, nil
}

// errNoRound: every round of a check was cut by its deadline.
var errNoRound = errors.New("no probe completed")

// await polls observe within HealthTimeout until Judge decides against
// before, and judges the last complete round at the timeout. The error is
// for a check that could not be judged (ctx ended).
func (d *Deployer) await(ctx context.Context, before []Observation, observe func(ctx context.Context, c *http.Client) ([]Observation, bool)) (Verdict, error) {
	var prev []Observation
	var v Verdict
	err := poll(ctx, d.cfg.HealthTimeout, d.cfg.HealthInterval, d.requestTimeout(), func(ctx context.Context, c *http.Client) error {
		cur, ok := observe(ctx, c)
		if !ok {
			return errNoRound
		}
		v = Judge(before, prev, cur, false)
		prev = cur
		if v.Outcome == Pending {
			return errors.New(summary(cur))
		}
		return nil
	})
	if err == nil {
		return v, nil
	}
	if ctx.Err() != nil {
		return Verdict{}, ctx.Err()
	}
	if prev == nil {
		return Verdict{Outcome: Fail, Reasons: []string{err.Error()}}, nil
	}
	return Judge(before, prev, prev, true), nil
}

// summary is a round's observations on one line.
func summary(obs []Observation) string {
	var parts []string
	for _, o := range obs {
		parts = append(parts, o.String())
	}
	return strings.Join(parts, "; ")
}

// FrontendProbes is what the frontend check requests for target p: the
// paths of CONCIERGE_FRONTEND_HEALTH_PATHS when set (each judged as a
// page), otherwise the page "/" and one file of the live release's
// dist/client (see ClientFile), so that a catch-all route that hangs does
// not decide alone whether the server answers.
func (d *Deployer) FrontendProbes(p Paths) []FrontendProbe {
	if len(d.cfg.FrontendPaths) > 0 {
		var out []FrontendProbe
		for _, path := range d.cfg.FrontendPaths {
			out = append(out, FrontendProbe{Target: "page " + path, Path: path})
		}
		return out
	}
	out := []FrontendProbe{{Target: "page /", Path: "/"}}
	if f, ok := ClientFile(filepath.Join(p.Dist, "client")); ok {
		out = append(out, FrontendProbe{Target: "file", Path: f, File: true})
	}
	return out
}

// ClientFile picks the file of a release that the frontend check asks
// for: the first regular file (in name order) under dir/_astro, where
// Astro puts its bundles, else the first one anywhere under dir (the
// public/ files). It returns the URL path, escaped, and false when dir
// holds no file.
func ClientFile(dir string) (string, bool) {
	for _, root := range []string{filepath.Join(dir, "_astro"), dir} {
		var found string
		stop := errors.New("found")
		_ = filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
			if err != nil {
				return nil
			}
			if e.Type().IsRegular() && !strings.HasPrefix(e.Name(), ".") {
				found = path
				return stop
			}
			return nil
		})
		if found == "" {
			continue
		}
		rel, err := filepath.Rel(dir, found)
		if err != nil {
			continue
		}
		segs := strings.Split(filepath.ToSlash(rel), "/")
		for i, s := range segs {
			segs[i] = url.PathEscape(s)
		}
		return "/" + strings.Join(segs, "/"), true
	}
	return "", false
}

// FrontendDescription says, for people, what FrontendProbes asks for.
func (d *Deployer) FrontendDescription() string {
	if len(d.cfg.FrontendPaths) > 0 {
		return "the paths of CONCIERGE_FRONTEND_HEALTH_PATHS, each a page: an answer below 500 that is not a redirect to /maint"
	}
	return "the page / (an answer below 500 that is not a redirect to /maint) and one file of the live release's dist/client, " +
		"the first under _astro/ (a 2xx); each release's own file is asked for once it is live"
}

func (d *Deployer) observeFrontend(ctx context.Context, c *http.Client, port int, probes []FrontendProbe) ([]Observation, bool) {
	obs := make([]Observation, len(probes))
	ok := each(len(probes), func(i int) bool {
		a, cut := get(ctx, c, loopbackURL(port, probes[i].Path), nil)
		if a.err != nil {
			o := Unanswered(probes[i].Target, a.hung, c.Timeout, a.err)
			if probes[i].File {
				o.State = probes[i].Path + ": " + o.State
			}
			obs[i] = o
		} else {
			obs[i] = ClassifyFrontend(probes[i], a.status, a.location)
		}
		return cut
	})
	return obs, ok
}

// ProbeFrontend is what the frontend answers now on the Astro port,
// asked once: the "before" of CheckFrontend.
func (d *Deployer) ProbeFrontend(ctx context.Context, p Paths, port int) []Observation {
	obs, _ := d.observeFrontend(ctx, loopbackClient(d.requestTimeout()), port, d.FrontendProbes(p))
	return obs
}

// CheckFrontend judges the frontend's answers on the Astro port against
// before (ProbeFrontend before the reload), polling within HealthTimeout;
// see Judge and ClassifyFrontend. The probes are those of the release
// live now.
func (d *Deployer) CheckFrontend(ctx context.Context, p Paths, port int, before []Observation) (CheckResult, error) {
	probes := d.FrontendProbes(p)
	v, err := d.await(ctx, before, func(ctx context.Context, c *http.Client) ([]Observation, bool) {
		return d.observeFrontend(ctx, c, port, probes)
	})
	if err != nil {
		return CheckResult{}, fmt.Errorf("check frontend on port %d: %w", port, err)
	}
	if v.Outcome == Fail {
		return CheckResult{}, fmt.Errorf("check frontend on port %d: not answering as before within %s: %s", port, d.cfg.HealthTimeout, strings.Join(v.Reasons, "; "))
	}
	return CheckResult{Warnings: prefixed("frontend ", v.Reasons)}, nil
}
