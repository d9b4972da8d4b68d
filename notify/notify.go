// Package notify tells people about jobs without a hook: chat webhooks
// (Slack, Discord, ntfy, Telegram, Matrix, Teams, a generic webhook, ...)
// and mail, through github.com/nicholas-fedor/shoutrrr (the maintained
// fork of the library Watchtower uses), configured by URLs. Failures and
// rollbacks always notify; successes when asked. A notification is sent
// once, bounded by a timeout, never retried; one that cannot be sent is
// reported to the caller as an error whose text holds no secret of its
// URL (user-info, path and query are hidden).
package notify

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nicholas-fedor/shoutrrr/pkg/router"
	"github.com/nicholas-fedor/shoutrrr/pkg/types"

	"github.com/tractstack/concierge/queue"
)

// When to notify (CONCIERGE_NOTIFY_ON).
const (
	OnFailure = "failure" // failed jobs, rejected triggers and rollbacks
	OnAll     = "all"     // every finished job
)

// DefaultTimeout bounds one notification.
const DefaultTimeout = 10 * time.Second

// Config configures a Notifier.
type Config struct {
	URLs []string
	// On is OnFailure (the default) or OnAll.
	On string
	// Timeout bounds each URL's send (DefaultTimeout when 0).
	Timeout time.Duration
	// Host names the machine in the messages.
	Host string
}

// Notifier sends job notifications. A nil *Notifier sends nothing.
type Notifier struct {
	cfg     Config
	senders []sender
}

type sender struct {
	raw, shown string
	r          *router.ServiceRouter
}

// Fields splits a CONCIERGE_NOTIFY value into URLs: they are separated
// by white space (a mail URL may hold commas).
func Fields(s string) []string { return strings.Fields(s) }

// New checks every URL and returns a Notifier for them; nil when there
// are none. Nothing is sent and nothing is dialled. An error names the
// URL with its secrets hidden.
func New(cfg Config) (*Notifier, error) {
	if len(cfg.URLs) == 0 {
		return nil, nil
	}
	switch cfg.On {
	case "":
		cfg.On = OnFailure
	case OnFailure, OnAll:
	default:
		return nil, fmt.Errorf("notify on %q: use %s or %s", cfg.On, OnFailure, OnAll)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	n := &Notifier{cfg: cfg}
	for _, raw := range cfg.URLs {
		r, err := router.New(nil, raw)
		if err != nil {
			return nil, fmt.Errorf("notification URL %s: %s", Redact(raw), Scrub(err.Error(), raw))
		}
		r.Timeout = cfg.Timeout
		n.senders = append(n.senders, sender{raw: raw, shown: Redact(raw), r: r})
	}
	return n, nil
}

// Host is the machine the messages name.
func (n *Notifier) Host() string {
	if n == nil {
		return ""
	}
	return n.cfg.Host
}

// Wanted reports whether a finished job is notified with on: a failed
// job, a rejected trigger or a rollback always; a success only with
// OnAll. Pure.
func Wanted(j queue.Job, on string) bool {
	switch {
	case !j.State.Done():
		return false
	case j.State != queue.Succeeded:
		return true
	case j.Command == queue.CommandRollback:
		return true
	}
	return on == OnAll
}

// Wants reports whether n notifies j.
func (n *Notifier) Wants(j queue.Job) bool {
	return n != nil && Wanted(j, n.cfg.On)
}

// Message is the title and text of a job's notification. Pure.
func Message(j queue.Job, host string, rolledBack bool) (title, text string) {
	what := strings.TrimSpace(j.Command + " of " + j.Target)
	outcome := string(j.State)
	switch {
	case j.State == queue.Rejected:
		what, outcome = "trigger "+strings.Join(j.Triggers, ","), "rejected"
	case rolledBack && j.State == queue.Failed:
		outcome = "failed and was rolled back"
	case rolledBack:
		outcome = "rolled back"
	}
	if host != "" {
		title = fmt.Sprintf("concierge on %s: %s %s", host, what, outcome)
	} else {
		title = fmt.Sprintf("concierge: %s %s", what, outcome)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s\njob %s", title, j.ID)
	if len(j.Tenants) > 0 {
		fmt.Fprintf(&b, ", tenants %s", strings.Join(j.Tenants, ","))
	}
	if j.StartedAt != nil && j.FinishedAt != nil {
		fmt.Fprintf(&b, ", took %s", j.FinishedAt.Sub(*j.StartedAt).Round(100*time.Millisecond))
	}
	if j.Error != "" {
		fmt.Fprintf(&b, "\nerror: %s", j.Error)
	}
	for _, w := range j.Warnings {
		fmt.Fprintf(&b, "\nwarning: %s", w)
	}
	if j.ID != "" {
		fmt.Fprintf(&b, "\nsee: concierge status; concierge logs %s", j.ID)
	}
	return title, b.String()
}

// Send sends title and text to every URL at once and returns one error
// per URL that failed (secrets hidden). It returns within the timeout
// (or when ctx ends), whatever the receivers do.
func (n *Notifier) Send(ctx context.Context, title, text string) []error {
	if n == nil {
		return nil
	}
	errs := make([]error, len(n.senders))
	var wg sync.WaitGroup
	for i, s := range n.senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.send(ctx, n.cfg.Timeout, title, text)
		}()
	}
	wg.Wait()
	var out []error
	for _, err := range errs {
		if err != nil {
			out = append(out, err)
		}
	}
	return out
}

// send sends once. The library bounds the send by its Timeout but cannot
// cancel it: a receiver that never answers keeps a goroutine until it
// closes the connection, while send has long returned.
func (s sender) send(ctx context.Context, timeout time.Duration, title, text string) error {
	done := make(chan []error, 1)
	go func() { done <- s.r.Send(text, &types.Params{"title": title}) }()
	var errs []error
	select {
	case errs = <-done:
	case <-ctx.Done():
		return fmt.Errorf("notify %s: %w", s.shown, ctx.Err())
	case <-time.After(timeout + time.Second): // the library's own timeout comes first
		return fmt.Errorf("notify %s: timed out after %s", s.shown, timeout)
	}
	for _, err := range errs {
		if err != nil {
			return fmt.Errorf("notify %s: %s", s.shown, Scrub(err.Error(), s.raw))
		}
	}
	return nil
}

// Redact shows a notification URL without its secrets: the scheme, the
// host and the port are kept; user-info, path and query are replaced by
// "***". Pure.
func Redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" {
		return "(an unparsable URL)"
	}
	var b strings.Builder
	b.WriteString(u.Scheme + "://")
	if u.User != nil {
		b.WriteString("***@")
	}
	b.WriteString(u.Host)
	if u.Path != "" && u.Path != "/" || u.Opaque != "" {
		b.WriteString("/***")
	}
	if u.RawQuery != "" {
		b.WriteString("?***")
	}
	return b.String()
}

// Scrub replaces in text every secret part of raw (the URL itself, its
// user name and password, path segments and query values) by "***". It
// is applied to the library's error texts, which may quote the URL. Pure.
func Scrub(text, raw string) string {
	secrets := []string{raw}
	if u, err := url.Parse(raw); err == nil {
		secrets = append(secrets, u.String(), u.Redacted())
		if u.User != nil {
			secrets = append(secrets, u.User.String(), u.User.Username())
			if p, ok := u.User.Password(); ok {
				secrets = append(secrets, p)
			}
		}
		secrets = append(secrets, strings.Split(strings.Trim(u.Path, "/"), "/")...)
		secrets = append(secrets, u.Opaque, u.RawQuery)
		for _, vs := range u.Query() {
			secrets = append(secrets, vs...)
		}
	}
	// Longest first, so a part inside another does not leave the rest.
	slices.SortFunc(secrets, func(a, b string) int { return len(b) - len(a) })
	for _, s := range secrets {
		if len(s) >= 4 { // very short parts ("yes", a port) would mangle the text
			text = strings.ReplaceAll(text, s, "***")
		}
	}
	return text
}
