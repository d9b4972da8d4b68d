package pipeline

import (
	"fmt"

	"github.com/tractstack/concierge/deploy"
	"github.com/tractstack/concierge/queue"
)

// Step names, as recorded on the job.
const (
	StepPullBackend   = "pull-backend"
	StepPullFrontend  = "pull-frontend"
	StepBuildBackend  = "build-backend"
	StepBuildFrontend = "build-frontend"
	StepWhitelist     = "whitelist"
	StepSwap          = "swap"
	// StepProbeBefore records what the services answer before the job
	// restarts them; the health checks are judged against it.
	StepProbeBefore    = "probe-before"
	StepRestartBackend = "restart-backend"
	StepHealthBackend  = "health-backend"
	StepReloadFrontend = "reload-frontend"
	StepHealthFrontend = "health-frontend"
	StepRollback       = "rollback"
	// The steps that bring the previous release back after a failed
	// health check; they run only then.
	StepRestartBackendPrevious = "restart-backend-previous"
	StepHealthBackendPrevious  = "health-backend-previous"
	StepReloadFrontendPrevious = "reload-frontend-previous"
	StepHealthFrontendPrevious = "health-frontend-previous"
)

// Facts are what a plan depends on besides the job.
type Facts struct {
	// Whitelist: <home>/scripts/extractTailwindWhitelist.py exists.
	Whitelist bool
	// Ports: the ports file has a line for the target.
	Ports bool
}

// PlanSteps is the list of steps a job runs when every step succeeds,
// in order. build-backend and build-frontend run concurrently (listed
// backend first). A failed build stops after the builds; a failed health
// check adds the rollback steps, which are not listed. Nil for an unknown
// command.
func PlanSteps(job queue.Job, f Facts) []string {
	var steps []string
	switch job.Command {
	case queue.CommandBuild:
		steps = []string{StepPullBackend, StepPullFrontend}
		if f.Ports {
			steps = append(steps, StepProbeBefore)
		}
		steps = append(steps, StepBuildBackend, StepBuildFrontend)
		if f.Whitelist {
			steps = append(steps, StepWhitelist)
		}
		steps = append(steps, StepSwap)
	case queue.CommandRollback:
		if f.Ports {
			steps = append(steps, StepProbeBefore)
		}
		steps = append(steps, StepRollback)
	case queue.CommandRestart:
		if f.Ports {
			steps = append(steps, StepProbeBefore)
		}
	default:
		return nil
	}
	steps = append(steps, StepRestartBackend)
	if f.Ports {
		steps = append(steps, StepHealthBackend)
	}
	steps = append(steps, StepReloadFrontend)
	if f.Ports {
		steps = append(steps, StepHealthFrontend)
	}
	return steps
}

// Plan returns the steps a job would run, for `concierge plan`. It reads
// nothing: it checks the target (a dedicated site must be a valid id) and
// the command, and lists the conditional steps as if their conditions held
// — "whitelist" runs only when <home>/scripts/extractTailwindWhitelist.py
// exists, "health-backend" and "health-frontend" only when the ports file
// has a line for the target. The rollback steps that follow a failed
// health check are not listed.
func Plan(home string, job queue.Job) ([]string, error) {
	if _, err := pathsFor(home, job.Target); err != nil {
		return nil, err
	}
	steps := PlanSteps(job, Facts{Whitelist: true, Ports: true})
	if steps == nil {
		return nil, fmt.Errorf("plan job: unknown command %q", job.Command)
	}
	return steps, nil
}

// pathsFor resolves a job's target to its paths.
func pathsFor(home, target string) (deploy.Paths, error) {
	site := queue.Site(target)
	if target != queue.MainTarget && site == "" {
		return deploy.Paths{}, fmt.Errorf("resolve target %q: want %q or \"dedicated:<site>\"", target, queue.MainTarget)
	}
	p, err := deploy.PathsFor(home, site)
	if err != nil {
		return deploy.Paths{}, fmt.Errorf("resolve target %q: %w", target, err)
	}
	return p, nil
}
