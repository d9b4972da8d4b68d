package deploy

import (
	"context"

	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"
)

// loopbackClient is an HTTP client that can only reach loopback addresses:
// no proxy from the environment, no redirects, and a dialer that refuses
// anything else.
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

// probe is one health request's verdict: nil when ok answers true.
type probe func(ctx context.Context, c *http.Client) error

// poll runs check until it passes or timeout passes, at once and then
// with a back-off from 5 ms up to interval; the error then is the last
// failure.
func poll(ctx context.Context, timeout, interval time.Duration, check probe) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c := loopbackClient(min(timeout, 5*time.Second))
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

func get(ctx context.Context, c *http.Client, url string, header http.Header) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, fmt.Errorf("make request: %w", err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, nil
}

// BackendOK is the backend health verdict on a status code: 2xx.
func BackendOK(status int) bool { return status >= 200 && status < 300 }

// FrontendOK is the frontend health verdict on a status code: any answer
// below 500 (a 404 or a redirect still means the server is up).
func FrontendOK(status int) bool { return status > 0 && status < 500 }

func loopbackURL(port int, path string) string {
	return "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) + path
}

// CheckBackend waits until GET /api/v1/health on the Go port answers 2xx
// for every tenant (header X-Tenant-ID; "default" when none are given),
// within HealthTimeout.
func (d *Deployer) CheckBackend(ctx context.Context, port int, tenants []string) error {
	if len(tenants) == 0 {
		tenants = []string{"default"}
	}
	url := loopbackURL(port, "/api/v1/health")
	err := poll(ctx, d.cfg.HealthTimeout, d.cfg.HealthInterval, func(ctx context.Context, c *http.Client) error {
		for _, tenant := range tenants {
			status, err := get(ctx, c, url, http.Header{"X-Tenant-Id": {tenant}})
			if err != nil {
				return fmt.Errorf("tenant %s: %w", tenant, err)
			}
			if !BackendOK(status) {
				return fmt.Errorf("tenant %s: status %d", tenant, status)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("check backend %s: %w", url, err)
	}
	return nil
}

// CheckFrontend waits until GET / on the Astro port answers below 500
// within HealthTimeout.
func (d *Deployer) CheckFrontend(ctx context.Context, port int) error {
	url := loopbackURL(port, "/")
	err := poll(ctx, d.cfg.HealthTimeout, d.cfg.HealthInterval, func(ctx context.Context, c *http.Client) error {
		status, err := get(ctx, c, url, nil)
		if err != nil {
			return err
		}
		if !FrontendOK(status) {
			return fmt.Errorf("status %d", status)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("check frontend %s: %w", url, err)
	}
	return nil
}
