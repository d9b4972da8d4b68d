package queue

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tractstack/concierge/watcher"
)

// ops reads a fuzz input as a stream of small decisions.
type ops struct{ b []byte }

func (o *ops) byte() byte {
	if len(o.b) == 0 {
		return 0
	}
	c := o.b[0]
	o.b = o.b[1:]
	return c
}

func (o *ops) bytes(n int) []byte {
	n = min(n, len(o.b))
	out := o.b[:n]
	o.b = o.b[n:]
	return out
}

// fuzzName makes a file name from the input: mostly build-*.csv with
// random middles (long ones, control characters, dots), sometimes not a
// trigger at all.
func (o *ops) name() string {
	kind := o.byte()
	mid := strings.Map(func(r rune) rune {
		if r == '/' || r == 0 {
			return '_'
		}
		return r
	}, string(o.bytes(int(o.byte())%12)))
	switch kind % 8 {
	case 0:
		return "main_build.csv"
	case 1:
		return "build-" + strings.Repeat("x", 200+int(o.byte())%46) + ".csv" // near the name limit
	case 2:
		return "build-" + mid + ".txt"
	default:
		return "build-" + mid + ".csv"
	}
}

var fuzzContents = []string{
	"type=main,tenant=default,command=build\n",
	"type=dedicated,site=acme,command=build",
	"type=prod,tenant=bbb,command=restart\r\n",
	"type,tenant,site,command\nmain,aaa,,build\ndedicated,,acme,rollback\n",
	"type=dedicated,site=../x,command=build",
	"",
	"type=main,command=build\x1b[31m\ninjected",
}

// FuzzIntake drives whole intake (the watcher's scan and claim, then the
// queue) over a temporary state directory with random names, sizes, file
// types and contents, and with producers writing the same names again
// between the scan and the intake. However the files come, intake never
// fails or stalls, every valid trigger file ends up in a job exactly once,
// every invalid one in exactly one rejected job, and nothing is left in
// state/ (but non-triggers) or in the claim directory.
func FuzzIntake(f *testing.F) {
	f.Add([]byte{3, 4, 'a', 'b', 'c', 'd', 0, 9, 3, 0, 1, 2, 5})
	f.Add([]byte{1, 3, 0, 7, 1, 0, 2, 4, 1, 1, 1, 9, 9, 9, 9})
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20})
	f.Add([]byte("\x05\x02\x1b[\x04\x03\x02\x07\x05\x06\x08\x00\x02\x01\x03"))
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) > 400 {
			in = in[:400]
		}
		home := t.TempDir()
		state, data := filepath.Join(home, "state"), filepath.Join(home, "concierge")
		if err := os.MkdirAll(state, 0o755); err != nil {
			t.Fatal(err)
		}
		q, err := Open(Config{DataDir: data, StateDir: state, SiteExists: sites("acme"), Log: zerolog.Nop()})
		if err != nil {
			t.Fatal(err)
		}
		opts := watcher.Options{Dir: state, Match: IsTriggerName, MaxSize: 300, ClaimDir: q.Store().ClaimDir(),
			Now: func() time.Time { return time.Now().Add(time.Hour) }} // every file counts as settled
		var valid, invalid int // trigger files written, as intake should count them
		live := map[string]string{}
		o := &ops{b: in}
		write := func() {
			name := o.name()
			path := filepath.Join(state, name)
			kind := o.byte() % 12
			content := ""
			switch kind {
			case 0, 1, 2:
			case 3:
				content = strings.Repeat("type=main,command=build\n", 20) // more than MaxSize
			case 4:
				content = string(o.bytes(int(o.byte()) % 64))
			default:
				content = fuzzContents[int(kind)%len(fuzzContents)]
			}
			if _, err := os.Lstat(path); err == nil {
				if _, ok := live[name]; ok && kind > 2 {
					// A second write to a file not yet taken in: the same file.
					if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
						t.Fatal(err)
					}
					live[name] = content
				}
				return
			}
			var err error
			switch kind {
			case 0:
				err = os.Symlink("/etc/passwd", path)
			case 1:
				err = syscall.Mkfifo(path, 0o644)
			case 2:
				err = os.Mkdir(path, 0o755)
			default:
				err = os.WriteFile(path, []byte(content), 0o644)
			}
			if err != nil || !IsTriggerName(name) {
				return // a name the file system refuses, or not a trigger
			}
			if kind > 2 {
				live[name] = content
			} else {
				invalid++ // refused unread once claimed
			}
		}
		settle := func(files []watcher.File) {
			for _, f := range files {
				// Names are cut to watcher.ShortName when claimed; of two
				// long names alike in their first bytes, take the one
				// with this content.
				match := ""
				for n, c := range live {
					if watcher.ShortName(n) == f.Name && (match == "" || c == string(f.Data)) {
						match = n
					}
				}
				c, ok := live[match]
				if !ok {
					continue
				}
				delete(live, match)
				if _, _, err := Parse(f.Name, []byte(c), sites("acme")); err != nil || len(c) > 300 {
					invalid++
				} else {
					valid++
				}
			}
		}
		for round := 0; len(o.b) > 0 && round < 20; round++ {
			for n := o.byte() % 5; n > 0; n-- {
				write()
			}
			files, unsettled, err := watcher.Scan(opts)
			if err != nil || len(unsettled) > 0 {
				t.Fatalf("scan: %v, unsettled %v", err, unsettled)
			}
			settle(files)
			// Producers write again, the same names too, before intake ends.
			for n := o.byte() % 3; n > 0; n-- {
				write()
			}
			if _, err := q.Intake(toIncoming(files)); err != nil {
				t.Fatalf("intake: %v", err)
			}
		}
		for range 3 { // what is left is taken in by the next scans
			files, _, err := watcher.Scan(opts)
			if err != nil {
				t.Fatal(err)
			}
			settle(files)
			if _, err := q.Intake(toIncoming(files)); err != nil {
				t.Fatalf("intake: %v", err)
			}
		}
		if len(live) > 0 {
			t.Fatalf("triggers never taken in: %q", keys(live))
		}
		taken, rejected := map[string]int{}, map[string]int{}
		for _, j := range q.Jobs() {
			for _, id := range j.identities() {
				if j.State == Rejected {
					rejected[id]++
				} else {
					taken[id]++
				}
			}
		}
		for id, n := range rejected {
			if n != 1 || taken[id] > 0 {
				t.Fatalf("trigger %q is in %d rejected job(s) and %d other(s)", id, n, taken[id])
			}
		}
		if len(taken) != valid || len(rejected) != invalid {
			t.Fatalf("%d valid trigger files became %d, %d invalid became %d rejected", valid, len(taken), invalid, len(rejected))
		}
		for _, e := range dirNamesIn(t, state) {
			if IsTriggerName(e) {
				t.Fatalf("trigger %q left in state/", e)
			}
		}
		if left := dirNamesIn(t, q.Store().ClaimDir()); len(left) > 0 {
			t.Fatalf("left in the claim directory: %q", left)
		}
	})
}

func toIncoming(files []watcher.File) []Incoming {
	in := make([]Incoming, len(files))
	for i, f := range files {
		in[i] = Incoming{Name: f.Name, Key: f.Key, Data: f.Data, Refuse: f.Refuse, Path: f.Path}
	}
	return in
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func dirNamesIn(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}
