package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/tractstack/concierge/queue"
)

func TestStatusNamesEndedStops(t *testing.T) {
	at := time.Date(2026, 12, 5, 3, 0, 0, 0, time.UTC)
	job := func(id string, state queue.State, stop *queue.Stop) *queue.Job {
		return &queue.Job{ID: id, State: state, Command: "build", Target: "main", StartedAt: &at, FinishedAt: &at,
			Steps: []queue.Step{{Name: "restart-backend", State: queue.Succeeded, Stop: stop},
				{Name: "reload-frontend", State: queue.Succeeded, Stop: &queue.Stop{DurationMS: 300}}}}
	}
	tests := []struct {
		name string
		job  *queue.Job
		want string // "" for no stop line
	}{
		{"stopped by itself", job("01A", queue.Succeeded, &queue.Stop{DurationMS: 31}), ""},
		{"no stop recorded", job("01B", queue.Succeeded, nil), ""},
		{"ended", job("01C", queue.Succeeded, &queue.Stop{DurationMS: 612, Ended: true, OpenConns: 3}),
			"01C restart-backend: old process ended after 612ms (closed its port, 3 open connection(s) kept it stopping)"},
		{"ended, job failed", job("01D", queue.Failed, &queue.Stop{DurationMS: 700, Ended: true, OpenConns: 1}),
			"01D restart-backend: old process ended after 700ms (closed its port, 1 open connection(s) kept it stopping)"},
		{"ending refused", job("01E", queue.Succeeded, &queue.Stop{DurationMS: 30000, EndError: "exit status 1: Access denied"}),
			"01E restart-backend: old process took 30s to stop; ending it failed: exit status 1: Access denied"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			writeStatus(&b, []*queue.Job{tc.job}, 10, at, false)
			out := b.String()
			if tc.want == "" {
				if strings.Contains(out, "old process") {
					t.Fatalf("stop named:\n%s", out)
				}
				return
			}
			if !strings.Contains(out, tc.want+"\n") {
				t.Fatalf("want %q in:\n%s", tc.want, out)
			}
		})
	}
}
