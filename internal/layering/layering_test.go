package layering

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

const mod = "github.com/falocal/falocal/"

type pkg struct {
	ImportPath string
	Imports    []string
	CgoFiles   []string
}

// rules: a package (prefix) may not import these (prefixes).
var forbidden = map[string][]string{
	"api":       {mod + "engine", mod + "kernels", "github.com/yalue/onnxruntime_go", "gorgonia.org/cu"},
	"pipelines": {mod + "api", mod + "kernels", mod + "engine/ort", mod + "cmd", "github.com/yalue/onnxruntime_go", "gorgonia.org/cu"},
	"engine":    {mod + "api", mod + "pipelines", mod + "weights", mod + "cmd"},
	"kernels":   {mod + "api", mod + "pipelines", mod + "engine", mod + "weights", mod + "cmd"},
	"weights":   {mod + "api", mod + "pipelines", mod + "engine", mod + "kernels", mod + "cmd"},
	"internal":  {mod + "api", mod + "pipelines", mod + "engine", mod + "kernels", mod + "weights", mod + "cmd"},
}

var cgoAllowed = map[string]bool{mod + "engine/ort": true, mod + "kernels/cuda": true}

func TestLayering(t *testing.T) {
	cmd := exec.Command("go", "list", "-json", mod+"...")
	cmd.Dir = "../.."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	seen := 0
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		seen++
		rel := strings.TrimPrefix(p.ImportPath, mod)
		top, _, _ := strings.Cut(rel, "/")
		if len(p.CgoFiles) > 0 && !cgoAllowed[p.ImportPath] {
			t.Errorf("%s uses cgo (%v); only engine/ort and kernels/cuda may", rel, p.CgoFiles)
		}
		for _, imp := range p.Imports {
			if imp == "C" && !cgoAllowed[p.ImportPath] {
				t.Errorf("%s imports C", rel)
			}
			for _, bad := range forbidden[top] {
				if imp == bad || strings.HasPrefix(imp, bad+"/") {
					// A package may use its own subpackages (engine → engine/x).
					if strings.HasPrefix(imp, mod+top) {
						continue
					}
					t.Errorf("forbidden import: %s → %s", rel, strings.TrimPrefix(imp, mod))
				}
			}
		}
	}
	if seen < 10 {
		t.Fatalf("go list found only %d packages", seen)
	}
}

// envReaders are the functions that read the process environment.
var envReaders = map[string]map[string]bool{
	"os":      {"Getenv": true, "LookupEnv": true, "Environ": true, "ExpandEnv": true},
	"syscall": {"Getenv": true, "Environ": true},
}

// envAllowed are the folders whose non-test code may read the environment:
// cmd/ (falocal's Config, where every variable is also a flag), the test
// environment (internal/testenv: the FALOCAL_TEST_* variables make sets),
// and the programs run by hand or by make, which are package main and
// imported by nothing: tools/ (tools/testassets and the CUDA/reference
// helpers) and bench/ (bench/falbench passes its environment to the
// processes it starts). _test.go files may read it anywhere.
var envAllowed = []string{"cmd/", "internal/testenv/", "tools/", "bench/"}

// TestEnvironment: the library (api, pipelines, engine, kernels, weights,
// internal) takes its settings from its callers, never from the process
// environment, so the server's configuration stays in one place. An AST scan
// of every non-test .go file, whatever its build tags.
func TestEnvironment(t *testing.T) {
	root := filepath.Join("..", "..")
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("module root: %v", err)
	}
	fset := token.NewFileSet()
	files := 0
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if p != root && (strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") || name == "testdata" || name == "node_modules" || name == "vendor") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			return nil
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		for _, dir := range envAllowed {
			if strings.HasPrefix(rel, dir) {
				return nil
			}
		}
		f, err := parser.ParseFile(fset, p, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		files++
		for _, call := range envCalls(f) {
			t.Errorf("%s: %s reads the environment; take the value from the caller (cmd/falocal's Config) instead", fset.Position(call.pos), call.name)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 50 {
		t.Fatalf("scanned only %d files", files)
	}
}

type envCall struct {
	pos  token.Pos
	name string
}

// envCalls finds the uses of envReaders in f, under whatever name f imports
// os or syscall (a dot import of either counts as a use).
func envCalls(f *ast.File) []envCall {
	local := map[string]string{} // file's name for the package → its path
	var out []envCall
	for _, imp := range f.Imports {
		path, _ := strconv.Unquote(imp.Path.Value)
		if envReaders[path] == nil {
			continue
		}
		name := path
		if imp.Name != nil {
			name = imp.Name.Name
		}
		if name == "." {
			out = append(out, envCall{imp.Pos(), "a dot import of " + path})
			continue
		}
		local[name] = path
	}
	if len(local) == 0 {
		return out
	}
	ast.Inspect(f, func(n ast.Node) bool {
		sel, ok := n.(*ast.SelectorExpr)
		if !ok {
			return true
		}
		if x, ok := sel.X.(*ast.Ident); ok {
			if path, ok := local[x.Name]; ok && envReaders[path][sel.Sel.Name] {
				out = append(out, envCall{sel.Pos(), path + "." + sel.Sel.Name})
			}
		}
		return true
	})
	return out
}
