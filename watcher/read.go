// Package watcher notices trigger files in the state directory and hands
// them over whole and settled: fsnotify in watch mode, a directory scan at
// start, after an fsnotify overflow and in run mode. It knows nothing of
// CSV, jobs or builds; it never follows a link, never blocks on a FIFO or
// a device, never reads more than a limit, and never hands over a file
// that a writer still has open.
package watcher

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// File is a trigger file handed over: its content, or why it was refused
// unread.
type File struct {
	Name string
	// Key identifies the file itself: inode, modification time and size.
	// A later file that reuses the name has another key.
	Key    string
	Data   []byte
	Refuse string
	// Path is where the file is now: in the claim directory once claimed,
	// in the state directory when it could not be moved.
	Path string
}

// fileKey is the identity of the file st describes.
func fileKey(st os.FileInfo) string {
	var ino uint64
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		ino = sys.Ino
	}
	return fmt.Sprintf("%d-%d-%d", ino, st.ModTime().UnixNano(), st.Size())
}

// Options say what a trigger is and how to read one.
type Options struct {
	Dir     string
	Match   func(name string) bool
	MaxSize int64
	// Quiet is how long a file must stay unchanged to count as settled
	// when the kernel cannot tell whether a writer has it open (no lease:
	// another owner, or a filesystem without leases). Default 1s.
	Quiet time.Duration
	Now   func() time.Time
	// ClaimDir, when set, is where a settled trigger is moved (one
	// rename) before it is read, so that a producer that writes the same
	// name again makes a new file instead of changing the one being
	// taken in. It must be on the state directory's file system; where it
	// is not, triggers are read in place.
	ClaimDir string
}

func (o *Options) defaults() {
	if o.Quiet <= 0 {
		o.Quiet = time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.MaxSize <= 0 {
		o.MaxSize = 64 << 10
	}
}

// Read reads the trigger name in opts.Dir, claiming it first when
// opts.ClaimDir is set. settled is false while a writer has it open (or,
// without a lease, while it changed recently); a refused file is settled,
// with Refuse set. A file that vanished returns an error wrapping
// fs.ErrNotExist; a claim directory that cannot be written returns one
// wrapping ErrClaimDir. Anything else that goes wrong with this one file
// is a refusal that says what happened.
func Read(opts Options, name string) (f File, settled bool, err error) {
	opts.defaults()
	f, settled, err = read(opts, opts.Dir, name, name, opts.ClaimDir != "")
	if err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, ErrClaimDir) {
		// One file's trouble is reported on that file alone.
		return File{Name: name, Path: filepath.Join(opts.Dir, name), Key: f.Key,
			Refuse: "cannot be read: " + err.Error()}, true, nil
	}
	return f, settled, err
}

// ErrClaimDir marks a claim directory that cannot be written: no trigger
// can be taken in until it can.
var ErrClaimDir = errors.New("cannot move triggers into the data directory")

// maxNameBytes bounds the trigger name kept in a claimed or set-aside
// file name, so that a prefix, a suffix and a temporary name still fit
// in the 255 bytes a file name may have.
const maxNameBytes = 180

// ShortName is name cut to maxNameBytes bytes.
func ShortName(name string) string {
	if len(name) <= maxNameBytes {
		return name
	}
	return name[:maxNameBytes]
}

func read(opts Options, dir, entry, name string, claim bool) (f File, settled bool, err error) {
	f.Name = name
	path := filepath.Join(dir, entry)
	f.Path = path
	st, err := os.Lstat(path)
	if err != nil {
		return f, false, fmt.Errorf("stat trigger: %w", err)
	}
	f.Key = fileKey(st)
	if !claim && dir == opts.ClaimDir {
		f.Key = claimKey(path)
	}
	claimNow := func() error {
		if !claim {
			return nil
		}
		claimed, err := claimFile(opts, path, ShortName(name))
		if err != nil {
			return err
		}
		path, f.Path, f.Name = claimed, claimed, ShortName(name)
		if claimed != filepath.Join(dir, entry) {
			f.Key = claimKey(claimed)
		}
		return nil
	}
	refuse := func(why string) (File, bool, error) {
		if err := claimNow(); err != nil {
			if errors.Is(err, ErrClaimDir) || errors.Is(err, fs.ErrNotExist) {
				return f, false, err
			}
			why += "; " + err.Error()
		}
		f.Refuse = why
		return f, true, nil
	}
	if why := refuseMode(st.Mode()); why != "" {
		return refuse(why)
	}
	if st.Size() > opts.MaxSize {
		return refuse(fmt.Sprintf("file is %d bytes, more than the %d a trigger may hold", st.Size(), opts.MaxSize))
	}
	// O_NOFOLLOW and O_NONBLOCK: if the file was swapped for a link or a
	// FIFO since the Lstat, the open fails or does not block.
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ELOOP) {
		return refuse("is a symbolic link; triggers must be regular files")
	}
	if errors.Is(err, unix.EACCES) {
		return refuse("cannot be read: permission denied (make it readable by the concierge user)")
	}
	if err != nil {
		return f, false, fmt.Errorf("open trigger: %w", &os.PathError{Op: "open", Path: path, Err: err})
	}
	file := os.NewFile(uintptr(fd), path)
	defer file.Close()
	fst, err := file.Stat()
	if err != nil {
		return f, false, fmt.Errorf("stat trigger: %w", err)
	}
	if !claim && dir == opts.ClaimDir {
		f.Key = claimKey(path)
	} else {
		f.Key = fileKey(fst)
	}
	if why := refuseMode(fst.Mode()); why != "" {
		return refuse(why)
	}
	ok, err := noWriters(fd, fst, opts)
	if err != nil {
		return f, false, err
	}
	if !ok {
		return f, false, nil
	}
	defer unix.FcntlInt(uintptr(fd), unix.F_SETLEASE, unix.F_UNLCK) //nolint:errcheck // dropping a lease we may not hold
	// Claimed while no writer has it open: a producer that writes the
	// name again from now on creates a new file.
	if err := claimNow(); err != nil {
		if errors.Is(err, ErrClaimDir) || errors.Is(err, fs.ErrNotExist) {
			return f, false, err
		}
		f.Refuse = err.Error()
		return f, true, nil
	}
	data, err := io.ReadAll(io.LimitReader(file, opts.MaxSize+1))
	if err != nil {
		f.Refuse = "cannot be read: " + err.Error()
		return f, true, nil
	}
	if int64(len(data)) > opts.MaxSize {
		f.Refuse = fmt.Sprintf("file is more than the %d bytes a trigger may hold", opts.MaxSize)
		return f, true, nil
	}
	f.Data = data
	return f, true, nil
}

// claimFile moves the trigger at path into opts.ClaimDir under a new,
// unique name that keeps name after the first '-', and returns the new
// path. It returns the old path unchanged when the two directories are on
// different file systems (the trigger is then read in place).
func claimFile(opts Options, path, name string) (string, error) {
	var err error
	for range 100 {
		claimed := filepath.Join(opts.ClaimDir, fmt.Sprintf("%d-%s", time.Now().UnixNano(), name))
		// Never over another claimed file, whatever the clock does.
		err = unix.Renameat2(unix.AT_FDCWD, path, unix.AT_FDCWD, claimed, unix.RENAME_NOREPLACE)
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
			if _, serr := os.Lstat(claimed); serr == nil {
				continue
			}
			err = os.Rename(path, claimed)
		}
		if !errors.Is(err, unix.EEXIST) {
			if err == nil {
				return claimed, nil
			}
			break
		}
	}
	switch {
	case errors.Is(err, unix.EXDEV):
		return path, nil
	case errors.Is(err, unix.ENOENT):
		if _, serr := os.Lstat(path); errors.Is(serr, fs.ErrNotExist) {
			return "", fmt.Errorf("claim trigger: %w", serr) // taken or removed meanwhile
		}
		return "", fmt.Errorf("%w: %v", ErrClaimDir, err)
	case errors.Is(err, unix.EROFS), errors.Is(err, unix.ENOSPC), errors.Is(err, unix.EDQUOT),
		errors.Is(err, unix.EIO), errors.Is(err, unix.ENOTDIR), errors.Is(err, unix.EEXIST):
		return "", fmt.Errorf("%w: %v", ErrClaimDir, err)
	}
	return "", fmt.Errorf("cannot be moved out of the state directory: %w", err)
}

// claimKey is the Key of a claimed file: its unique name in the claim
// directory. Inode numbers are reused as soon as a file is removed, so
// inode, time and size can repeat for a new file; the claimed name cannot.
func claimKey(path string) string {
	stamp, _, _ := strings.Cut(filepath.Base(path), "-")
	return "claim-" + stamp
}

// Claimed reads every file left in opts.ClaimDir (an intake interrupted
// after its claim), in name order; their names are the trigger names
// they were claimed under.
func Claimed(opts Options) ([]File, error) {
	opts.defaults()
	if opts.ClaimDir == "" {
		return nil, nil
	}
	entries, err := os.ReadDir(opts.ClaimDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w: list %s: %v", ErrClaimDir, opts.ClaimDir, err)
	}
	// A file was settled when it was claimed: its age does not matter.
	opts.Now = func() time.Time { return time.Now().Add(opts.Quiet) }
	var files []File
	for _, e := range entries {
		_, name, ok := strings.Cut(e.Name(), "-")
		if !ok || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		f, settled, err := read(opts, opts.ClaimDir, e.Name(), name, false)
		if errors.Is(err, fs.ErrNotExist) || (err == nil && !settled) {
			continue // gone, or a writer that opened it before the claim is still at it
		}
		if err != nil {
			f = File{Name: name, Key: f.Key, Path: filepath.Join(opts.ClaimDir, e.Name()), Refuse: "cannot be read: " + err.Error()}
		}
		files = append(files, f)
	}
	return files, nil
}

// noWriters asks the kernel whether anyone has the file open for writing:
// a read lease is granted only when nobody does. Where a lease cannot be
// taken (not our file, or the filesystem has no leases) it falls back to
// the file's age. An empty file is given the quiet time too, since a
// producer may create it and write it through a second open.
func noWriters(fd int, st os.FileInfo, opts Options) (bool, error) {
	age := opts.Now().Sub(st.ModTime())
	if st.Size() == 0 && age < opts.Quiet {
		return false, nil
	}
	_, err := unix.FcntlInt(uintptr(fd), unix.F_SETLEASE, unix.F_RDLCK)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, unix.EAGAIN):
		return false, nil
	case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM), errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOSYS):
		return age >= opts.Quiet, nil
	default:
		return false, fmt.Errorf("check writers of trigger: %w", err)
	}
}

func refuseMode(m fs.FileMode) string {
	switch {
	case m&fs.ModeSymlink != 0:
		return "is a symbolic link; triggers must be regular files"
	case m&fs.ModeNamedPipe != 0:
		return "is a FIFO; triggers must be regular files"
	case m&fs.ModeDevice != 0:
		return "is a device; triggers must be regular files"
	case m&fs.ModeSocket != 0:
		return "is a socket; triggers must be regular files"
	case m.IsDir():
		return "is a directory; triggers must be regular files"
	case !m.IsRegular():
		return "is not a regular file"
	}
	return ""
}

// list names the triggers directly in opts.Dir, sorted.
func list(opts Options) ([]string, error) {
	entries, err := os.ReadDir(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("scan state dir: %w", err)
	}
	var names []string
	for _, e := range entries {
		if opts.Match(e.Name()) {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	return names, nil
}

// Scan reads every trigger left in the claim directory and every trigger
// directly in opts.Dir, in name order, claiming the settled ones. It
// returns them and the names still being written. Its only error is a
// state or claim directory that cannot be listed or written.
func Scan(opts Options) (files []File, unsettled []string, err error) {
	opts.defaults()
	names, err := list(opts)
	if err != nil {
		return nil, nil, err
	}
	files, err = Claimed(opts)
	if err != nil {
		return nil, nil, err
	}
	for _, name := range names {
		f, ok, err := Read(opts, name)
		if errors.Is(err, fs.ErrNotExist) {
			continue // taken or removed since the listing
		}
		if err != nil {
			return files, unsettled, err
		}
		if ok {
			files = append(files, f)
		} else {
			unsettled = append(unsettled, name)
		}
	}
	return files, unsettled, nil
}
