package deploy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/tractstack/concierge/internal/atomicfile"
)

// The staging directory <root>/bin/releases/.staging holds one operation in
// flight on a target. Its files are the state of a small state machine:
//
//	dist                 the live dist moved aside (Prepare; Rollback)
//	no-dist              marker: there was no live dist to move aside
//	tractstack-go.new    the complete new binary (builder output; Rollback: a link to the release's)
//	tractstack-go.old    a hard link to the binary that was live (Swap)
//	phase                JSON naming the operation, written (fsync) right
//	                     before the commit rename tractstack-go.new → bin/tractstack-go
//
// The commit point is that rename. Recover decides from these facts alone
// (Decide): no phase, or phase with tractstack-go.new still there → the
// commit did not happen: undo (staged dist back, outputs deleted); phase
// with tractstack-go.new gone → it did: finish the operation. Every step of
// undo and finish is idempotent, so a crash during Recover is recovered by
// the next one.
//
// A swap decides before its commit whether the release it replaces is kept
// or discarded (it is discarded when it never passed its checks: current.json
// says unverified); the decision is in the phase, so that finishing the swap
// in Recover discards it too.
const (
	stagedDist  = "dist"
	noDistMark  = "no-dist"
	newBinary   = "tractstack-go.new"
	oldBinary   = "tractstack-go.old"
	phaseFile   = "phase"
	opSwap      = "swap"
	opRollback  = "rollback"
	phaseBroken = "unreadable"
)

// NewBinary is where the backend build must put the new binary (the
// builder builds to a temporary name and renames to it when complete).
func (p Paths) NewBinary() string { return filepath.Join(p.Staging, newBinary) }

// phase is the content of the phase file.
type phase struct {
	Op string `json:"op"`
	// Release is, for a swap, the directory name the binary that was live
	// goes to ("" when no binary was live); for a rollback, the release
	// being made live.
	Release string `json:"release"`
	// Prev and Next are a swap's outgoing and incoming releases.
	Prev Release `json:"prev"`
	Next Release `json:"next"`
	// Discard: the swap's outgoing release never passed its checks; it
	// is deleted instead of kept (Release is then "").
	Discard bool `json:"discard,omitempty"`
	// By is, for a rollback, the id of the job rolling back ("" for
	// none), recorded as the live release's RolledBackBy.
	By string `json:"by,omitempty"`
}

// Facts are what Recover observes in the staging directory.
type Facts struct {
	Staging   bool   // the staging directory exists
	Phase     string // "", "swap", "rollback", or "unreadable"
	NewBinary bool   // tractstack-go.new is there
}

// Action is what Recover does.
type Action string

// Recover's actions.
const (
	// ActNone: nothing was in flight.
	ActNone Action = "none"
	// ActUndo: the commit did not happen; put the staged dist back and
	// delete partial outputs.
	ActUndo Action = "undo"
	// ActFinishSwap: the new binary is live; file the previous one and
	// the staged dist as a kept release.
	ActFinishSwap Action = "finish-swap"
	// ActFinishRollback: the release's binary is live; move its dist in.
	ActFinishRollback Action = "finish-rollback"
	// ActStuck: a phase that cannot be read with the commit done; an
	// operator must look (the live binary is not touched).
	ActStuck Action = "stuck"
)

// Decide is Recover's decision, a pure function of what is on disk.
func Decide(f Facts) Action {
	switch {
	case !f.Staging:
		return ActNone
	case f.Phase == "":
		return ActUndo // a build was in progress or failed
	case f.NewBinary:
		return ActUndo // the commit rename did not happen
	case f.Phase == opSwap:
		return ActFinishSwap
	case f.Phase == opRollback:
		return ActFinishRollback
	default:
		return ActStuck
	}
}

func observe(p Paths) (Facts, phase, error) {
	var ph phase
	if !isDir(p.Staging) {
		return Facts{}, ph, nil
	}
	f := Facts{Staging: true, NewBinary: exists(filepath.Join(p.Staging, newBinary))}
	data, err := os.ReadFile(filepath.Join(p.Staging, phaseFile))
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return Facts{}, ph, fmt.Errorf("read phase: %w", err)
	default:
		if err := json.Unmarshal(data, &ph); err != nil || (ph.Op != opSwap && ph.Op != opRollback) {
			f.Phase = phaseBroken
		} else {
			f.Phase = ph.Op
		}
	}
	return f, ph, nil
}

// Recover brings the target back to a state where the live binary and
// dist come from one release, after an operation was interrupted (a crash,
// a kill -9, a failed build). It returns what it did. Call it before any
// operation on the target; Prepare and Rollback do.
func (d *Deployer) Recover(ctx context.Context, p Paths) (Action, error) {
	f, ph, err := observe(p)
	if err != nil {
		return "", fmt.Errorf("recover %s: %w", p.Root, err)
	}
	act := Decide(f)
	if act != ActNone {
		d.cfg.Log.Warn().Str("root", p.Root).Str("action", string(act)).Str("phase", f.Phase).Bool("new_binary", f.NewBinary).Msgf("recover interrupted deploy in %s: %s", p.Root, act)
	}
	switch act {
	case ActNone:
		return act, nil
	case ActUndo:
		err = d.undo(p)
	case ActFinishSwap:
		err = d.finishSwap(p, ph)
	case ActFinishRollback:
		err = d.finishRollback(p, ph)
	default:
		err = fmt.Errorf("phase file in %s is unreadable and the new binary is gone", p.Staging)
	}
	if err != nil {
		return act, fmt.Errorf("recover %s (%s): %w", p.Root, act, err)
	}
	return act, nil
}

// Describe says what Recover did, for a person.
func (a Action) Describe() string {
	switch a {
	case ActNone:
		return "nothing to recover"
	case ActUndo:
		return "undid an interrupted build or rollback"
	case ActFinishSwap:
		return "finished swap"
	case ActFinishRollback:
		return "finished rollback"
	case ActStuck:
		return "stuck: unreadable phase after the commit"
	default:
		return string(a)
	}
}

// RecoverTargets lists, from the names of the entries of <home>/sites,
// the targets RecoverAll looks at: the main install ("") first, then each
// name that is a valid site id, in the order given. Pure.
func RecoverTargets(siteNames []string) []string {
	out := []string{""}
	for _, n := range siteNames {
		if ValidSite(n) {
			out = append(out, n)
		}
	}
	return out
}

// RecoverAll runs Recover for the main install of home and for every
// dedicated site under <home>/sites whose name is a valid site id,
// skipping targets that have no releases directory (never deployed to by
// the concierge). It returns what it did per target ("main: finished
// swap", "acme: nothing to recover"). A target that fails does not stop
// the others; the errors are joined. Call it at start, holding the run
// lock, so that a go-live interrupted by a crash or a reboot is settled
// before any trigger arrives.
func (d *Deployer) RecoverAll(ctx context.Context, home string) ([]string, error) {
	if _, err := PathsFor(home, ""); err != nil {
		return nil, fmt.Errorf("recover all: %w", err)
	}
	var names []string
	entries, err := os.ReadDir(filepath.Join(home, "sites"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("recover all: list sites: %w", err)
	}
	for _, e := range entries {
		names = append(names, e.Name())
	}
	var done []string
	var errs []error
	for _, site := range RecoverTargets(names) {
		if err := ctx.Err(); err != nil {
			errs = append(errs, fmt.Errorf("recover all: %w", err))
			break
		}
		p, err := PathsFor(home, site)
		if err != nil {
			errs = append(errs, fmt.Errorf("recover all: %w", err))
			continue
		}
		if !isDir(p.Releases) {
			continue
		}
		label := p.PortsKey
		act, err := d.Recover(ctx, p)
		if err != nil {
			errs = append(errs, err)
			done = append(done, label+": failed: "+err.Error())
			continue
		}
		done = append(done, label+": "+act.Describe())
	}
	return done, errors.Join(errs...)
}

// undo puts the staged dist back and removes the staging directory.
func (d *Deployer) undo(p Paths) error {
	staged := filepath.Join(p.Staging, stagedDist)
	switch {
	case isDir(staged):
		if err := os.RemoveAll(p.Dist); err != nil {
			return fmt.Errorf("remove new dist: %w", err)
		}
		if err := d.crashPoint("undo-dist-removed"); err != nil {
			return err
		}
		if err := moveDir(staged, p.Dist); err != nil {
			return fmt.Errorf("restore dist: %w", err)
		}
	case exists(filepath.Join(p.Staging, noDistMark)):
		if err := os.RemoveAll(p.Dist); err != nil {
			return fmt.Errorf("remove new dist: %w", err)
		}
	}
	return removeStaging(p)
}

func removeStaging(p Paths) error {
	if err := os.RemoveAll(p.Staging); err != nil {
		return fmt.Errorf("remove staging: %w", err)
	}
	return atomicfile.SyncDir(p.Releases)
}

// Prepare starts a build: it recovers anything left over, creates the
// staging directory and moves the live dist aside into it, so that the
// frontend build cannot destroy the only copy. The backend build goes to
// p.NewBinary(). Then Swap commits, or Abort undoes.
func (d *Deployer) Prepare(ctx context.Context, p Paths) error {
	if _, err := d.Recover(ctx, p); err != nil {
		return err
	}
	if err := os.MkdirAll(p.Staging, 0o755); err != nil {
		return fmt.Errorf("create staging: %w", err)
	}
	if err := atomicfile.SyncDir(p.Releases); err != nil {
		return err
	}
	if err := d.crashPoint("prepare-staging-created"); err != nil {
		return err
	}
	if isDir(p.Dist) {
		if err := moveDir(p.Dist, filepath.Join(p.Staging, stagedDist)); err != nil {
			return fmt.Errorf("keep dist aside: %w", err)
		}
	} else if err := atomicfile.WriteFile(filepath.Join(p.Staging, noDistMark), nil, 0o644); err != nil {
		return err
	}
	return d.crashPoint("prepare-dist-aside")
}

// Abort undoes a prepared build: the previous dist goes back, the new
// binary is discarded; nothing live has changed.
func (d *Deployer) Abort(ctx context.Context, p Paths) error {
	f, _, err := observe(p)
	if err != nil {
		return fmt.Errorf("abort: %w", err)
	}
	if f.Phase != "" && !f.NewBinary {
		return fmt.Errorf("abort: the swap in %s was already committed", p.Staging)
	}
	if err := d.undo(p); err != nil {
		return fmt.Errorf("abort: %w", err)
	}
	return nil
}

// Swap commits a prepared build: the new binary (p.NewBinary(), complete)
// takes the live name by rename; the binary that was live and the staged
// dist become the newest kept release, described by prev; next is recorded
// as the live release, unverified until MarkVerified. The release that was
// live is discarded instead of kept when it never passed its checks
// (current.json, or prev, says unverified): a build re-run after an
// interruption between its swap and its checks must not make its own
// untested build the rollback target. Older releases beyond Keep are
// pruned.
func (d *Deployer) Swap(ctx context.Context, p Paths, prev, next Release) error {
	f, _, err := observe(p)
	if err != nil {
		return fmt.Errorf("swap: %w", err)
	}
	if !f.Staging || f.Phase != "" || !f.NewBinary {
		return fmt.Errorf("swap: nothing prepared in %s (staging %t, phase %q, new binary %t)", p.Staging, f.Staging, f.Phase, f.NewBinary)
	}
	now := d.cfg.Now()
	next.Unverified = true
	next.RolledBackBy = ""
	ph := phase{Op: opSwap, Prev: prev, Next: next}
	cur, ok, err := Current(p)
	if err != nil {
		d.cfg.Log.Warn().Err(err).Str("root", p.Root).Msgf("live release of %s unknown, kept as described by the job: %v", p.Root, err)
	}
	ph.Discard = ph.Prev.Unverified || (ok && cur.Unverified)
	if ph.Discard {
		// Described by what current.json says was live, not by the job.
		if ok {
			ph.Prev = cur
		}
		ph.Prev.Unverified = true
	} else if isRegular(p.Binary) {
		if !validID(ph.Prev.ID) || exists(filepath.Join(p.Releases, ph.Prev.ID)) {
			ph.Prev.ID = newID(p.Releases, now)
		}
		ph.Release = ph.Prev.ID
		if err := linkOrCopy(p.Binary, filepath.Join(p.Staging, oldBinary)); err != nil {
			return fmt.Errorf("swap: keep live binary: %w", err)
		}
	}
	if err := d.crashPoint("swap-old-kept"); err != nil {
		return err
	}
	ph.Next.ID = newID(p.Releases, now)
	if ph.Next.ID == ph.Release {
		ph.Next.ID = newID(p.Releases, now.Add(time.Microsecond))
	}
	ph.Next.LiveAt = now.UTC()
	if err := writeJSON(filepath.Join(p.Staging, phaseFile), ph); err != nil {
		return fmt.Errorf("swap: write phase: %w", err)
	}
	if err := d.crashPoint("swap-phase-written"); err != nil {
		return err
	}
	if err := os.Rename(p.NewBinary(), p.Binary); err != nil {
		return fmt.Errorf("swap: rename new binary live: %w", err)
	}
	if err := atomicfile.SyncDir(p.BinDir); err != nil {
		return fmt.Errorf("swap: %w", err)
	}
	if err := atomicfile.SyncDir(p.Staging); err != nil {
		return fmt.Errorf("swap: %w", err)
	}
	if err := d.crashPoint("swap-committed"); err != nil {
		return err
	}
	d.cfg.Log.Info().Str("root", p.Root).Str("backend_commit", next.Backend).Str("kept_release", ph.Release).Bool("discard_replaced", ph.Discard).Msg("swapped new release live")
	if err := d.finishSwap(p, ph); err != nil {
		return fmt.Errorf("swap: %w", err)
	}
	return nil
}

// finishSwap files the previous binary and the staged dist as a kept
// release (or, when the swap discards it, leaves them to be deleted with
// the staging directory) and records the live one. Idempotent.
func (d *Deployer) finishSwap(p Paths, ph phase) error {
	if ph.Discard || ph.Prev.Unverified {
		d.cfg.Log.Warn().Str("root", p.Root).Str("backend_commit", ph.Prev.Backend).Str("release", ph.Prev.ID).Msgf("discard replaced release %s of %s: it never passed its checks, so it is no rollback target", ph.Prev.Label(), p.Root)
	} else if ph.Release != "" {
		if !validID(ph.Release) {
			return fmt.Errorf("finish swap: bad release id %q", ph.Release)
		}
		dir := filepath.Join(p.Releases, ph.Release)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("create release dir: %w", err)
		}
		if old := filepath.Join(p.Staging, oldBinary); exists(old) {
			if err := os.Rename(old, filepath.Join(dir, "tractstack-go")); err != nil {
				return fmt.Errorf("keep previous binary: %w", err)
			}
		}
		if err := d.crashPoint("finish-swap-binary-kept"); err != nil {
			return err
		}
		if staged := filepath.Join(p.Staging, stagedDist); isDir(staged) {
			if err := os.RemoveAll(filepath.Join(dir, "dist")); err != nil {
				return fmt.Errorf("remove partial kept dist: %w", err)
			}
			if err := os.Rename(staged, filepath.Join(dir, "dist")); err != nil {
				return fmt.Errorf("keep previous dist: %w", err)
			}
		}
		prev := ph.Prev
		prev.ID = ph.Release
		prev.RolledBackBy = ""
		if err := writeJSON(filepath.Join(dir, releaseFile), prev); err != nil {
			return err
		}
	}
	if err := writeJSON(filepath.Join(p.Releases, currentFile), ph.Next); err != nil {
		return err
	}
	if err := d.crashPoint("finish-swap-recorded"); err != nil {
		return err
	}
	if err := removeStaging(p); err != nil {
		return err
	}
	return d.Prune(p)
}

// Rollback makes the newest kept release live: its binary by rename, its
// dist in place of the live one; the release that was live is discarded
// and the one made live leaves the history (so a second rollback goes one
// further back). It returns the release made live. It does not restart
// anything.
//
// jobID names the job rolling back and is recorded with the live release:
// when the live release was already made live by a rollback of this same
// job (a job re-run after an interruption), Rollback returns it without
// rolling back again. An empty jobID never matches.
func (d *Deployer) Rollback(ctx context.Context, p Paths, jobID string) (Release, error) {
	if _, err := d.Recover(ctx, p); err != nil {
		return Release{}, err
	}
	if jobID != "" {
		cur, ok, err := Current(p)
		if err != nil {
			return Release{}, fmt.Errorf("roll back: %w", err)
		}
		if ok && cur.RolledBackBy == jobID {
			d.cfg.Log.Info().Str("root", p.Root).Str("job", jobID).Str("release", cur.ID).Str("backend_commit", cur.Backend).Msgf("%s already rolled back by this job to %s: not rolling back again", p.Root, cur.Label())
			return cur, nil
		}
	}
	rs, err := ListReleases(p)
	if err != nil {
		return Release{}, fmt.Errorf("roll back: %w", err)
	}
	target, ok := RollbackTarget(rs)
	if !ok {
		return Release{}, fmt.Errorf("no previous release to roll back to in %s", p.Releases)
	}
	if err := os.MkdirAll(p.Staging, 0o755); err != nil {
		return Release{}, fmt.Errorf("roll back: create staging: %w", err)
	}
	if err := linkOrCopy(filepath.Join(target.Dir, "tractstack-go"), p.NewBinary()); err != nil {
		return Release{}, fmt.Errorf("roll back: stage binary: %w", err)
	}
	ph := phase{Op: opRollback, Release: target.ID, By: jobID}
	if err := writeJSON(filepath.Join(p.Staging, phaseFile), ph); err != nil {
		return Release{}, fmt.Errorf("roll back: write phase: %w", err)
	}
	if err := d.crashPoint("rollback-phase-written"); err != nil {
		return Release{}, err
	}
	if target.HasDist && isDir(p.Dist) {
		if err := moveDir(p.Dist, filepath.Join(p.Staging, stagedDist)); err != nil {
			return Release{}, fmt.Errorf("roll back: move live dist aside: %w", err)
		}
	}
	if err := d.crashPoint("rollback-dist-aside"); err != nil {
		return Release{}, err
	}
	if err := os.Rename(p.NewBinary(), p.Binary); err != nil {
		return Release{}, fmt.Errorf("roll back: rename binary live: %w", err)
	}
	if err := atomicfile.SyncDir(p.BinDir); err != nil {
		return Release{}, fmt.Errorf("roll back: %w", err)
	}
	if err := atomicfile.SyncDir(p.Staging); err != nil {
		return Release{}, fmt.Errorf("roll back: %w", err)
	}
	if err := d.crashPoint("rollback-committed"); err != nil {
		return Release{}, err
	}
	if err := d.finishRollback(p, ph); err != nil {
		return Release{}, fmt.Errorf("roll back: %w", err)
	}
	d.cfg.Log.Info().Str("root", p.Root).Str("release", target.ID).Str("backend_commit", target.Backend).Str("job", jobID).Msg("rolled back")
	target.RolledBackBy = jobID
	return target, nil
}

// finishRollback moves the release's dist live, records it as current and
// removes it from the history. Idempotent.
func (d *Deployer) finishRollback(p Paths, ph phase) error {
	if !validID(ph.Release) {
		return fmt.Errorf("finish rollback: bad release id %q", ph.Release)
	}
	dir := filepath.Join(p.Releases, ph.Release)
	if relDist := filepath.Join(dir, "dist"); isDir(relDist) {
		if err := os.RemoveAll(p.Dist); err != nil {
			return fmt.Errorf("remove live dist: %w", err)
		}
		if err := d.crashPoint("finish-rollback-dist-removed"); err != nil {
			return err
		}
		if err := moveDir(relDist, p.Dist); err != nil {
			return fmt.Errorf("restore release dist: %w", err)
		}
	}
	// The directory is gone once the release is recorded (below): a
	// second finish must not overwrite the record.
	if isDir(dir) {
		var r Release
		data, err := os.ReadFile(filepath.Join(dir, releaseFile))
		switch {
		case err == nil:
			if err := json.Unmarshal(data, &r); err != nil {
				return fmt.Errorf("parse %s: %w", filepath.Join(dir, releaseFile), err)
			}
		case !errors.Is(err, fs.ErrNotExist):
			return fmt.Errorf("read release: %w", err)
		}
		r.ID = ph.Release
		r.Unverified = false
		r.RolledBackBy = ph.By
		if err := writeJSON(filepath.Join(p.Releases, currentFile), r); err != nil {
			return err
		}
	}
	if err := d.crashPoint("finish-rollback-recorded"); err != nil {
		return err
	}
	// Out of the history in one rename (into staging, removed next), so
	// that a half-deleted directory is never taken for a release.
	if exists(dir) {
		if err := os.Rename(dir, filepath.Join(p.Staging, "made-live")); err != nil {
			return fmt.Errorf("remove rolled-back-to release: %w", err)
		}
	}
	return removeStaging(p)
}
