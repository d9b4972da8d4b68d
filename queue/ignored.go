package queue

import (
	"fmt"
	"os"
	"sort"
	"strings"
)

// IgnoredFiles lists the files directly in stateDir that end in .csv but
// are not triggers (not build-*.csv): a producer that named its trigger
// main_build.csv waits for a build that never comes, so concierge says so.
func IgnoredFiles(stateDir string) ([]string, error) {
	entries, err := os.ReadDir(stateDir)
	if err != nil {
		return nil, fmt.Errorf("list state dir: %w", err)
	}
	var out []string
	for _, e := range entries {
		if n := e.Name(); strings.HasSuffix(strings.ToLower(n), ".csv") && !IsTriggerName(n) {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out, nil
}

// IgnoredWhy says why name is not taken in and what it should be called.
// Pure.
func IgnoredWhy(name string) string {
	return fmt.Sprintf("%q is ignored: it is not a trigger; concierge takes in files named build-*.csv, "+
		"for example build-<unix time>.csv", name)
}
