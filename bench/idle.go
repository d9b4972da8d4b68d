package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// procSample is what /proc says of a process at one moment.
type procSample struct {
	rssKiB           int
	ticks            int // utime + stime, in clock ticks
	voluntary, invol int
}

func sample(pid int) (procSample, error) {
	var s procSample
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	for _, l := range strings.Split(string(st), "\n") {
		k, v, _ := strings.Cut(l, ":")
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		n, _ := strconv.Atoi(f[0])
		switch k {
		case "VmRSS":
			s.rssKiB = n
		case "voluntary_ctxt_switches":
			s.voluntary = n
		case "nonvoluntary_ctxt_switches":
			s.invol = n
		}
	}
	// The counts in status are the main thread's: sum every thread's.
	s.voluntary, s.invol = 0, 0
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, t := range tasks {
		ts, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, t.Name()))
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(ts), "\n") {
			k, v, _ := strings.Cut(l, ":")
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			switch k {
			case "voluntary_ctxt_switches":
				s.voluntary += n
			case "nonvoluntary_ctxt_switches":
				s.invol += n
			}
		}
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	str := string(stat)
	f := strings.Fields(str[strings.LastIndexByte(str, ')')+1:])
	// After the comm: state is field 3, utime 14, stime 15 (1-based).
	ut, _ := strconv.Atoi(f[11])
	stt, _ := strconv.Atoi(f[12])
	s.ticks = ut + stt
	return s, nil
}

// idle: the release binary's `watch` with nothing to do.
func (b *bench) idle(ctx context.Context) error {
	d := 60 * time.Second
	if b.short {
		d = 10 * time.Second
	}
	h, err := b.newHome("idle")
	if err != nil {
		return err
	}
	env := setEnv(h.env, "CONCIERGE_FAKE_DIR=")
	w, err := startWatch(b.real, env)
	if err != nil {
		return err
	}
	defer w.stop()
	time.Sleep(2 * time.Second) // let start-up finish
	pid := w.cmd.Process.Pid
	before, err := sample(pid)
	if err != nil {
		return err
	}
	time.Sleep(d)
	after, err := sample(pid)
	if err != nil {
		return err
	}
	cs := (after.voluntary - before.voluntary) + (after.invol - before.invol)
	table(fmt.Sprintf("Idle cost of `watch` (release binary, %s)", d),
		[]string{"measure", "before", "after", "delta"},
		[][]string{
			{"VmRSS MiB", fmt.Sprintf("%.1f", float64(before.rssKiB)/1024), fmt.Sprintf("%.1f", float64(after.rssKiB)/1024), fmt.Sprintf("%+.1f", float64(after.rssKiB-before.rssKiB)/1024)},
			{"CPU ticks (utime+stime, 1 tick = 10 ms)", fmt.Sprint(before.ticks), fmt.Sprint(after.ticks), fmt.Sprint(after.ticks - before.ticks)},
			{"voluntary context switches", fmt.Sprint(before.voluntary), fmt.Sprint(after.voluntary), fmt.Sprint(after.voluntary - before.voluntary)},
			{"involuntary context switches", fmt.Sprint(before.invol), fmt.Sprint(after.invol), fmt.Sprint(after.invol - before.invol)},
			{"wake-ups per minute", "", "", fmt.Sprintf("%.1f", float64(cs)/d.Minutes())},
		},
		"Context switches are summed over every thread (/proc/<pid>/task/*/status). Goal: RSS < 20 MiB and no periodic wake-ups.")
	return nil
}
