package weights

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/falocal/falocal/weights/onnxpb"
	"google.golang.org/protobuf/proto"
)

func TestONNXIO(t *testing.T) {
	vi := func(n string) *onnxpb.ValueInfoProto { return &onnxpb.ValueInfoProto{Name: proto.String(n)} }
	m := &onnxpb.ModelProto{
		IrVersion:    proto.Int64(8),
		ProducerName: proto.String("test"),
		Graph: &onnxpb.GraphProto{
			Name: proto.String("g"),
			// a large initializer before the inputs: it must be skipped, not read
			Initializer: []*onnxpb.TensorProto{{Name: proto.String("w"), RawData: make([]byte, 3<<20)}},
			Input:       []*onnxpb.ValueInfoProto{vi("input_ids"), vi("cache_position"), vi("use_cache_branch")},
			Output:      []*onnxpb.ValueInfoProto{vi("logits"), vi("present.0.decoder.key")},
			Node:        []*onnxpb.NodeProto{{OpType: proto.String("Identity"), Input: []string{"a"}, Output: []string{"b"}}},
		},
	}
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "m.onnx")
	os.WriteFile(p, b, 0o644)
	in, out, err := ONNXIO(p)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(in, []string{"input_ids", "cache_position", "use_cache_branch"}) || !slices.Equal(out, []string{"logits", "present.0.decoder.key"}) {
		t.Fatalf("inputs %v outputs %v", in, out)
	}
	for _, c := range []struct {
		name string
		data []byte
	}{{"truncated", b[:len(b)/2]}, {"text", []byte("not a model at all")}, {"empty", nil}} {
		q := filepath.Join(dir, c.name)
		os.WriteFile(q, c.data, 0o644)
		if in, _, err := ONNXIO(q); err == nil {
			t.Errorf("%s: read inputs %v", c.name, in)
		}
	}
}

// A directory import keeps every file under its own name, and the
// materialized directory links verified blobs by those names.
func TestAddDirMaterialize(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	src := t.TempDir()
	files := map[string]string{"encoder_model.onnx": "enc", "encoder_model.onnx_data": "weights", "config.json": "{}",
		"unet/model.onnx": "unet"}
	os.Mkdir(filepath.Join(src, "unet"), 0o755)
	os.Mkdir(filepath.Join(src, ".git"), 0o755)
	os.WriteFile(filepath.Join(src, ".git", "HEAD"), []byte("ref"), 0o644)
	for n, c := range files {
		os.WriteFile(filepath.Join(src, n), []byte(c), 0o644)
	}
	// a linked file counts as the file it points to; a dangling link is skipped
	os.Symlink("../config.json", filepath.Join(src, "unet", "config.json"))
	os.Symlink("nowhere", filepath.Join(src, "dangling"))
	files["unet/config.json"] = "{}"
	// a linked folder counts as the folder, under the link's name
	other := t.TempDir()
	os.WriteFile(filepath.Join(other, "model.onnx"), []byte("vae"), 0o644)
	os.Symlink(other, filepath.Join(src, "vae_decoder"))
	files["vae_decoder/model.onnx"] = "vae"
	fs, err := s.AddDir(src, "fp32")
	if err != nil {
		t.Fatal(err)
	}
	if len(fs) != 6 {
		t.Fatalf("%d files", len(fs))
	}
	m := Manifest{Name: "w", Pipeline: "whisper", Files: fs}
	if err := s.Put(m); err != nil {
		t.Fatal(err)
	}
	dir, err := s.Materialize(m)
	if err != nil {
		t.Fatal(err)
	}
	for n, c := range files {
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil || string(b) != c {
			t.Fatalf("%s: %q %v", n, b, err)
		}
	}
	// idempotent, and a corrupted blob is refused
	if _, err := s.Materialize(m); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(s.BlobPath(fs[0].SHA256), []byte("tampered"), 0o644)
	if _, err := s.Materialize(m); err == nil {
		t.Fatal("materialized a corrupted blob")
	}
	if _, err := s.AddDir(t.TempDir(), "fp32"); err == nil {
		t.Fatal("imported an empty directory")
	}
	// a link back to the folder, or above it, is refused before it is
	// followed; two links to one folder outside import it under both names
	loop := t.TempDir()
	os.MkdirAll(filepath.Join(loop, "sub", "deep"), 0o755)
	os.WriteFile(filepath.Join(loop, "sub", "deep", "a.onnx"), []byte("a"), 0o644)
	for _, link := range []struct{ at, to string }{{"again", "."}, {"sub/deep/up", "../.."}, {"sub/deep/parent", ".."}} {
		p := filepath.Join(loop, link.at)
		os.Symlink(link.to, p)
		if _, err := s.AddDir(loop, "fp32"); err == nil || !strings.Contains(err.Error(), "leads back") {
			t.Fatalf("a link %s -> %s: %v", link.at, link.to, err)
		}
		os.Remove(p)
	}
	shared := t.TempDir()
	os.WriteFile(filepath.Join(shared, "vocab.json"), []byte("{}"), 0o644)
	diamond := t.TempDir()
	os.Symlink(shared, filepath.Join(diamond, "tokenizer"))
	os.Symlink(shared, filepath.Join(diamond, "tokenizer_2"))
	if fs, err := s.AddDir(diamond, "fp32"); err != nil || len(fs) != 2 || fs[0].Name == fs[1].Name {
		t.Fatalf("two links to one folder: %v %v", fs, err)
	}
	for _, bad := range []string{"../x", "/etc/passwd", "a//b", "a/./b", ""} {
		if safeRel(bad) {
			t.Errorf("%q accepted as a file name", bad)
		}
	}
}

func TestONNXSignature(t *testing.T) {
	dim := func(v any) *onnxpb.TensorShapeProto_Dimension {
		if s, ok := v.(string); ok {
			return &onnxpb.TensorShapeProto_Dimension{Value: &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: s}}
		}
		return &onnxpb.TensorShapeProto_Dimension{Value: &onnxpb.TensorShapeProto_Dimension_DimValue{DimValue: int64(v.(int))}}
	}
	vi := func(n string, elem onnxpb.TensorProto_DataType, dims ...any) *onnxpb.ValueInfoProto {
		sh := &onnxpb.TensorShapeProto{}
		for _, d := range dims {
			sh.Dim = append(sh.Dim, dim(d))
		}
		return &onnxpb.ValueInfoProto{Name: proto.String(n), Type: &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{
			TensorType: &onnxpb.TypeProto_Tensor{ElemType: proto.Int32(int32(elem)), Shape: sh}}}}
	}
	m := &onnxpb.ModelProto{IrVersion: proto.Int64(8), Graph: &onnxpb.GraphProto{
		Name:        proto.String("g"),
		Initializer: []*onnxpb.TensorProto{{Name: proto.String("w"), RawData: make([]byte, 1<<20)}},
		Input: []*onnxpb.ValueInfoProto{
			vi("sample", onnxpb.TensorProto_FLOAT, "batch", 4, 64, "width"),
			vi("timestep", onnxpb.TensorProto_INT64),
			vi("img_ids", onnxpb.TensorProto_INT64, "n", 3),
		},
		Output: []*onnxpb.ValueInfoProto{vi("out_sample", onnxpb.TensorProto_FLOAT16, "batch", 4, 64, "width")},
	}}
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "m.onnx")
	os.WriteFile(p, b, 0o644)
	in, out, err := ONNXSignature(p)
	if err != nil {
		t.Fatal(err)
	}
	want := []ValueInfo{
		{Name: "sample", Elem: 1, Dims: []int64{-1, 4, 64, -1}, DimNames: []string{"batch", "", "", "width"}},
		{Name: "timestep", Elem: 7},
		{Name: "img_ids", Elem: 7, Dims: []int64{-1, 3}, DimNames: []string{"n", ""}},
	}
	if len(in) != len(want) {
		t.Fatalf("inputs %+v", in)
	}
	for i := range want {
		if in[i].Name != want[i].Name || in[i].Elem != want[i].Elem || !slices.Equal(in[i].Dims, want[i].Dims) ||
			!slices.Equal(in[i].DimNames, want[i].DimNames) || in[i].Rank() != len(want[i].Dims) {
			t.Errorf("input %d: got %+v, want %+v", i, in[i], want[i])
		}
	}
	if len(out) != 1 || out[0].Elem != 10 || !slices.Equal(out[0].Dims, []int64{-1, 4, 64, -1}) {
		t.Errorf("outputs %+v", out)
	}
}

// A rewrite whose rename fails leaves no .partial file beside the model.
func TestRewriteONNXFailureLeavesNoPartial(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "m.onnx")
	b, err := proto.Marshal(&onnxpb.ModelProto{Graph: &onnxpb.GraphProto{Name: proto.String("g")}})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	changed, err := rewriteONNX(p, func(m *onnxpb.ModelProto, g *onnxpb.GraphProto) (bool, error) {
		// The model's path becomes a non-empty directory: the rename
		// over it fails.
		if err := os.Remove(p); err != nil {
			return false, err
		}
		if err := os.MkdirAll(filepath.Join(p, "d"), 0o755); err != nil {
			return false, err
		}
		g.Name = proto.String("h")
		return true, nil
	})
	if err == nil || changed {
		t.Fatalf("changed %v, err %v; want the rename's error", changed, err)
	}
	if _, err := os.Stat(p + ".partial"); !os.IsNotExist(err) {
		t.Errorf("%s.partial left behind (stat: %v)", p, err)
	}
}
