package main

import (
	"github.com/rs/zerolog"

	"github.com/tractstack/concierge/runner"
)

// newExecutor builds what runs a job: the build pipeline, or the test
// executor in a binary built with -tags concierge_fake.
func newExecutor(cfg *Config, log zerolog.Logger) (runner.Executor, error) {
	if fake := fakeExecutor(cfg); fake != nil {
		return fake, nil
	}
	return newPipeline(cfg, log)
}
