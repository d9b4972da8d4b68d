// Package textsafe makes text that came from outside (trigger names, step
// output, errors holding URLs) safe to log, record and print: control
// characters escaped, terminal colour codes stripped, credentials in URLs
// redacted.
package textsafe

import (
	"fmt"
	"regexp"
	"strings"
	"unicode/utf8"
)

// Escape replaces control characters (C0 but tab, DEL, C1) and invalid
// UTF-8 with visible escapes (\n, \x1b, \u009b), so that a value cannot
// start a new log line or drive the reader's terminal. Text without any
// is returned as it is.
func Escape(s string) string {
	if utf8.ValidString(s) && !strings.ContainsFunc(s, unsafeRune) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, r)
		case unsafeRune(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

func unsafeRune(r rune) bool {
	return (r < 0x20 && r != '\t') || r == 0x7f || (r >= 0x80 && r < 0xa0) ||
		r == '\u2028' || r == '\u2029'
}

// ansi matches terminal escape sequences: CSI (colours, cursor moves),
// OSC (titles, links) and two-byte escapes.
var ansi = regexp.MustCompile(`\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]|\x9b[0-?]*[ -/]*[@-~]`)

// StripANSI removes terminal escape sequences, such as the colour codes
// tools print when they think a terminal is reading.
func StripANSI(s string) string {
	if !strings.ContainsAny(s, "\x1b\u009b") {
		return s
	}
	return ansi.ReplaceAllString(s, "")
}

// Clean is what recorded step output goes through: colours stripped,
// credentials redacted, other control characters escaped.
func Clean(s string) string { return Escape(Redact(StripANSI(s))) }

// userinfo matches the user-info part of a URL: scheme://user[:password]@.
var userinfo = regexp.MustCompile(`([a-zA-Z][a-zA-Z0-9+.\-]*://)([^/?#@\s'"]*)@`)

// Redact hides credentials in every URL in s: a password is replaced
// with "xxxxx"; for http(s), where a token is often given as the user
// name (https://TOKEN@host), the user name too. ssh://git@host keeps its
// user, which is no secret.
func Redact(s string) string {
	if !strings.Contains(s, "@") || !strings.Contains(s, "://") {
		return s
	}
	return userinfo.ReplaceAllStringFunc(s, func(m string) string {
		sub := userinfo.FindStringSubmatch(m)
		scheme, info := sub[1], sub[2]
		user, _, hasPass := strings.Cut(info, ":")
		web := strings.HasPrefix(strings.ToLower(scheme), "http")
		switch {
		case hasPass:
			if web {
				return scheme + "xxxxx:xxxxx@"
			}
			return scheme + user + ":xxxxx@"
		case web && info != "":
			return scheme + "xxxxx@"
		}
		return m
	})
}

// EscapeJSON escapes, in a line of JSON, what a JSON encoder may leave
// raw but a terminal or a line-based reader may act on: C1 control
// characters and the Unicode line and paragraph separators. They can
// only occur inside strings, where \uXXXX is the same character.
func EscapeJSON(s string) string {
	if !strings.ContainsFunc(s, func(r rune) bool { return (r >= 0x80 && r < 0xa0) || r == '\u2028' || r == '\u2029' }) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if (r >= 0x80 && r < 0xa0) || r == '\u2028' || r == '\u2029' {
			fmt.Fprintf(&b, `\u%04x`, r)
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}
