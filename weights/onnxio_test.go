package weights

import (
	"os"
	"path/filepath"
	"slices"
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
	fs, err := s.AddDir(src, "fp32")
	if err != nil {
		t.Fatal(err)
	}
	if len(fs) != 5 {
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
	os.WriteFile(s.blobPath(fs[0].SHA256), []byte("tampered"), 0o644)
	if _, err := s.Materialize(m); err == nil {
		t.Fatal("materialized a corrupted blob")
	}
	if _, err := s.AddDir(t.TempDir(), "fp32"); err == nil {
		t.Fatal("imported an empty directory")
	}
	for _, bad := range []string{"../x", "/etc/passwd", "a//b", "a/./b", ""} {
		if safeRel(bad) {
			t.Errorf("%q accepted as a file name", bad)
		}
	}
}
