package main

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestHealthSettings(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		paths   string
		request time.Duration
		wantErr string
	}{
		{name: "defaults", env: map[string]string{}, request: 5 * time.Second},
		{name: "paths with commas and spaces", env: map[string]string{"CONCIERGE_FRONTEND_HEALTH_PATHS": "/, /robots.txt /_astro/x.css"},
			paths: "/|/robots.txt|/_astro/x.css", request: 5 * time.Second},
		{name: "request timeout", env: map[string]string{"CONCIERGE_HEALTH_REQUEST_TIMEOUT": "1s"}, request: time.Second},
		{name: "a path without its slash", env: map[string]string{"CONCIERGE_FRONTEND_HEALTH_PATHS": "robots.txt"}, wantErr: `"robots.txt" is not a path`},
		{name: "a URL", env: map[string]string{"CONCIERGE_FRONTEND_HEALTH_PATHS": "//example.com/"}, wantErr: "is not a path"},
		{name: "a bad duration", env: map[string]string{"CONCIERGE_HEALTH_REQUEST_TIMEOUT": "soon"}, wantErr: "is not a duration"},
		{name: "zero", env: map[string]string{"CONCIERGE_HEALTH_REQUEST_TIMEOUT": "0s"}, wantErr: "must be positive"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			err := c.applyEnv(tc.env)
			if err == nil {
				err = c.Validate()
			}
			if tc.wantErr != "" {
				if err == nil || !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want a usage error with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(c.FrontendHealthPaths, "|"); got != tc.paths || c.HealthRequestTimeout != tc.request {
				t.Fatalf("paths %q, request timeout %s", got, c.HealthRequestTimeout)
			}
		})
	}
}
