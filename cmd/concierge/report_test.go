package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/tractstack/concierge/internal/promtest"

	"github.com/tractstack/concierge/queue"
	"github.com/tractstack/concierge/report"
)

// readStatusFile reads and parses <data>/status.json; ok is false while
// there is none.
func readStatusFile(t testing.TB, dataDir string) (report.Status, bool) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dataDir, report.StatusFileName))
	if os.IsNotExist(err) {
		return report.Status{}, false
	}
	if err != nil {
		t.Fatal(err)
	}
	var st report.Status
	if err := json.Unmarshal(data, &st); err != nil {
		t.Fatalf("status.json is not valid JSON: %v\n%s", err, data)
	}
	return st, true
}

// TestStatusFileFollowsTheQueue drives the fake-executor binary through
// a running job, a follow-up that waits, a shutdown that puts the job
// back, and a run in which one target fails, reading status.json as a
// site would at each point.
func TestStatusFileFollowsTheQueue(t *testing.T) {
	h := newHome(t)
	data := filepath.Join(h.dir, "concierge")
	h.gate()
	watch, logs := h.start("watch")
	h.drop("build-1.csv", "type=main,tenant=default,command=build")
	first := h.runningJob()
	waitFor(t, "status.json to say building", 10*time.Second, func() (bool, string) {
		st, ok := readStatusFile(t, data)
		return ok && st.State == report.StateBuilding && st.Job != nil && st.Job.ID == first && st.Job.Step == "fake-build",
			pe2eJSON(st)
	})
	h.drop("build-2.csv", "type=dedicated,site=acme,command=build")
	waitFor(t, "status.json to count the waiting job", 10*time.Second, func() (bool, string) {
		st, _ := readStatusFile(t, data)
		return st.State == report.StateBuilding && st.Pending == 1, pe2eJSON(st)
	})
	watch.cmd.Process.Signal(syscall.SIGTERM)
	if code := waitExit(t, watch); code != 0 {
		t.Fatalf("watch exit %d:\n%s", code, logs)
	}
	st, _ := readStatusFile(t, data)
	if st.State != report.StateQueued || st.Pending != 2 || st.Job == nil || st.Job.ID != first || st.Job.StartedAt != nil {
		t.Fatalf("after SIGTERM the interrupted job waits again; status.json:\n%s", pe2eJSON(st))
	}

	mustWrite(t, filepath.Join(h.fake, "fail-targets"), "dedicated:acme\n")
	h.openGate()
	if _, stderr, code := h.concierge("run"); code != 1 {
		t.Fatalf("run exit %d, want 1 (acme fails):\n%s", code, stderr)
	}
	jobs := h.status()
	if len(jobs) != 2 {
		t.Fatalf("jobs %+v", jobs)
	}
	st, _ = readStatusFile(t, data)
	acme := jobs[1]
	if st.State != report.StateFailed || st.Pending != 0 || st.Job == nil || st.Job.ID != acme.ID ||
		st.Job.Error != "fake build failed" || st.Job.Result != "failed" || st.Job.Step != "" {
		t.Fatalf("after the run, status.json:\n%s\njobs: %s", pe2eJSON(st), pe2eJSON(jobs))
	}
	if m := st.Targets["main"].LastResult; m == nil || m.ID != first || m.Result != "succeeded" || !m.FinishedAt.Equal(*jobs[0].FinishedAt) {
		t.Fatalf("main's last result %s, want job %s succeeded", pe2eJSON(m), first)
	}
	if a := st.Targets["dedicated:acme"].LastResult; a == nil || a.ID != acme.ID || a.Result != "failed" {
		t.Fatalf("acme's last result %s", pe2eJSON(a))
	}
	fi, err := os.Stat(filepath.Join(data, report.StatusFileName))
	if err != nil || fi.Mode().Perm() != 0o644 {
		t.Fatalf("status.json mode %v (%v), want 0644", fi.Mode().Perm(), err)
	}
}

// promWant is one sample a test expects: its name, some of its labels
// (name=value) and its value.
type promWant struct {
	name   string
	labels []string
	value  float64
}

// checkProm checks every wanted sample against mfs.
func checkProm(t testing.TB, mfs map[string]*dto.MetricFamily, data []byte, want []promWant) {
	t.Helper()
	for _, w := range want {
		got, ok := promtest.Value(mfs, w.name, w.labels...)
		if !ok || math.Abs(got-w.value) > 1e-6 {
			t.Errorf("%s%v = %v (present %t), want %v", w.name, w.labels, got, ok, w.value)
		}
	}
	if t.Failed() {
		t.Fatalf("metrics:\n%s", data)
	}
}

// TestMetricsInWatchMode serves the metrics on loopback while watch runs,
// and writes the same to the metrics file, a rejected trigger included
// (which is also notified).
func TestMetricsInWatchMode(t *testing.T) {
	h := newHome(t)
	prom := filepath.Join(h.dir, "textfile", "concierge.prom")
	if err := os.MkdirAll(filepath.Dir(prom), 0o755); err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", loopbackPorts(t, 1)[0])
	hook := startWebhook(t)
	env := append(h.env(), "CONCIERGE_METRICS_FILE="+prom, "CONCIERGE_METRICS_ADDR="+addr, "CONCIERGE_NOTIFY="+hook.url())
	watch := startProc(t, bins.fake, env, "watch")
	h.drop("build-1.csv", "type=main,tenant=default,command=build")
	h.drop("build-2.csv", "type=nonsense")
	eventually(t, "the job to end", 20*time.Second, func() bool { return len(h.ends()) == 1 })
	jobs := h.status()
	want := []promWant{
		{"concierge_jobs", []string{"target=main", "command=build", "result=succeeded"}, 1},
		{"concierge_rejected_triggers", nil, 1},
		{"concierge_last_job_succeeded", []string{"target=main"}, 1},
	}
	for _, j := range jobs {
		if j.State == queue.Succeeded {
			want = append(want, promWant{"concierge_last_success_timestamp_seconds", []string{"target=main"}, float64(j.FinishedAt.UnixNano()) / 1e9})
		}
	}
	var served []byte
	waitFor(t, "the metrics endpoint to show the job", 10*time.Second, func() (bool, string) {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			return false, err.Error()
		}
		defer resp.Body.Close()
		served, _ = io.ReadAll(resp.Body)
		v, ok := promtest.Value(promtest.Parse(t, served), "concierge_jobs", "result=succeeded")
		return ok && v == 1, string(served)
	})
	checkProm(t, promtest.Parse(t, served), served, want)
	file, err := os.ReadFile(prom)
	if err != nil {
		t.Fatal(err)
	}
	checkProm(t, promtest.Parse(t, file), file, want)
	// The rejected trigger was notified; the success was not (failure is the default).
	waitFor(t, "the rejected trigger's notification", 10*time.Second, func() (bool, string) {
		got := hook.messages()
		return len(got) == 1 && strings.Contains(got[0].Title, "trigger build-2.csv rejected"), pe2eJSON(got)
	})
	watch.cmd.Process.Signal(syscall.SIGTERM)
	if code := waitExit(t, watch); code != 0 {
		t.Fatalf("watch exit %d:\n%s", code, watch.out.String())
	}
	if _, err := http.Get("http://" + addr + "/metrics"); err == nil {
		t.Fatal("the metrics endpoint still answers after watch stopped")
	}
}

func TestMetricsSettings(t *testing.T) {
	for _, c := range []struct {
		file, addr string
		ok         bool
	}{
		{"", "", true},
		{"/var/lib/node_exporter/textfile_collector/concierge.prom", "127.0.0.1:9469", true},
		{"", "localhost:9469", true},
		{"", "[::1]:9469", true},
		{"concierge.prom", "", false},
		{"", "0.0.0.0:9469", false},
		{"", ":9469", false},
		{"", "192.0.2.1:9469", false},
		{"", "127.0.0.1", false},
	} {
		cfg := DefaultConfig()
		cfg.MetricsFile, cfg.MetricsAddr = c.file, c.addr
		if err := cfg.Validate(); (err == nil) != c.ok {
			t.Errorf("file %q addr %q: error %v, want ok %t", c.file, c.addr, err, c.ok)
		}
	}
}

// webhook is a local HTTP receiver standing in for a chat webhook: it
// keeps every message posted to it (shoutrrr's generic service, JSON
// template); while hold is set, it does not answer until the test ends.
type webhook struct {
	srv  *httptest.Server
	mu   sync.Mutex
	got  []webhookMessage
	hold atomic.Bool
	stop chan struct{}
}

type webhookMessage struct{ Title, Message string }

func startWebhook(t *testing.T) *webhook {
	t.Helper()
	w := &webhook{stop: make(chan struct{})}
	w.srv = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		var m webhookMessage
		data, _ := io.ReadAll(r.Body)
		json.Unmarshal(data, &m)
		w.mu.Lock()
		w.got = append(w.got, m)
		w.mu.Unlock()
		if w.hold.Load() {
			<-w.stop
		}
	}))
	t.Cleanup(func() { close(w.stop); w.srv.Close() })
	return w
}

// url is the receiver as a shoutrrr generic-webhook URL.
func (w *webhook) url() string {
	return strings.Replace(w.srv.URL, "http://", "generic://", 1) + "/hooks/s3cr3t-t0ken?template=json&disabletls=yes"
}

func (w *webhook) messages() []webhookMessage {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]webhookMessage{}, w.got...)
}

// wantOne checks that exactly one message arrived since the last call,
// about job j, with its id and error, and a title saying what.
func (w *webhook) wantOne(t testing.TB, j queue.Job, what string) {
	t.Helper()
	w.mu.Lock()
	got := w.got
	w.got = nil
	w.mu.Unlock()
	if len(got) != 1 {
		t.Fatalf("%d notifications arrived, want 1: %+v", len(got), got)
	}
	m := got[0]
	if !strings.Contains(m.Title, what) || !strings.Contains(m.Message, "job "+j.ID) || !strings.Contains(m.Message, "error: "+j.Error) {
		t.Fatalf("notification %+v; want %q, job %s and error %q", m, what, j.ID, j.Error)
	}
}

// TestANotificationThatHangsCostsItsTimeoutOnly: a receiver that never
// answers is given up at CONCIERGE_NOTIFY_TIMEOUT; the job keeps a
// warning (with no secret of the URL) and concierge goes on and exits.
func TestANotificationThatHangsCostsItsTimeoutOnly(t *testing.T) {
	h := newHome(t)
	w := startWebhook(t)
	w.hold.Store(true)
	mustWrite(t, filepath.Join(h.fake, "fail-targets"), "main\n")
	h.drop("build-1.csv", "type=main,tenant=default,command=build")
	h.drop("build-2.csv", "type=dedicated,site=acme,command=build")
	env := append(h.env(), "CONCIERGE_NOTIFY="+w.url(), "CONCIERGE_NOTIFY_TIMEOUT=1s")
	run := startProc(t, bins.fake, env, "run")
	if code := waitExit(t, run); code != 1 {
		t.Fatalf("run exit %d, want 1:\n%s", code, run.out.String())
	}
	// The receiver still holds the request open: concierge did not wait for it.
	jobs := h.status()
	if len(jobs) != 2 || jobs[0].State != queue.Failed || jobs[1].State != queue.Succeeded {
		t.Fatalf("jobs %s", pe2eJSON(jobs))
	}
	if got := w.messages(); len(got) != 1 || !strings.Contains(got[0].Message, jobs[0].ID) {
		t.Fatalf("messages %+v; want the failure's", got)
	}
	warn := strings.Join(jobs[0].Warnings, "\n")
	if !strings.Contains(warn, "notification not sent") || !strings.Contains(warn, "timed out") {
		t.Fatalf("the failed job's warnings %q", warn)
	}
	for _, where := range []string{warn, run.out.String()} {
		if strings.Contains(where, "s3cr3t-t0ken") {
			t.Fatalf("the webhook's token was shown:\n%s", where)
		}
	}
	if !strings.Contains(run.out.String(), "notification not sent") {
		t.Fatalf("the failed notification was not logged:\n%s", run.out.String())
	}
}

func TestABadNotificationURLStopsConciergeWithoutShowingIt(t *testing.T) {
	h := newHome(t)
	env := append(h.env(), "CONCIERGE_NOTIFY=nosuch://user:hunter2hunter2@example.com/x")
	_, stderr, code := runConcierge(t, bins.fake, env, "run")
	if code != 2 || !strings.Contains(stderr, "CONCIERGE_NOTIFY") || strings.Contains(stderr, "hunter2hunter2") {
		t.Fatalf("exit %d, stderr:\n%s", code, stderr)
	}
}
