package main

import (
	"errors"

	"github.com/rs/zerolog"

	"github.com/tractstack/concierge/runner"
)

// newPipeline wires the build pipeline (builder and deploy) for cfg.
func newPipeline(cfg *Config, log zerolog.Logger) (runner.Executor, error) {
	return nil, errors.New("the build pipeline is not wired yet")
}
