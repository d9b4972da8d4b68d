package rusage

import (
	"context"
	"syscall"
	"testing"
	"time"
)

func TestMeterKeepsLargestRSSAndSumsCPU(t *testing.T) {
	ctx, m := WithMeter(context.Background())
	if _, ok := m.Usage(); ok {
		t.Fatal("a fresh meter says it saw a child")
	}
	Add(ctx, Usage{MaxRSSKiB: 100, CPU: time.Second})
	Add(ctx, Usage{MaxRSSKiB: 300, CPU: 2 * time.Second})
	Add(ctx, Usage{MaxRSSKiB: 200, CPU: time.Second})
	u, ok := m.Usage()
	if !ok || u.MaxRSSKiB != 300 || u.CPU != 4*time.Second {
		t.Fatalf("usage = %+v, %v; want 300 KiB, 4s", u, ok)
	}
	Add(context.Background(), Usage{MaxRSSKiB: 1}) // no meter: nothing happens
}

func TestFromRusage(t *testing.T) {
	ru := &syscall.Rusage{Maxrss: 2048, Utime: syscall.Timeval{Sec: 1, Usec: 500000}, Stime: syscall.Timeval{Sec: 0, Usec: 250000}}
	if u := FromRusage(ru); u.MaxRSSKiB != 2048 || u.CPU != 1750*time.Millisecond {
		t.Fatalf("FromRusage = %+v", u)
	}
	if u := FromRusage(nil); u != (Usage{}) {
		t.Fatalf("FromRusage(nil) = %+v", u)
	}
}
