package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tractstack/concierge/builder"
	"github.com/tractstack/concierge/internal/rusage"
	"github.com/tractstack/concierge/internal/syncbuf"
)

// frontendBuildJS is a stand-in for `pnpm build` of an Astro site that
// needs no registry: Node fills frontendMiB of buffers, then writes
// dist/server/entry.mjs. Its memory is the point, not its CPU time.
const frontendMiB = 500

const frontendBuildJS = `import { mkdirSync, writeFileSync } from 'node:fs';
const mib = Number(process.env.BENCH_FRONTEND_MIB);
const keep = [];
for (let i = 0; i < mib; i++) keep.push(Buffer.alloc(1 << 20, i % 251));
mkdirSync('dist/server', { recursive: true });
writeFileSync('dist/server/entry.mjs', '// ' + keep.length + ' MiB\n');
`

// memory: wall time and peak memory of the two builds, at once against
// one after the other, with a cold and a warm Go build cache. The backend
// is a real, larger module: concierge itself (go-git, x/crypto, zerolog,
// fsnotify...), built from a copy of its source with the module cache
// (offline); the frontend is the stand-in above. Both run as the
// pipeline runs them (builder.Run, Background), and are measured three
// ways: the kernel's rusage maxrss (what concierge records on a step),
// the sampled sum of the build processes' proportional set size (what
// the builds really hold at once), and the drop of MemAvailable.
func (b *bench) memory(ctx context.Context) error {
	root, err := moduleRoot(ctx)
	if err != nil {
		return err
	}
	src := filepath.Join(b.dir, "mem-backend")
	if err := copyModule(ctx, root, src); err != nil {
		return err
	}
	front := filepath.Join(b.dir, "mem-frontend")
	if err := os.MkdirAll(front, 0o755); err != nil {
		return err
	}
	for name, content := range map[string]string{
		"package.json": `{"name":"bench-frontend","private":true,"type":"module","scripts":{"build":"node build.mjs"}}` + "\n",
		"build.mjs":    frontendBuildJS,
	} {
		if err := os.WriteFile(filepath.Join(front, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	gocache := filepath.Join(b.dir, "mem-gocache")
	base := builder.ChildEnv(setEnv(os.Environ(), "GOCACHE="+gocache, "GOPROXY=off", "GOFLAGS=-buildvcs=false", "CI=true",
		"BENCH_FRONTEND_MIB="+strconv.Itoa(frontendMiB)), os.Getenv("HOME"))
	var rows [][]string
	seed := 0
	for _, cache := range []string{"cold", "warm"} {
		for _, concurrent := range []bool{true, false} {
			// Cold: no cache at all. Warm: the cache the earlier builds
			// filled; each build changes the main package, as a pull does.
			if cache == "cold" {
				if err := os.RemoveAll(gocache); err != nil {
					return err
				}
			}
			seed++
			var r memResult
			if err := b.memRun(ctx, src, front, base, seed, concurrent, &r); err != nil {
				return err
			}
			how := "one after the other"
			if concurrent {
				how = "at the same time"
			}
			rows = append(rows, []string{cache, how, fmt.Sprintf("%.1f", r.wall.Seconds()),
				fmt.Sprintf("%.1f", r.backWall.Seconds()), fmt.Sprintf("%.1f", r.frontWall.Seconds()),
				kibToMiB(r.backRSS), kibToMiB(r.frontRSS), kibToMiB(r.backPSS), kibToMiB(r.frontPSS), kibToMiB(r.bothPSS), kibToMiB(r.memDrop)})
		}
	}
	load, _ := os.ReadFile("/proc/loadavg")
	table("Build memory: at the same time against one after the other, cold and warm Go cache",
		[]string{"Go cache", "builds", "wall s", "backend s", "frontend s", "backend maxrss MiB", "frontend maxrss MiB",
			"backend peak PSS MiB", "frontend peak PSS MiB", "both peak PSS MiB", "MemAvailable drop MiB"}, rows,
		fmt.Sprintf("Backend: `go build ./cmd/concierge` of a copy of this module (a larger real module than the sandbox backend; "+
			"its dependencies from the module cache, GOPROXY=off); cold = a fresh GOCACHE (standard library and all dependencies compiled), "+
			"warm = the cache filled by an earlier build and the main package changed. Frontend: `pnpm build` of a Node stand-in "+
			"(no registry) that fills %d MiB of buffers and writes dist/. Each build ran as concierge runs it (builder.Run with nice 10, idle I/O, "+
			"oom_score_adj 500). maxrss is the kernel's rusage (largest single process, what concierge records on a step); peak PSS is the "+
			"sum of the build's processes' proportional set size sampled every 100 ms (what the build holds at once); the MemAvailable "+
			"drop is the host-wide figure, noisy on a shared machine. Load average at the end: %s.", frontendMiB, strings.TrimSpace(string(load))))
	return nil
}

// memResult is one measured pair of builds.
type memResult struct {
	wall, backWall, frontWall           time.Duration
	backRSS, frontRSS                   int64 // KiB, rusage maxrss
	backPSS, frontPSS, bothPSS, memDrop int64 // KiB
}

// memRun runs the backend and frontend builds once and measures them.
func (b *bench) memRun(ctx context.Context, src, front string, base []string, seed int, concurrent bool, r *memResult) error {
	main := fmt.Sprintf("package main\n\n// benchSeed changes the main package for each build.\nconst benchSeed = %d\n", seed)
	if err := os.WriteFile(filepath.Join(src, "cmd", "concierge", "zz_bench_seed.go"), []byte(main), 0o644); err != nil {
		return err
	}
	backEnv := builder.WithOwner(base, b.dir+"/mem-back")
	frontEnv := builder.WithOwner(base, b.dir+"/mem-front")
	var backOut, frontOut syncbuf.Buffer
	var backErr, frontErr error
	var backU, frontU rusage.Usage
	var backWall, frontWall time.Duration
	runBack := func() {
		mctx, m := rusage.WithMeter(ctx)
		t0 := time.Now()
		backErr = builder.Run(mctx, builder.Command{Dir: src, Name: "go", Env: backEnv, Background: true, Output: &backOut,
			Args: []string{"build", "-o", filepath.Join(b.dir, "mem-binary"), "./cmd/concierge"}})
		backWall = time.Since(t0)
		backU, _ = m.Usage()
	}
	runFront := func() {
		mctx, m := rusage.WithMeter(ctx)
		t0 := time.Now()
		frontErr = builder.Run(mctx, builder.Command{Dir: front, Name: "pnpm", Env: frontEnv, Background: true, Output: &frontOut,
			Args: []string{"build"}})
		frontWall = time.Since(t0)
		frontU, _ = m.Usage()
	}
	sampler := newPSSSampler(b.dir+"/mem-back", b.dir+"/mem-front")
	t0 := time.Now()
	if concurrent {
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); runBack() }()
		go func() { defer wg.Done(); runFront() }()
		wg.Wait()
	} else {
		runBack()
		if backErr == nil {
			runFront()
		}
	}
	wall := time.Since(t0)
	peaks := sampler.stop()
	if backErr != nil {
		return fmt.Errorf("backend build: %w\n%s", backErr, backOut.String())
	}
	if frontErr != nil {
		return fmt.Errorf("frontend build: %w\n%s", frontErr, frontOut.String())
	}
	*r = memResult{wall: wall, backWall: backWall, frontWall: frontWall, backRSS: backU.MaxRSSKiB, frontRSS: frontU.MaxRSSKiB,
		backPSS: peaks.each[0], frontPSS: peaks.each[1], bothPSS: peaks.both, memDrop: peaks.memDrop}
	return nil
}

// pssSampler sums, every 100 ms, the proportional set size of the
// processes carrying each owner mark, and keeps the peaks; it also keeps
// the largest drop of MemAvailable below its value at the start.
type pssSampler struct {
	marks [][]byte
	done  chan struct{}
	out   chan pssPeaks
}

type pssPeaks struct {
	each    []int64
	both    int64
	memDrop int64
}

func newPSSSampler(owners ...string) *pssSampler {
	s := &pssSampler{done: make(chan struct{}), out: make(chan pssPeaks, 1)}
	for _, o := range owners {
		s.marks = append(s.marks, []byte(builder.OwnerEnv+"="+o+"\x00"))
	}
	go s.loop()
	return s
}

func (s *pssSampler) stop() pssPeaks {
	close(s.done)
	return <-s.out
}

func (s *pssSampler) loop() {
	p := pssPeaks{each: make([]int64, len(s.marks))}
	idle := memAvailableKiB()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		sums := s.sample()
		var both int64
		for i, v := range sums {
			p.each[i] = max(p.each[i], v)
			both += v
		}
		p.both = max(p.both, both)
		if m := memAvailableKiB(); idle > 0 && m > 0 {
			p.memDrop = max(p.memDrop, idle-m)
		}
		select {
		case <-s.done:
			s.out <- p
			return
		case <-tick.C:
		}
	}
}

// sample returns, per mark, the summed Pss (KiB) of the live processes
// carrying it.
func (s *pssSampler) sample() []int64 {
	sums := make([]int64, len(s.marks))
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return sums
	}
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil {
			continue
		}
		env = append(env, 0)
		for i, mark := range s.marks {
			if bytes.Contains(env, mark) {
				sums[i] += smapsField(filepath.Join("/proc", e.Name(), "smaps_rollup"), "Pss:")
			}
		}
	}
	return sums
}

// smapsField reads one "Key: N kB" line of an smaps file.
func smapsField(path, key string) int64 {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), key); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return 0
}

func memAvailableKiB() int64 { return smapsField("/proc/meminfo", "MemAvailable:") }

func kibToMiB(kib int64) string { return strconv.FormatInt(kib>>10, 10) }

// copyModule copies the committed source of the module at root to dir.
func copyModule(ctx context.Context, root, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if _, err := output(ctx, root, nil, "sh", "-c", `git archive HEAD | tar -x -C "$0"`, dir); err != nil {
		return fmt.Errorf("copy the module: %w", err)
	}
	return nil
}
