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

// Read reads the trigger name in opts.Dir. settled is false while a
// writer has it open (or, without a lease, while it changed recently); a
// refused file is settled, with Refuse set. A file that vanished returns
// an error wrapping fs.ErrNotExist.
func Read(opts Options, name string) (f File, settled bool, err error) {
	opts.defaults()
	f.Name = name
	path := filepath.Join(opts.Dir, name)
	st, err := os.Lstat(path)
	if err != nil {
		return f, false, fmt.Errorf("stat trigger: %w", err)
	}
	f.Key = fileKey(st)
	if refuse := refuseMode(st.Mode()); refuse != "" {
		f.Refuse = refuse
		return f, true, nil
	}
	if st.Size() > opts.MaxSize {
		f.Refuse = fmt.Sprintf("file is %d bytes, more than the %d a trigger may hold", st.Size(), opts.MaxSize)
		return f, true, nil
	}
	// O_NOFOLLOW and O_NONBLOCK: if the file was swapped for a link or a
	// FIFO since the Lstat, the open fails or does not block.
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ELOOP) {
		f.Refuse = "is a symbolic link; triggers must be regular files"
		return f, true, nil
	}
	if errors.Is(err, unix.EACCES) {
		f.Refuse = "cannot be read: permission denied (make it readable by the concierge user)"
		return f, true, nil
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
	f.Key = fileKey(fst)
	if refuse := refuseMode(fst.Mode()); refuse != "" {
		f.Refuse = refuse
		return f, true, nil
	}
	ok, err := noWriters(fd, fst, opts)
	if err != nil {
		return f, false, err
	}
	if !ok {
		return f, false, nil
	}
	defer unix.FcntlInt(uintptr(fd), unix.F_SETLEASE, unix.F_UNLCK) //nolint:errcheck // dropping a lease we may not hold
	data, err := io.ReadAll(io.LimitReader(file, opts.MaxSize+1))
	if err != nil {
		return f, false, fmt.Errorf("read trigger: %w", err)
	}
	if int64(len(data)) > opts.MaxSize {
		f.Refuse = fmt.Sprintf("file is more than the %d bytes a trigger may hold", opts.MaxSize)
		return f, true, nil
	}
	f.Data = data
	return f, true, nil
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

// Scan reads every trigger directly in opts.Dir, in name order. It
// returns the settled ones and the names still being written.
func Scan(opts Options) (files []File, unsettled []string, err error) {
	opts.defaults()
	names, err := list(opts)
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
