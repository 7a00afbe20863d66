package main

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/falocal/falocal/weights"
)

// exportModel writes a model's files under their names in the store (an
// import's own layout: model.onnx, unet/model.onnx, …) into dir, which must
// not hold any of them yet. Each file is hashed again as it is copied, and
// on any failure the files written so far are removed.
func exportModel(store *weights.Store, name, dir string) (n int, err error) {
	m, err := store.Get(name)
	if err != nil {
		return 0, err
	}
	// Materialize verifies every blob against the manifest and links each
	// under its name, which is what is copied.
	linked, err := store.Materialize(m)
	if err != nil {
		return 0, err
	}
	var written []string
	defer func() {
		if err != nil {
			for _, p := range written {
				os.Remove(p)
			}
		}
	}()
	for _, f := range m.Files {
		dst := filepath.Join(dir, filepath.FromSlash(f.Name))
		if !strings.HasPrefix(dst, filepath.Clean(dir)+string(filepath.Separator)) {
			return 0, fmt.Errorf("model %s: bad file name %q", m.Name, f.Name)
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return 0, err
		}
		if err := copyVerified(filepath.Join(linked, filepath.FromSlash(f.Name)), dst, f); err != nil {
			return 0, fmt.Errorf("export %s/%s: %w", m.Name, f.Name, err)
		}
		written = append(written, dst)
	}
	return len(written), nil
}

func copyVerified(src, dst string, f weights.File) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if errors.Is(err, os.ErrExist) {
		return fmt.Errorf("%s exists; export into an empty folder", dst)
	}
	if err != nil {
		return err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(out, h), in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil && (n != f.Size || hex.EncodeToString(h.Sum(nil)) != f.SHA256) {
		err = fmt.Errorf("%w: changed while it was copied", weights.ErrCorrupt)
	}
	if err != nil {
		os.Remove(dst)
	}
	return err
}
