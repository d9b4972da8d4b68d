package report

import (
	"bytes"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/tractstack/concierge/internal/atomicfile"
	"github.com/tractstack/concierge/queue"
)

// The metrics are gauges computed from the kept job records (the newest
// CONCIERGE_KEEP_JOBS finished ones), not counters kept in memory:
// concierge often runs only while there is work, and a file or a scrape
// must say the same as `concierge status`. A count can drop when old
// records are pruned, so compare counts with delta(), not rate().

// Registry returns a private registry holding the metrics of s. Each call
// builds a new one, so nothing is global and nothing is left over from an
// earlier snapshot.
func Registry(s Snapshot) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	g := func(name, help string, labels ...string) *prometheus.GaugeVec {
		v := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "concierge", Name: name, Help: help}, labels)
		reg.MustRegister(v)
		return v
	}
	jobs := g("jobs", "Jobs in the kept job records by target, command and result (succeeded, failed, rolled-back).", "target", "command", "result")
	pending := g("jobs_pending", "Jobs waiting to run.")
	running := g("job_running", "1 while a job runs, by target and command.", "target", "command")
	rejected := g("rejected_triggers", "Rejected triggers in the kept job records.")
	rollbacks := g("rollbacks", "Jobs in the kept job records that took a release back (after a failed check, or the rollback command), by target.", "target")
	lastDur := g("last_job_duration_seconds", "How long the last finished job of the target took.", "target")
	lastEnd := g("last_job_finish_timestamp_seconds", "When the last finished job of the target ended (Unix time).", "target")
	lastOK := g("last_job_succeeded", "1 when the last finished job of the target succeeded, else 0.", "target")
	lastSuccess := g("last_success_timestamp_seconds", "When the last succeeded job of the target ended (Unix time).", "target")
	stepDur := g("last_job_step_duration_seconds", "How long each step of the last finished job of the target took.", "target", "step")
	live := g("live_release_info", "The live release of the target; its commits are labels.", "target", "release", "backend_commit", "frontend_commit")

	pending.WithLabelValues().Set(0)
	rejected.WithLabelValues().Set(0)
	for _, j := range s.Jobs {
		switch {
		case j.State == queue.Pending:
			pending.WithLabelValues().Inc()
		case j.State == queue.Running:
			running.WithLabelValues(j.Target, j.Command).Set(1)
		case j.State == queue.Rejected:
			rejected.WithLabelValues().Inc()
		case j.State.Done():
			jobs.WithLabelValues(j.Target, j.Command, Result(j)).Inc()
			if RolledBack(j) {
				rollbacks.WithLabelValues(j.Target).Inc()
			}
		}
	}
	for _, t := range s.targets() {
		if last, ok := s.lastFinished(t, nil); ok {
			if last.StartedAt != nil {
				lastDur.WithLabelValues(t).Set(last.FinishedAt.Sub(*last.StartedAt).Seconds())
			}
			lastEnd.WithLabelValues(t).Set(unix(*last.FinishedAt))
			ok := 0.0
			if last.State == queue.Succeeded {
				ok = 1
			}
			lastOK.WithLabelValues(t).Set(ok)
			for _, st := range last.Steps {
				if st.FinishedAt != nil {
					stepDur.WithLabelValues(t, st.Name).Add(float64(st.DurationMS) / 1000)
				}
			}
			rollbacks.WithLabelValues(t).Add(0) // present, so an alert can compare it
		}
		if good, ok := s.lastFinished(t, func(j queue.Job) bool { return j.State == queue.Succeeded }); ok {
			lastSuccess.WithLabelValues(t).Set(unix(*good.FinishedAt))
		}
		if r, ok := s.Live[t]; ok {
			live.WithLabelValues(t, r.ID, r.Backend, r.Frontend).Set(1)
		}
	}
	return reg
}

func unix(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

// Gatherer gathers the metrics of the snapshot that snap returns at each
// gather (for an HTTP endpoint).
func Gatherer(snap func() Snapshot) prometheus.Gatherer {
	return prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		return Registry(snap()).Gather()
	})
}

// EncodeMetrics renders the metrics of s in the Prometheus text format.
func EncodeMetrics(s Snapshot) ([]byte, error) {
	mfs, err := Registry(s).Gather()
	if err != nil {
		return nil, fmt.Errorf("gather metrics: %w", err)
	}
	var buf bytes.Buffer
	enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			return nil, fmt.Errorf("encode metrics: %w", err)
		}
	}
	return buf.Bytes(), nil
}

// WriteMetricsFile writes the metrics of s to path atomically (mode 0644),
// as node_exporter's textfile collector wants: it must never read half a
// file. The temporary file is a dot file not ending in .prom, which the
// collector ignores.
func WriteMetricsFile(path string, s Snapshot) error {
	data, err := EncodeMetrics(s)
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(path, data, 0o644); err != nil {
		return fmt.Errorf("write metrics file: %w", err)
	}
	return nil
}
