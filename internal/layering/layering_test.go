package layering

import (
	"encoding/json"
	"io"
	"os/exec"
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
