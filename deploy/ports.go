package deploy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
)

// Ports are the loopback ports of one target's services.
type Ports struct {
	Go    int
	Astro int
}

// ParsePorts reads a t8k-ports.conf: lines `SITE_ID=GO_PORT,ASTRO_PORT`,
// with blank lines and lines starting with '#' ignored. A malformed line
// is an error naming its number; a later line for the same site wins, as
// it would for a shell script sourcing the file top to bottom.
func ParsePorts(r io.Reader) (map[string]Ports, error) {
	out := map[string]Ports{}
	sc := bufio.NewScanner(r)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, val, ok := strings.Cut(line, "=")
		key = strings.TrimSpace(key)
		if !ok || key == "" {
			return nil, fmt.Errorf("parse ports line %d: want SITE_ID=GO_PORT,ASTRO_PORT, got %q", n, line)
		}
		goStr, astroStr, ok := strings.Cut(val, ",")
		if !ok {
			return nil, fmt.Errorf("parse ports line %d: want GO_PORT,ASTRO_PORT after %q=, got %q", n, key, val)
		}
		goPort, err := parsePort(goStr)
		if err != nil {
			return nil, fmt.Errorf("parse ports line %d: go port: %w", n, err)
		}
		astroPort, err := parsePort(astroStr)
		if err != nil {
			return nil, fmt.Errorf("parse ports line %d: astro port: %w", n, err)
		}
		out[key] = Ports{Go: goPort, Astro: astroPort}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read ports: %w", err)
	}
	return out, nil
}

func parsePort(s string) (int, error) {
	p, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("parse %q: %w", s, err)
	}
	if p < 1 || p > 65535 {
		return 0, fmt.Errorf("port %d out of range", p)
	}
	return p, nil
}

// PortsOf picks the ports of a target from a parsed ports file.
func PortsOf(all map[string]Ports, p Paths) (Ports, bool) {
	ports, ok := all[p.PortsKey]
	return ports, ok
}

// ReadPorts reads the ports file of p and returns the target's ports;
// ok is false when the file or the target's line is absent.
func ReadPorts(p Paths) (ports Ports, ok bool, err error) {
	f, err := os.Open(p.PortsFile)
	if errors.Is(err, fs.ErrNotExist) {
		return Ports{}, false, nil
	}
	if err != nil {
		return Ports{}, false, fmt.Errorf("open ports file: %w", err)
	}
	defer f.Close()
	all, err := ParsePorts(f)
	if err != nil {
		return Ports{}, false, fmt.Errorf("read %s: %w", p.PortsFile, err)
	}
	ports, ok = PortsOf(all, p)
	return ports, ok, nil
}
