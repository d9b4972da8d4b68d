package pipeline

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"

	"github.com/tractstack/concierge/queue"
)

// Build concurrency modes, CONCIERGE_BUILD_CONCURRENCY.
const (
	ConcurrencyAuto = "auto" // decide from the host (DecideConcurrency)
	ConcurrencyOn   = "on"   // always build both at once
	ConcurrencyOff  = "off"  // always one after the other
)

// The memory the two builds need when nothing was measured on this host
// yet: the cold figures from issue 14, measured on a 2-CPU machine with
// the TractStack backend (empty Go build cache, as after a Go upgrade) and
// the real frontend. Used memory rose by 1,736 MiB with both builds at
// once and by 962 MiB with one after the other; so the larger build
// peaks at 962 MiB and the other at 1,736 - 962 = 774 MiB. Which one is
// the larger was not recorded; the decision only uses their sum and
// their maximum, which these match exactly.
const (
	ColdBackendKiB  int64 = 774 << 10
	ColdFrontendKiB int64 = 962 << 10
)

const (
	// A recorded peak is the largest single child process (rusage
	// maxrss), not what the whole build holds at once: go runs a compile
	// per CPU beside the go command, pnpm runs node beside itself. A
	// build's need is its peak times usedPerRSS (3/2). bench/RESULTS.md
	// measured the sum at about 1.1 times the peak on 2 CPUs; more CPUs
	// run more compiles at once, and running out is worse than building
	// one after the other.
	usedPerRSSNum, usedPerRSSDen = 3, 2
	// spareFraction is kept free on top of both builds' needs: the live
	// services grow under traffic, and the estimate is an estimate.
	spareFraction = 4 // 1/4, 25 %
	// historyJobs is how many earlier measurements of each build count.
	historyJobs = 10
)

// Resources is what the pipeline needs to decide how to run the builds.
// Zero values read the real host.
type Resources struct {
	// Concurrency is ConcurrencyAuto (also when ""), ConcurrencyOn or
	// ConcurrencyOff.
	Concurrency string
	// MemAvailable returns the host's MemAvailable in KiB; nil reads
	// /proc/meminfo. A test seam.
	MemAvailable func() (int64, error)
	// CPUs is the number of CPUs concierge may use; nil asks the runtime.
	CPUs func() int
	// History returns earlier job records, oldest first (the store's
	// Load); nil means none, and the cold figures are used.
	History func() ([]*queue.Job, error)
}

// Host is what the host has right before the builds.
type Host struct {
	MemAvailableKiB int64 // 0: unknown
	CPUs            int
}

// Peaks are the two builds' measured peaks on this host (0: not
// measured) and what the last build job of the target left behind.
type Peaks struct {
	BackendKiB, FrontendKiB int64
	// OutOfMemory is set when one of the last historyJobs build jobs
	// of the target failed because the kernel ran out of memory.
	OutOfMemory bool
}

// Decision says whether the builds run at the same time, and why.
type Decision struct {
	Concurrent bool
	Reason     string
}

// PeaksFrom reads the largest peak memory of the last historyJobs
// succeeded build-backend and build-frontend steps of target from jobs
// (oldest first), and whether one of the last historyJobs finished build
// jobs of target failed out of memory.
func PeaksFrom(jobs []*queue.Job, target string) Peaks {
	var p Peaks
	var nBack, nFront, nJobs int
	for i := len(jobs) - 1; i >= 0; i-- {
		j := jobs[i]
		if j.Target != target || j.Command != queue.CommandBuild || !j.State.Done() {
			continue
		}
		if nJobs++; nJobs <= historyJobs && j.State == queue.Failed && strings.Contains(j.Error, "out of memory") {
			p.OutOfMemory = true
		}
		for _, s := range j.Steps {
			if s.State != queue.Succeeded || s.PeakMemoryKiB <= 0 {
				continue
			}
			switch {
			case s.Name == StepBuildBackend && nBack < historyJobs:
				nBack++
				p.BackendKiB = max(p.BackendKiB, s.PeakMemoryKiB)
			case s.Name == StepBuildFrontend && nFront < historyJobs:
				nFront++
				p.FrontendKiB = max(p.FrontendKiB, s.PeakMemoryKiB)
			}
		}
	}
	return p
}

// DecideConcurrency decides whether the backend and frontend builds run at
// the same time. In auto mode they do only when there are at least two
// CPUs and MemAvailable covers both builds' estimated needs plus a
// quarter: each build's need is its peak measured on this host (times
// 3/2), or its cold figure when not measured yet. While one of the
// last historyJobs builds of the target ran out of memory, they run one
// after the other.
func DecideConcurrency(mode string, host Host, peaks Peaks) Decision {
	switch mode {
	case ConcurrencyOn:
		return Decision{true, "builds at the same time: CONCIERGE_BUILD_CONCURRENCY=on"}
	case ConcurrencyOff:
		return Decision{false, "builds one after the other: CONCIERGE_BUILD_CONCURRENCY=off"}
	}
	const seq = "builds one after the other: "
	if host.CPUs < 2 {
		return Decision{false, seq + "one CPU, so both at once would not finish sooner and would need memory for both"}
	}
	if peaks.OutOfMemory {
		return Decision{false, seq + fmt.Sprintf("one of the last %d builds of this target ran out of memory", historyJobs)}
	}
	back, backFrom := need(peaks.BackendKiB, ColdBackendKiB)
	front, frontFrom := need(peaks.FrontendKiB, ColdFrontendKiB)
	both := back + front
	needs := fmt.Sprintf("backend %s (%s) + frontend %s (%s) + 25%% spare", mib(back), backFrom, mib(front), frontFrom)
	if host.MemAvailableKiB <= 0 {
		return Decision{false, seq + "MemAvailable unknown"}
	}
	if host.MemAvailableKiB >= both+both/spareFraction {
		return Decision{true, fmt.Sprintf("builds at the same time: MemAvailable %s covers %s", mib(host.MemAvailableKiB), needs)}
	}
	reason := fmt.Sprintf("%sMemAvailable %s is less than %s", seq, mib(host.MemAvailableKiB), needs)
	if host.MemAvailableKiB < max(back, front) {
		reason += "; even one build may not fit: should the kernel run out of memory, it ends the build (the job fails and nothing live changes), not the live site"
	}
	return Decision{false, reason}
}

// need is a build's estimated memory need: its measured peak times
// usedPerRSS, or cold when not measured; from says which.
func need(measured, cold int64) (kib int64, from string) {
	if measured > 0 {
		return measured * usedPerRSSNum / usedPerRSSDen, fmt.Sprintf("measured here: 1.5 × peak %s", mib(measured))
	}
	return cold, "cold figure, not measured here yet"
}

func mib(kib int64) string { return fmt.Sprintf("%d MiB", kib>>10) }

// decide gathers the host's facts and the target's history and decides.
// A history that cannot be read counts as none (cold figures); an
// unreadable MemAvailable as unknown.
func (r Resources) decide(target string) (Decision, []error) {
	var problems []error
	memAvailable := r.MemAvailable
	if memAvailable == nil {
		memAvailable = readMemAvailable
	}
	mem, err := memAvailable()
	if err != nil {
		problems = append(problems, err)
		mem = 0
	}
	cpus := runtime.NumCPU()
	if r.CPUs != nil {
		cpus = r.CPUs()
	}
	var peaks Peaks
	if r.History != nil {
		jobs, err := r.History()
		if err != nil {
			problems = append(problems, fmt.Errorf("read earlier jobs: %w", err))
		}
		peaks = PeaksFrom(jobs, target)
	}
	return DecideConcurrency(r.Concurrency, Host{MemAvailableKiB: mem, CPUs: cpus}, peaks), problems
}

func readMemAvailable() (int64, error) {
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, fmt.Errorf("read MemAvailable: %w", err)
	}
	return ParseMemAvailable(data)
}

// ParseMemAvailable reads MemAvailable (KiB) from /proc/meminfo's text.
func ParseMemAvailable(meminfo []byte) (int64, error) {
	sc := bufio.NewScanner(bytes.NewReader(meminfo))
	for sc.Scan() {
		v, ok := strings.CutPrefix(sc.Text(), "MemAvailable:")
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("read MemAvailable: %q: %w", v, err)
		}
		return n, nil
	}
	return 0, errors.New("read MemAvailable: not in /proc/meminfo")
}

// buildsConcurrently decides how this job's builds run, and says so in
// the job's record and log.
func (t *target) buildsConcurrently() bool {
	d, problems := t.pl.cfg.Resources.decide(t.job.Target)
	for _, err := range problems {
		t.s.Log().Warn().Err(err).Msg("deciding how to run the builds")
	}
	t.s.Note(d.Reason)
	return d.Concurrent
}
