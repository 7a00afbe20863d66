//go:build cgo

package whisper

import (
	"math"
	"os"
	"testing"

	"github.com/falocal/falocal/engine/ort"
	"github.com/falocal/falocal/internal/testenv"
	"github.com/falocal/falocal/pipelines"
	"github.com/falocal/falocal/pipelines/whisper/audio"
)

// tinyDeps installs generated test models (testdata/<name>) into a fresh
// store, with ONNX Runtime's CPU provider.
func tinyDeps(t testing.TB, names ...string) pipelines.Deps {
	t.Helper()
	d := fakeDeps(t, names...)
	rt, err := ort.Init(ort.Config{LibraryPath: testenv.ORTLibrary(t)})
	if err != nil {
		t.Fatal(err)
	}
	d.Runtime = rt
	return d
}

// tinyModel opens one generated test model.
func tinyModel(t testing.TB, name string) *Model {
	t.Helper()
	d := tinyDeps(t, name)
	models := pipelines.NewModels(d)
	t.Cleanup(func() { models.Close() })
	man, err := d.Store.Get(name)
	if err != nil {
		t.Fatal(err)
	}
	m, err := LoadModel(man, d.Store, models)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func readAudio(t testing.TB, asset string) []float32 {
	t.Helper()
	b, err := os.ReadFile(testenv.Asset(t, asset))
	if err != nil {
		t.Fatal(err)
	}
	a, err := audio.Decode(b, 0)
	if err != nil {
		t.Fatal(err)
	}
	return a.Mono16k()
}

func TestSmokeTranscribe(t *testing.T) {
	m := tinyModel(t, "tiny-multi")
	pcm := readAudio(t, "whisper/jfk.wav")
	tr, err := m.Transcribe(t.Context(), pcm, TranscribeOptions{Temperatures: []float64{0}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("lang %s text %q", tr.Language, tr.Text)
	for _, s := range tr.Segments {
		t.Logf("%d %.2f-%.2f %v", s.Seek, s.Start, s.End, s.Tokens)
	}
}

// A float16 export (unmerged decoders) runs through the same code: its
// first-step logits follow the float32 model's within fp16 precision and
// the greedy transcript starts the same way.
func TestFP16Export(t *testing.T) {
	m32 := tinyModel(t, "tiny-multi")
	m16 := tinyModel(t, "tiny-multi-fp16")
	if m16.merged || m16.decPast == nil {
		t.Fatal("fp16 test model should use the unmerged layout")
	}
	pcm := readAudio(t, "whisper/jfk.wav")
	mel := LogMel(pcm, 80, nSamples)
	w := make([]float32, 80*nFrames)
	mel.Window(0, w)
	first := func(m *Model) []float32 {
		f, err := m.encode(t.Context(), [][]float32{w})
		if err != nil {
			t.Fatal(err)
		}
		st := m.newState(f, 1)
		lg, err := m.forward(t.Context(), st, [][]int{m.tok.SOTSequence("en", "transcribe")})
		if err != nil {
			t.Fatal(err)
		}
		// and one cached step
		lg2, err := m.forward(t.Context(), st, [][]int{{m.tok.TimestampBegin()}})
		if err != nil {
			t.Fatal(err)
		}
		return append(lg[len(lg)-m.vocab():], lg2...)
	}
	a, b := first(m32), first(m16)
	var maxErr, maxAbs float64
	for i := range a {
		maxErr = math.Max(maxErr, math.Abs(float64(a[i]-b[i])))
		maxAbs = math.Max(maxAbs, math.Abs(float64(a[i])))
	}
	t.Logf("fp16 vs fp32 logits: max |Δ| %.3g (max |logit| %.3g)", maxErr, maxAbs)
	if maxErr > 0.02*maxAbs+0.05 {
		t.Errorf("fp16 logits differ by %g", maxErr)
	}
	r32, err := m32.decodeWindows(t.Context(), [][]float32{w}, Options{Language: "en"})
	if err != nil {
		t.Fatal(err)
	}
	r16, err := m16.decodeWindows(t.Context(), [][]float32{w}, Options{Language: "en"})
	if err != nil {
		t.Fatal(err)
	}
	same := 0
	for same < min(len(r32[0].Tokens), len(r16[0].Tokens)) && r32[0].Tokens[same] == r16[0].Tokens[same] {
		same++
	}
	t.Logf("greedy tokens: %d fp32, %d fp16, first %d equal", len(r32[0].Tokens), len(r16[0].Tokens), same)
	if same < 3 {
		t.Errorf("fp16 decode diverges at token %d: %v vs %v", same, r16[0].Tokens, r32[0].Tokens)
	}
}
