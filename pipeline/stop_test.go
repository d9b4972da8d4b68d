package pipeline

import (
	"testing"
	"time"

	"github.com/tractstack/concierge/deploy"
	"github.com/tractstack/concierge/queue"
)

// Every backend restart, the rollback's included, records how its old
// process stopped; a target without ports has no port to watch.
func TestRestartStepsRecordTheStop(t *testing.T) {
	h := newHost(t, true)
	s, err := h.run(t, &fakeBuilder{version: "bad"}, queue.CommandBuild)
	if err == nil {
		t.Fatal("an unhealthy build succeeded")
	}
	for _, step := range []string{StepRestartBackend, StepRestartBackendPrevious} {
		if _, ok := s.stops[step]; !ok {
			t.Errorf("step %s recorded no stop (stops %+v)", step, s.stops)
		}
	}

	h = newHost(t, false)
	s, err = h.run(t, &fakeBuilder{version: "v2"}, queue.CommandRestart)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.stops) != 0 {
		t.Fatalf("stops recorded without a port: %+v", s.stops)
	}
}

func TestStopRecord(t *testing.T) {
	tests := []struct {
		in   deploy.Stop
		want queue.Stop
	}{
		{deploy.Stop{Measured: true, Took: 31 * time.Millisecond}, queue.Stop{DurationMS: 31}},
		{deploy.Stop{Measured: true, Took: 612 * time.Millisecond, Ended: true, OpenConns: 3}, queue.Stop{DurationMS: 612, Ended: true, OpenConns: 3}},
		{deploy.Stop{Measured: true, Took: 30 * time.Second, EndError: "denied"}, queue.Stop{DurationMS: 30000, EndError: "denied"}},
	}
	for _, tc := range tests {
		if got := StopRecord(tc.in); got != tc.want {
			t.Errorf("StopRecord(%+v) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}
