package deploy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tractstack/concierge/builder"
	"github.com/tractstack/concierge/internal/atomicfile"
)

// frontendManifests are the files of the frontend tree that a build may
// rewrite (pnpm up, pnpm install) and that go live with its release.
var frontendManifests = []string{"package.json", "pnpm-lock.yaml"}

// distLink is the name, in the live frontend tree, under which the new
// dist symbolic link is made before it takes the name dist.
const distLink = ".dist.concierge"

// apply makes release r live: the live binary becomes (a hard link to)
// the release's, the live tree's dist a symbolic link to the release's
// frontend/dist, the live package.json and lock file the release's, and
// the whitelist JSON the release's. Each part is one rename; apply is
// idempotent, so a crash part way is finished by running it again.
func (d *Deployer) apply(p Paths, r Release) error {
	b := p.ReleaseDir(r.ID)
	if r.HasBinary && !sameFile(b.Binary, p.Binary) {
		next := p.Binary + ".next"
		if err := linkOrCopy(b.Binary, next); err != nil {
			return fmt.Errorf("stage live binary: %w", err)
		}
		if err := os.Rename(next, p.Binary); err != nil {
			return fmt.Errorf("rename binary live: %w", err)
		}
		if err := atomicfile.SyncDir(p.BinDir); err != nil {
			return err
		}
	}
	if err := d.crashPoint("apply-binary"); err != nil {
		return err
	}
	if r.HasDist {
		if err := pointDist(p, b.Dist); err != nil {
			return err
		}
	}
	if err := d.crashPoint("apply-dist"); err != nil {
		return err
	}
	for _, name := range frontendManifests {
		if err := installFile(filepath.Join(b.Frontend, name), filepath.Join(p.FrontendSrc, name)); err != nil {
			return fmt.Errorf("put %s live: %w", name, err)
		}
	}
	if err := installFile(b.Whitelist, p.WhitelistJSON); err != nil {
		return fmt.Errorf("put whitelist live: %w", err)
	}
	return nil
}

// installFile makes dst a copy of src, atomically, when src exists and
// dst differs; a missing src leaves dst alone.
func installFile(src, dst string) error {
	data, err := os.ReadFile(src)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	mode := os.FileMode(0o644)
	if old, err := os.ReadFile(dst); err == nil {
		if bytes.Equal(old, data) {
			return nil
		}
		if fi, err := os.Stat(dst); err == nil {
			mode = fi.Mode().Perm()
		}
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	return atomicfile.WriteFile(dst, data, mode)
}

// pointDist makes the live tree's dist a symbolic link to target
// (relative, so that the link survives a move of the home). The link is
// made under another name and renamed over dist in one step; where dist
// is still a real directory (the first release on a host), the two are
// exchanged in one step (renameat2 RENAME_EXCHANGE) and the old directory,
// kept in the release it belongs to, is deleted. Where the filesystem
// cannot exchange, the directory is moved aside first (a moment without
// dist).
func pointDist(p Paths, target string) error {
	rel, err := filepath.Rel(p.FrontendSrc, target)
	if err != nil {
		return fmt.Errorf("link dist: %w", err)
	}
	tmp := filepath.Join(p.FrontendSrc, distLink)
	old := tmp + ".old"
	if err := os.RemoveAll(old); err != nil {
		return fmt.Errorf("remove %s: %w", old, err)
	}
	if link, err := os.Readlink(p.Dist); err == nil && link == rel {
		return os.RemoveAll(tmp)
	}
	if err := os.RemoveAll(tmp); err != nil {
		return fmt.Errorf("remove %s: %w", tmp, err)
	}
	if err := os.Symlink(rel, tmp); err != nil {
		return fmt.Errorf("link dist: %w", err)
	}
	fi, err := os.Lstat(p.Dist)
	switch {
	case err == nil && fi.IsDir():
		err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, p.Dist, unix.RENAME_EXCHANGE)
		if err != nil {
			// No exchange here: move the directory aside, then the link in.
			if err := os.Rename(p.Dist, old); err != nil {
				return fmt.Errorf("move live dist aside: %w", err)
			}
			if err := os.Rename(tmp, p.Dist); err != nil {
				return fmt.Errorf("rename dist link live: %w", err)
			}
			tmp = old
		}
		if err := atomicfile.SyncDir(p.FrontendSrc); err != nil {
			return err
		}
		if err := os.RemoveAll(tmp); err != nil {
			return fmt.Errorf("remove the previous dist directory: %w", err)
		}
	default:
		if err := os.Rename(tmp, p.Dist); err != nil {
			return fmt.Errorf("rename dist link live: %w", err)
		}
	}
	return atomicfile.SyncDir(p.FrontendSrc)
}

// adopt makes what is live a release of its own, on a host the concierge
// has not deployed to with releases yet, so that the first build keeps it
// for rollback: a release directory with a hard link to the live binary,
// the live frontend tree (sources copied, node_modules/ and dist/ hard
// linked) and the live whitelist JSON, recorded as current. live describes
// it (its commits) when current.json does not. Kept releases of the
// earlier layout (binary and dist only) get a frontend tree around their
// dist, with the live node_modules/. Nothing live is changed. A host with
// no live binary has nothing to keep.
func (d *Deployer) adopt(p Paths, live Release) error {
	cur, ok, err := Current(p)
	if err != nil {
		return err
	}
	if ok && validID(cur.ID) && isRegular(filepath.Join(p.Releases, cur.ID, releaseFile)) {
		return nil
	}
	if !isRegular(p.Binary) {
		return nil
	}
	if err := os.MkdirAll(p.Releases, 0o755); err != nil {
		return err
	}
	r := live
	if ok {
		r.Backend, r.Frontend, r.Unverified, r.LiveAt = cur.Backend, cur.Frontend, cur.Unverified, cur.LiveAt
	}
	r.RolledBackBy = ""
	r.ID = newID(p.Releases, d.cfg.Now())
	if r.LiveAt.IsZero() {
		r.LiveAt = d.cfg.Now().UTC()
	}
	start := time.Now()
	// Made under a name that is no release id, then renamed: a crash
	// leaves no half release in the history.
	tmp := filepath.Join(p.Releases, ".adopt-"+r.ID)
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	front := filepath.Join(tmp, "frontend")
	if err := os.MkdirAll(front, 0o755); err != nil {
		return err
	}
	if err := linkOrCopy(p.Binary, filepath.Join(tmp, "tractstack-go")); err != nil {
		return fmt.Errorf("keep live binary: %w", err)
	}
	if isDir(p.FrontendSrc) {
		if err := copySources(p.FrontendSrc, front); err != nil {
			return err
		}
		if isDir(filepath.Join(p.FrontendSrc, "node_modules")) {
			if err := keepTree(filepath.Join(p.FrontendSrc, "node_modules"), filepath.Join(front, "node_modules")); err != nil {
				return fmt.Errorf("keep live node_modules: %w", err)
			}
		}
		if dist, err := filepath.EvalSymlinks(p.Dist); err == nil && isDir(dist) {
			if err := keepTree(dist, filepath.Join(front, "dist")); err != nil {
				return fmt.Errorf("keep live dist: %w", err)
			}
		}
	}
	if isRegular(p.WhitelistJSON) {
		if err := linkOrCopy(p.WhitelistJSON, filepath.Join(tmp, "whitelist.json")); err != nil {
			return fmt.Errorf("keep live whitelist: %w", err)
		}
	}
	if err := writeJSON(filepath.Join(tmp, releaseFile), r); err != nil {
		return err
	}
	if err := d.convertLegacy(p); err != nil {
		return err
	}
	if err := syncFS(tmp); err != nil {
		return err
	}
	if err := d.crashPoint("adopt-made"); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(p.Releases, r.ID)); err != nil {
		return fmt.Errorf("keep the live release: %w", err)
	}
	if err := atomicfile.SyncDir(p.Releases); err != nil {
		return err
	}
	if err := writeJSON(filepath.Join(p.Releases, currentFile), r); err != nil {
		return err
	}
	d.cfg.Log.Info().Str("root", p.Root).Str("release", r.ID).Str("backend_commit", r.Backend).
		Int64("duration_ms", time.Since(start).Milliseconds()).
		Msgf("kept the live binary and frontend of %s as release %s, for rollback", p.Root, r.ID)
	return nil
}

// convertLegacy gives each kept release of the earlier layout (a binary
// and a dist/ beside it) a frontend tree: its dist moved in, with the live
// tree's package.json, lock file and node_modules/ (hard linked), the best
// guess of what that dist ran against.
func (d *Deployer) convertLegacy(p Paths) error {
	entries, err := os.ReadDir(p.Releases)
	if err != nil {
		return fmt.Errorf("list releases: %w", err)
	}
	for _, e := range entries {
		if !e.IsDir() || !validID(e.Name()) {
			continue
		}
		b := p.ReleaseDir(e.Name())
		oldDist := filepath.Join(b.Dir, "dist")
		if !isDir(oldDist) || exists(b.Frontend) {
			continue
		}
		tmp := b.Frontend + ".converting"
		if err := os.RemoveAll(tmp); err != nil {
			return err
		}
		if err := os.MkdirAll(tmp, 0o755); err != nil {
			return err
		}
		for _, name := range frontendManifests {
			if err := installFile(filepath.Join(p.FrontendSrc, name), filepath.Join(tmp, name)); err != nil {
				return fmt.Errorf("convert release %s: %w", b.ID, err)
			}
		}
		if nm := filepath.Join(p.FrontendSrc, "node_modules"); isDir(nm) {
			if err := keepTree(nm, filepath.Join(tmp, "node_modules")); err != nil {
				return fmt.Errorf("convert release %s: %w", b.ID, err)
			}
		}
		if err := os.Rename(oldDist, filepath.Join(tmp, "dist")); err != nil {
			return fmt.Errorf("convert release %s: %w", b.ID, err)
		}
		if err := os.Rename(tmp, b.Frontend); err != nil {
			return fmt.Errorf("convert release %s: %w", b.ID, err)
		}
		d.cfg.Log.Info().Str("release", b.ID).Msgf("kept release %s now holds a whole frontend tree", b.ID)
	}
	return nil
}

// StageFrontend fills the frontend tree of build b: the live tree's
// files (tracked and untracked, without dist/, node_modules/ and .git/)
// copied, and node_modules/ hard linked from the live release (or, before
// the first release, from the live tree), so that pnpm install of an
// unchanged lock file has nothing to do and a kept release costs little
// more than its own dist on disk. The live tree is only read.
func (d *Deployer) StageFrontend(ctx context.Context, p Paths, b Build, out io.Writer) error {
	if out == nil {
		out = io.Discard
	}
	start := time.Now()
	if err := os.MkdirAll(b.Frontend, 0o755); err != nil {
		return fmt.Errorf("stage frontend: %w", err)
	}
	if err := copySources(p.FrontendSrc, b.Frontend); err != nil {
		return fmt.Errorf("stage frontend: copy %s: %w", p.FrontendSrc, err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("stage frontend: %w", err)
	}
	base := filepath.Join(p.FrontendSrc, "node_modules")
	if cur, ok, err := Current(p); err == nil && ok && validID(cur.ID) {
		if nm := filepath.Join(p.ReleaseDir(cur.ID).Frontend, "node_modules"); isDir(nm) {
			base = nm
		}
	}
	linked := 0
	if isDir(base) {
		n, err := countingLinkTree(base, filepath.Join(b.Frontend, "node_modules"), true)
		if err != nil {
			return fmt.Errorf("stage frontend: link node_modules from %s: %w", base, err)
		}
		linked = n
	}
	fmt.Fprintf(out, "copied %s into %s (without dist, node_modules, .git); linked %d files of node_modules from %s in %s\n",
		p.FrontendSrc, b.Frontend, linked, base, time.Since(start).Round(time.Millisecond))
	return nil
}

// skipSource says which top-level entries of the frontend tree a release
// does not copy: what the build makes (dist), what comes from elsewhere
// (node_modules), the repository, and concierge's own link names.
func skipSource(name string) bool {
	return name == "dist" || name == "node_modules" || name == ".git" || strings.HasPrefix(name, distLink)
}

// copySources copies the frontend tree src into dst (which exists), but
// for the entries skipSource names; files are copied, not linked, so that
// a build that rewrites one in place never touches the live tree.
func copySources(src, dst string) error {
	entries, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if skipSource(e.Name()) {
			continue
		}
		if err := copyTree(filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// linkTree makes dst a copy of the directory src whose files are hard
// links to src's (symbolic links are copied as links). The small files
// that pnpm rewrites (those directly in node_modules/ and
// node_modules/.pnpm/, and the .bin shims) are copied instead, and local
// packages (localPackage) left out, so that a pnpm install in dst cannot
// change src through a shared inode; with a local package left out, dst
// loses builder.InstalledMark, so that pnpm install puts it back.
func linkTree(src, dst string) error {
	_, err := countingLinkTree(src, dst, true)
	return err
}

// keepTree is linkTree for a release kept as it is (the live tree
// adopted as a release): nothing will be installed in it, so local
// packages are linked too.
func keepTree(src, dst string) error {
	_, err := countingLinkTree(src, dst, false)
	return err
}

func countingLinkTree(src, dst string, leaveOutLocal bool) (int, error) {
	n := 0
	leftOut := false
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if leaveOutLocal && localPackage(rel) {
			leftOut = true
			return fs.SkipDir
		}
		switch t := d.Type(); {
		case t.IsDir():
			info, err := d.Info()
			if err != nil {
				return err
			}
			return os.MkdirAll(target, info.Mode().Perm()|0o700)
		case t&fs.ModeSymlink != 0:
			link, err := os.Readlink(path)
			if err != nil {
				return err
			}
			return os.Symlink(link, target)
		case t.IsRegular():
			parent := filepath.Dir(rel)
			if parent == "." || parent == ".pnpm" || filepath.Base(parent) == ".bin" {
				info, err := d.Info()
				if err != nil {
					return err
				}
				return copyFile(path, target, info.Mode().Perm(), false)
			}
			n++
			if err := os.Link(path, target); err != nil {
				info, ierr := d.Info()
				if ierr != nil {
					return ierr
				}
				return copyFile(path, target, info.Mode().Perm(), false)
			}
			return nil
		default:
			return nil // sockets and FIFOs are no part of a release
		}
	})
	if err == nil && leftOut {
		// pnpm must put the local packages back: not "installed".
		if rerr := os.Remove(filepath.Join(dst, builder.InstalledMark)); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			err = rerr
		}
	}
	return n, err
}

// localPackage says whether rel (relative to node_modules) is the
// directory pnpm keeps a local dependency in (file: or link: in
// package.json): pnpm imports such a package again at every install,
// writing its files in place, which through a hard link would change the
// release it came from. It is left out, and pnpm puts it back fresh from
// its store.
func localPackage(rel string) bool {
	dir, name, ok := strings.Cut(filepath.ToSlash(rel), "/")
	return ok && dir == ".pnpm" && !strings.Contains(name, "/") && (strings.Contains(name, "@file+") || strings.Contains(name, "@link+"))
}

// sameFile reports whether a and b are the same file (hard links).
func sameFile(a, b string) bool {
	fa, err := os.Stat(a)
	if err != nil {
		return false
	}
	fb, err := os.Stat(b)
	return err == nil && os.SameFile(fa, fb)
}

// syncFS flushes the filesystem that holds dir to disk (syncfs): one call
// for a release's thousands of files and directories.
func syncFS(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer f.Close()
	for {
		err := unix.Syncfs(int(f.Fd()))
		if !errors.Is(err, syscall.EINTR) {
			if err != nil {
				return fmt.Errorf("sync %s: %w", dir, err)
			}
			return nil
		}
	}
}
