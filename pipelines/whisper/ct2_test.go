//go:build cgo

package whisper

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/falocal/falocal/internal/testenv"
	"github.com/falocal/falocal/pipelines"
	"github.com/falocal/falocal/pipelines/pipelinetest"
	"github.com/falocal/falocal/weights"
	"github.com/falocal/falocal/weights/ct2"
	"github.com/falocal/falocal/weights/whisperonnx"
	"github.com/falocal/falocal/weights/whisperonnx/whisperonnxtest"
)

// ct2Install converts a CTranslate2 model to ONNX, copies the tokenizer
// files named (through fix, when set), and installs the result under name
// next to the test models.
func ct2Install(t *testing.T, d pipelines.Deps, m *ct2.Model, name string, opt whisperonnx.Options, fix func([]byte) []byte, tokDir string, tokFiles ...string) weights.Manifest {
	t.Helper()
	dir := t.TempDir()
	info, err := whisperonnx.FromCT2(m, dir, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: %v, %d parameters", name, info.Files, info.Params)
	for _, f := range tokFiles {
		b, err := os.ReadFile(filepath.Join(tokDir, f))
		if err != nil {
			t.Fatal(err)
		}
		if fix != nil {
			b = fix(b)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return pipelinetest.InstallDir(t, d.Store, dir, weights.Manifest{Name: name, Pipeline: "whisper"})
}

func loadInstalled(t *testing.T, d pipelines.Deps, models *pipelines.Models, name string) *Model {
	t.Helper()
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

// tiny-multi's weights, passed through CTranslate2's layout and converted
// back to ONNX (weights in external data, which the store materialises),
// transcribe the same audio to the same tokens as the optimum export:
// long-form greedy with its fallbacks, and a beam search.
func TestCT2ConvertedMatchesOptimum(t *testing.T) {
	d := tinyDeps(t, "tiny-multi")
	cm, err := whisperonnxtest.FromOptimum(filepath.Join("testdata", "tiny-multi"), whisperonnxtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ct2Install(t, d, cm, "tiny-multi-ct2", whisperonnx.Options{External: whisperonnx.ExternalAlways}, nil, filepath.Join("testdata", "tiny-multi"),
		"vocab.json", "merges.txt", "added_tokens.json", "special_tokens_map.json", "tokenizer_config.json", "preprocessor_config.json")
	models := pipelines.NewModels(d)
	t.Cleanup(func() { models.Close() })
	ref := loadInstalled(t, d, models, "tiny-multi")
	conv := loadInstalled(t, d, models, "tiny-multi-ct2")
	if conv.merged || conv.decPast == nil {
		t.Fatal("converted model should use the unmerged decoder pair")
	}
	pcm := readAudio(t, "whisper/jfk.wav")

	tokens := func(tr *Transcript) []int {
		var all []int
		for _, s := range tr.Segments {
			all = append(all, s.Tokens...)
		}
		return all
	}
	opt := TranscribeOptions{Options: Options{Language: "en"}}
	a, err := ref.Transcribe(t.Context(), pcm, opt)
	if err != nil {
		t.Fatal(err)
	}
	b, err := conv.Transcribe(t.Context(), pcm, opt)
	if err != nil {
		t.Fatal(err)
	}
	ta, tb := tokens(a), tokens(b)
	t.Logf("transcribe: %d segments, %d tokens; converted %d segments, %d tokens", len(a.Segments), len(ta), len(b.Segments), len(tb))
	if len(ta) == 0 || !slices.Equal(ta, tb) {
		t.Errorf("tokens differ:\n optimum   %v\n converted %v", ta, tb)
	}
	if fmt.Sprint(segTimes(a)) != fmt.Sprint(segTimes(b)) {
		t.Errorf("segment times differ: %v vs %v", segTimes(a), segTimes(b))
	}

	// a beam search over two windows at once (rows reordered every step)
	mel := LogMel(pcm, 80, nSamples)
	w0, w1 := make([]float32, 80*nFrames), make([]float32, 80*nFrames)
	mel.Window(0, w0)
	mel.Window(nFrames/3, w1)
	bo := Options{Language: "en", BeamSize: 3}
	ra, err := ref.decodeWindows(t.Context(), [][]float32{w0, w1}, bo)
	if err != nil {
		t.Fatal(err)
	}
	rb, err := conv.decodeWindows(t.Context(), [][]float32{w0, w1}, bo)
	if err != nil {
		t.Fatal(err)
	}
	for i := range ra {
		t.Logf("beam window %d: %d tokens", i, len(ra[i].Tokens))
		if !slices.Equal(ra[i].Tokens, rb[i].Tokens) {
			t.Errorf("beam window %d differs:\n optimum   %v\n converted %v", i, ra[i].Tokens, rb[i].Tokens)
		}
	}
}

func segTimes(tr *Transcript) [][2]float64 {
	var out [][2]float64
	for _, s := range tr.Segments {
		out = append(out, [2]float64{s.Start, s.End})
	}
	return out
}

// A real faster-whisper model (tiny.en, float16 CTranslate2 weights) runs
// through the pipeline after conversion and transcribes JFK.
func TestCT2RealTinyEn(t *testing.T) {
	// a faster-whisper model directory as it is, through the store's importer
	src := filepath.Dir(testenv.Asset(t, "whisper/tiny.en-ct2/model.bin"))
	d := tinyDeps(t)
	if _, err := d.Store.ImportWhisperCT2(src, weights.Manifest{Name: "tiny.en-ct2"}); err != nil {
		t.Fatal(err)
	}
	models := pipelines.NewModels(d)
	t.Cleanup(func() { models.Close() })
	m := loadInstalled(t, d, models, "tiny.en-ct2")
	if m.tok.Multilingual() {
		t.Error("tiny.en's tokenizer reads as multilingual")
	}
	tr, err := m.Transcribe(t.Context(), readAudio(t, "whisper/jfk.wav"), TranscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%q", tr.Text)
	text := strings.ToLower(tr.Text)
	for _, want := range []string{"fellow americans", "ask not what your country can do for you", "what you can do for your country"} {
		if !strings.Contains(text, want) {
			t.Errorf("transcript lacks %q: %q", want, tr.Text)
		}
	}
}
