package queue

import (
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/gocarina/gocsv"
)

// MaxTriggerSize is the most a trigger file may hold; a larger one is
// rejected unread, since no honest trigger comes near it.
const MaxTriggerSize = 64 << 10

// idPattern is what the backend and the installer accept as a tenant or
// site id; anything else never reaches a path or a command line.
var idPattern = regexp.MustCompile(`^[a-z0-9-]{3,12}$`)

// ValidID reports whether s is a valid tenant or site id.
func ValidID(s string) bool { return idPattern.MatchString(s) }

// Trigger types and what they mean.
var (
	mainTypes    = []string{"main", "prod", "multi"}
	allTypes     = []string{"main", "prod", "multi", "dedicated"}
	allCommands  = []string{CommandBuild, CommandRestart, CommandRollback}
	knownKeys    = []string{"type", "tenant", "site", "command", "retry_of"}
	ulidPattern  = regexp.MustCompile(`^[0-9A-HJKMNP-TV-Z]{26}$`)
	utf8BOM      = []byte{0xEF, 0xBB, 0xBF}
	errNoRequest = errors.New("no trigger line (the file is empty or blank)")
)

// Request is one validated trigger line.
type Request struct {
	Type    string // main, prod, multi or dedicated
	Tenant  string // defaults to "default"
	Site    string // set for dedicated only
	Command string // build, restart or rollback
	RetryOf string // set by `concierge retry`
	Line    int    // 1-based line in the trigger file
}

// Target is where the request acts: "main" for the main install (types
// main, prod and multi share one install) or "dedicated:SITE".
func (r Request) Target() string {
	if r.Type == "dedicated" {
		return "dedicated:" + r.Site
	}
	return MainTarget
}

// Problem is why a trigger is rejected. It names the file, the line and the
// value so that an operator can fix the producer.
type Problem struct {
	File string
	Line int // 0 when the problem is not tied to a line
	Msg  string
}

func (p *Problem) Error() string {
	if p.Line > 0 {
		return fmt.Sprintf("%s line %d: %s", p.File, p.Line, p.Msg)
	}
	return fmt.Sprintf("%s: %s", p.File, p.Msg)
}

// SiteChecker reports whether a dedicated site exists on this host.
type SiteChecker func(site string) bool

// Parse reads a trigger file: either lines of key=value pairs
// (type=main,tenant=default,command=build) or a CSV file with a header
// (type,tenant,site,command) read with gocsv. A UTF-8 BOM, CRLF line
// ends, blank lines and a trailing newline are tolerated. Unknown keys are
// ignored with a warning. Every line is validated; the first problem
// rejects the whole file, since a trigger is acted on whole or not at all.
func Parse(name string, data []byte, siteExists SiteChecker) ([]Request, []string, error) {
	if len(data) > MaxTriggerSize {
		return nil, nil, &Problem{File: name, Msg: fmt.Sprintf("file is %d bytes, more than the %d a trigger may hold", len(data), MaxTriggerSize)}
	}
	data = bytes.TrimPrefix(data, utf8BOM)
	if !utf8.Valid(data) {
		return nil, nil, &Problem{File: name, Msg: "not UTF-8 text"}
	}
	if i := bytes.IndexByte(data, 0); i >= 0 {
		return nil, nil, &Problem{File: name, Msg: "contains a NUL byte; not a text trigger"}
	}
	text := strings.ReplaceAll(string(data), "\r\n", "\n")
	lines := strings.Split(text, "\n")
	first := -1
	for i, l := range lines {
		if strings.TrimSpace(l) != "" {
			first = i
			break
		}
	}
	if first < 0 {
		return nil, nil, &Problem{File: name, Msg: errNoRequest.Error()}
	}
	var (
		raws     []rawLine
		warnings []string
		err      error
	)
	if strings.Contains(lines[first], "=") {
		raws, warnings, err = parsePairs(name, lines)
	} else {
		raws, warnings, err = parseHeaderCSV(name, text)
	}
	if err != nil {
		return nil, warnings, err
	}
	if len(raws) == 0 {
		return nil, warnings, &Problem{File: name, Msg: "header but no trigger rows"}
	}
	reqs := make([]Request, 0, len(raws))
	for _, r := range raws {
		req, warns, err := validate(name, r, siteExists)
		warnings = append(warnings, warns...)
		if err != nil {
			return nil, warnings, err
		}
		reqs = append(reqs, req)
	}
	return reqs, warnings, nil
}

// rawLine is one trigger line before validation: its keys and values.
type rawLine struct {
	line   int
	fields map[string]string
}

func parsePairs(name string, lines []string) ([]rawLine, []string, error) {
	var (
		out      []rawLine
		warnings []string
	)
	for i, l := range lines {
		if strings.TrimSpace(l) == "" {
			continue
		}
		n := i + 1
		r := rawLine{line: n, fields: map[string]string{}}
		for _, part := range strings.Split(l, ",") {
			part = strings.TrimSpace(part)
			if part == "" {
				continue // a trailing or doubled comma carries nothing
			}
			k, v, ok := strings.Cut(part, "=")
			if !ok {
				return nil, warnings, &Problem{File: name, Line: n, Msg: fmt.Sprintf("%q is not a key=value pair", clip(part))}
			}
			k = strings.ToLower(strings.TrimSpace(k))
			v = strings.TrimSpace(v)
			if _, dup := r.fields[k]; dup {
				return nil, warnings, &Problem{File: name, Line: n, Msg: fmt.Sprintf("key %q is given twice", clip(k))}
			}
			if !slices.Contains(knownKeys, k) {
				warnings = append(warnings, fmt.Sprintf("%s line %d: unknown key %q ignored", name, n, clip(k)))
			}
			r.fields[k] = v
		}
		out = append(out, r)
	}
	return out, warnings, nil
}

// csvRow is a row of a header-style trigger as gocsv decodes it.
type csvRow struct {
	Type    string `csv:"type"`
	Tenant  string `csv:"tenant"`
	Site    string `csv:"site"`
	Command string `csv:"command"`
	RetryOf string `csv:"retry_of"`
}

// lineReader is a gocsv.CSVReader that remembers the file line each record
// started on and normalises header names, so problems can name a line.
type lineReader struct {
	r      *csv.Reader
	lines  []int
	header bool
}

func (l *lineReader) Read() ([]string, error) {
	rec, err := l.r.Read()
	if err != nil {
		return nil, err
	}
	line, _ := l.r.FieldPos(0)
	l.lines = append(l.lines, line)
	if !l.header {
		l.header = true
		for i := range rec {
			rec[i] = strings.ToLower(strings.TrimSpace(rec[i]))
		}
	}
	return rec, nil
}

func (l *lineReader) ReadAll() ([][]string, error) {
	var all [][]string
	for {
		rec, err := l.Read()
		if errors.Is(err, io.EOF) {
			return all, nil
		}
		if err != nil {
			return nil, err
		}
		all = append(all, rec)
	}
}

func parseHeaderCSV(name, text string) ([]rawLine, []string, error) {
	cr := csv.NewReader(strings.NewReader(text))
	cr.FieldsPerRecord = -1 // checked below, with a clearer message
	cr.TrimLeadingSpace = true
	lr := &lineReader{r: cr}
	var rows []csvRow
	if err := gocsv.UnmarshalCSV(lr, &rows); err != nil {
		var pe *csv.ParseError
		if errors.As(err, &pe) {
			return nil, nil, &Problem{File: name, Line: pe.Line, Msg: fmt.Sprintf("not valid CSV: %v", pe.Err)}
		}
		return nil, nil, &Problem{File: name, Msg: fmt.Sprintf("not valid CSV: %v", err)}
	}
	if len(lr.lines) == 0 {
		return nil, nil, &Problem{File: name, Msg: errNoRequest.Error()}
	}
	// lr has read every record by now; re-read the header to check it.
	header, err := csv.NewReader(strings.NewReader(text)).Read()
	if err != nil {
		return nil, nil, &Problem{File: name, Line: lr.lines[0], Msg: fmt.Sprintf("not valid CSV: %v", err)}
	}
	var warnings []string
	seen := map[string]bool{}
	for _, h := range header {
		h = strings.ToLower(strings.TrimSpace(h))
		if seen[h] {
			return nil, nil, &Problem{File: name, Line: lr.lines[0], Msg: fmt.Sprintf("column %q is given twice", clip(h))}
		}
		seen[h] = true
		if !slices.Contains(knownKeys, h) {
			warnings = append(warnings, fmt.Sprintf("%s line %d: unknown column %q ignored", name, lr.lines[0], clip(h)))
		}
	}
	if !seen["type"] {
		return nil, warnings, &Problem{File: name, Line: lr.lines[0], Msg: "the header has no \"type\" column (expected type,tenant,site,command)"}
	}
	out := make([]rawLine, 0, len(rows))
	for i, row := range rows {
		line := lr.lines[i+1]
		out = append(out, rawLine{line: line, fields: map[string]string{
			"type": strings.TrimSpace(row.Type), "tenant": strings.TrimSpace(row.Tenant),
			"site": strings.TrimSpace(row.Site), "command": strings.TrimSpace(row.Command),
			"retry_of": strings.TrimSpace(row.RetryOf),
		}})
	}
	return out, warnings, nil
}

// validate turns a raw line into a Request or says what is wrong with it.
func validate(name string, r rawLine, siteExists SiteChecker) (Request, []string, error) {
	bad := func(format string, args ...any) (Request, []string, error) {
		return Request{}, nil, &Problem{File: name, Line: r.line, Msg: fmt.Sprintf(format, args...)}
	}
	var warnings []string
	req := Request{Line: r.line}
	req.Type = r.fields["type"]
	switch {
	case req.Type == "":
		return bad("type is missing (one of %s)", strings.Join(allTypes, ", "))
	case !slices.Contains(allTypes, req.Type):
		return bad("type %q is not one of %s", clip(req.Type), strings.Join(allTypes, ", "))
	}
	req.Tenant = r.fields["tenant"]
	if req.Tenant == "" {
		req.Tenant = "default"
	} else if !ValidID(req.Tenant) {
		return bad("tenant %q does not match %s", clip(req.Tenant), idPattern)
	}
	site := r.fields["site"]
	if req.Type == "dedicated" {
		switch {
		case site == "":
			return bad("site is required for type dedicated")
		case !ValidID(site):
			return bad("site %q does not match %s", clip(site), idPattern)
		case siteExists != nil && !siteExists(site):
			return bad("site %q does not exist (no directory sites/%s)", site, site)
		}
		req.Site = site
	} else if site != "" {
		warnings = append(warnings, fmt.Sprintf("%s line %d: site %q ignored for type %s", name, r.line, clip(site), req.Type))
	}
	req.Command = r.fields["command"]
	switch {
	case req.Command == "":
		return bad("command is missing (one of %s)", strings.Join(allCommands, ", "))
	case !slices.Contains(allCommands, req.Command):
		return bad("command %q is not one of %s", clip(req.Command), strings.Join(allCommands, ", "))
	}
	if v := r.fields["retry_of"]; v != "" {
		if !ulidPattern.MatchString(v) {
			return bad("retry_of %q is not a job id", clip(v))
		}
		req.RetryOf = v
	}
	return req, warnings, nil
}

// clip shortens a value quoted in a message, so a hostile trigger cannot
// flood the log.
func clip(s string) string {
	const most = 64
	if len(s) <= most {
		return s
	}
	return s[:most] + "…"
}

// IsMainType reports whether t names the main install.
func IsMainType(t string) bool { return slices.Contains(mainTypes, t) }
