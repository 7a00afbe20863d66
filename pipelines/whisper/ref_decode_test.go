//go:build cgo

package whisper

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

type refSegment struct {
	ID               int     `json:"id"`
	Seek             int     `json:"seek"`
	Start            float64 `json:"start"`
	End              float64 `json:"end"`
	Text             string  `json:"text"`
	Tokens           []int   `json:"tokens"`
	Temperature      float64 `json:"temperature"`
	AvgLogprob       float64 `json:"avg_logprob"`
	CompressionRatio float64 `json:"compression_ratio"`
	NoSpeechProb     float64 `json:"no_speech_prob"`
}

type refDecode struct {
	Language         string  `json:"language"`
	Tokens           []int   `json:"tokens"`
	Text             string  `json:"text"`
	AvgLogprob       float64 `json:"avg_logprob"`
	NoSpeechProb     float64 `json:"no_speech_prob"`
	CompressionRatio float64 `json:"compression_ratio"`
	NeedsFallback    bool    `json:"needs_fallback"`
}

type refAudio struct {
	Recipe []struct {
		File  string `json:"file"`
		Zeros int    `json:"zeros"`
	} `json:"recipe"`
	Samples int    `json:"samples"`
	SHA256  string `json:"float32_sha256"`
}

// build concatenates a recipe's clips and silences exactly as the generator did.
func (a refAudio) build(t *testing.T) []float32 {
	var pcm []float32
	for _, r := range a.Recipe {
		if r.File != "" {
			pcm = append(pcm, loadPCM(t, r.File)...)
		} else {
			pcm = append(pcm, make([]float32, r.Zeros)...)
		}
	}
	b := make([]byte, 4*len(pcm))
	for i, v := range pcm {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	sum := sha256.Sum256(b)
	if len(pcm) != a.Samples || (a.SHA256 != "" && hex.EncodeToString(sum[:]) != a.SHA256) {
		t.Fatalf("rebuilt audio: %d samples sha256 %x; reference %d samples %s", len(pcm), sum, a.Samples, a.SHA256)
	}
	return pcm
}

// checkResult compares one decode: tokens and compression ratio exactly,
// log-probabilities within 1e-3 (float32 sums over up to 224 tokens).
func checkResult(t *testing.T, what string, got Result, want refDecode) {
	t.Helper()
	if !slices.Equal(got.Tokens, want.Tokens) {
		t.Errorf("%s: tokens\n got %v\nwant %v", what, got.Tokens, want.Tokens)
		return
	}
	if got.Text != want.Text && got.Text != stripped(want.Text) {
		t.Errorf("%s: text %q, want %q", what, got.Text, want.Text)
	}
	if want.Language != "" && got.Language != want.Language {
		t.Errorf("%s: language %s, want %s", what, got.Language, want.Language)
	}
	if math.Abs(got.AvgLogprob-want.AvgLogprob) > 1e-3 || math.Abs(got.NoSpeechProb-want.NoSpeechProb) > 1e-4 {
		t.Errorf("%s: avg_logprob %v no_speech %v, want %v %v", what, got.AvgLogprob, got.NoSpeechProb, want.AvgLogprob, want.NoSpeechProb)
	}
	if math.Abs(got.CompressionRatio-want.CompressionRatio) > 1e-12 {
		t.Errorf("%s: compression ratio %v, want %v", what, got.CompressionRatio, want.CompressionRatio)
	}
}

func stripped(s string) string { return strings.TrimSpace(s) }

// transcribeCase is one recorded transcribe() call.
type transcribeCase struct {
	Name  string `json:"name"`
	Model string `json:"model"`
	Input struct {
		File string `json:"file"`
	} `json:"input"`
	Options struct {
		Temperature       []float64 `json:"temperature"`
		Condition         *bool     `json:"condition_on_previous_text"`
		Language          *string   `json:"language"`
		Task              string    `json:"task"`
		BeamSize          int       `json:"beam_size"`
		InitialPrompt     string    `json:"initial_prompt"`
		WithoutTimestamps bool      `json:"without_timestamps"`
	} `json:"options"`
	Result struct {
		Text     string       `json:"text"`
		Language string       `json:"language"`
		Segments []refSegment `json:"segments"`
	} `json:"result"`
	Windows []struct {
		T0        refDecode `json:"t0"`
		FallsBack bool      `json:"t0_would_fall_back"`
	} `json:"windows"`
}

// check transcribes pcm as the case did and compares every window's first
// decode, its fallback verdict, and the final segments and text.
func (c transcribeCase) check(t *testing.T, m *Model, pcm []float32) {
	o := c.Options
	opt := TranscribeOptions{Options: Options{Task: o.Task, BeamSize: o.BeamSize, WithoutTimestamps: o.WithoutTimestamps},
		Temperatures: o.Temperature, InitialPrompt: o.InitialPrompt}
	if o.Language != nil {
		opt.Language = *o.Language
	}
	if o.Condition != nil && !*o.Condition {
		opt.NoConditionOnPrevious = true
	}
	var traces []WindowTrace
	opt.OnWindow = func(w WindowTrace) {
		if w.Result.Temperature == 0 && !w.Skipped {
			traces = append(traces, w)
		}
	}
	tr, err := m.Transcribe(t.Context(), pcm, opt)
	if err != nil {
		t.Fatal(err)
	}
	if len(traces) != len(c.Windows) {
		t.Errorf("%d windows decoded, reference %d", len(traces), len(c.Windows))
	}
	fell := false
	for i := 0; i < min(len(traces), len(c.Windows)); i++ {
		w := c.Windows[i]
		fell = fell || w.FallsBack
		checkResult(t, fmt.Sprintf("window %d (T=0)", i), traces[i].Result, w.T0)
		if traces[i].NeedFallback != w.FallsBack {
			t.Errorf("window %d: fallback %v, reference %v", i, traces[i].NeedFallback, w.FallsBack)
		}
	}
	if fell && len(o.Temperature) > 1 {
		return // text sampled after a fallback is not reproducible outside torch
	}
	if tr.Language != c.Result.Language {
		t.Errorf("language %s, want %s", tr.Language, c.Result.Language)
	}
	if len(tr.Segments) != len(c.Result.Segments) {
		t.Fatalf("%d segments, reference %d", len(tr.Segments), len(c.Result.Segments))
	}
	for i, s := range tr.Segments {
		w := c.Result.Segments[i]
		if s.Seek != w.Seek || math.Abs(s.Start-w.Start) > 1e-6 || math.Abs(s.End-w.End) > 1e-6 || !slices.Equal(s.Tokens, w.Tokens) && !(len(s.Tokens) == 0 && len(w.Tokens) == 0) || s.Text != w.Text {
			t.Fatalf("segment %d:\n got seek %d %.2f–%.2f %q %v\nwant seek %d %.2f–%.2f %q %v", i, s.Seek, s.Start, s.End, s.Text, s.Tokens, w.Seek, w.Start, w.End, w.Text, w.Tokens)
		}
	}
	if tr.Text != c.Result.Text {
		t.Errorf("text\n got %q\nwant %q", tr.Text, c.Result.Text)
	}
}

// Long audio (77 s): Whisper's seek loop, segments, timestamps, language
// detection, beam search, translation, prompts and the fallback decisions
// equal openai-whisper's on the tiny random models.
func TestTranscribeMatchesReference(t *testing.T) {
	var ref struct {
		Audio refAudio         `json:"audio"`
		Cases []transcribeCase `json:"cases"`
	}
	readJSON(t, "transcribe_long.json", &ref)
	pcm := ref.Audio.build(t)
	models := map[string]*Model{}
	for _, c := range ref.Cases {
		if models[c.Model] == nil {
			models[c.Model] = tinyModel(t, c.Model)
		}
	}
	for _, c := range ref.Cases {
		t.Run(c.Name, func(t *testing.T) { c.check(t, models[c.Model], pcm) })
	}
}

// Short clips (one window each), language detected.
func TestTranscribeShortMatchesReference(t *testing.T) {
	var ref struct {
		Cases []transcribeCase `json:"cases"`
	}
	readJSON(t, "transcribe_short.json", &ref)
	models := map[string]*Model{}
	for _, c := range ref.Cases {
		if models[c.Model] == nil {
			models[c.Model] = tinyModel(t, c.Model)
		}
	}
	for _, c := range ref.Cases {
		t.Run(filepath.Base(c.Input.File), func(t *testing.T) { c.check(t, models[c.Model], loadPCM(t, c.Input.File)) })
	}
}

// Independent windows decoded as one batch (what batch_size > 1 does):
// every row equals whisper.decode on the same batch, greedy and beam.
func TestDecodeBatchMatchesReference(t *testing.T) {
	var ref struct {
		Model  string `json:"model"`
		Inputs []struct {
			File string `json:"file"`
		} `json:"inputs"`
		Cases []struct {
			Name    string `json:"name"`
			Options struct {
				Language          string `json:"language"`
				BeamSize          int    `json:"beam_size"`
				WithoutTimestamps bool   `json:"without_timestamps"`
			} `json:"options"`
			Results []refDecode `json:"results"`
		} `json:"cases"`
	}
	readJSON(t, "decode_batch.json", &ref)
	m := tinyModel(t, ref.Model)
	var mels [][]float32
	for _, in := range ref.Inputs {
		// the reference pads the audio to 30 s before the log-mel
		pcm := make([]float32, nSamples)
		copy(pcm, loadPCM(t, in.File))
		mels = append(mels, LogMel(pcm, m.Mels(), 0).Data)
	}
	for _, c := range ref.Cases {
		t.Run(c.Name, func(t *testing.T) {
			rs, err := m.decodeWindows(t.Context(), mels, Options{Language: c.Options.Language, BeamSize: c.Options.BeamSize, WithoutTimestamps: c.Options.WithoutTimestamps})
			if err != nil {
				t.Fatal(err)
			}
			if len(rs) != len(c.Results) {
				t.Fatalf("%d results, want %d", len(rs), len(c.Results))
			}
			for i := range rs {
				checkResult(t, fmt.Sprintf("row %d", i), rs[i], c.Results[i])
			}
		})
	}
}

// Language detection: the logits of every language token after
// <|startoftranscript|> and the chosen language equal the reference's.
func TestDetectLanguageMatchesReference(t *testing.T) {
	var ref struct {
		Model string `json:"model"`
		Items []struct {
			Input struct {
				File string `json:"file"`
			} `json:"input"`
			Language string             `json:"language"`
			Logits   map[string]float64 `json:"language_logits"`
		} `json:"items"`
	}
	readJSON(t, "detect_language.json", &ref)
	m := tinyModel(t, ref.Model)
	for _, it := range ref.Items {
		mel := LogMel(loadPCM(t, it.Input.File), m.Mels(), nSamples)
		w := make([]float32, mel.Bands*nFrames)
		mel.Window(0, w)
		f, err := m.encode(t.Context(), [][]float32{w})
		if err != nil {
			t.Fatal(err)
		}
		lg, err := m.forward(t.Context(), m.newState(f, 1), [][]int{{m.tok.SOT()}})
		if err != nil {
			t.Fatal(err)
		}
		var maxErr float64
		for code, want := range it.Logits {
			id, ok := m.tok.LanguageToken(code)
			if !ok {
				t.Fatalf("no token for %s", code)
			}
			maxErr = math.Max(maxErr, math.Abs(float64(lg[id])-want))
		}
		code, probs, err := m.DetectLanguage(t.Context(), w)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %s (p %.3f), max |Δ logit| %.2g over %d languages", it.Input.File, code, probs[code], maxErr, len(it.Logits))
		if code != it.Language || maxErr > 1e-3 || len(it.Logits) != len(m.tok.Languages()) {
			t.Errorf("%s: detected %s (reference %s), max |Δ logit| %g", it.Input.File, code, it.Language, maxErr)
		}
	}
}
