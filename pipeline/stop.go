package pipeline

import (
	"fmt"
	"io"

	"github.com/tractstack/concierge/deploy"
	"github.com/tractstack/concierge/queue"
)

// recordStop puts how the old process of a restart or reload step
// stopped on the step's record and in its output; an old process that
// had to be ended is logged as a warning.
func (t *target) recordStop(step string, stop deploy.Stop, out io.Writer) {
	if !stop.Measured {
		return
	}
	fmt.Fprintln(out, stop.String())
	t.s.RecordStop(step, StopRecord(stop))
	ev := t.s.Log().Info()
	if stop.Ended || stop.EndError != "" {
		ev = t.s.Log().Warn()
	}
	ev.Str("step", step).Int64("stop_ms", stop.Took.Milliseconds()).Bool("stop_ended", stop.Ended).
		Int("open_conns", stop.OpenConns).Msgf("%s: %s", step, stop)
}

// StopRecord is the job record's form of a Stop.
func StopRecord(s deploy.Stop) queue.Stop {
	return queue.Stop{DurationMS: s.Took.Milliseconds(), Ended: s.Ended, OpenConns: s.OpenConns, EndError: s.EndError}
}
