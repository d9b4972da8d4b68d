package main

import (
	"os"
	"path/filepath"
	"syscall"
)

// sameFileSystem reports whether a and b (or, for one that does not exist
// yet, its parent) are on one file system, so that a rename between them
// works. When it cannot tell, it says yes: the rename itself then falls
// back to reading in place.
func sameFileSystem(a, b string) bool {
	dev := func(p string) (uint64, bool) {
		for {
			st, err := os.Stat(p)
			if err == nil {
				if sys, ok := st.Sys().(*syscall.Stat_t); ok {
					return uint64(sys.Dev), true
				}
				return 0, false
			}
			parent := filepath.Dir(p)
			if parent == p {
				return 0, false
			}
			p = parent
		}
	}
	da, oka := dev(a)
	db, okb := dev(b)
	return !oka || !okb || da == db
}
