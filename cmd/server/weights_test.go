package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/falocal/falocal/weights"
)

// TestWeightsImport: a user's ONNX file lands in the store with the
// pipeline's default settings, overridable by -param, and a checked blob.
func TestWeightsImport(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(t.TempDir(), "mine.onnx")
	os.WriteFile(file, []byte("not really onnx, but bytes to store"), 0o644)
	for _, c := range []struct {
		args   []string
		name   string
		params map[string]string
	}{
		{[]string{"-name", "my-x2", "-pipeline", "upscale", "-serves", "esrgan:RealESRGAN_x2plus", "-param", "scale=2"},
			"my-x2", map[string]string{"scale": "2", "tile_pad": "10", "input": "input"}},
		{[]string{"-name", "my-bg", "-serves", "birefnet:Portrait"},
			"my-bg", map[string]string{"size": "1024", "activation": "sigmoid", "scale": "255"}},
	} {
		var out, errb bytes.Buffer
		args := append([]string{"weights", "import", "-data-dir", dir, "-file", file}, c.args...)
		if code := run(args, &out, &errb); code != 0 {
			t.Fatalf("%v: exit %d: %s", c.args, code, errb.String())
		}
		s, _ := weights.Open(dir)
		m, err := s.Get(c.name)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range c.params {
			if m.Params[k] != v {
				t.Errorf("%s: param %s = %q, want %q", c.name, k, m.Params[k], v)
			}
		}
		if c.name == "my-x2" && (m.Pipeline != "upscale" || m.Params["mean"] != "") {
			t.Errorf("upscale import got %+v", m)
		}
		if err := s.Verify(c.name); err != nil {
			t.Error(err)
		}
	}
	var out bytes.Buffer
	if code := run([]string{"weights", "list", "-data-dir", dir}, &out, &out); code != 0 || !strings.Contains(out.String(), "esrgan:RealESRGAN_x2plus") {
		t.Errorf("list: %s", out.String())
	}
}
