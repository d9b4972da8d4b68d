#!/usr/bin/env bash
# Runs concierge's checks and whole test suite against the real tools:
# gofmt, go vet, go mod tidy, then go test -race over every package.
# Integration tests drive real git, go, pnpm, pm2, a private systemd user
# manager and journald; a test whose tool is missing skips, unless
# CONCIERGE_TEST_REQUIRE_TOOLS=1 (CI) makes that a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

started_journald=""
cleanup() {
	if [ -n "$started_journald" ]; then
		kill "$started_journald" 2>/dev/null || true
		wait "$started_journald" 2>/dev/null || true
	fi
}
trap cleanup EXIT

# One journald for the whole run (tests that read the journal need it; a
# journald per test would fight over its socket). Only when none runs, as
# root, on a machine that has it; stopped by its pid at the end.
# A socket left by a journald that was killed does not count: ask it.
journald_up() { systemd-cat -t concierge-test true 2>/dev/null; }
if [ "$(id -u)" = 0 ] && [ -x /lib/systemd/systemd-journald ] && ! journald_up; then
	mkdir -p /run/systemd/journal /run/systemd/system
	setsid /lib/systemd/systemd-journald </dev/null >/dev/null 2>&1 &
	started_journald=$!
	for _ in $(seq 1 100); do
		journald_up && break
		sleep 0.1
	done
fi

unformatted=$(gofmt -l .)
if [ -n "$unformatted" ]; then
	echo "gofmt wants changes in:" >&2
	echo "$unformatted" >&2
	exit 1
fi
go vet ./...
go vet -tags concierge_fake ./...
staticcheck=$(command -v staticcheck || echo "$(go env GOPATH)/bin/staticcheck")
if [ -x "$staticcheck" ]; then
	"$staticcheck" ./...
else
	echo "staticcheck not installed; skipping it (go install honnef.co/go/tools/cmd/staticcheck@v0.8.2)" >&2
fi
cp go.mod /tmp/concierge-go.mod.$$ && cp go.sum /tmp/concierge-go.sum.$$
go mod tidy
if ! cmp -s go.mod /tmp/concierge-go.mod.$$ || ! cmp -s go.sum /tmp/concierge-go.sum.$$; then
	cp /tmp/concierge-go.mod.$$ go.mod && cp /tmp/concierge-go.sum.$$ go.sum
	echo "go mod tidy wants changes; run it and commit the result" >&2
	exit 1
fi
rm -f /tmp/concierge-go.mod.$$ /tmp/concierge-go.sum.$$

go test -race -count=1 -timeout 20m "$@" ./...
