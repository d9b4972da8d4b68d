package report

import (
	"fmt"

	"github.com/tractstack/concierge/deploy"
	"github.com/tractstack/concierge/queue"
)

// ReadLive reads the live release of the main install and of every
// target the jobs name, as recorded by the last swap or rollback. A
// target with none recorded is left out; one that cannot be read is left
// out and reported in problems.
func ReadLive(home string, jobs []queue.Job) (live map[string]deploy.Release, problems []error) {
	live = map[string]deploy.Release{}
	seen := map[string]bool{}
	for _, t := range append([]string{queue.MainTarget}, jobTargets(jobs)...) {
		if seen[t] {
			continue
		}
		seen[t] = true
		site := queue.Site(t)
		if t != queue.MainTarget && site == "" {
			continue
		}
		p, err := deploy.PathsFor(home, site)
		if err != nil {
			problems = append(problems, fmt.Errorf("live release of %s: %w", t, err))
			continue
		}
		r, ok, err := deploy.Current(p)
		if err != nil {
			problems = append(problems, fmt.Errorf("live release of %s: %w", t, err))
			continue
		}
		if ok {
			live[t] = r
		}
	}
	return live, problems
}

func jobTargets(jobs []queue.Job) []string {
	var out []string
	for _, j := range jobs {
		if j.Target != "" {
			out = append(out, j.Target)
		}
	}
	return out
}
