package main

import "github.com/tractstack/concierge/queue"

// planSteps lists the steps a job would run (replaced by pipeline.Plan).
func planSteps(cfg *Config, j queue.Job) ([]string, error) {
	return []string{j.Command}, nil
}
