package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// demoReceiver is the demo's stand-in for a chat webhook: a loopback
// HTTP server that takes shoutrrr's generic JSON messages and prints
// each as it arrives.
type demoReceiver struct {
	d   *demo
	srv *http.Server
	ln  net.Listener

	mu     sync.Mutex
	titles []string
}

func startDemoReceiver(d *demo) (*demoReceiver, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("start the demo's webhook receiver: %w", err)
	}
	r := &demoReceiver{d: d, ln: ln}
	r.srv = &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var m struct{ Title, Message string }
		data, _ := io.ReadAll(io.LimitReader(req.Body, 1<<16))
		if err := json.Unmarshal(data, &m); err != nil {
			http.Error(w, "not JSON", http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		r.titles = append(r.titles, m.Title)
		r.mu.Unlock()
		var b strings.Builder
		fmt.Fprintf(&b, "    NOTIFICATION received by the demo's webhook at %s:\n", req.URL.Path)
		for _, l := range strings.Split(strings.TrimSpace(m.Message), "\n") {
			fmt.Fprintf(&b, "      | %s\n", l)
		}
		io.WriteString(d.out, b.String())
	})}
	go r.srv.Serve(ln) //nolint:errcheck // ends with Close
	return r, nil
}

// url is the receiver as a notification URL (shoutrrr's generic
// webhook, JSON body, plain HTTP on loopback).
func (r *demoReceiver) url() string {
	return fmt.Sprintf("generic://%s/demo-webhook?template=json&disabletls=yes", r.ln.Addr())
}

func (r *demoReceiver) received() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string{}, r.titles...)
}

func (r *demoReceiver) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	r.srv.Shutdown(ctx) //nolint:errcheck // the demo is ending
}

// demoMetricsFile is where the demo writes its metrics, in a directory
// of its own as node_exporter's textfile directory would be.
func demoMetricsFile(dir string) (string, error) {
	d := filepath.Join(dir, "textfile_collector")
	if err := os.MkdirAll(d, 0o755); err != nil {
		return "", fmt.Errorf("create the demo's metrics dir: %w", err)
	}
	return filepath.Join(d, "concierge.prom"), nil
}

// showMetrics prints the samples of the metrics file (its HELP and TYPE
// lines left out).
func (d *demo) showMetrics(path string) error {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		d.say("    (no metrics file was written)")
		return nil
	}
	if err != nil {
		return fmt.Errorf("read the metrics file: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if l := sc.Text(); !strings.HasPrefix(l, "#") {
			d.say("    %s", l)
		}
	}
	return sc.Err()
}
