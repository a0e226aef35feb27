// Package layout checks the repository's dependency rules: libs/ never
// imports services/ or tools/.
package layout

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/orbitplane/orbit/"

func TestLibsDoNotImportServicesOrTools(t *testing.T) {
	if os.Getenv("TEST_SRCDIR") != "" {
		t.Skip("walks the source tree; runs under go test (tools/test.sh runs both)")
	}
	files := 0
	err := filepath.WalkDir("../../libs", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") {
			return err
		}
		files++
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if strings.HasPrefix(p, module+"services/") || strings.HasPrefix(p, module+"tools/") {
				t.Errorf("%s imports %s: libs/ must not depend on services/ or tools/", path, p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files == 0 {
		t.Fatal("found no Go files under libs/: wrong working directory?")
	}
}
