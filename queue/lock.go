package queue

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Lock is the run lock: an exclusive flock on one file per install
// (cmd/concierge puts it at <home>/concierge.lock). Whoever holds it
// is the only process that takes in triggers and runs jobs. The kernel
// drops it when the holder dies, so a crash never leaves it stuck.
type Lock struct {
	f *os.File
}

// TryLock takes the run lock or returns ErrLocked at once.
func TryLock(path string) (*Lock, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, RecordMode)
	if err != nil {
		return nil, fmt.Errorf("open lock %s: %w", path, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, ErrLocked
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return &Lock{f: f}, nil
}

// AcquireLock waits for the run lock until ctx is done. waiting is called
// once if the lock is busy, so the caller can say why it waits. flock has
// no timeout, so this polls while (and only while) another process runs.
func AcquireLock(ctx context.Context, path string, waiting func()) (*Lock, error) {
	told := false
	delay := 50 * time.Millisecond
	for {
		l, err := TryLock(path)
		if !errors.Is(err, ErrLocked) {
			return l, err
		}
		if !told && waiting != nil {
			waiting()
			told = true
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("wait for run lock: %w", ctx.Err())
		case <-t.C:
		}
		delay = min(delay*2, time.Second)
	}
}

// Release drops the lock.
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close() // closing the last descriptor releases the flock
	l.f = nil
	if err != nil {
		return fmt.Errorf("release run lock: %w", err)
	}
	return nil
}
