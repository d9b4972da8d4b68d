package main

import (
	"context"

	"github.com/rs/zerolog"

	"github.com/tractstack/concierge/runner"
)

// recoverFunc settles interrupted go-lives at start; it reports what it
// did per target.
type recoverFunc func(ctx context.Context) ([]string, error)

// newExecutor builds what runs a job: the build pipeline, or the test
// executor in a binary built with -tags concierge_fake (which has
// nothing to recover).
func newExecutor(cfg *Config, base zerolog.Logger) (runner.Executor, recoverFunc, error) {
	if fake := fakeExecutor(cfg); fake != nil {
		return fake, nil, nil
	}
	return newPipeline(cfg, base)
}
