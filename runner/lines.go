package runner

import (
	"bytes"
	"fmt"
	"strings"
	"sync"

	"github.com/rs/zerolog"

	"github.com/tractstack/concierge/internal/textsafe"
)

// maxLine bounds one line of step output; a longer one is cut.
const maxLine = 4 << 10

// lineWriter turns a step's output into lines: each is logged with the
// job and step, appended to the job's output file while it has room, and
// the last few are kept for the record of a failed step. Safe for
// concurrent writes (a child's stdout and stderr share it).
type lineWriter struct {
	s    *session
	step string
	log  zerolog.Logger

	mu      sync.Mutex
	partial []byte
	tail    []string
	keep    int
	dropped int
}

func newLineWriter(s *session, step string, log zerolog.Logger, keep int) *lineWriter {
	return &lineWriter{s: s, step: step, log: log, keep: keep}
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			w.partial = append(w.partial, p...)
			if len(w.partial) > maxLine {
				w.line(string(w.partial[:maxLine]) + " …")
				w.partial = w.partial[:0]
			}
			break
		}
		w.partial = append(w.partial, p[:i]...)
		w.line(string(w.partial))
		w.partial = w.partial[:0]
		p = p[i+1:]
	}
	return n, nil
}

func (w *lineWriter) line(l string) {
	// Colour codes and control characters in a tool's output must not
	// reach the log, the record or a terminal that prints them later.
	l = textsafe.Clean(strings.TrimRight(l, "\r"))
	if len(l) > maxLine {
		l = l[:maxLine] + " …"
	}
	w.log.Info().Bool("output", true).Msg(l)
	w.tail = append(w.tail, l)
	if len(w.tail) > w.keep {
		w.tail = w.tail[len(w.tail)-w.keep:]
	}
	if !w.s.writeLine(w.step, l) {
		w.dropped++
	}
}

// Flush ends a partial last line and, when the output file filled up,
// writes the step's last lines there after a note of what was left out.
func (w *lineWriter) Flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.partial) > 0 {
		w.line(string(w.partial))
		w.partial = nil
	}
	if w.dropped == 0 {
		return
	}
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	fmt.Fprintf(w.s.out, "[%s] … %d lines not kept (output limit); the last %d follow\n", w.step, w.dropped, len(w.tail))
	for _, l := range w.tail {
		fmt.Fprintf(w.s.out, "[%s] %s\n", w.step, l)
	}
}

// Tail returns the last lines written.
func (w *lineWriter) Tail() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.tail...)
}
