// Command bench measures concierge: trigger-to-first-step latency in watch
// mode against a systemd path unit, the idle cost of watch, bursts of
// triggers, the build wall time of the concurrent pipeline against the
// same steps run one after the other, and go-git pulls against the git
// CLI, the backend's gap at a restart with open streams, plain systemctl
// against concierge, and what a visitor of a real Astro site sees during
// whole build jobs run the old script's way and concierge's (site, not in
// the default set: it fetches the site's packages from the npm registry on
// its first run). It prints one markdown table per benchmark.
//
// Usage: go run ./bench [-short] [-only latency,idle,burst,build,pull,memory,stop,site]
//
// It needs root (a private systemd user manager), git, go, node and pnpm,
// and builds concierge itself; it is not part of `go test ./...`.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "pull-child" {
		os.Exit(pullChild(os.Args[2:]))
	}
	short := flag.Bool("short", false, "shorter durations and fewer repetitions, for a quick check")
	only := flag.String("only", "latency,idle,burst,build,pull,stop", "comma-separated benchmarks to run")
	flag.Parse()
	ctx := context.Background()
	b, err := newBench(ctx, *short)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	defer b.close()
	fmt.Printf("# concierge benchmarks\n\n%s\n", machine(ctx))
	runs := map[string]func(context.Context) error{
		"latency": b.latency, "idle": b.idle, "burst": b.burst, "build": b.build, "pull": b.pull,
		"memory": b.memory, "stop": b.stop, "site": b.site,
	}
	failed := false
	for _, name := range strings.Split(*only, ",") {
		run, ok := runs[strings.TrimSpace(name)]
		if !ok {
			fmt.Fprintf(os.Stderr, "bench: unknown benchmark %q\n", name)
			os.Exit(2)
		}
		start := time.Now()
		if err := run(ctx); err != nil {
			fmt.Fprintf(os.Stderr, "bench %s: %v\n", name, err)
			failed = true
		}
		fmt.Fprintf(os.Stderr, "bench %s took %s\n", name, time.Since(start).Round(time.Second))
	}
	if failed {
		os.Exit(1)
	}
}

// machine describes the machine the numbers come from.
func machine(ctx context.Context) string {
	mem := "?"
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		mem = strings.TrimSpace(strings.TrimPrefix(strings.SplitN(string(b), "\n", 2)[0], "MemTotal:"))
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	model := "?"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	goVersion, _ := output(ctx, "", nil, "go", "version")
	return fmt.Sprintf("Machine: %d CPUs (%s), memory %s, kernel %s, %s\n", runtime.NumCPU(), model, mem,
		strings.TrimSpace(string(kernel)), strings.TrimSpace(goVersion))
}
