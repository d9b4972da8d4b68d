package main

import (
	"errors"
	"fmt"
	"strings"

	"mvdan.cc/sh/v3/shell"
)

// errExpansion marks a setting that asks for a shell expansion: settings
// are split into words as a shell would, but nothing is expanded, since
// systemd's EnvironmentFile= does not expand either.
var errExpansion = errors.New("variables and ~ are not expanded here; write the value out")

// splitWords splits s into words as a POSIX shell would (quotes and
// backslashes group and escape; `-ldflags="-s -w"` is one word), with
// mvdan.cc/sh's parser rather than a hand-written one. Unbalanced quotes
// and any expansion are errors.
func splitWords(s string) ([]string, error) {
	var expanded []string
	words, err := shell.Fields(s, func(name string) string {
		switch name {
		case "IFS": // asked by the expander itself: split as sh does
			return " \t\n"
		case "PWD":
			return ""
		}
		expanded = append(expanded, name)
		return ""
	})
	if err != nil {
		return nil, fmt.Errorf("split into words: %w", err)
	}
	if len(expanded) > 0 {
		return nil, fmt.Errorf("$%s: %w", strings.Join(expanded, ", $"), errExpansion)
	}
	return words, nil
}
