package weights

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Convert adds to the store a sibling of an installed single-file ONNX model
// (rembg, upscale, or one imported with -file) that computes in another
// precision: "fp16" through Float16Compute, "fp32" through Float32Compute.
// The sibling, named name (default: base with its -fp16/-fp32 suffix
// replaced by the precision's), keeps base's pipeline, parameters, what it
// serves and memory estimate; base stays as it was. A model that already
// computes in that precision is refused, as is a name already installed.
func (s *Store) Convert(base, precision, name string) (Manifest, error) {
	convert := map[string]func(string) (bool, error){"fp16": Float16Compute, "fp32": Float32Compute}[precision]
	if convert == nil {
		return Manifest{}, fmt.Errorf("precision %q: want fp16 or fp32", precision)
	}
	m, err := s.Get(base)
	if err != nil {
		return Manifest{}, err
	}
	if len(m.Files) != 1 || !strings.HasSuffix(m.Files[0].Name, ".onnx") {
		return Manifest{}, fmt.Errorf("%s: only a model of one ONNX file converts (it has %d files)", base, len(m.Files))
	}
	if name == "" {
		name = strings.TrimSuffix(strings.TrimSuffix(base, "-fp16"), "-fp32") + "-" + precision
	}
	if _, err := s.Get(name); err == nil {
		return Manifest{}, fmt.Errorf("%s is installed already (remove it first)", name)
	} else if !errors.Is(err, ErrNotInstalled) {
		return Manifest{}, err
	}
	src, err := s.Path(m, m.Files[0].Role)
	if err != nil {
		return Manifest{}, err
	}
	tmp, err := s.TempDir()
	if err != nil {
		return Manifest{}, err
	}
	defer os.RemoveAll(tmp)
	out := filepath.Join(tmp, name+".onnx")
	if err := copyFile(src, out); err != nil {
		return Manifest{}, err
	}
	changed, err := convert(out)
	if err != nil {
		return Manifest{}, err
	}
	if !changed {
		return Manifest{}, fmt.Errorf("%s computes in %s already", base, precision)
	}
	how := map[string]string{"fp16": "Float16Compute", "fp32": "Float32Compute"}[precision]
	f, err := s.AddBlob(out, m.Files[0].Role, name+".onnx", precision, "")
	if err != nil {
		return Manifest{}, err
	}
	conv := Manifest{
		Name: name, Pipeline: m.Pipeline, Files: []File{f}, MemoryBytes: m.MemoryBytes,
		Serves: m.Serves, Params: m.Params,
		Description: fmt.Sprintf("%s (computing in %s: converted from %s)", m.Description, precision, base),
		Source:      fmt.Sprintf("%s %s through weights.%s", base, m.Files[0].SHA256, how),
	}
	if err := s.Put(conv); err != nil {
		return Manifest{}, err
	}
	return conv, nil
}
