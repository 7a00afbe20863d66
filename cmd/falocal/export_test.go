package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/falocal/falocal/weights"
)

// TestWeightsExport imports a multi-file export the way 'weights import
// -dir' does, carries it through a bundle into another store, and exports
// it there: the files come back byte for byte under their own names.
func TestWeightsExport(t *testing.T) {
	orig := t.TempDir()
	files := map[string][]byte{
		"model_index.json":   []byte(`{"_class_name": "StableDiffusionPipeline"}`),
		"unet/model.onnx":    bytes.Repeat([]byte("unet"), 5000),
		"tokenizer/vocab.js": []byte(`{"a": 1}`),
	}
	for n, b := range files {
		p := filepath.Join(orig, filepath.FromSlash(n))
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	src := t.TempDir()
	s, err := weights.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	fs, err := s.AddDir(orig, "fp16")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(weights.Manifest{Name: "my-sd", Pipeline: "diffusion", Files: fs}); err != nil {
		t.Fatal(err)
	}

	b := filepath.Join(t.TempDir(), "sd.falb")
	if _, e, code := runCmd(t, "bundle", "create", "-o", b, "-models", "my-sd", "-data-dir", src); code != 0 {
		t.Fatal(e)
	}
	site := t.TempDir()
	if _, e, code := runCmd(t, "bundle", "install", b, "-data-dir", site); code != 0 {
		t.Fatal(e)
	}
	out := filepath.Join(t.TempDir(), "export")
	// the name before -o, as the issue writes it
	if o, e, code := runCmd(t, "weights", "export", "my-sd", "-o", out, "-data-dir", site); code != 0 || !strings.Contains(o, "3 files") {
		t.Fatalf("export: %d %s %s", code, o, e)
	}
	for n, want := range files {
		got, err := os.ReadFile(filepath.Join(out, filepath.FromSlash(n)))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: %v, content differs: %v", n, err, !bytes.Equal(got, want))
		}
	}

	t.Run("refusals", func(t *testing.T) {
		if _, e, code := runCmd(t, "weights", "export", "-o", out, "-data-dir", site, "my-sd"); code == 0 || !strings.Contains(e, "exists") {
			t.Errorf("export over existing files: %d %s", code, e)
		}
		// a corrupt blob: refused, naming it, and nothing left behind
		st, _ := weights.Open(site)
		m, _ := st.Get("my-sd")
		for _, f := range m.Files {
			if f.Name == "unet/model.onnx" {
				os.WriteFile(filepath.Join(site, "blobs", "sha256-"+f.SHA256), bytes.Repeat([]byte("xxxx"), 5000), 0o644)
			}
		}
		fresh := filepath.Join(t.TempDir(), "export")
		if _, e, code := runCmd(t, "weights", "export", "-o", fresh, "-data-dir", site, "my-sd"); code == 0 || !strings.Contains(e, "my-sd/unet/model.onnx") {
			t.Errorf("export of a corrupt blob: %d %s", code, e)
		}
		var left []string
		filepath.WalkDir(fresh, func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				left = append(left, p)
			}
			return nil
		})
		if len(left) > 0 {
			t.Errorf("a failed export left %v", left)
		}
	})
}
