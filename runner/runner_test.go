package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tractstack/concierge/internal/rusage"
	"github.com/tractstack/concierge/queue"
)

// execFunc is an Executor made of a function.
type execFunc func(ctx context.Context, job queue.Job, s Session) error

func (f execFunc) Execute(ctx context.Context, job queue.Job, s Session) error { return f(ctx, job, s) }

func setup(t *testing.T, exec Executor, limit int64) (*Runner, *queue.Queue) {
	t.Helper()
	home := t.TempDir()
	state := filepath.Join(home, "state")
	os.Mkdir(state, 0o755)
	q, err := queue.Open(queue.Config{DataDir: filepath.Join(home, "data"), StateDir: state, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(state, "build-1.csv"), []byte("type=main,command=build"), 0o644)
	if _, err := q.Intake([]queue.Incoming{{Name: "build-1.csv", Data: []byte("type=main,command=build")}}); err != nil {
		t.Fatal(err)
	}
	return New(Config{Queue: q, Executor: exec, Log: zerolog.Nop(), OutputLimit: limit, TailLines: 3}), q
}

func TestStepsAreRecordedWithOutput(t *testing.T) {
	r, q := setup(t, execFunc(func(ctx context.Context, job queue.Job, s Session) error {
		if err := s.Step(ctx, "one", func(ctx context.Context, out io.Writer) error {
			fmt.Fprint(out, "line a\nline b\npartial")
			return nil
		}); err != nil {
			return err
		}
		s.Warn("frontend pull skipped")
		return s.Step(ctx, "two", func(ctx context.Context, out io.Writer) error {
			fmt.Fprintln(out, "1\n2\n3\n4\n5")
			return errors.New("exit status 2")
		})
	}), 0)
	job, ran, err := r.RunNext(context.Background())
	if err != nil || !ran {
		t.Fatalf("RunNext = %v, %v", ran, err)
	}
	if job.State != queue.Failed || job.Error != "exit status 2" {
		t.Fatalf("job = %s %q", job.State, job.Error)
	}
	if len(job.Steps) != 2 || job.Steps[0].State != queue.Succeeded || job.Steps[1].State != queue.Failed ||
		job.Steps[1].FinishedAt == nil || strings.Join(job.Steps[1].Tail, ",") != "3,4,5" {
		t.Fatalf("steps = %+v", job.Steps)
	}
	if len(job.Warnings) != 1 {
		t.Fatalf("warnings = %v", job.Warnings)
	}
	out, err := os.ReadFile(q.Store().OutputPath(job.ID))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"[one] line a", "[one] partial", "[warning] frontend pull skipped", "[two] 5"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if _, ran, _ := r.RunNext(context.Background()); ran {
		t.Fatal("a finished job ran again")
	}
}

func TestOutputIsBoundedButKeepsTheTail(t *testing.T) {
	r, q := setup(t, execFunc(func(ctx context.Context, job queue.Job, s Session) error {
		return s.Step(ctx, "noisy", func(ctx context.Context, out io.Writer) error {
			for i := 0; i < 1000; i++ {
				fmt.Fprintf(out, "line %04d\n", i)
			}
			return nil
		})
	}), 2048)
	job, _, _ := r.RunNext(context.Background())
	out, _ := os.ReadFile(q.Store().OutputPath(job.ID))
	if len(out) > 4096 {
		t.Fatalf("output file is %d bytes; the limit is 2048 plus the tail", len(out))
	}
	if !strings.Contains(string(out), "lines not kept") || !strings.Contains(string(out), "[noisy] line 0999") {
		t.Fatalf("output does not end with the tail:\n%s", out)
	}
}

func TestAPanicFailsTheJobNotTheQueue(t *testing.T) {
	r, _ := setup(t, execFunc(func(ctx context.Context, job queue.Job, s Session) error { panic("boom") }), 0)
	job, ran, err := r.RunNext(context.Background())
	if err != nil || !ran || job.State != queue.Failed || !strings.Contains(job.Error, "(panic): boom") {
		t.Fatalf("job = %+v, %v", job, err)
	}
}

func TestCancelPutsTheJobBack(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	r, q := setup(t, execFunc(func(ctx context.Context, job queue.Job, s Session) error {
		return s.Step(ctx, "long", func(ctx context.Context, out io.Writer) error {
			cancel()
			<-ctx.Done()
			return ctx.Err()
		})
	}), 0)
	job, ran, err := r.RunNext(ctx)
	if !ran || !errors.Is(err, ErrInterrupted) {
		t.Fatalf("RunNext = %v, %v", ran, err)
	}
	jobs := q.Jobs()
	if jobs[0].ID != job.ID || jobs[0].State != queue.Pending || jobs[0].Steps[0].State != queue.Failed {
		t.Fatalf("after cancel: %+v", jobs[0])
	}
}

// TestStepRecordsChildUsageAndNotes: what the children of a step used
// (as builder.Run reports it through the step's context) is kept on the
// step; a step without children records none; notes reach the record and
// the output.
func TestStepRecordsChildUsageAndNotes(t *testing.T) {
	r, q := setup(t, execFunc(func(ctx context.Context, job queue.Job, s Session) error {
		s.Note("builds one after the other: MemAvailable 900 MiB")
		if err := s.Step(ctx, "build", func(ctx context.Context, out io.Writer) error {
			rusage.Add(ctx, rusage.Usage{MaxRSSKiB: 1 << 20, CPU: 1500 * time.Millisecond})
			rusage.Add(ctx, rusage.Usage{MaxRSSKiB: 2048, CPU: 500 * time.Millisecond})
			return nil
		}); err != nil {
			return err
		}
		return s.Step(ctx, "swap", func(ctx context.Context, out io.Writer) error { return nil })
	}), 0)
	job, _, err := r.RunNext(context.Background())
	if err != nil || job.State != queue.Succeeded {
		t.Fatalf("RunNext = %s, %v", job.State, err)
	}
	if b := job.Steps[0]; b.PeakMemoryKiB != 1<<20 || b.CPUMS != 2000 {
		t.Fatalf("build step records %d KiB, %d ms CPU; want 1048576, 2000", b.PeakMemoryKiB, b.CPUMS)
	}
	if s := job.Steps[1]; s.PeakMemoryKiB != 0 || s.CPUMS != 0 {
		t.Fatalf("swap step records %d KiB, %d ms CPU; want none", s.PeakMemoryKiB, s.CPUMS)
	}
	if len(job.Notes) != 1 || !strings.Contains(job.Notes[0], "one after the other") {
		t.Fatalf("notes = %q", job.Notes)
	}
	out, err := os.ReadFile(q.Store().OutputPath(job.ID))
	if err != nil || !strings.Contains(string(out), "[note] builds one after the other") {
		t.Fatalf("output = %q, %v", out, err)
	}
}

func TestRecordStopLandsOnItsStep(t *testing.T) {
	r, _ := setup(t, execFunc(func(ctx context.Context, job queue.Job, s Session) error {
		for _, name := range []string{"restart-backend", "health-backend", "restart-backend"} {
			if err := s.Step(ctx, name, func(ctx context.Context, out io.Writer) error {
				if name == "restart-backend" {
					s.RecordStop(name, queue.Stop{DurationMS: 612, Ended: true, OpenConns: 3})
				}
				return nil
			}); err != nil {
				return err
			}
		}
		s.RecordStop("reload-frontend", queue.Stop{DurationMS: 1}) // no such step: nothing recorded
		return nil
	}), 0)
	job, _, err := r.RunNext(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := queue.Stop{DurationMS: 612, Ended: true, OpenConns: 3}
	if len(job.Steps) != 3 || job.Steps[0].Stop == nil || *job.Steps[0].Stop != want || job.Steps[1].Stop != nil ||
		job.Steps[2].Stop == nil || *job.Steps[2].Stop != want || job.Steps[2].State != queue.Succeeded {
		t.Fatalf("steps %+v", job.Steps)
	}
}
