//go:build cgo

package whisper

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/falocal/falocal/internal/testenv"
	"github.com/falocal/falocal/pipelines"
	"github.com/falocal/falocal/pipelines/pipelinetest"
	"github.com/falocal/falocal/weights"
)

// wordsRef is testdata/words/tiny.en.json (tools/whisper-words-ref).
type wordsRef struct {
	FasterWhisper string `json:"faster_whisper"`
	CTranslate2   string `json:"ctranslate2"`
	Clips         []struct {
		Name     string   `json:"name"`
		Files    []string `json:"files"`
		Segments []struct {
			Seek   int     `json:"seek"`
			Start  float64 `json:"start"`
			End    float64 `json:"end"`
			Text   string  `json:"text"`
			Tokens []int   `json:"tokens"`
			Words  []struct {
				Word  string  `json:"word"`
				Start float64 `json:"start"`
				End   float64 `json:"end"`
			} `json:"words"`
		} `json:"segments"`
	} `json:"clips"`
}

// realTinyEn imports tiny.en from the test assets' faster-whisper directory.
func realTinyEn(t *testing.T) (pipelines.Deps, *Model) {
	t.Helper()
	src := filepath.Dir(testenv.Asset(t, "whisper/tiny.en-ct2/model.bin"))
	d := tinyDeps(t)
	if _, err := d.Store.ImportWhisperCT2(src, weights.Manifest{Name: "tiny.en-ct2"}); err != nil {
		t.Fatal(err)
	}
	models := pipelines.NewModels(d)
	t.Cleanup(func() { models.Close() })
	m := loadInstalled(t, d, models, "tiny.en-ct2")
	if !m.HasWordTimestamps() {
		t.Fatal("the converted model does not output cross_attentions")
	}
	return d, m
}

// Word timestamps of real tiny.en (converted from faster-whisper's
// CTranslate2 model) agree with faster-whisper's word_timestamps=True on
// the same model.bin: the same words, and at least 95 % of the starts and
// ends within 20 ms. The clips run through the sequential long-form path
// (the last, 36 s, over two windows, the second starting after the first's
// last word); its first window also runs through TranscribeBatched.
func TestWordTimestampsMatchFasterWhisper(t *testing.T) {
	b := pipelinetest.ReadFile(t, filepath.Join("testdata", "words", "tiny.en.json"))
	var ref wordsRef
	if err := json.Unmarshal(b, &ref); err != nil {
		t.Fatal(err)
	}
	_, m := realTinyEn(t)
	var deltas []float64
	within := 0
	for _, c := range ref.Clips {
		var pcm []float32
		for _, f := range c.Files {
			pcm = append(pcm, readAudio(t, "whisper/"+f)...)
		}
		tr, err := m.Transcribe(t.Context(), pcm, TranscribeOptions{WordTimestamps: true})
		if err != nil {
			t.Fatal(err)
		}
		var got, want []Word
		for _, s := range tr.Segments {
			got = append(got, s.Words...)
		}
		for _, s := range c.Segments {
			for _, w := range s.Words {
				want = append(want, Word{Start: w.Start, End: w.End, Text: w.Word})
			}
		}
		texts := func(ws []Word) []string {
			var out []string
			for _, w := range ws {
				out = append(out, w.Text)
			}
			return out
		}
		if !slices.Equal(texts(got), texts(want)) {
			t.Errorf("%s: words differ:\n got  %q\n want %q", c.Name, texts(got), texts(want))
			continue
		}
		worst := 0.0
		for i := range got {
			for _, d := range []float64{got[i].Start - want[i].Start, got[i].End - want[i].End} {
				d = math.Abs(d)
				deltas = append(deltas, d)
				worst = math.Max(worst, d)
				if d <= 0.02+1e-9 {
					within++
				}
			}
		}
		t.Logf("%s: %d words, worst |Δ| %.2f s", c.Name, len(got), worst)
		for i := range got {
			if math.Abs(got[i].Start-want[i].Start) > 0.02+1e-9 || math.Abs(got[i].End-want[i].End) > 0.02+1e-9 {
				t.Logf("  %q: %.2f-%.2f, reference %.2f-%.2f", got[i].Text, got[i].Start, got[i].End, want[i].Start, want[i].End)
			}
		}

		if c.Name == "long" {
			// the batched path's first window decodes what the sequential
			// path's first window did: its words start with that window's
			bt, err := m.TranscribeBatched(t.Context(), pcm, TranscribeOptions{WordTimestamps: true}, "", 4, nil)
			if err != nil {
				t.Fatal(err)
			}
			var bw, first []Word
			for _, s := range bt.Segments {
				bw = append(bw, s.Words...)
			}
			for _, s := range tr.Segments {
				if s.Seek == 0 {
					first = append(first, s.Words...)
				}
			}
			if len(bw) < len(first) || fmt.Sprint(bw[:len(first)]) != fmt.Sprint(first) {
				t.Errorf("batched words do not start with the sequential first window's:\n batched    %v\n sequential %v", bw, first)
			}
			for i := 1; i < len(bw); i++ {
				if bw[i].Start < bw[i-1].Start || bw[i].End < bw[i].Start {
					t.Errorf("batched words out of order at %d: %v %v", i, bw[i-1], bw[i])
				}
			}
			t.Logf("batched: %d words, %d in the first window", len(bw), len(first))
		}
	}
	if len(deltas) == 0 {
		t.Fatal("no words compared")
	}
	sort.Float64s(deltas)
	q := func(p float64) float64 { return deltas[min(len(deltas)-1, int(p*float64(len(deltas))))] }
	frac := float64(within) / float64(len(deltas))
	t.Logf("%d word boundaries (starts and ends) vs faster-whisper %s / CTranslate2 %s: %.1f %% within 20 ms; |Δ| median %.3f, p90 %.3f, p99 %.3f, max %.3f s",
		len(deltas), ref.FasterWhisper, ref.CTranslate2, 100*frac, q(0.5), q(0.9), q(0.99), deltas[len(deltas)-1])
	if frac < 0.95 {
		t.Errorf("only %.1f %% of word boundaries within 20 ms of faster-whisper's (want ≥ 95 %%)", 100*frac)
	}
}

// fal-ai/whisper answers chunk_level "word" with one chunk per word.
func TestWordChunksEndpoint(t *testing.T) {
	d, _ := realTinyEn(t)
	eps := endpoints(t, d)
	b, err := os.ReadFile(testenv.Asset(t, "whisper/jfk.wav"))
	if err != nil {
		t.Fatal(err)
	}
	uri := "data:audio/wav;base64," + base64.StdEncoding.EncodeToString(b)
	r := runEndpoint(t, eps["fal-ai/whisper"], map[string]any{"audio_url": uri, "chunk_level": "word"})
	if r.err != nil {
		t.Fatal(r.err)
	}
	chunks, _ := r.out["chunks"].([]any)
	var words []string
	prev := -1.0
	for _, c := range chunks {
		cm := c.(map[string]any)
		ts := cm["timestamp"].([]any)
		st, en := ts[0].(float64), ts[1].(float64)
		if st < prev || en < st {
			t.Errorf("chunk %v out of order", cm)
		}
		prev = st
		words = append(words, cm["text"].(string))
	}
	text, _ := r.out["text"].(string)
	t.Logf("%d word chunks: %q", len(chunks), words)
	if len(words) < 20 || strings.TrimSpace(strings.Join(words, "")) != text {
		t.Errorf("word chunks %q do not spell the text %q", words, text)
	}
}
