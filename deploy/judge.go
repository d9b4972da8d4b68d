package deploy

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// Observation is what one probe saw: one tenant's backend health, or one
// frontend path. The checks compare what they see after a restart with
// what was seen before it (see Judge).
type Observation struct {
	// Target names what was probed: "tenant default", "page /",
	// "file" (the one file of the release that is probed; its path is
	// in State, because each release has its own).
	Target string `json:"target"`
	// OK: healthy (backend) or answering as it should (frontend).
	OK bool `json:"ok"`
	// State says what was seen, for people: "healthy", "needs setup",
	// "site in maintenance mode (302 to /maint?from=%2F)", "no answer
	// within 5s"...
	State string `json:"state"`
	// Answered: an HTTP answer came (or the request hung after the
	// connection was accepted); false for a refused or reset connection.
	Answered bool `json:"answered,omitempty"`
	// Settled: a state that waiting does not change by itself (a tenant
	// state, a status, a hang), as opposed to a port not open yet.
	Settled bool `json:"settled,omitempty"`
	// Foreign: the answer came from a process that is not the unit's
	// main process; it never counts, whatever was seen before.
	Foreign bool `json:"foreign,omitempty"`
}

func (o Observation) String() string { return o.Target + ": " + o.State }

// Outcome is a check's decision.
type Outcome int

const (
	// Pending: keep probing.
	Pending Outcome = iota
	// Pass: as healthy as before or better; go live.
	Pass
	// Warn: not healthy before and still not; go live with a warning.
	Warn
	// Fail: healthy before and not after (or answered by a stray
	// process); roll back.
	Fail
)

func (o Outcome) String() string {
	return [...]string{"pending", "pass", "warn", "fail"}[o]
}

// Verdict is a check's outcome and what explains it: for Warn, one
// warning per target; for Fail, the targets that failed.
type Verdict struct {
	Outcome Outcome
	Reasons []string
}

// Judge decides a check from the observations before the restart, the
// previous round after it (nil at first) and the current round. A target
// that is OK now passes. One that was OK before (or was not probed
// before) and is not now is pending until the timeout, then fails. One
// that was not OK before and is not now is a warning: at the timeout, or
// as soon as the new process gives the same settled answer twice in a
// row, when that answer is what was seen before or nothing answered
// before — waiting longer would not change it. An answer of a foreign
// process fails at the timeout whatever was seen before. The check is
// pending while any target is; otherwise it fails if any target fails,
// warns if any warns, and passes.
func Judge(before, prev, cur []Observation, timedOut bool) Verdict {
	bef, prv := byTarget(before), byTarget(prev)
	var fails, warns []string
	pending := false
	for _, c := range cur {
		if c.OK {
			continue
		}
		b, probed := bef[c.Target]
		switch {
		case c.Foreign || !probed || b.OK:
			if !timedOut {
				pending = true
				continue
			}
			if c.Foreign || !probed {
				fails = append(fails, c.String())
			} else {
				fails = append(fails, fmt.Sprintf("%s: %s before, now %s", c.Target, b.State, c.State))
			}
		default:
			p, seen := prv[c.Target]
			stable := seen && p.State == c.State && !p.Foreign
			if !timedOut && !(stable && c.Settled && (c.State == b.State || !b.Answered)) {
				pending = true
				continue
			}
			if c.State == b.State {
				warns = append(warns, fmt.Sprintf("%s, as before the restart", c))
			} else {
				warns = append(warns, fmt.Sprintf("%s (before the restart: %s)", c, b.State))
			}
		}
	}
	switch {
	case pending:
		return Verdict{Outcome: Pending}
	case len(fails) > 0:
		return Verdict{Outcome: Fail, Reasons: fails}
	case len(warns) > 0:
		return Verdict{Outcome: Warn, Reasons: warns}
	}
	return Verdict{Outcome: Pass}
}

func byTarget(obs []Observation) map[string]Observation {
	m := make(map[string]Observation, len(obs))
	for _, o := range obs {
		m[o.Target] = o
	}
	return m
}

// TenantTarget is the Target of a tenant's backend observation.
func TenantTarget(tenant string) string { return "tenant " + tenant }

// ClassifyBackend reads one health answer of the backend for tenant, as
// the TractStack backend gives them: 2xx {"healthy":true,"tenantId":T}
// is healthy when T is the tenant asked; 200 {"needsSetup":true} (a fresh
// install), 503 {"healthy":false,"error":"tenant not available"} (a
// reserved or inactive tenant), 404 (a tenant the backend does not know)
// and a healthy answer for another tenant (a single-tenant backend asked
// for any name) are tenant states; anything else is reported with its
// status and the start of its body.
func ClassifyBackend(tenant string, status int, body []byte) Observation {
	o := Observation{Target: TenantTarget(tenant), Answered: true, Settled: true}
	var h struct {
		Healthy    *bool  `json:"healthy"`
		TenantID   string `json:"tenantId"`
		NeedsSetup bool   `json:"needsSetup"`
		Error      string `json:"error"`
	}
	jsonErr := json.Unmarshal(body, &h)
	ok2xx := status >= 200 && status < 300
	switch {
	case ok2xx && jsonErr == nil && h.Healthy != nil && *h.Healthy && h.TenantID == tenant:
		o.OK, o.State = true, "healthy"
	case ok2xx && jsonErr == nil && h.Healthy != nil && *h.Healthy && h.TenantID == "":
		o.State = "answers healthy without naming its tenant (no tenantId)"
	case ok2xx && jsonErr == nil && h.Healthy != nil && *h.Healthy:
		o.State = fmt.Sprintf("answers for tenant %q instead (a single-tenant backend answers for its default tenant)", h.TenantID)
	case ok2xx && jsonErr == nil && h.NeedsSetup:
		o.State = "needs setup (the tenant is not set up yet)"
	case status == 503 && jsonErr == nil && h.Error == "tenant not available":
		o.State = "tenant not available (503: reserved or inactive)"
	case status == 404:
		o.State = "unknown tenant (404)"
	default:
		o.State = fmt.Sprintf("status %d: %s", status, bodyStart(body))
	}
	return o
}

// bodyStart is the start of a body, on one line, for a message.
func bodyStart(body []byte) string {
	s := strings.Join(strings.Fields(string(body)), " ")
	if len(s) > 120 {
		s = s[:120] + "…"
	}
	if s == "" {
		return "(empty body)"
	}
	return s
}

// FrontendProbe is one thing the frontend check requests.
type FrontendProbe struct {
	// Target names it in observations: "page <path>" or "file".
	Target string
	// Path is the request path (escaped).
	Path string
	// File: a file of the release (dist/client), which must answer 2xx;
	// a page only must answer below 500 without sending the visitor to
	// the maintenance page.
	File bool
}

// ClassifyFrontend reads one answer of the frontend to probe. A redirect
// to /maint is the site in maintenance mode: the frontend does not reach
// the backend.
func ClassifyFrontend(probe FrontendProbe, status int, location string) Observation {
	o := Observation{Target: probe.Target, Answered: true, Settled: true}
	where := ""
	if probe.File {
		where = probe.Path + ": "
	}
	switch {
	case status >= 300 && status < 400 && MaintRedirect(location):
		o.State = fmt.Sprintf("%ssite in maintenance mode (%d to %s)", where, status, location)
	case probe.File && status >= 200 && status < 300:
		o.OK, o.State = true, fmt.Sprintf("%sstatus %d", where, status)
	case !probe.File && status > 0 && status < 500:
		o.OK, o.State = true, fmt.Sprintf("status %d", status)
	default:
		o.State = fmt.Sprintf("%sstatus %d", where, status)
	}
	return o
}

// MaintRedirect reports whether a Location header sends the visitor to
// the maintenance page (/maint, on this host or as an absolute URL).
func MaintRedirect(location string) bool {
	if location == "" {
		return false
	}
	u, err := url.Parse(location)
	if err != nil {
		return strings.HasPrefix(location, "/maint")
	}
	return u.Path == "/maint" || strings.HasPrefix(u.Path, "/maint/")
}

// Unanswered is the observation of a request that got no HTTP answer:
// hung is a request that timed out after timeout (the connection was
// accepted or the dial hung), otherwise err is a refused or reset
// connection.
func Unanswered(target string, hung bool, timeout time.Duration, err error) Observation {
	if hung {
		return Observation{Target: target, State: fmt.Sprintf("no answer within %s (hangs)", timeout), Answered: true, Settled: true}
	}
	return Observation{Target: target, State: "not answering: " + shortNetErr(err)}
}

// shortNetErr drops the "Get "http://…": dial tcp …:" prefix of a client
// error, keeping what happened ("connect: connection refused").
func shortNetErr(err error) string {
	if err == nil {
		return "no answer"
	}
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 && strings.Contains(s, "dial tcp") {
		if j := strings.LastIndex(s[:i], ": "); j >= 0 {
			return s[j+2:]
		}
	}
	return s
}
