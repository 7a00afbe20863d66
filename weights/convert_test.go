package weights

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestConvert(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	src := writeCase(t, fp16Cases[len(fp16Cases)-1], 17) // the compact upscaler
	orig, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	f, err := s.AddBlob(src, "model", "up.onnx", "fp32", "")
	if err != nil {
		t.Fatal(err)
	}
	base := Manifest{Name: "up", Pipeline: "upscale", Files: []File{f}, MemoryBytes: 1 << 30,
		Serves: []string{"esrgan:Up"}, Params: map[string]string{"scale": "2"}, Description: "an upscaler"}
	if err := s.Put(base); err != nil {
		t.Fatal(err)
	}
	// What Float16Compute makes of the same file, for the bytes.
	want := filepath.Join(t.TempDir(), "want.onnx")
	os.WriteFile(want, orig, 0o644)
	if _, err := Float16Compute(want); err != nil {
		t.Fatal(err)
	}
	m, err := s.Convert("up", "fp16", "")
	if err != nil {
		t.Fatal(err)
	}
	if m.Name != "up-fp16" || m.Pipeline != "upscale" || m.Files[0].DType != "fp16" || m.MemoryBytes != 1<<30 ||
		m.Params["scale"] != "2" || len(m.Serves) != 1 || !strings.Contains(m.Description, "converted from up") {
		t.Errorf("manifest %+v", m)
	}
	p, err := s.Path(m, "model")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(p)
	if wb, _ := os.ReadFile(want); !bytes.Equal(got, wb) {
		t.Error("the stored file is not Float16Compute of the base")
	}
	if err := s.Verify("up-fp16"); err != nil {
		t.Error(err)
	}
	// Back to fp32 under the base's name with the other suffix.
	if m, err := s.Convert("up-fp16", "fp32", ""); err != nil || m.Name != "up-fp32" || m.Files[0].DType != "fp32" {
		t.Errorf("fp16 → fp32: %+v %v", m, err)
	}
	for _, c := range []struct{ base, prec, name, err string }{
		{"up", "fp16", "", "installed already"},
		{"up", "fp32", "up-wide", "computes in fp32 already"},
		{"up", "int8", "", "want fp16 or fp32"},
		{"nothing", "fp16", "", "not installed"},
		{"up", "fp16", "Bad Name", "invalid model name"},
	} {
		if _, err := s.Convert(c.base, c.prec, c.name); err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("Convert(%s, %s, %q): %v, want %q", c.base, c.prec, c.name, err, c.err)
		}
	}
	// A model of several files is refused.
	dec := filepath.Join(t.TempDir(), "dec.onnx")
	os.WriteFile(dec, orig, 0o644)
	g, err := s.AddBlob(dec, "decoder", "dec.onnx", "fp32", "")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(Manifest{Name: "two", Pipeline: "whisper", Files: []File{f, g}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Convert("two", "fp16", ""); err == nil || !strings.Contains(err.Error(), "one ONNX file") {
		t.Errorf("two files: %v", err)
	}
}
