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

// A release is a directory <root>/bin/releases/<id> that holds everything
// that runs: the backend binary, the frontend tree (its sources,
// package.json, lock file, node_modules/ and dist/) and the Tailwind
// whitelist JSON made from that dist. The live release is named by
// current.json; the live binary <root>/bin/tractstack-go is a hard link to
// the release's, and the live tree's dist/ (<src>/my-tractstack/dist,
// where pm2 runs dist/server/entry.mjs) is a symbolic link into the
// release's frontend/dist, so the running server resolves its imports from
// the release's own node_modules/ (Node resolves a module from its real
// path). Going live is "apply": a few renames, each atomic.
//
// The staging directory <root>/bin/releases/.staging holds one operation in
// flight on a target. Its files are the state of a small state machine:
//
//	build    JSON naming the release being built (Prepare); the release
//	         directory has no release.json until Swap commits
//	phase    JSON naming the operation (swap or rollback), the release
//	         going live and the one it replaces; written (fsync, rename)
//	         once the release is complete and synced to disk
//
// The commit point is the phase file. Recover decides from what is on disk
// alone (Decide): no staging → nothing to do; staging without a phase →
// the commit did not happen: undo (delete the release being built); a
// phase → it did: finish the operation (apply the release, record it,
// discard what it replaces). Every step of undo and finish is idempotent,
// so a crash during Recover is recovered by the next one.
const (
	buildFile   = "build"
	phaseFile   = "phase"
	opSwap      = "swap"
	opRollback  = "rollback"
	phaseBroken = "unreadable"
)

// Build is a release being built: where the builders put their output.
type Build struct {
	ID        string
	Dir       string // <releases>/<id>
	Binary    string // <dir>/tractstack-go
	Frontend  string // <dir>/frontend: the frontend tree the build runs in
	Dist      string // <dir>/frontend/dist
	Entry     string // <dir>/frontend/dist/server/entry.mjs
	Whitelist string // <dir>/whitelist.json
}

// ReleaseDir returns where release id of p lives and its parts.
func (p Paths) ReleaseDir(id string) Build {
	dir := filepath.Join(p.Releases, id)
	front := filepath.Join(dir, "frontend")
	return Build{
		ID: id, Dir: dir,
		Binary:    filepath.Join(dir, "tractstack-go"),
		Frontend:  front,
		Dist:      filepath.Join(front, "dist"),
		Entry:     filepath.Join(front, "dist", "server", "entry.mjs"),
		Whitelist: filepath.Join(dir, "whitelist.json"),
	}
}

// building is the content of the build file.
type building struct {
	ID string `json:"id"`
}

// phase is the content of the phase file.
type phase struct {
	Op string `json:"op"`
	// To is the release going live; From the one that was live ("" for
	// none recorded).
	To   string `json:"to"`
	From string `json:"from,omitempty"`
	// Discard: From is deleted once To is live (a swap replacing a
	// release that never passed its checks; every rollback).
	Discard bool `json:"discard,omitempty"`
	// By is, for a rollback, the id of the job rolling back ("" for
	// none), recorded as the live release's RolledBackBy.
	By string `json:"by,omitempty"`
}

// Facts are what Recover observes in the staging directory.
type Facts struct {
	Staging bool   // the staging directory exists
	Phase   string // "", "swap", "rollback", or "unreadable"
}

// Action is what Recover does.
type Action string

// Recover's actions.
const (
	// ActNone: nothing was in flight.
	ActNone Action = "none"
	// ActUndo: the commit did not happen; delete the release being built.
	ActUndo Action = "undo"
	// ActFinishSwap: a swap was committed; make its release live.
	ActFinishSwap Action = "finish-swap"
	// ActFinishRollback: a rollback was committed; make its release live.
	ActFinishRollback Action = "finish-rollback"
	// ActStuck: a phase that cannot be read; an operator must look (the
	// live files are not touched).
	ActStuck Action = "stuck"
)

// Decide is Recover's decision, a pure function of what is on disk.
func Decide(f Facts) Action {
	switch {
	case !f.Staging:
		return ActNone
	case f.Phase == "":
		return ActUndo // a build was in progress or failed
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
	f := Facts{Staging: true}
	data, err := os.ReadFile(filepath.Join(p.Staging, phaseFile))
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return Facts{}, ph, fmt.Errorf("read phase: %w", err)
	default:
		if err := json.Unmarshal(data, &ph); err != nil || (ph.Op != opSwap && ph.Op != opRollback) || !validID(ph.To) {
			f.Phase = phaseBroken
		} else {
			f.Phase = ph.Op
		}
	}
	return f, ph, nil
}

// Recover brings the target back to a state where the live binary and
// frontend come from one release, after an operation was interrupted (a
// crash, a kill -9, a failed build). It returns what it did. Call it
// before any operation on the target; Prepare and Rollback do.
func (d *Deployer) Recover(ctx context.Context, p Paths) (Action, error) {
	f, ph, err := observe(p)
	if err != nil {
		return "", fmt.Errorf("recover %s: %w", p.Root, err)
	}
	act := Decide(f)
	if act != ActNone {
		d.cfg.Log.Warn().Str("root", p.Root).Str("action", string(act)).Str("phase", f.Phase).Msgf("recover interrupted deploy in %s: %s", p.Root, act)
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
		err = fmt.Errorf("phase file in %s is unreadable; the live release was not touched (look at it, then remove %s)", p.Staging, p.Staging)
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
		return "undid an interrupted build"
	case ActFinishSwap:
		return "finished swap"
	case ActFinishRollback:
		return "finished rollback"
	case ActStuck:
		return "stuck: unreadable phase"
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

// undo deletes the release being built and the staging directory.
func (d *Deployer) undo(p Paths) error {
	var b building
	data, err := os.ReadFile(filepath.Join(p.Staging, buildFile))
	switch {
	case err == nil:
		if json.Unmarshal(data, &b) == nil && validID(b.ID) {
			if cur, ok, _ := Current(p); !ok || cur.ID != b.ID {
				if err := trash(p, b.ID); err != nil {
					return fmt.Errorf("remove unfinished release %s: %w", b.ID, err)
				}
			}
		}
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("read build file: %w", err)
	}
	if err := d.crashPoint("undo-release-removed"); err != nil {
		return err
	}
	return removeStaging(p)
}

func removeStaging(p Paths) error {
	if err := os.RemoveAll(p.Staging); err != nil {
		return fmt.Errorf("remove staging: %w", err)
	}
	return atomicfile.SyncDir(p.Releases)
}

// trash removes release id from the history: out of it in one rename (so
// that a half-deleted directory is never taken for a release), then
// deleted. Idempotent.
func trash(p Paths, id string) error {
	dir := filepath.Join(p.Releases, id)
	gone := filepath.Join(p.Releases, ".prune-"+id)
	if exists(dir) {
		if err := os.RemoveAll(gone); err != nil {
			return err
		}
		if err := os.Rename(dir, gone); err != nil {
			return err
		}
	}
	return os.RemoveAll(gone)
}

// Prepare starts a build of target p: it recovers anything left over,
// makes sure what is live is a release of its own (on a host that the
// concierge has not deployed to yet, live describes it: its commits), and
// reserves a new release directory. The builders then write into the
// returned Build (StageFrontend first copies the frontend tree into it);
// nothing live changes until Swap. Abort undoes a prepared build.
func (d *Deployer) Prepare(ctx context.Context, p Paths, live Release) (Build, error) {
	if _, err := d.Recover(ctx, p); err != nil {
		return Build{}, err
	}
	if err := d.adopt(p, live); err != nil {
		return Build{}, fmt.Errorf("keep the live release: %w", err)
	}
	if err := os.MkdirAll(p.Staging, 0o755); err != nil {
		return Build{}, fmt.Errorf("create staging: %w", err)
	}
	id := newID(p.Releases, d.cfg.Now())
	if err := writeJSON(filepath.Join(p.Staging, buildFile), building{ID: id}); err != nil {
		return Build{}, fmt.Errorf("record build: %w", err)
	}
	if err := d.crashPoint("prepare-staging-created"); err != nil {
		return Build{}, err
	}
	b := p.ReleaseDir(id)
	if err := os.MkdirAll(b.Dir, 0o755); err != nil {
		return Build{}, fmt.Errorf("create release dir: %w", err)
	}
	return b, d.crashPoint("prepare-release-created")
}

// Abort undoes a prepared build: its release directory is deleted;
// nothing live has changed.
func (d *Deployer) Abort(ctx context.Context, p Paths) error {
	f, _, err := observe(p)
	if err != nil {
		return fmt.Errorf("abort: %w", err)
	}
	if f.Phase != "" {
		return fmt.Errorf("abort: the swap in %s was already committed", p.Staging)
	}
	if err := d.undo(p); err != nil {
		return fmt.Errorf("abort: %w", err)
	}
	return nil
}

// Swap commits a prepared build b: once its binary and frontend are
// complete, it records the release (next: its commits), syncs it to disk
// and commits; then the release goes live (apply) and is recorded as
// current, unverified until MarkVerified. The release that was live stays
// in the history for rollback, unless it never passed its checks
// (current.json says unverified): then it is discarded, so that a build
// re-run after an interruption between its swap and its checks does not
// make its own untested build the rollback target. Older releases beyond
// Keep are pruned.
func (d *Deployer) Swap(ctx context.Context, p Paths, b Build, next Release) error {
	f, _, err := observe(p)
	if err != nil {
		return fmt.Errorf("swap: %w", err)
	}
	if !f.Staging || f.Phase != "" || !validID(b.ID) || !isDir(b.Dir) {
		return fmt.Errorf("swap: nothing prepared in %s (staging %t, phase %q, release %q)", p.Staging, f.Staging, f.Phase, b.ID)
	}
	if !isRegular(b.Binary) {
		return fmt.Errorf("swap: the new release has no backend binary %s", b.Binary)
	}
	if !isRegular(b.Entry) {
		return fmt.Errorf("swap: the new release has no frontend entry %s", b.Entry)
	}
	next.ID = b.ID
	next.LiveAt = d.cfg.Now().UTC()
	next.Unverified = true
	next.RolledBackBy = ""
	if err := writeJSON(filepath.Join(b.Dir, releaseFile), next); err != nil {
		return fmt.Errorf("swap: record release: %w", err)
	}
	// Everything the release holds reaches the disk before it can go
	// live: after a crash it is applied as it is.
	if err := syncFS(b.Dir); err != nil {
		return fmt.Errorf("swap: %w", err)
	}
	if err := d.crashPoint("swap-release-synced"); err != nil {
		return err
	}
	ph := phase{Op: opSwap, To: b.ID}
	cur, ok, err := Current(p)
	if err != nil {
		d.cfg.Log.Warn().Err(err).Str("root", p.Root).Msgf("live release of %s unknown: %v", p.Root, err)
	}
	if ok && cur.ID != b.ID {
		ph.From = cur.ID
		ph.Discard = cur.Unverified
	}
	if err := writeJSON(filepath.Join(p.Staging, phaseFile), ph); err != nil {
		return fmt.Errorf("swap: write phase: %w", err)
	}
	if err := d.crashPoint("swap-committed"); err != nil {
		return err
	}
	d.cfg.Log.Info().Str("root", p.Root).Str("release", b.ID).Str("backend_commit", next.Backend).Str("replaced", ph.From).Bool("discard_replaced", ph.Discard).Msgf("swapping release %s live", b.ID)
	if err := d.finishSwap(p, ph); err != nil {
		return fmt.Errorf("swap: %w", err)
	}
	return nil
}

// finishSwap makes the committed release live, records it and discards
// the replaced one when the swap says so. Idempotent.
func (d *Deployer) finishSwap(p Paths, ph phase) error {
	r, err := readRelease(p, ph.To)
	if err != nil {
		return err
	}
	if err := d.apply(p, r); err != nil {
		return err
	}
	if err := d.crashPoint("finish-swap-applied"); err != nil {
		return err
	}
	r.Unverified = true
	r.RolledBackBy = ""
	if err := writeJSON(filepath.Join(p.Releases, currentFile), r); err != nil {
		return err
	}
	if err := d.crashPoint("finish-swap-recorded"); err != nil {
		return err
	}
	if ph.Discard && ph.From != "" && ph.From != ph.To {
		label := "release " + ph.From
		if prev, err := readRelease(p, ph.From); err == nil {
			label = prev.Label()
		}
		d.cfg.Log.Warn().Str("root", p.Root).Str("release", ph.From).Msgf("discard replaced release %s of %s: it never passed its checks, so it is no rollback target", label, p.Root)
		if err := trash(p, ph.From); err != nil {
			return fmt.Errorf("discard release %s: %w", ph.From, err)
		}
	}
	if err := removeStaging(p); err != nil {
		return err
	}
	return d.Prune(p)
}

// Rollback makes the newest kept release that passed its checks live; the
// release that was live is discarded (so a second rollback goes one
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
	cur, ok, err := Current(p)
	if err != nil {
		return Release{}, fmt.Errorf("roll back: %w", err)
	}
	if jobID != "" && ok && cur.RolledBackBy == jobID {
		d.cfg.Log.Info().Str("root", p.Root).Str("job", jobID).Str("release", cur.ID).Str("backend_commit", cur.Backend).Msgf("%s already rolled back by this job to %s: not rolling back again", p.Root, cur.Label())
		return cur, nil
	}
	rs, err := ListReleases(p)
	if err != nil {
		return Release{}, fmt.Errorf("roll back: %w", err)
	}
	target, found := RollbackTarget(rs)
	if !found {
		return Release{}, fmt.Errorf("no previous release to roll back to in %s", p.Releases)
	}
	if err := os.MkdirAll(p.Staging, 0o755); err != nil {
		return Release{}, fmt.Errorf("roll back: create staging: %w", err)
	}
	ph := phase{Op: opRollback, To: target.ID, By: jobID, Discard: true}
	if ok && cur.ID != target.ID {
		ph.From = cur.ID
	}
	if err := writeJSON(filepath.Join(p.Staging, phaseFile), ph); err != nil {
		return Release{}, fmt.Errorf("roll back: write phase: %w", err)
	}
	if err := d.crashPoint("rollback-committed"); err != nil {
		return Release{}, err
	}
	if err := d.finishRollback(p, ph); err != nil {
		return Release{}, fmt.Errorf("roll back: %w", err)
	}
	d.cfg.Log.Info().Str("root", p.Root).Str("release", target.ID).Str("backend_commit", target.Backend).Str("job", jobID).Msgf("rolled back to %s", target.Label())
	target.RolledBackBy = jobID
	target.Unverified = false
	return target, nil
}

// finishRollback makes the release live, records it as current and
// discards the one it replaced. Idempotent.
func (d *Deployer) finishRollback(p Paths, ph phase) error {
	r, err := readRelease(p, ph.To)
	if err != nil {
		return err
	}
	if err := d.apply(p, r); err != nil {
		return err
	}
	if err := d.crashPoint("finish-rollback-applied"); err != nil {
		return err
	}
	r.Unverified = false
	r.RolledBackBy = ph.By
	if err := writeJSON(filepath.Join(p.Releases, currentFile), r); err != nil {
		return err
	}
	if err := d.crashPoint("finish-rollback-recorded"); err != nil {
		return err
	}
	if ph.From != "" && ph.From != ph.To {
		if err := trash(p, ph.From); err != nil {
			return fmt.Errorf("discard release %s: %w", ph.From, err)
		}
	}
	return removeStaging(p)
}

// readRelease reads release id's record and what it holds on disk.
func readRelease(p Paths, id string) (Release, error) {
	if !validID(id) {
		return Release{}, fmt.Errorf("bad release id %q", id)
	}
	dir := filepath.Join(p.Releases, id)
	data, err := os.ReadFile(filepath.Join(dir, releaseFile))
	if err != nil {
		return Release{}, fmt.Errorf("read release %s: %w", id, err)
	}
	var r Release
	if err := json.Unmarshal(data, &r); err != nil {
		return Release{}, fmt.Errorf("parse %s: %w", filepath.Join(dir, releaseFile), err)
	}
	r.ID = id
	describe(p, &r)
	return r, nil
}

// newID makes a release id from t that no directory in releases has yet.
func newID(releases string, t time.Time) string {
	base := t.UTC().Format(idLayout)
	id := base
	for n := 1; exists(filepath.Join(releases, id)) || exists(filepath.Join(releases, ".prune-"+id)); n++ {
		id = fmt.Sprintf("%s-%d", base, n)
	}
	return id
}
