package watcher

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/rs/zerolog"
)

// Watcher hands over trigger files as they arrive (watch mode). One
// goroutine owns the fsnotify watcher; it scans the directory once when
// started and again after an fsnotify overflow or when the directory was
// removed and is back. With nothing arriving it sleeps: no timers run
// unless a file is waiting to settle.
type Watcher struct {
	opts   Options
	log    zerolog.Logger
	out    chan []File
	fsw    *fsnotify.Watcher
	cancel context.CancelFunc
	wg     sync.WaitGroup
	rescan chan struct{}
	// lastErr is the last read error logged (owned by the loop goroutine).
	lastErr string
}

// Timing of the settle checks. The first check waits a moment so that a
// burst of files is handed over as one batch; files still being written
// are checked again with a growing delay.
const (
	firstCheck = 5 * time.Millisecond
	maxBackoff = 500 * time.Millisecond
	lostPoll   = time.Second
)

// New returns a watcher of opts.Dir; Start arms it.
func New(opts Options, log zerolog.Logger) *Watcher {
	opts.defaults()
	return &Watcher{opts: opts, log: log.With().Str("component", "watcher").Logger(),
		out: make(chan []File), rescan: make(chan struct{}, 1)}
}

// Files delivers batches of settled triggers, each in name order.
func (w *Watcher) Files() <-chan []File { return w.out }

// Start arms fsnotify on the directory (so nothing created after Start
// returns is missed) and starts the owner goroutine, which begins with a
// full scan.
func (w *Watcher) Start(ctx context.Context) error {
	fsw, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("create fsnotify watcher: %w", err)
	}
	if err := fsw.Add(w.opts.Dir); err != nil {
		fsw.Close()
		return fmt.Errorf("watch %s: %w", w.opts.Dir, err)
	}
	w.fsw = fsw
	ctx, w.cancel = context.WithCancel(ctx)
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		w.loop(ctx)
	}()
	return nil
}

// Rescan asks for a full scan of the directory.
func (w *Watcher) Rescan() {
	select {
	case w.rescan <- struct{}{}:
	default:
	}
}

// Close stops the goroutine and waits for it.
func (w *Watcher) Close() error {
	if w.cancel == nil {
		return nil
	}
	w.cancel()
	w.wg.Wait()
	return w.fsw.Close()
}

func (w *Watcher) loop(ctx context.Context) {
	waiting := map[string]bool{} // names to check: new, or not settled yet
	timer := time.NewTimer(0)    // the first tick runs the start scan
	defer timer.Stop()
	backoff := firstCheck
	scan := true // a full scan is due at the next tick
	lost := false
	arm := func(d time.Duration) {
		timer.Stop()
		select {
		case <-timer.C:
		default:
		}
		timer.Reset(d)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.rescan:
			scan = true
			arm(0)
		case ev, ok := <-w.fsw.Events:
			if !ok {
				return
			}
			if ev.Name == w.opts.Dir && ev.Has(fsnotify.Remove|fsnotify.Rename) {
				w.log.Warn().Str("dir", w.opts.Dir).Msg("state directory removed; waiting for it to come back")
				lost = true
				arm(lostPoll)
				continue
			}
			name := filepath.Base(ev.Name)
			if filepath.Dir(ev.Name) != filepath.Clean(w.opts.Dir) || !w.opts.Match(name) {
				continue
			}
			if ev.Has(fsnotify.Create | fsnotify.Write | fsnotify.Chmod) {
				if len(waiting) == 0 {
					backoff = firstCheck
					arm(firstCheck)
				}
				waiting[name] = true
			}
		case err, ok := <-w.fsw.Errors:
			if !ok {
				return
			}
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				w.log.Warn().Msg("fsnotify queue overflowed; rescanning the state directory")
				scan = true
				arm(0)
				continue
			}
			w.log.Error().Err(err).Msg("fsnotify error")
		case <-timer.C:
			if lost {
				if err := w.fsw.Add(w.opts.Dir); err != nil {
					arm(lostPoll)
					continue
				}
				w.log.Info().Str("dir", w.opts.Dir).Msg("state directory is back; rescanning")
				lost = false
				scan = true
			}
			var batch []File
			if scan {
				scan = false
				claimed, err := Claimed(w.opts)
				if err != nil {
					w.log.Error().Err(err).Msg("read triggers left in the claim directory")
				}
				batch = claimed
				if err := w.addAll(waiting); err != nil {
					w.log.Error().Err(err).Msg("scan state directory")
					if errors.Is(err, fs.ErrNotExist) {
						lost = true
						arm(lostPoll)
						continue
					}
				}
			}
			batch = append(batch, w.check(waiting)...)
			if len(batch) > 0 {
				select {
				case w.out <- batch:
				case <-ctx.Done():
					return
				}
			}
			if len(waiting) > 0 {
				backoff = min(backoff*2, maxBackoff)
				arm(backoff)
			} else {
				backoff = firstCheck
			}
		}
	}
}

// addAll puts every trigger in the directory on the waiting list.
func (w *Watcher) addAll(waiting map[string]bool) error {
	names, err := list(w.opts)
	for _, n := range names {
		waiting[n] = true
	}
	return err
}

// check reads the waiting files, returns the settled ones in name order
// and keeps the rest waiting.
func (w *Watcher) check(waiting map[string]bool) []File {
	names := make([]string, 0, len(waiting))
	for n := range waiting {
		names = append(names, n)
	}
	sort.Strings(names)
	var batch []File
	for _, name := range names {
		f, ok, err := Read(w.opts, name)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			delete(waiting, name)
		case err != nil:
			// Retried every half second: say it once until it changes.
			if err.Error() != w.lastErr {
				w.lastErr = err.Error()
				w.log.Error().Err(err).Str("trigger", name).Msg("read trigger; will try again")
			}
		case ok:
			w.lastErr = ""
			delete(waiting, name)
			batch = append(batch, f)
		}
	}
	return batch
}
