package queue

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/tractstack/concierge/internal/atomicfile"
)

// Store is the on-disk home of job records: one JSON file per job under
// <data>/jobs, written atomically so that `status` (which takes no lock)
// and a crash only ever see whole records. Only the process that holds the
// run lock writes; anyone may read.
type Store struct {
	dir string
}

// Layout of the data directory.
const (
	jobsDirName     = "jobs"
	rejectedDirName = "rejected"
	claimDirName    = "incoming"
)

// Modes of what the data directory holds: records and logs may name
// hosts and paths, build output may hold anything a build printed.
const (
	DirMode    = 0o750
	RecordMode = 0o640
	OutputMode = 0o600
)

// OpenStore returns the store in dataDir, creating its directories.
func OpenStore(dataDir string) (*Store, error) {
	s := &Store{dir: dataDir}
	for _, d := range []string{s.dir, s.JobsDir(), s.RejectedDir(), s.ClaimDir()} {
		if err := os.MkdirAll(d, DirMode); err != nil {
			return nil, fmt.Errorf("create data dir: %w", err)
		}
		// Directories made by an earlier version were world-readable.
		// Best effort: a directory that cannot be changed now is reported
		// by the first write that fails.
		os.Chmod(d, DirMode) //nolint:errcheck
	}
	return s, nil
}

// ReadStore returns the store in dataDir without creating anything, for
// readers such as `status` that must not write.
func ReadStore(dataDir string) *Store { return &Store{dir: dataDir} }

// Dir is the data directory.
func (s *Store) Dir() string { return s.dir }

// JobsDir holds job records and their output.
func (s *Store) JobsDir() string { return filepath.Join(s.dir, jobsDirName) }

// RejectedDir holds rejected triggers and the reasons they were rejected.
func (s *Store) RejectedDir() string { return filepath.Join(s.dir, rejectedDirName) }

// ClaimDir is where triggers are moved before they are read (see
// watcher.Options.ClaimDir); what is left there was claimed by an intake
// that did not finish.
func (s *Store) ClaimDir() string { return filepath.Join(s.dir, claimDirName) }

// OutputPath is where a job's step output is kept.
func (s *Store) OutputPath(id string) string { return filepath.Join(s.JobsDir(), id+".log") }

func (s *Store) recordPath(id string) string { return filepath.Join(s.JobsDir(), id+".json") }

// Save writes a job record atomically.
func (s *Store) Save(j *Job) error {
	data, err := json.MarshalIndent(j, "", "  ")
	if err != nil {
		return fmt.Errorf("encode job %s: %w", j.ID, err)
	}
	if err := atomicfile.WriteFile(s.recordPath(j.ID), append(data, '\n'), RecordMode); err != nil {
		return fmt.Errorf("save job %s: %w", j.ID, err)
	}
	return nil
}

// Get reads one job record.
func (s *Store) Get(id string) (*Job, error) {
	if !ulidPattern.MatchString(id) {
		return nil, fmt.Errorf("read job %q: %w", id, ErrBadID)
	}
	data, err := os.ReadFile(s.recordPath(id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read job %s: %w", id, ErrNoJob)
	}
	if err != nil {
		return nil, fmt.Errorf("read job %s: %w", id, err)
	}
	var j Job
	if err := json.Unmarshal(data, &j); err != nil {
		return nil, fmt.Errorf("decode job %s: %w", id, err)
	}
	return &j, nil
}

// Errors a caller may test for.
var (
	ErrNoJob  = errors.New("no such job")
	ErrBadID  = errors.New("not a job id (a 26-character ULID)")
	ErrLocked = errors.New("another concierge holds the run lock")
)

// Load reads every job record, oldest first. A record that cannot be read
// is reported in problems and left alone, so one bad file hides nothing
// else. A missing jobs directory is an empty store.
func (s *Store) Load() (jobs []*Job, problems []error, err error) {
	entries, err := os.ReadDir(s.JobsDir())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("list jobs: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		id, ok := strings.CutSuffix(name, ".json")
		if !ok || !ulidPattern.MatchString(id) || !e.Type().IsRegular() {
			continue
		}
		j, err := s.Get(id)
		if err != nil {
			problems = append(problems, err)
			continue
		}
		jobs = append(jobs, j)
	}
	sort.Slice(jobs, func(a, b int) bool { return jobs[a].ID < jobs[b].ID })
	return jobs, problems, nil
}

// Remove deletes a job's record and output, and for a rejected trigger
// what was set aside (a file, a link, a FIFO or a whole directory) and its
// reason. A link is removed itself, never what it points to.
func (s *Store) Remove(id string) error {
	aside, _ := filepath.Glob(filepath.Join(s.RejectedDir(), id+"-*"))
	for _, p := range append(aside, s.OutputPath(id), s.recordPath(id)) {
		if err := os.RemoveAll(p); err != nil {
			return fmt.Errorf("remove job %s: %w", id, err)
		}
	}
	return nil
}
