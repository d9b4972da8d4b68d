// Package testtool lets integration tests require the real tools they
// drive: a test skips when a tool is absent on a developer's machine, and
// fails instead when CONCIERGE_TEST_REQUIRE_TOOLS=1 (set by CI, which has
// every tool, so a skip there would hide a test that never ran).
package testtool

import (
	"os"
	"os/exec"
	"testing"
)

// RequireEnv is the variable that turns a missing tool into a failure.
const RequireEnv = "CONCIERGE_TEST_REQUIRE_TOOLS"

// Require skips (or, under CI, fails) t unless every named program is on
// PATH. It returns nothing: after it, the tools are there.
func Require(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			Missing(t, tool+" is not on PATH")
		}
	}
}

// Missing skips t, or fails it under CI, saying why.
func Missing(t testing.TB, why string) {
	t.Helper()
	if os.Getenv(RequireEnv) == "1" {
		t.Fatalf("required for this test: %s (%s=1)", why, RequireEnv)
	}
	t.Skipf("skipped: %s", why)
}
