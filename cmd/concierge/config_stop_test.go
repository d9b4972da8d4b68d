package main

import (
	"errors"
	"testing"
	"time"
)

func TestStopGraceSetting(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want time.Duration
		bad  bool
	}{
		{name: "default", env: map[string]string{}, want: 500 * time.Millisecond},
		{name: "set", env: map[string]string{"CONCIERGE_STOP_GRACE": "2s"}, want: 2 * time.Second},
		{name: "not a duration", env: map[string]string{"CONCIERGE_STOP_GRACE": "soon"}, bad: true},
		{name: "zero", env: map[string]string{"CONCIERGE_STOP_GRACE": "0s"}, bad: true},
		{name: "negative", env: map[string]string{"CONCIERGE_STOP_GRACE": "-1s"}, bad: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			c.Home = "/home/t8k"
			err := c.applyEnv(tc.env)
			if err == nil {
				err = c.Validate()
			}
			if tc.bad {
				if !errors.Is(err, ErrUsage) {
					t.Fatalf("CONCIERGE_STOP_GRACE=%q accepted (%v)", tc.env["CONCIERGE_STOP_GRACE"], err)
				}
				return
			}
			if err != nil || c.StopGrace != tc.want {
				t.Fatalf("stop grace %s, %v; want %s", c.StopGrace, err, tc.want)
			}
		})
	}
}
