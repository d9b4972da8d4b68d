//go:build !concierge_fake

package main

import "github.com/tractstack/concierge/runner"

// fakeExecutor is nil in a release build: jobs run the real pipeline.
func fakeExecutor(*Config) runner.Executor { return nil }
