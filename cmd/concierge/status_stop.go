package main

import (
	"fmt"
	"io"
	"time"

	"github.com/tractstack/concierge/queue"
)

// writeStops names the steps whose old process concierge had to end
// (or tried to): an old backend that had closed its port but was kept
// alive by open requests.
func writeStops(w io.Writer, j *queue.Job) {
	for _, s := range j.Steps {
		if s.Stop == nil {
			continue
		}
		took := (time.Duration(s.Stop.DurationMS) * time.Millisecond).String()
		switch {
		case s.Stop.Ended:
			fmt.Fprintf(w, "%s %s: old process ended after %s (closed its port, %d open connection(s) kept it stopping)\n",
				j.ID, s.Name, took, s.Stop.OpenConns)
		case s.Stop.EndError != "":
			fmt.Fprintf(w, "%s %s: old process took %s to stop; ending it failed: %s\n", j.ID, s.Name, took, s.Stop.EndError)
		}
	}
}
