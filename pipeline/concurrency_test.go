package pipeline

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tractstack/concierge/builder"
	"github.com/tractstack/concierge/internal/testtool"
	"github.com/tractstack/concierge/queue"
)

const gib = int64(1) << 20 // in KiB

func TestDecideConcurrency(t *testing.T) {
	t.Parallel()
	roomy := Host{MemAvailableKiB: 8 * gib, CPUs: 4}
	tests := []struct {
		name   string
		mode   string
		host   Host
		peaks  Peaks
		want   bool
		reason []string // substrings of the reason
	}{
		{"on overrides a small host", ConcurrencyOn, Host{MemAvailableKiB: 100 << 10, CPUs: 1}, Peaks{}, true,
			[]string{"at the same time", "CONCIERGE_BUILD_CONCURRENCY=on"}},
		{"off overrides a large host", ConcurrencyOff, roomy, Peaks{}, false,
			[]string{"one after the other", "CONCIERGE_BUILD_CONCURRENCY=off"}},
		{"large host, no history: cold figures fit", ConcurrencyAuto, roomy, Peaks{}, true,
			[]string{"at the same time", "MemAvailable 8192 MiB covers backend 774 MiB (cold figure", "frontend 962 MiB (cold figure"}},
		{"empty mode is auto", "", roomy, Peaks{}, true, []string{"at the same time"}},
		{"2 GiB host, no history: cold figures do not fit", ConcurrencyAuto, Host{MemAvailableKiB: 2 * gib, CPUs: 2}, Peaks{}, false,
			[]string{"one after the other", "MemAvailable 2048 MiB is less than backend 774 MiB", "+ 25% spare"}},
		{"exactly both plus a quarter fits", ConcurrencyAuto, Host{MemAvailableKiB: (ColdBackendKiB + ColdFrontendKiB) * 5 / 4, CPUs: 2}, Peaks{}, true, nil},
		{"one KiB short of that does not", ConcurrencyAuto, Host{MemAvailableKiB: (ColdBackendKiB+ColdFrontendKiB)*5/4 - 1, CPUs: 2}, Peaks{}, false, nil},
		{"small measured peaks fit a 2 GiB host", ConcurrencyAuto, Host{MemAvailableKiB: 2 * gib, CPUs: 2},
			Peaks{BackendKiB: 200 << 10, FrontendKiB: 300 << 10}, true,
			[]string{"backend 300 MiB (measured here: 1.5 × peak 200 MiB)", "frontend 450 MiB (measured here: 1.5 × peak 300 MiB)"}},
		{"measured backend, cold frontend", ConcurrencyAuto, Host{MemAvailableKiB: 1400 << 10, CPUs: 2},
			Peaks{BackendKiB: 200 << 10}, false, []string{"measured here", "frontend 962 MiB (cold figure"}},
		{"one CPU", ConcurrencyAuto, Host{MemAvailableKiB: 64 * gib, CPUs: 1}, Peaks{}, false,
			[]string{"one after the other", "one CPU"}},
		{"after running out of memory", ConcurrencyAuto, roomy, Peaks{OutOfMemory: true}, false,
			[]string{"one after the other", "ran out of memory"}},
		{"MemAvailable unknown", ConcurrencyAuto, Host{CPUs: 2}, Peaks{}, false, []string{"MemAvailable unknown"}},
		{"not even one build fits", ConcurrencyAuto, Host{MemAvailableKiB: 512 << 10, CPUs: 2}, Peaks{}, false,
			[]string{"even one build may not fit", "it ends the build"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := DecideConcurrency(tt.mode, tt.host, tt.peaks)
			if d.Concurrent != tt.want {
				t.Fatalf("Concurrent = %v, want %v (%s)", d.Concurrent, tt.want, d.Reason)
			}
			for _, w := range tt.reason {
				if !strings.Contains(d.Reason, w) {
					t.Errorf("reason %q lacks %q", d.Reason, w)
				}
			}
		})
	}
}

func buildJob(id, target string, state queue.State, errText string, steps ...queue.Step) *queue.Job {
	return &queue.Job{ID: id, Target: target, Command: queue.CommandBuild, State: state, Error: errText, Steps: steps}
}

func step(name string, state queue.State, kib int64) queue.Step {
	return queue.Step{Name: name, State: state, PeakMemoryKiB: kib}
}

func TestPeaksFrom(t *testing.T) {
	t.Parallel()
	ok := queue.Succeeded
	tests := []struct {
		name string
		jobs []*queue.Job
		want Peaks
	}{
		{"no jobs", nil, Peaks{}},
		{"largest of the succeeded build steps of the target", []*queue.Job{
			buildJob("1", "main", ok, "", step(StepBuildBackend, ok, 300), step(StepBuildFrontend, ok, 500)),
			buildJob("2", "main", queue.Failed, "backend unhealthy", step(StepBuildBackend, ok, 400), step(StepBuildFrontend, ok, 450)),
			buildJob("3", "main", queue.Failed, "build failed", step(StepBuildBackend, queue.Failed, 9000)),
			buildJob("4", "dedicated:acme", ok, "", step(StepBuildBackend, ok, 7000)),
			{ID: "5", Target: "main", Command: queue.CommandRestart, State: ok, Steps: []queue.Step{step(StepRestartBackend, ok, 8000)}},
			buildJob("6", "main", queue.Running, "", step(StepBuildBackend, ok, 6000)),
		}, Peaks{BackendKiB: 400, FrontendKiB: 500}},
		{"an out-of-memory failure among the recent builds", []*queue.Job{
			buildJob("1", "main", queue.Failed, "build failed, nothing live was changed: backend: run go build: killed: out of memory"),
			buildJob("2", "main", ok, "", step(StepBuildBackend, ok, 300)),
		}, Peaks{BackendKiB: 300, OutOfMemory: true}},
		{"of another target, it does not count", []*queue.Job{
			buildJob("1", "dedicated:acme", queue.Failed, "killed: out of memory"),
		}, Peaks{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := PeaksFrom(tt.jobs, "main"); got != tt.want {
				t.Fatalf("PeaksFrom = %+v, want %+v", got, tt.want)
			}
		})
	}
	t.Run("only the last ten builds count", func(t *testing.T) {
		jobs := []*queue.Job{buildJob("00", "main", queue.Failed, "out of memory", step(StepBuildBackend, ok, 9000))}
		for i := range historyJobs {
			jobs = append(jobs, buildJob(strconv.Itoa(10+i), "main", ok, "", step(StepBuildBackend, ok, 100)))
		}
		if got := PeaksFrom(jobs, "main"); got != (Peaks{BackendKiB: 100}) {
			t.Fatalf("PeaksFrom = %+v, want only the last ten builds' 100 KiB", got)
		}
	})
}

func TestParseMemAvailable(t *testing.T) {
	t.Parallel()
	got, err := ParseMemAvailable([]byte("MemTotal:        2014548 kB\nMemFree:          112312 kB\nMemAvailable:     873412 kB\n"))
	if err != nil || got != 873412 {
		t.Fatalf("ParseMemAvailable = %d, %v", got, err)
	}
	if _, err := ParseMemAvailable([]byte("MemTotal: 1 kB\n")); err == nil {
		t.Fatal("no error without MemAvailable")
	}
	if mem, err := readMemAvailable(); err != nil || mem <= 0 {
		t.Fatalf("this host's MemAvailable = %d, %v", mem, err)
	}
}

// overlap watches the two fake builds: whether one started while the
// other ran. Each build, once started, waits (bounded) for the other to
// start, so that builds run at once are seen at once.
type overlap struct {
	mu         sync.Mutex
	running    int
	overlapped bool
	started    map[string]chan struct{}
}

func newOverlap() *overlap {
	return &overlap{started: map[string]chan struct{}{"backend": make(chan struct{}), "frontend": make(chan struct{})}}
}

func (o *overlap) build(self, other string) {
	o.mu.Lock()
	o.running++
	o.overlapped = o.overlapped || o.running > 1
	close(o.started[self])
	o.mu.Unlock()
	select {
	case <-o.started[other]:
	case <-time.After(2 * time.Second): // one after the other: it never comes
	}
	o.mu.Lock()
	o.running--
	o.mu.Unlock()
}

// runWithMemory runs a build job on a fresh host whose MemAvailable is
// mem KiB (injected), with 2 CPUs.
func runWithMemory(t *testing.T, mem int64) (*fakeSession, *overlap, error) {
	t.Helper()
	h := newHost(t, true)
	o := newOverlap()
	b := &fakeBuilder{version: "v2",
		buildBackend:  func(ctx context.Context) error { o.build("backend", "frontend"); return nil },
		buildFrontend: func(ctx context.Context) error { o.build("frontend", "backend"); return nil },
	}
	pl := New(Config{Home: h.p.Home, Builder: b, Deployer: h.d, Log: zerolog.Nop(), Resources: Resources{
		MemAvailable: func() (int64, error) { return mem, nil },
		CPUs:         func() int { return 2 },
	}})
	s := &fakeSession{log: zerolog.Nop()}
	err := pl.Execute(context.Background(), queue.Job{ID: "01TEST", Target: queue.MainTarget, Command: queue.CommandBuild}, s)
	if bin, dist := h.live(t); err == nil && (bin != "bin v2" || dist != "dist v2") {
		t.Fatalf("live %q %q after a successful build", bin, dist)
	}
	return s, o, err
}

func TestSmallHostBuildsOneAfterTheOther(t *testing.T) {
	t.Parallel()
	s, o, err := runWithMemory(t, 1*gib)
	if err != nil {
		t.Fatal(err)
	}
	if o.overlapped {
		t.Fatal("the builds overlapped on a host with 1 GiB available")
	}
	if got := strings.Join(s.stepList(), ","); !strings.Contains(got, StepBuildBackend+","+StepBuildFrontend) {
		t.Fatalf("steps %s; want the backend build, then the frontend build", got)
	}
	if len(s.notes) != 1 || !strings.Contains(s.notes[0], "builds one after the other: MemAvailable 1024 MiB is less than") {
		t.Fatalf("notes %q; want the decision and why", s.notes)
	}
}

func TestLargeHostBuildsAtTheSameTime(t *testing.T) {
	t.Parallel()
	s, o, err := runWithMemory(t, 16*gib)
	if err != nil {
		t.Fatal(err)
	}
	if !o.overlapped {
		t.Fatal("the builds did not overlap on a host with 16 GiB available")
	}
	if len(s.notes) != 1 || !strings.Contains(s.notes[0], "builds at the same time: MemAvailable 16384 MiB covers") {
		t.Fatalf("notes %q; want the decision and why", s.notes)
	}
}

// TestSequentialBackendFailureSkipsTheFrontend: one after the other, a
// failed backend build ends the builds; nothing goes live.
func TestSequentialBackendFailureSkipsTheFrontend(t *testing.T) {
	t.Parallel()
	h := newHost(t, true)
	pl := New(Config{Home: h.p.Home, Builder: &fakeBuilder{version: "v2", backendFails: true}, Deployer: h.d, Log: zerolog.Nop(),
		Resources: Resources{Concurrency: ConcurrencyOff}})
	s := &fakeSession{log: zerolog.Nop()}
	err := pl.Execute(context.Background(), queue.Job{ID: "01TEST", Target: queue.MainTarget, Command: queue.CommandBuild}, s)
	if err == nil || !strings.Contains(err.Error(), "nothing live was changed: backend: go build") {
		t.Fatalf("err = %v", err)
	}
	if steps := strings.Join(s.stepList(), ","); strings.Contains(steps, StepBuildFrontend) {
		t.Fatalf("steps %s: the frontend built after the backend failed", steps)
	}
	if b, d := h.live(t); b != "bin v1" || d != "dist v1" || len(h.ran) != 0 {
		t.Fatalf("live %q %q, ran %v", b, d, h.ran)
	}
}

// realBackend is the fake builder with the real builder's backend build.
type realBackend struct {
	*fakeBuilder
	b *builder.Builder
}

func (r realBackend) BuildBackend(ctx context.Context, srcDir, outPath string, out io.Writer) error {
	return r.b.BuildBackend(ctx, srcDir, outPath, out)
}

// TestKilledBuildIsReportedAndNothingLiveChanges: the backend build's go
// (a stand-in that sleeps) runs with the documented priorities; killed
// with SIGKILL from outside, as the OOM killer does, the job fails saying
// it was killed, and the live release and services are untouched.
func TestKilledBuildIsReportedAndNothingLiveChanges(t *testing.T) {
	testtool.Require(t, "sh", "sleep", "mv", "choom")
	t.Parallel()
	h := newHost(t, true)
	if err := os.MkdirAll(h.p.BackendSrc, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	pidFile := filepath.Join(t.TempDir(), "pid")
	write(t, filepath.Join(bin, "go"), "#!/bin/sh\necho $$ > "+pidFile+".tmp && mv "+pidFile+".tmp "+pidFile+"\nexec sleep 60\n")
	b := realBackend{fakeBuilder: &fakeBuilder{version: "v2"}, b: builder.New(builder.Config{
		Env: []string{"PATH=" + bin + ":/usr/bin:/bin", "HOME=" + t.TempDir()}, Log: zerolog.Nop()})}
	pl := New(Config{Home: h.p.Home, Builder: b, Deployer: h.d, Log: zerolog.Nop(), Resources: Resources{Concurrency: ConcurrencyOn}})
	s := &fakeSession{log: zerolog.Nop()}
	done := make(chan error, 1)
	go func() {
		done <- pl.Execute(context.Background(), queue.Job{ID: "01TEST", Target: queue.MainTarget, Command: queue.CommandBuild}, s)
	}()
	var pid int
	deadline := time.Now().Add(10 * time.Second)
	for pid == 0 {
		if data, err := os.ReadFile(pidFile); err == nil {
			pid, _ = strconv.Atoi(strings.TrimSpace(string(data)))
			continue
		}
		select {
		case err := <-done:
			t.Fatalf("the job ended before go started: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("go did not start within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	oom, nice, class := procAttrs(t, pid)
	if oom != builder.BuildOOMScoreAdj || nice != builder.BuildNice || class != builder.BuildIOClass {
		t.Errorf("go runs with oom_score_adj %d, nice %d, I/O class %d; want %d, %d, %d (idle)",
			oom, nice, class, builder.BuildOOMScoreAdj, builder.BuildNice, builder.BuildIOClass)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err := <-done
	if !errors.Is(err, builder.ErrKilled) || !strings.Contains(err.Error(), "build failed, nothing live was changed: backend:") ||
		!strings.Contains(err.Error(), "killed (signal 9, not sent by concierge") {
		t.Fatalf("err = %v; want the backend build reported killed", err)
	}
	if e := s.stepErr(StepBuildBackend); !strings.Contains(e, "killed") {
		t.Fatalf("build-backend step error %q", e)
	}
	if bin, dist := h.live(t); bin != "bin v1" || dist != "dist v1" || len(h.ran) != 0 {
		t.Fatalf("live %q %q, services touched %v", bin, dist, h.ran)
	}
}

// procAttrs reads pid's oom_score_adj, nice value and I/O class.
func procAttrs(t *testing.T, pid int) (oom, nice, class int) {
	t.Helper()
	p, err := builder.ReadPriorities(pid)
	if err != nil {
		t.Fatal(err)
	}
	return p.OOMScoreAdj, p.Nice, p.IOClass
}
