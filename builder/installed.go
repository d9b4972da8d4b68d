package builder

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/tractstack/concierge/internal/atomicfile"
)

// InstalledMark is the file, in node_modules/, that says which manifests
// (see installInputs) the packages were last installed from: its content
// is their digest. A release whose node_modules/ is linked from another
// keeps the mark (deploy copies it), so a build whose manifests did not
// change can skip `pnpm install`, which would do nothing but cost seconds.
const InstalledMark = ".concierge-installed"

// installInputs are the files whose content decides what `pnpm install`
// puts in node_modules/.
var installInputs = []string{"package.json", "pnpm-lock.yaml", ".npmrc", "pnpm-workspace.yaml", ".pnpmfile.cjs"}

// installScripts are the lifecycle scripts of the project itself that
// `pnpm install` runs: a project that has one is always installed.
var installScripts = []string{"preinstall", "install", "postinstall", "preprepare", "prepare", "postprepare", "pnpm:devPreinstall"}

// manifestsDigest hashes the install inputs of the frontend tree dir (a
// missing one counts as missing).
func manifestsDigest(dir string) (string, error) {
	h := sha256.New()
	for _, name := range installInputs {
		data, err := os.ReadFile(filepath.Join(dir, name))
		switch {
		case errors.Is(err, fs.ErrNotExist):
			fmt.Fprintf(h, "%s absent\n", name)
		case err != nil:
			return "", err
		default:
			fmt.Fprintf(h, "%s %d\n", name, len(data))
			h.Write(data)
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// hasInstallScript says whether package.json (its content) has a
// lifecycle script that `pnpm install` runs.
func hasInstallScript(packageJSON []byte) bool {
	var p struct {
		Scripts map[string]string `json:"scripts"`
	}
	if json.Unmarshal(packageJSON, &p) != nil {
		return true // unknown: install
	}
	for _, s := range installScripts {
		if _, ok := p.Scripts[s]; ok {
			return true
		}
	}
	return false
}

// installDone says whether `pnpm install` in dir would change nothing:
// node_modules/ carries the mark of an install from manifests identical
// to dir's, and the project has no install script of its own. Pure but
// for reading files; any doubt says no.
func installDone(dir string) (bool, string) {
	mark, err := os.ReadFile(filepath.Join(dir, "node_modules", InstalledMark))
	if err != nil {
		return false, ""
	}
	pkg, err := os.ReadFile(filepath.Join(dir, "package.json"))
	if err != nil || hasInstallScript(pkg) {
		return false, ""
	}
	digest, err := manifestsDigest(dir)
	if err != nil || digest != string(mark) {
		return false, ""
	}
	return true, digest
}

// markInstalled records in dir's node_modules/ the manifests it was just
// installed from.
func markInstalled(dir string) error {
	digest, err := manifestsDigest(dir)
	if err != nil {
		return fmt.Errorf("hash the manifests of %s: %w", dir, err)
	}
	nm := filepath.Join(dir, "node_modules")
	if _, err := os.Stat(nm); err != nil {
		return nil // nothing installed (no dependencies)
	}
	return atomicfile.WriteFile(filepath.Join(nm, InstalledMark), []byte(digest), 0o644)
}
