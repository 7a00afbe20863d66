package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/falocal/falocal/internal/testenv"
	"github.com/falocal/falocal/pipelines/diffusion/diffusiontest"
	"github.com/falocal/falocal/weights"
	"github.com/falocal/falocal/weights/onnxgraph"
	"github.com/falocal/falocal/weights/onnxpb"
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

// TestWeightsImportDir: an optimum Whisper export imports whole, each file
// under its own name; a directory that is not one is refused up front.
func TestWeightsImportDir(t *testing.T) {
	dir := t.TempDir()
	src := "../../pipelines/whisper/testdata/tiny-multi"
	var out, errb bytes.Buffer
	if code := run([]string{"weights", "import", "-data-dir", dir, "-pipeline", "whisper", "-name", "tiny", "-dir", src}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	s, _ := weights.Open(dir)
	m, err := s.Get("tiny")
	if err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(src)
	if len(m.Files) != len(ents) || m.Pipeline != "whisper" || m.MemoryBytes <= 0 {
		t.Fatalf("manifest %+v for %d files", m, len(ents))
	}
	for _, f := range m.Files {
		if f.Role != f.Name {
			t.Errorf("file %s has role %s", f.Name, f.Role)
		}
	}
	bad := t.TempDir()
	os.WriteFile(filepath.Join(bad, "encoder_model.onnx"), []byte("x"), 0o644)
	errb.Reset()
	if code := run([]string{"weights", "import", "-data-dir", dir, "-pipeline", "whisper", "-name", "bad", "-dir", bad}, &out, &errb); code == 0 ||
		!strings.Contains(errb.String(), "decoder_model_merged.onnx") || !strings.Contains(errb.String(), "vocab.json") {
		t.Fatalf("incomplete export: exit %d: %s", code, errb.String())
	}
	if _, err := s.Get("bad"); err == nil {
		t.Fatal("incomplete export was recorded")
	}
}

// A diffusers export imports with its folders; -serves names the endpoint.
func TestWeightsImportDiffusers(t *testing.T) {
	dir := t.TempDir()
	var out, errb bytes.Buffer
	src := "../../pipelines/diffusion/testdata/models/flux-schnell-tiny"
	if code := run([]string{"weights", "import", "-data-dir", dir, "-ort-library", testenv.ORTLibrary(t), "-pipeline", "diffusion", "-name", "schnell", "-dir", src, "-serves", "flux/schnell"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	s, _ := weights.Open(dir)
	m, err := s.Get("schnell")
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, f := range m.Files {
		found = found || f.Name == "transformer/model.onnx"
	}
	if !found || len(m.Serves) != 1 || m.Params["sizes"] != "" {
		t.Fatalf("manifest %+v", m)
	}
	errb.Reset()
	if code := run([]string{"weights", "import", "-data-dir", dir, "-pipeline", "diffusion", "-name", "bad", "-dir", t.TempDir()}, &out, &errb); code == 0 || !strings.Contains(errb.String(), "unet/model.onnx") {
		t.Fatalf("empty dir: exit %d %s", code, errb.String())
	}
}

// A diffusion export is checked before it is recorded: one that cannot
// run here is refused with the reason and leaves nothing in the store;
// -check=false records it as it is; static sizes are recorded.
func TestWeightsImportDiffusionCheck(t *testing.T) {
	write := func(o diffusiontest.Options) string {
		dir := t.TempDir()
		if err := diffusiontest.Write(dir, o); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	data := t.TempDir()
	imp := func(name, dir string, extra ...string) (int, string) {
		var out, errb bytes.Buffer
		args := append([]string{"weights", "import", "-data-dir", data, "-ort-library", testenv.ORTLibrary(t), "-pipeline", "diffusion",
			"-name", name, "-dir", dir}, extra...)
		code := run(args, &out, &errb)
		return code, errb.String()
	}
	gn := write(diffusiontest.Options{Family: diffusiontest.SDXL, ContribOp: diffusiontest.GroupNorm})
	if code, msg := imp("gn", gn); code == 0 || !strings.Contains(msg, "operator GroupNorm") || !strings.Contains(msg, "-check=false") {
		t.Fatalf("GroupNorm on the CPU: exit %d: %s", code, msg)
	}
	blobs, _ := os.ReadDir(filepath.Join(data, "blobs"))
	if len(blobs) != 0 {
		t.Errorf("a refused import left %d blobs", len(blobs))
	}
	if code, msg := imp("gn", gn, "-check=false"); code != 0 {
		t.Fatalf("-check=false: exit %d: %s", code, msg)
	}
	fixed := write(diffusiontest.Options{Family: diffusiontest.SD, FixedSize: [2]int{128, 64}, TimestepScalar: true})
	if code, msg := imp("fixed", fixed); code != 0 {
		t.Fatalf("fixed: exit %d: %s", code, msg)
	}
	s, _ := weights.Open(data)
	m, err := s.Get("fixed")
	if err != nil || m.Params["sizes"] != "128x64" {
		t.Fatalf("fixed: %+v %v", m.Params, err)
	}
}

// TestWeightsImportCT2: a faster-whisper model directory imports as it is,
// converted to ONNX; a damaged model.bin is refused, naming what is wrong.
func TestWeightsImportCT2(t *testing.T) {
	src := filepath.Dir(testenv.Asset(t, "whisper/tiny.en-ct2/model.bin"))
	dir := t.TempDir()
	var out, errb bytes.Buffer
	if code := run([]string{"weights", "import", "-data-dir", dir, "-pipeline", "whisper", "-name", "tiny-en", "-dir", src}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	s, _ := weights.Open(dir)
	m, err := s.Get("tiny-en")
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, f := range m.Files {
		names[f.Name] = true
	}
	for _, n := range []string{"encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx", "config.json", "tokenizer.json"} {
		if !names[n] {
			t.Errorf("no %s among %v", n, names)
		}
	}
	if err := s.Verify("tiny-en"); err != nil {
		t.Error(err)
	}
	if ct := m.Params["compute_type"]; ct != "float32" {
		t.Errorf("float16 model.bin recorded as compute_type %q, want float32", ct)
	}
	// quantised at import, as faster-whisper's compute_type int8
	errb.Reset()
	if code := run([]string{"weights", "import", "-data-dir", dir, "-pipeline", "whisper", "-name", "tiny-en-int8", "-compute-type", "int8", "-dir", src}, &out, &errb); code != 0 {
		t.Fatalf("int8: exit %d: %s", code, errb.String())
	}
	q, err := s.Get("tiny-en-int8")
	if err != nil {
		t.Fatal(err)
	}
	var fsize, qsize int64
	for _, f := range m.Files {
		fsize += f.Size
	}
	for _, f := range q.Files {
		qsize += f.Size
	}
	if q.Params["compute_type"] != "int8" || qsize*2 > fsize {
		t.Errorf("int8 import: compute_type %q, %d bytes (float32 %d)", q.Params["compute_type"], qsize, fsize)
	}
	for _, args := range [][]string{
		{"-pipeline", "whisper", "-name", "x", "-compute-type", "int4", "-dir", src},
		{"-pipeline", "rembg", "-name", "x", "-compute-type", "int8", "-dir", src},
	} {
		errb.Reset()
		if code := run(append([]string{"weights", "import", "-data-dir", dir}, args...), &out, &errb); code == 0 || !strings.Contains(errb.String(), "compute") {
			t.Errorf("%v: exit %d: %s", args, code, errb.String())
		}
	}
	// half a model.bin
	bad := t.TempDir()
	for _, n := range []string{"config.json", "tokenizer.json"} {
		b, _ := os.ReadFile(filepath.Join(src, n))
		os.WriteFile(filepath.Join(bad, n), b, 0o644)
	}
	b, _ := os.ReadFile(filepath.Join(src, "model.bin"))
	os.WriteFile(filepath.Join(bad, "model.bin"), b[:len(b)/2], 0o644)
	errb.Reset()
	if code := run([]string{"weights", "import", "-data-dir", dir, "-pipeline", "whisper", "-name", "bad", "-dir", bad}, &out, &errb); code == 0 ||
		!strings.Contains(errb.String(), "ct2:") {
		t.Errorf("truncated model.bin: exit %d: %s", code, errb.String())
	}
	if _, err := s.Get("bad"); err == nil {
		t.Error("a truncated model was installed")
	}
}

// A Kokoro export imports as a folder: one .onnx and its voices, checked
// before anything is copied; float16 graph edges become float32 as for
// diffusion.
func TestWeightsImportKokoro(t *testing.T) {
	data := t.TempDir()
	imp := func(dir string) (int, string) {
		var out, errb bytes.Buffer
		code := run([]string{"weights", "import", "-data-dir", data, "-pipeline", "kokoro", "-name", "k", "-dir", dir}, &out, &errb)
		return code, errb.String()
	}
	src := t.TempDir()
	half := onnxpb.TensorProto_FLOAT16
	vi := func(n string) *onnxpb.ValueInfoProto {
		return &onnxpb.ValueInfoProto{Name: proto.String(n), Type: &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{
			TensorType: &onnxpb.TypeProto_Tensor{ElemType: proto.Int32(int32(half)), Shape: &onnxpb.TensorShapeProto{
				Dim: []*onnxpb.TensorShapeProto_Dimension{{Value: &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: "n"}}}}}}}}
	}
	b, err := proto.Marshal(&onnxpb.ModelProto{IrVersion: proto.Int64(8),
		OpsetImport: []*onnxpb.OperatorSetIdProto{{Domain: proto.String(""), Version: proto.Int64(17)}},
		Graph: &onnxpb.GraphProto{Name: proto.String("g"), Input: []*onnxpb.ValueInfoProto{vi("style")}, Output: []*onnxpb.ValueInfoProto{vi("audio")},
			Node: []*onnxpb.NodeProto{{OpType: proto.String("Identity"), Input: []string{"style"}, Output: []string{"audio"}}}}})
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(src, "kokoro-fp16.onnx"), b, 0o644)
	if code, msg := imp(src); code == 0 || !strings.Contains(msg, "voice") {
		t.Fatalf("no voices: exit %d: %s", code, msg)
	}
	os.MkdirAll(filepath.Join(src, "voices"), 0o755)
	os.WriteFile(filepath.Join(src, "voices", "af_test.bin"), make([]byte, weights.KokoroVoiceBytes), 0o644)
	if code, msg := imp(src); code != 0 {
		t.Fatalf("exit %d: %s", code, msg)
	}
	s, _ := weights.Open(data)
	m, err := s.Get("k")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range m.Files {
		if f.Name != "kokoro-fp16.onnx" {
			continue
		}
		p, err := s.Path(m, f.Role)
		if err != nil {
			t.Fatal(err)
		}
		in, out, err := weights.ONNXSignature(p)
		if err != nil || in[0].Elem != int32(onnxpb.TensorProto_FLOAT) || out[0].Elem != int32(onnxpb.TensorProto_FLOAT) {
			t.Fatalf("stored graph edges %+v %+v %v; want float32", in, out, err)
		}
		return
	}
	t.Fatalf("no .onnx in %+v", m.Files)
}

// TestWeightsConvert: an installed model gets an fp16 sibling beside it,
// flags after the name too; what cannot convert exits non-zero.
func TestWeightsConvert(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(t.TempDir(), "up.onnx")
	if err := os.WriteFile(file, tinyUpscaler(t), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := run([]string{"weights", "import", "-data-dir", dir, "-name", "up", "-pipeline", "upscale", "-file", file,
		"-serves", "esrgan:Up"}, &out, &errb); code != 0 {
		t.Fatalf("import: %s", errb.String())
	}
	if code := run([]string{"weights", "convert", "-data-dir", dir, "up", "-name", "up-half"}, &out, &errb); code != 0 {
		t.Fatalf("convert: %s", errb.String())
	}
	s, _ := weights.Open(dir)
	m, err := s.Get("up-half")
	if err != nil || m.Files[0].DType != "fp16" || m.Pipeline != "upscale" || m.Serves[0] != "esrgan:Up" {
		t.Fatalf("%+v %v", m, err)
	}
	errb.Reset()
	if code := run([]string{"weights", "convert", "-data-dir", dir, "-precision", "fp32", "up"}, &out, &errb); code == 0 ||
		!strings.Contains(errb.String(), "fp32 already") {
		t.Errorf("fp32 of an fp32 model: exit %d: %s", code, errb.String())
	}
}

// tinyUpscaler is a float32 ONNX graph of one 3×3 convolution, 3 → 3
// channels, at opset 17.
func tinyUpscaler(t *testing.T) []byte {
	t.Helper()
	g := onnxgraph.New("up")
	g.Input("input", onnxpb.TensorProto_FLOAT, 1, 3, 8, 8)
	w := make([]float32, 3*3*3*3)
	for i := range w {
		w[i] = float32(i%7)/10 - 0.3
	}
	g.OpTo("Conv", []string{"input", "w"}, []string{"output"}, onnxgraph.AttrInts("pads", 1, 1, 1, 1))
	g.Output("output", onnxpb.TensorProto_FLOAT)
	b, err := onnxgraph.Marshal(g.Model([]*onnxpb.TensorProto{
		onnxgraph.Tensor("w", onnxpb.TensorProto_FLOAT, []int64{3, 3, 3, 3}, onnxgraph.F32Bytes(w))}, "test", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}
