package pipelinetest

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Test data is stored small: a large file may be kept gzipped as name.gz
// (gzip -n -9), and a file identical to another one as a relative symlink
// to it (tools/dedupe_testdata.py). Only tests read the gzipped form: files
// through ReadFile, model folders through ExpandDir (InstallDir does).

// ReadFile returns the contents of path, or of path.gz uncompressed when
// only that is there.
func ReadFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Read is ReadFile for code without a testing.TB.
func Read(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if !os.IsNotExist(err) {
		return b, err
	}
	z, zerr := os.ReadFile(path + ".gz")
	if zerr != nil {
		return nil, err
	}
	if b, err = gunzip(z); err != nil {
		return nil, fmt.Errorf("%s.gz: %w", path, err)
	}
	return b, nil
}

// ExpandDir copies the folder dir (a test model as committed) into a
// temporary directory, which it returns: symlinked files are copied as the
// files they point to, and a file name.gz is written uncompressed as name.
// What comes out is the folder as its exporter wrote it.
func ExpandDir(t testing.TB, dir string) string {
	t.Helper()
	out := t.TempDir()
	err := filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		if e.IsDir() {
			return os.MkdirAll(filepath.Join(out, rel), 0o755)
		}
		b, err := os.ReadFile(p) // follows a symlink
		if err != nil {
			return err
		}
		if strings.HasSuffix(rel, ".gz") {
			rel = strings.TrimSuffix(rel, ".gz")
			if b, err = gunzip(b); err != nil {
				return err
			}
		}
		dst := filepath.Join(out, rel)
		if _, err := os.Lstat(dst); err == nil {
			t.Fatalf("%s: %s is there both plain and gzipped", dir, rel)
		}
		return os.WriteFile(dst, b, 0o644)
	})
	if err != nil {
		t.Fatalf("expand %s: %v", dir, err)
	}
	return out
}

func gunzip(b []byte) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	return io.ReadAll(zr)
}
