package main

import (
	"bytes"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tractstack/concierge/queue"
)

func TestBuildConcurrencySetting(t *testing.T) {
	t.Parallel()
	tests := []struct {
		env     map[string]string
		want    string
		wantErr bool
	}{
		{env: nil, want: "auto"},
		{env: map[string]string{"CONCIERGE_BUILD_CONCURRENCY": "off"}, want: "off"},
		{env: map[string]string{"CONCIERGE_BUILD_CONCURRENCY": "on"}, want: "on"},
		{env: map[string]string{"CONCIERGE_BUILD_CONCURRENCY": ""}, want: "auto"},
		{env: map[string]string{"CONCIERGE_BUILD_CONCURRENCY": "yes"}, wantErr: true},
	}
	for _, tt := range tests {
		c := DefaultConfig()
		err := c.applyEnv(tt.env)
		if err == nil {
			err = c.Validate()
		}
		if tt.wantErr {
			if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), "use auto, on or off") {
				t.Errorf("%v: err = %v, want a usage error", tt.env, err)
			}
			continue
		}
		if err != nil || c.BuildConcurrency != tt.want {
			t.Errorf("%v: BuildConcurrency = %q, %v; want %q", tt.env, c.BuildConcurrency, err, tt.want)
		}
	}
}

// TestStatusShowsPeakMemoryAndNotes: the recent table shows each job's
// peak memory; a failed job's notes say how its builds ran.
func TestStatusShowsPeakMemoryAndNotes(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	end := start.Add(90 * time.Second)
	jobs := []*queue.Job{
		{ID: "01OK", State: queue.Succeeded, Command: "build", Target: "main", StartedAt: &start, FinishedAt: &end,
			Notes: []string{"builds at the same time: MemAvailable 8192 MiB covers ..."},
			Steps: []queue.Step{{Name: "build-backend", State: queue.Succeeded, PeakMemoryKiB: 812 << 10, CPUMS: 41000},
				{Name: "build-frontend", State: queue.Succeeded, PeakMemoryKiB: 500 << 10}}},
		{ID: "01OOM", State: queue.Failed, Command: "build", Target: "main", StartedAt: &start, FinishedAt: &end,
			Error: "build failed, nothing live was changed: backend: run go build: killed: out of memory",
			Notes: []string{"builds one after the other: MemAvailable 1024 MiB is less than ..."},
			Steps: []queue.Step{{Name: "build-backend", State: queue.Failed, PeakMemoryKiB: 700 << 10}}},
	}
	var out bytes.Buffer
	writeStatus(&out, jobs, 10, end, false)
	text := out.String()
	if !regexp.MustCompile(`01OK +SUCCEEDED .* peak 812 MiB\n`).MatchString(text) {
		t.Errorf("status lacks the job's peak memory:\n%s", text)
	}
	for _, want := range []string{
		"01OOM failed: build failed, nothing live was changed: backend: run go build: killed: out of memory",
		"01OOM note: builds one after the other: MemAvailable 1024 MiB",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("status lacks %q:\n%s", want, text)
		}
	}
}
