package pipelinetest

import (
	"bytes"
	"compress/gzip"
	"os"
	"path/filepath"
	"testing"
)

func writeGzip(t *testing.T, path string, data []byte) {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(data)
	zw.Close()
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// A folder comes out as its exporter wrote it: name.gz uncompressed as
// name, a symlinked file as what it points to, the rest as it is.
func TestExpandDir(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "model")
	os.MkdirAll(filepath.Join(dir, "tokenizer"), 0o755)
	os.WriteFile(filepath.Join(dir, "config.json"), []byte("{}"), 0o644)
	writeGzip(t, filepath.Join(dir, "tokenizer", "vocab.json.gz"), []byte(`{"a": 1}`))
	os.WriteFile(filepath.Join(root, "common.txt"), []byte("merges"), 0o644)
	writeGzip(t, filepath.Join(root, "common.onnx.gz"), []byte("onnx"))
	os.Symlink("../../common.txt", filepath.Join(dir, "tokenizer", "merges.txt"))
	os.Symlink("../common.onnx.gz", filepath.Join(dir, "model.onnx.gz"))

	out := ExpandDir(t, dir)
	for name, want := range map[string]string{"config.json": "{}", "tokenizer/vocab.json": `{"a": 1}`,
		"tokenizer/merges.txt": "merges", "model.onnx": "onnx"} {
		p := filepath.Join(out, filepath.FromSlash(name))
		st, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		if !st.Mode().IsRegular() {
			t.Errorf("%s: mode %v, want a regular file", name, st.Mode())
		}
		if b, _ := os.ReadFile(p); string(b) != want {
			t.Errorf("%s = %q, want %q", name, b, want)
		}
	}
	n := 0
	filepath.WalkDir(out, func(p string, e os.DirEntry, err error) error {
		if err == nil && !e.IsDir() {
			n++
		}
		return err
	})
	if n != 4 {
		t.Errorf("%d files, want 4", n)
	}
}

// ReadFile reads name, or name.gz when only that is there.
func TestReadFile(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "a.json"), []byte("plain"), 0o644)
	writeGzip(t, filepath.Join(dir, "b.f32.gz"), []byte{1, 2, 3, 4})
	if got := ReadFile(t, filepath.Join(dir, "a.json")); string(got) != "plain" {
		t.Errorf("a.json = %q", got)
	}
	if got := ReadFile(t, filepath.Join(dir, "b.f32")); !bytes.Equal(got, []byte{1, 2, 3, 4}) {
		t.Errorf("b.f32 = %v", got)
	}
	if _, err := Read(filepath.Join(dir, "c.json")); !os.IsNotExist(err) {
		t.Errorf("a missing file: %v, want not-exist", err)
	}
}
