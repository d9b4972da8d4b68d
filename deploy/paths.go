package deploy

import (
	"fmt"
	"path/filepath"
	"regexp"
)

// siteRe is the id rule of the backend and the installer; a site that
// does not match never reaches a path.
var siteRe = regexp.MustCompile(`^[a-z0-9-]{3,12}$`)

// ValidSite reports whether site is a well-formed dedicated site id.
func ValidSite(site string) bool { return siteRe.MatchString(site) }

// Paths is where one target (the main install or a dedicated site) lives,
// what its services are called and where its releases are kept. It is
// computed from the home and the site alone; nothing is read.
type Paths struct {
	// Home is the TractStack home (/home/t8k).
	Home string
	// Site is the dedicated site, "" for the main install.
	Site string
	// Root is Home for the main install, Home/sites/<site> otherwise.
	Root string

	BackendSrc  string // <root>/src/tractstack-go
	FrontendSrc string // <root>/src/my-tractstack
	Dist        string // <root>/src/my-tractstack/dist (a link into the live release)
	Entry       string // <root>/src/my-tractstack/dist/server/entry.mjs (what pm2 serves)
	BinDir      string // <root>/bin
	Binary      string // <root>/bin/tractstack-go (the live binary)
	Data        string // <root>/t8k-go-server

	// Releases holds the previous releases and the staging directory;
	// it sits beside the binary so that renames stay on one filesystem.
	Releases string // <root>/bin/releases
	Staging  string // <root>/bin/releases/.staging

	Unit      string // tractstack-go.service or tractstack-go@<site>.service
	Process   string // astro-main or astro-<site>
	PortsKey  string // "main" or <site>
	PortsFile string // <home>/etc/t8k-ports.conf

	WhitelistScript string // <home>/scripts/extractTailwindWhitelist.py
	WhitelistJSON   string // <data>/config/default/tailwindWhitelist.json
	Templates       string // <backend src>/internal/presentation/templates
}

// PathsFor computes the paths of a target: site "" is the main install.
// It refuses a relative home and a site that is not a valid id.
func PathsFor(home, site string) (Paths, error) {
	if !filepath.IsAbs(home) {
		return Paths{}, fmt.Errorf("compute paths: home %q is not absolute", home)
	}
	home = filepath.Clean(home)
	p := Paths{Home: home, Site: site, Root: home, Unit: "tractstack-go.service", Process: "astro-main", PortsKey: "main"}
	if site != "" {
		if !ValidSite(site) {
			return Paths{}, fmt.Errorf("compute paths: invalid site %q (want %s)", site, siteRe)
		}
		p.Root = filepath.Join(home, "sites", site)
		p.Unit = "tractstack-go@" + site + ".service"
		p.Process = "astro-" + site
		p.PortsKey = site
	}
	p.BackendSrc = filepath.Join(p.Root, "src", "tractstack-go")
	p.FrontendSrc = filepath.Join(p.Root, "src", "my-tractstack")
	p.Dist = filepath.Join(p.FrontendSrc, "dist")
	p.Entry = filepath.Join(p.Dist, "server", "entry.mjs")
	p.BinDir = filepath.Join(p.Root, "bin")
	p.Binary = filepath.Join(p.BinDir, "tractstack-go")
	p.Data = filepath.Join(p.Root, "t8k-go-server")
	p.Releases = filepath.Join(p.BinDir, "releases")
	p.Staging = filepath.Join(p.Releases, ".staging")
	p.PortsFile = filepath.Join(home, "etc", "t8k-ports.conf")
	p.WhitelistScript = filepath.Join(home, "scripts", "extractTailwindWhitelist.py")
	p.WhitelistJSON = filepath.Join(p.Data, "config", "default", "tailwindWhitelist.json")
	p.Templates = filepath.Join(p.BackendSrc, "internal", "presentation", "templates")
	return p, nil
}
