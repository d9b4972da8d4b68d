package deploy

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/tractstack/concierge/internal/atomicfile"
)

// Release is one build that is or was live: the commits it was built from.
// Its JSON form is the release.json of a release directory and the
// current.json of the releases directory.
type Release struct {
	// ID names the release's directory: the UTC time its build started,
	// so that name order is age order.
	ID       string    `json:"id"`
	Backend  string    `json:"backend_commit"`
	Frontend string    `json:"frontend_commit"`
	LiveAt   time.Time `json:"live_at"`
	// Unverified is set from the swap that made the release live until
	// its health checks pass (MarkVerified). A live release that is
	// unverified is discarded, not kept, when the next build replaces
	// it, so it never becomes a rollback target. Absent means verified:
	// a record written before the field existed describes a release that
	// went through its checks.
	Unverified bool `json:"unverified,omitempty"`
	// RolledBackBy is, in current.json, the id of the job whose rollback
	// made the release live, so that the same job run again (after an
	// interruption) does not roll back a second time.
	RolledBackBy string `json:"rolled_back_by,omitempty"`
	// Dir, HasBinary and HasDist describe a release on disk.
	Dir       string `json:"-"`
	HasBinary bool   `json:"-"`
	HasDist   bool   `json:"-"`
}

// Label is how an error names a release: its backend commit, else its id.
func (r Release) Label() string {
	if r.Backend != "" {
		return r.Backend
	}
	if r.ID != "" {
		return "release " + r.ID
	}
	return "the previous release"
}

const (
	releaseFile = "release.json"
	currentFile = "current.json"
	idLayout    = "20060102T150405.000000000Z"
)

var idRe = regexp.MustCompile(`^[0-9]{8}T[0-9]{6}\.[0-9]{9}Z(-[0-9]+)?$`)

// validID reports whether id may name a release directory.
func validID(id string) bool { return idRe.MatchString(id) }

// describe fills in what r's directory holds.
func describe(p Paths, r *Release) {
	b := p.ReleaseDir(r.ID)
	r.Dir = b.Dir
	r.HasBinary = isRegular(b.Binary)
	r.HasDist = isRegular(b.Entry)
}

// ListReleases returns the kept releases of p, oldest first: every
// complete release directory (one with a release.json) but the live one.
// Directories whose names are not release ids (the staging directory) are
// not releases, and neither is a release still being built.
func ListReleases(p Paths) ([]Release, error) {
	entries, err := os.ReadDir(p.Releases)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list releases: %w", err)
	}
	cur, _, err := Current(p)
	if err != nil {
		return nil, fmt.Errorf("list releases: %w", err)
	}
	var out []Release
	for _, e := range entries {
		if !e.IsDir() || !validID(e.Name()) || e.Name() == cur.ID {
			continue
		}
		if !isRegular(filepath.Join(p.Releases, e.Name(), releaseFile)) {
			continue
		}
		r, err := readRelease(p, e.Name())
		if err != nil {
			return nil, fmt.Errorf("list releases: %w", err)
		}
		out = append(out, r)
	}
	sortReleases(out)
	return out, nil
}

func sortReleases(rs []Release) {
	sort.Slice(rs, func(i, j int) bool { return strings.Compare(rs[i].ID, rs[j].ID) < 0 })
}

// RollbackTarget picks what a rollback makes live: the newest kept
// release that has a binary and a frontend and passed its checks when it
// was live (an unverified release is never kept, this is a second guard).
// ok is false when there is none.
func RollbackTarget(releases []Release) (Release, bool) {
	for i := len(releases) - 1; i >= 0; i-- {
		if releases[i].HasBinary && releases[i].HasDist && !releases[i].Unverified {
			return releases[i], true
		}
	}
	return Release{}, false
}

// PruneList returns the releases to delete so that the newest keep stay.
func PruneList(releases []Release, keep int) []Release {
	if keep < 0 {
		keep = 0
	}
	rs := append([]Release(nil), releases...)
	sortReleases(rs)
	if len(rs) <= keep {
		return nil
	}
	return rs[:len(rs)-keep]
}

// Prune deletes all but the newest Keep kept releases of p (the live one
// is never pruned).
func (d *Deployer) Prune(p Paths) error {
	rs, err := ListReleases(p)
	if err != nil {
		return err
	}
	for _, r := range PruneList(rs, d.cfg.Keep) {
		d.cfg.Log.Info().Str("release", r.ID).Msgf("prune release %s", r.ID)
		if err := trash(p, r.ID); err != nil {
			return fmt.Errorf("prune release %s: %w", r.ID, err)
		}
	}
	// Leftovers of a prune, or of keeping the live release, interrupted
	// by a crash.
	stale, _ := filepath.Glob(filepath.Join(p.Releases, ".prune-*"))
	adopting, _ := filepath.Glob(filepath.Join(p.Releases, ".adopt-*"))
	stale = append(stale, adopting...)
	for _, s := range stale {
		if err := os.RemoveAll(s); err != nil {
			return fmt.Errorf("remove %s: %w", s, err)
		}
	}
	return nil
}

// Current returns the live release of p as recorded by the last swap or
// rollback; ok is false when none is recorded (a host that the concierge
// has not deployed to yet).
func Current(p Paths) (r Release, ok bool, err error) {
	data, err := os.ReadFile(filepath.Join(p.Releases, currentFile))
	if errors.Is(err, fs.ErrNotExist) {
		return Release{}, false, nil
	}
	if err != nil {
		return Release{}, false, fmt.Errorf("read current release: %w", err)
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return Release{}, false, fmt.Errorf("parse current release: %w", err)
	}
	if validID(r.ID) {
		describe(p, &r)
	}
	return r, true, nil
}

// MarkVerified records that the live release of p passed its health
// checks (or, for a target without a ports entry, that its services were
// restarted and reloaded), so that the next build keeps it as a rollback
// target. It does nothing when no release is recorded or the recorded one
// is already verified, and it leaves current.json alone while a committed
// swap or rollback waits for Recover (current.json then does not describe
// the live binary yet).
func (d *Deployer) MarkVerified(p Paths) error {
	f, _, err := observe(p)
	if err != nil {
		return fmt.Errorf("mark release verified: %w", err)
	}
	if act := Decide(f); act == ActFinishSwap || act == ActFinishRollback || act == ActStuck {
		d.cfg.Log.Warn().Str("root", p.Root).Str("pending", string(act)).Msgf("live release of %s not marked verified: an interrupted deploy is waiting for recovery (%s)", p.Root, act)
		return nil
	}
	cur, ok, err := Current(p)
	if err != nil {
		return fmt.Errorf("mark release verified: %w", err)
	}
	if !ok || !cur.Unverified {
		return nil
	}
	cur.Unverified = false
	// The release's own record first: it is what the history reads once
	// a later build replaces it.
	if validID(cur.ID) && isDir(cur.Dir) {
		rel := cur
		rel.RolledBackBy = ""
		if err := writeJSON(filepath.Join(cur.Dir, releaseFile), rel); err != nil {
			return fmt.Errorf("mark release verified: %w", err)
		}
	}
	if err := writeJSON(filepath.Join(p.Releases, currentFile), cur); err != nil {
		return fmt.Errorf("mark release verified: %w", err)
	}
	d.cfg.Log.Info().Str("root", p.Root).Str("release", cur.ID).Str("backend_commit", cur.Backend).Msgf("release %s (%s) passed its checks: kept for rollback when replaced", cur.ID, cur.Label())
	return nil
}

func writeJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", path, err)
	}
	return atomicfile.WriteFile(path, append(data, '\n'), 0o644)
}
