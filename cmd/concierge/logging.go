package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/coreos/go-systemd/v22/journal"
	"github.com/rs/zerolog"
	"golang.org/x/term"

	"github.com/tractstack/concierge/internal/textsafe"
)

// logSetup is the logger and what must be closed with it.
type logSetup struct {
	log     zerolog.Logger
	closers []io.Closer
}

func (l *logSetup) Close() {
	for _, c := range l.closers {
		c.Close()
	}
}

// newLogger builds the logger: native journald fields under systemd
// (JOURNAL_STREAM set), pretty on a terminal, JSON lines otherwise; and
// the same events appended to <home>/log/concierge.log when withFile.
func newLogger(c *Config, env map[string]string, stderr io.Writer, withFile bool) *logSetup {
	level, err := zerolog.ParseLevel(c.LogLevel)
	if err != nil {
		level = zerolog.InfoLevel
	}
	format := c.LogFormat
	if format == "auto" {
		format = autoFormat(env, stderr)
	}
	var primary io.Writer
	switch format {
	case "journald":
		if journal.Enabled() {
			primary = &journalWriter{identifier: c.SyslogID}
		} else {
			fmt.Fprintln(stderr, "concierge: journald is not reachable (no /run/systemd/journal/socket); logging JSON to stderr")
			primary = stderr
		}
	case "console":
		primary = safeConsole(zerolog.ConsoleWriter{Out: stderr, TimeFormat: "15:04:05", NoColor: !isTerminal(stderr)})
	default:
		primary = redactWriter{stderr}
	}
	setup := &logSetup{}
	writers := []io.Writer{primary}
	if withFile {
		if f, err := openLogFile(c.LogFile()); err != nil {
			fmt.Fprintf(stderr, "concierge: cannot append to %s (%v); logging there is off\n", c.LogFile(), err)
		} else {
			setup.closers = append(setup.closers, f)
			writers = append(writers, safeConsole(zerolog.ConsoleWriter{Out: f, NoColor: true, TimeFormat: "2006-01-02T15:04:05.000Z07:00"}))
		}
	}
	var w io.Writer = primary
	if len(writers) > 1 {
		w = zerolog.MultiLevelWriter(writers...)
	}
	setup.log = zerolog.New(w).Level(level).With().Timestamp().Logger()
	return setup
}

// component derives a part's logger from the base logger, which has no
// component field. Loggers are always derived from the base, never from
// another part's logger: zerolog appends fields, so a second component
// would be a second "component" key in the same JSON object.
func component(base zerolog.Logger, name string) zerolog.Logger {
	return base.With().Str("component", name).Logger()
}

// safeConsole makes a console writer print messages and field values with
// control characters escaped and URL credentials redacted, so a trigger
// name holding a newline cannot forge a line of concierge.log and one
// holding escape sequences cannot drive the reader's terminal. (The JSON
// encoder escapes control characters itself.)
func safeConsole(w zerolog.ConsoleWriter) zerolog.ConsoleWriter {
	safe := func(i any) string {
		if i == nil {
			return ""
		}
		return textsafe.Escape(textsafe.Redact(fmt.Sprint(i)))
	}
	w.FormatMessage = safe
	w.FormatErrFieldValue = safe
	w.FormatFieldValue = safe
	return w
}

// redactWriter hides URL credentials in JSON log lines and escapes the
// control characters zerolog leaves raw (C1, line separators).
type redactWriter struct{ w io.Writer }

func (r redactWriter) Write(p []byte) (int, error) {
	if _, err := r.w.Write([]byte(textsafe.EscapeJSON(textsafe.Redact(string(p))))); err != nil {
		return 0, err
	}
	return len(p), nil
}

func autoFormat(env map[string]string, stderr io.Writer) string {
	if isJournalStream(env["JOURNAL_STREAM"], stderr) {
		return "journald"
	}
	if isTerminal(stderr) {
		return "console"
	}
	return "json"
}

// isJournalStream reports whether stderr is the stream systemd connected
// to the journal: JOURNAL_STREAM holds its device and inode, and a child
// that inherited the variable but writes elsewhere must not log natively.
func isJournalStream(journalStream string, stderr io.Writer) bool {
	if journalStream == "" {
		return false
	}
	f, ok := stderr.(*os.File)
	if !ok {
		return false
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return false
	}
	return journalStream == fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func openLogFile(path string) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create log dir: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open log file: %w", err)
	}
	return f, nil
}

// journalWriter sends each zerolog event to journald natively: MESSAGE
// is a readable line, each field becomes an upper-case journal field
// (JOB_ID, TARGET, STEP, DURATION_MS...), so `journalctl JOB_ID=...`
// finds one job's lines.
type journalWriter struct {
	identifier string
}

func (w *journalWriter) Write(p []byte) (int, error) {
	msg, prio, vars, err := journalEntry(p, w.identifier)
	if err != nil {
		return 0, err
	}
	if err := journal.Send(msg, prio, vars); err != nil {
		return 0, fmt.Errorf("send to journald: %w", err)
	}
	return len(p), nil
}

// journalEntry turns one zerolog JSON event into a journal entry. Pure.
func journalEntry(p []byte, identifier string) (string, journal.Priority, map[string]string, error) {
	var ev map[string]any
	d := json.NewDecoder(bytes.NewReader(p))
	d.UseNumber()
	if err := d.Decode(&ev); err != nil {
		return "", 0, nil, fmt.Errorf("decode log event: %w", err)
	}
	prio := journal.PriInfo
	switch ev[zerolog.LevelFieldName] {
	case "trace", "debug":
		prio = journal.PriDebug
	case "warn":
		prio = journal.PriWarning
	case "error":
		prio = journal.PriErr
	case "fatal", "panic":
		prio = journal.PriCrit
	}
	msg, _ := ev[zerolog.MessageFieldName].(string)
	vars := map[string]string{}
	if identifier != "" {
		vars["SYSLOG_IDENTIFIER"] = identifier
	}
	for k, v := range ev {
		switch k {
		case zerolog.LevelFieldName, zerolog.TimestampFieldName, zerolog.MessageFieldName:
			continue
		}
		key := journalKey(k)
		if key == "" {
			continue
		}
		switch v := v.(type) {
		case string:
			vars[key] = textsafe.Escape(textsafe.Redact(v))
		case json.Number:
			vars[key] = v.String()
		default:
			b, _ := json.Marshal(v)
			vars[key] = textsafe.Redact(string(b))
		}
	}
	if step, ok := ev["step"].(string); ok && ev["output"] == true {
		msg = step + "| " + msg
	}
	if e, ok := ev[zerolog.ErrorFieldName].(string); ok && !strings.Contains(msg, e) {
		msg += ": " + e
	}
	return textsafe.Escape(textsafe.Redact(msg)), prio, vars, nil
}

// journalKey maps a zerolog field name to a journal field name: upper
// case, [A-Z0-9_] only, not starting with a digit or underscore.
func journalKey(k string) string {
	k = strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z':
			return r - 'a' + 'A'
		case r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_':
			return r
		}
		return '_'
	}, k)
	k = strings.TrimLeft(k, "_0123456789")
	return k
}
