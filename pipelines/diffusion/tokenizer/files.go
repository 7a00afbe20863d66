package tokenizer

import (
	"os"
	"path/filepath"
)

// Files lists the regular files in dir by base name, the map LoadCLIP and LoadT5 take; e.g.
// Files(filepath.Join(model, "tokenizer_2")) for a diffusers folder.
func Files(dir string) (map[string]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	files := map[string]string{}
	for _, e := range entries {
		if e.Type().IsRegular() {
			files[e.Name()] = filepath.Join(dir, e.Name())
		}
	}
	return files, nil
}
