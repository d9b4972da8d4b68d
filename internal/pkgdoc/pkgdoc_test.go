// Package pkgdoc holds a test that every package of the module has a doc
// comment, so `go doc` says what each one is for.
package pkgdoc

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestEveryPackageHasADocComment(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("module root not found: %v", err)
	}
	dirs := map[string][]string{}
	filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || d.Name() == "node_modules") && path != root {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(path, ".go") {
			dirs[filepath.Dir(path)] = append(dirs[filepath.Dir(path)], path)
		}
		return nil
	})
	for dir, files := range dirs {
		documented := map[string]bool{} // package name → has a doc comment
		for _, file := range files {
			f, err := parser.ParseFile(token.NewFileSet(), file, nil, parser.ParseComments|parser.PackageClauseOnly)
			if err != nil {
				t.Errorf("parse %s: %v", file, err)
				continue
			}
			name := f.Name.Name
			if strings.HasSuffix(name, "_test") || strings.HasSuffix(file, "_test.go") && name != "pkgdoc" {
				continue
			}
			doc := ""
			if f.Doc != nil {
				doc = f.Doc.Text()
			}
			documented[name] = documented[name] || strings.HasPrefix(doc, "Package "+name+" ") ||
				name == "main" && strings.HasPrefix(doc, "Command ")
		}
		for name, ok := range documented {
			if !ok {
				rel, _ := filepath.Rel(root, dir)
				t.Errorf("package %s in %s has no doc comment (// Package %s ...)", name, rel, name)
			}
		}
	}
}
