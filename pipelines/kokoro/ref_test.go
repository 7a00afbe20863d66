//go:build cgo

package kokoro

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/falocal/falocal/pipelines"
)

// refCases is testdata/ref/ref.json, written by tools/kokoro-ref/generate.py:
// Python onnxruntime 1.30.0 on the installed kokoro-v1.0.int8.onnx.
type refCases struct {
	ONNXRuntime string `json:"onnxruntime"`
	ModelSHA256 string `json:"model_sha256"`
	Cases       []struct {
		Name     string  `json:"name"`
		Phonemes string  `json:"phonemes"`
		Tokens   []int64 `json:"tokens"`
		Voice    string  `json:"voice"`
		Row      int     `json:"row"`
		Speed    float32 `json:"speed"`
		Samples  int     `json:"samples"`
		File     string  `json:"file"`
	} `json:"cases"`
}

// TestReference: our synthesis of the reference's token ids, voice rows and
// speeds matches Python onnxruntime's audio within 1e-5 (and our mapping of
// its phonemes gives its token ids).
func TestReference(t *testing.T) {
	d := installedDeps(t)
	b, err := os.ReadFile("testdata/ref/ref.json")
	if err != nil {
		t.Fatal(err)
	}
	var ref refCases
	if err := json.Unmarshal(b, &ref); err != nil {
		t.Fatal(err)
	}
	man, err := d.Store.Get("kokoro-v1.0")
	if err != nil {
		t.Fatal(err)
	}
	if man.Files[0].SHA256 != ref.ModelSHA256 {
		t.Fatalf("installed model %s, the reference ran %s", man.Files[0].SHA256, ref.ModelSHA256)
	}
	models := pipelines.NewModels(d)
	t.Cleanup(func() { models.Close() })
	m, err := LoadModel(man, d.Store, models)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range ref.Cases {
		t.Run(c.Name, func(t *testing.T) {
			if got := m.Tokens(c.Phonemes); !equalInts(got, c.Tokens) {
				t.Fatalf("tokens %v, want %v", got, c.Tokens)
			}
			style, err := m.Style(c.Voice, len(c.Tokens))
			if err != nil {
				t.Fatal(err)
			}
			if c.Row != len(c.Tokens)-1 {
				t.Fatalf("reference row %d for %d tokens", c.Row, len(c.Tokens))
			}
			got, err := m.Synthesize(context.Background(), nil, c.Tokens, style, c.Speed)
			if err != nil {
				t.Fatal(err)
			}
			raw, err := os.ReadFile(filepath.Join("testdata/ref", c.File))
			if err != nil {
				t.Fatal(err)
			}
			want := make([]float32, len(raw)/4)
			for i := range want {
				want[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
			}
			if len(got) != len(want) || len(want) != c.Samples {
				t.Fatalf("%d samples, reference %d (ref.json %d)", len(got), len(want), c.Samples)
			}
			var maxDiff float64
			same := 0
			for i := range got {
				if got[i] == want[i] {
					same++
				}
				maxDiff = math.Max(maxDiff, math.Abs(float64(got[i]-want[i])))
			}
			t.Logf("%d samples, %d bit-identical, max |diff| %.3g", len(got), same, maxDiff)
			if maxDiff > 1e-5 {
				t.Fatalf("max |diff| %.3g > 1e-5", maxDiff)
			}
		})
	}
}

func equalInts(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
