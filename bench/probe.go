package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// probeInterval is how often each stream asks: 20 requests a second.
const probeInterval = 50 * time.Millisecond

// hit is one request of a probe stream.
type hit struct {
	at      time.Time // when the request was sent
	ok      bool
	version string // what the answer says it is, "" when it does not say
	why     string // why it failed: "refused", "timeout", "status 404: <body>"
}

// stream is one kind of request the probe sends, with what came back.
type stream struct {
	name string
	get  func(c *http.Client, i int) (ok bool, version, why string)
	mu   sync.Mutex
	out  []hit
}

func (s *stream) add(x hit) {
	s.mu.Lock()
	s.out = append(s.out, x)
	s.mu.Unlock()
}

// samples are the stream's samples in the order they were sent.
func (s *stream) samples() []hit {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := append([]hit(nil), s.out...)
	sort.Slice(out, func(i, j int) bool { return out[i].at.Before(out[j].at) })
	return out
}

// seen reports whether an answer with version v came back.
func (s *stream) seen(v string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, x := range s.out {
		if x.ok && x.version == v {
			return true
		}
	}
	return false
}

// probe asks a site what a visitor would, 20 times a second per stream:
// its pages round-robin (so each page's lazily loaded chunk is asked for),
// a public file, and the backend's health. Each request runs on its own,
// so a slow answer does not delay the next; none keeps its connection,
// like a new visitor each time.
type probe struct {
	pages, public, backend *stream
	stop                   chan struct{}
	wg                     sync.WaitGroup
}

var versionRe = regexp.MustCompile(`data-version="([^"]+)"`)

func startProbe(frontPort, backPort, pages int) *probe {
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		Proxy: nil, DisableKeepAlives: true, DialContext: (&net.Dialer{Timeout: time.Second}).DialContext}}
	front := "http://127.0.0.1:" + strconv.Itoa(frontPort)
	back := "http://127.0.0.1:" + strconv.Itoa(backPort)
	pr := &probe{stop: make(chan struct{})}
	pr.pages = &stream{name: "pages", get: func(c *http.Client, i int) (bool, string, string) {
		_, body, why := httpGet(c, fmt.Sprintf("%s/p/%d", front, i%pages+1), nil)
		if why != "" {
			return false, "", why
		}
		if m := versionRe.FindStringSubmatch(body); m != nil {
			return true, m[1], ""
		}
		return true, "", ""
	}}
	pr.public = &stream{name: "public", get: func(c *http.Client, _ int) (bool, string, string) {
		_, _, why := httpGet(c, front+"/robots.txt", nil)
		return why == "", "", why
	}}
	pr.backend = &stream{name: "backend", get: func(c *http.Client, _ int) (bool, string, string) {
		_, body, why := httpGet(c, back+"/api/v1/health", http.Header{"X-Tenant-ID": {"default"}})
		var h struct {
			Version string `json:"version"`
		}
		json.Unmarshal([]byte(body), &h)
		return why == "", h.Version, why
	}}
	for _, s := range []*stream{pr.pages, pr.public, pr.backend} {
		pr.wg.Add(1)
		go func() {
			defer pr.wg.Done()
			t := time.NewTicker(probeInterval)
			defer t.Stop()
			for i := 0; ; i++ {
				pr.wg.Add(1)
				go func() {
					defer pr.wg.Done()
					at := time.Now()
					ok, v, why := s.get(c, i)
					s.add(hit{at: at, ok: ok, version: v, why: why})
				}()
				select {
				case <-pr.stop:
					return
				case <-t.C:
				}
			}
		}()
	}
	return pr
}

// httpGet returns the status and body of a GET, and why it failed ("" for
// a 200 answer).
func httpGet(c *http.Client, url string, h http.Header) (int, string, string) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err.Error()
	}
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		var ne net.Error
		switch {
		case errors.Is(err, syscall.ECONNREFUSED):
			return 0, "", "refused"
		case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
			return 0, "", "reset"
		case errors.As(err, &ne) && ne.Timeout():
			return 0, "", "timeout"
		}
		return 0, "", "error"
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return 0, "", "reset"
	}
	if resp.StatusCode != http.StatusOK {
		body := strings.Join(strings.Fields(string(b)), " ")
		if len(body) > 60 {
			body = body[:60]
		}
		return resp.StatusCode, string(b), fmt.Sprintf("status %d %q", resp.StatusCode, body)
	}
	return resp.StatusCode, string(b), ""
}

// finish stops the probe once the job has ended (done is closed) and the
// new version answers on both the pages and the backend, or limit after
// the job ended, and waits for requests in flight.
func (pr *probe) finish(done <-chan struct{}, front, back string, limit time.Duration) {
	<-done
	waitFor(limit, 5*time.Millisecond, func() bool { return pr.pages.seen(front) && pr.backend.seen(back) })
	close(pr.stop)
	pr.wg.Wait()
}

// window counts a stream's requests sent in [from, to) (zero to: no end)
// and those that failed, and finds the longest run of failures: from the
// first failed request's send time to the next answered one's (or to the
// last request's send time plus an interval when none answered after).
func window(ss []hit, from, to time.Time) (n, failed int, gap time.Duration) {
	var runStart time.Time
	var last time.Time
	for _, s := range ss {
		if s.at.Before(from) || (!to.IsZero() && !s.at.Before(to)) {
			continue
		}
		n++
		last = s.at
		if !s.ok {
			failed++
			if runStart.IsZero() {
				runStart = s.at
			}
			continue
		}
		if !runStart.IsZero() {
			gap = max(gap, s.at.Sub(runStart))
			runStart = time.Time{}
		}
	}
	if !runStart.IsZero() {
		gap = max(gap, last.Sub(runStart)+probeInterval)
	}
	return n, failed, gap
}

// failTimes lists when a stream's failed requests were sent, relative
// to t0, compressed into runs ("1.20–3.45 s (45)").
func failTimes(ss []hit, t0 time.Time) []string {
	var out []string
	var first, prev time.Time
	count := 0
	whys := map[string]int{}
	flush := func() {
		if count > 0 {
			var ws []string
			for w, n := range whys {
				ws = append(ws, fmt.Sprintf("%s ×%d", w, n))
			}
			sort.Strings(ws)
			out = append(out, fmt.Sprintf("%.2f–%.2f s (%d: %s)", first.Sub(t0).Seconds(), prev.Sub(t0).Seconds(), count, strings.Join(ws, ", ")))
		}
		count = 0
		whys = map[string]int{}
	}
	for _, s := range ss {
		if s.at.Before(t0) {
			continue
		}
		if s.ok {
			flush()
			continue
		}
		if count == 0 {
			first = s.at
		}
		prev = s.at
		count++
		whys[s.why]++
	}
	flush()
	return out
}
