// Package promtest reads metrics in the Prometheus text format for tests:
// it parses them as Prometheus and node_exporter's textfile collector do,
// and looks up one sample by name and labels.
package promtest

import (
	"bytes"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Parse parses data in the text format; a parse error fails t.
func Parse(t testing.TB, data []byte) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("the metrics do not parse: %v\n%s", err, data)
	}
	return mfs
}

// Value is the gauge value of the sample of name whose labels include
// want (name=value pairs); ok is false when there is none.
func Value(mfs map[string]*dto.MetricFamily, name string, want ...string) (float64, bool) {
next:
	for _, m := range mfs[name].GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for _, kv := range want {
			k, v, _ := strings.Cut(kv, "=")
			if have[k] != v {
				continue next
			}
		}
		return m.GetGauge().GetValue(), true
	}
	return 0, false
}
