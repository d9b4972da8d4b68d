// Package rusage carries the resource use of child processes from where
// they are reaped (builder.Run) to where a step is recorded (the runner),
// through the step's context, so that neither knows the other and the
// builder's method signatures stay as they are.
package rusage

import (
	"context"
	"sync"
	"syscall"
	"time"
)

// Usage is what the kernel reports for reaped children.
type Usage struct {
	// MaxRSSKiB is the largest resident set of any one process, the
	// children's own children included (ru_maxrss, in KiB on Linux). It
	// is not the sum of processes that ran at the same time.
	MaxRSSKiB int64
	// CPU is user plus system time.
	CPU time.Duration
}

// FromRusage converts the kernel's struct.
func FromRusage(ru *syscall.Rusage) Usage {
	if ru == nil {
		return Usage{}
	}
	return Usage{
		MaxRSSKiB: ru.Maxrss,
		CPU:       time.Duration(ru.Utime.Nano() + ru.Stime.Nano()),
	}
}

// Meter sums the usage of the children of one step: the largest resident
// set, the total CPU time. It is safe for concurrent use.
type Meter struct {
	mu  sync.Mutex
	u   Usage
	any bool
}

// Add records one reaped child.
func (m *Meter) Add(u Usage) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.any = true
	m.u.MaxRSSKiB = max(m.u.MaxRSSKiB, u.MaxRSSKiB)
	m.u.CPU += u.CPU
}

// Usage is what was added so far; ok is false when no child was added.
func (m *Meter) Usage() (u Usage, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.u, m.any
}

type meterKey struct{}

// WithMeter returns ctx carrying a new Meter, which Add fills.
func WithMeter(ctx context.Context) (context.Context, *Meter) {
	m := &Meter{}
	return context.WithValue(ctx, meterKey{}, m), m
}

// Add records u on the Meter ctx carries, if any.
func Add(ctx context.Context, u Usage) {
	if m, ok := ctx.Value(meterKey{}).(*Meter); ok {
		m.Add(u)
	}
}
