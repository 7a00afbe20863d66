//go:build cgo

package whisper

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/falocal/falocal/internal/testenv"
	"github.com/falocal/falocal/pipelines/pipelinetest"
	"github.com/falocal/falocal/pipelines/whisper/audio"
)

// The reference of testdata/openai/<model>.json: openai-whisper itself
// (PyPI openai-whisper, torch float32 on the CPU) on the same CTranslate2
// model.bin converted to its checkpoint format, written by
// tools/openai-whisper-ref/generate.py.
type openaiRef struct {
	OpenAIWhisper string   `json:"openai_whisper"`
	Torch         string   `json:"torch"`
	Model         string   `json:"model"`
	Long          []string `json:"long"`
	Clips         []struct {
		Name         string      `json:"name"`
		Language     string      `json:"language"`
		LanguageProb *float64    `json:"language_probability"` // nil for English-only models
		Greedy       []openaiSeg `json:"greedy"`
		Beam5        []openaiSeg `json:"beam5"`
		GreedyWords  []openaiSeg `json:"greedy_words"`
		Beam5Words   []openaiSeg `json:"beam5_words"`
	} `json:"clips"`
}

type openaiSeg struct {
	realRefSeg
	Words []struct {
		Word        string  `json:"word"`
		Start       float64 `json:"start"`
		End         float64 `json:"end"`
		Probability float64 `json:"probability"`
	} `json:"words"`
}

// openaiWordTolerance: a word boundary within 20 ms of openai-whisper's
// counts as equal (openai rounds them to 10 ms); at least openaiWordShare
// of them must be.
const (
	openaiWordTolerance = 0.02 + 1e-9
	openaiWordShare     = 0.95
)

// openaiAudio reads a clip as generate.py does: 16 kHz WAVs as they are,
// "long" as realAudio joins it, and the 8 kHz WAVs of nonen/ upsampled by
// upsample2.
func openaiAudio(t *testing.T, ref *openaiRef, name string) []float32 {
	if name == "long" {
		return realAudio(t, &realRef{Long: ref.Long}, name)
	}
	b, err := os.ReadFile(testenv.Asset(t, "whisper/"+name))
	if err != nil {
		t.Fatal(err)
	}
	a, err := audio.Decode(b, 0)
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case a.Rate == 16000 && a.Channels == 1:
		return a.Samples
	case a.Rate == 8000 && a.Channels == 1:
		return upsample2(a.Samples)
	}
	t.Fatalf("%s: %d Hz, %d channels: generate.py reads 16 kHz or 8 kHz mono", name, a.Rate, a.Channels)
	return nil
}

// upsample2 is generate.py's read_clip for 8 kHz audio: sample i, then the
// mean of samples i and i+1 (the last held). On 16-bit samples both are
// exact in float32, so openai-whisper got these very samples (the server's
// own resampler, a windowed sinc, is not what openai-whisper's ffmpeg does).
func upsample2(x []float32) []float32 {
	out := make([]float32, 2*len(x))
	for i, v := range x {
		next := v
		if i+1 < len(x) {
			next = x[i+1]
		}
		out[2*i], out[2*i+1] = v, (v+next)/2
	}
	return out
}

// openaiSubset are the clips both models run by default (each runs four
// times here: about 10 s a clip for tiny.en, 20 s for whisper-base on 2
// cores): those of the faster-whisper test's whisper-base subset and the
// French clip; FALOCAL_REAL_ALL=1 runs them all.
func openaiSubset(name string) bool {
	return realBaseSubset[name] || name == "nonen/fr-demo-congrats.wav" || os.Getenv("FALOCAL_REAL_ALL") != ""
}

// Our Whisper, on the real models (whisper-base, tiny.en) and real speech,
// transcribes as openai-whisper itself does on the same weights (converted
// to its format): the same language (P(language) within 2e-3), the same
// tokens, greedy and with a beam of 5 (patience 1), the same segment seeks,
// times and texts, where a token differs a float32 tie (as in
// TestRealSpeechMatchesFasterWhisper); with word timestamps the same
// tokens, the same words, and at least 95 % of the word boundaries within
// 20 ms of openai's. Logs every clip's word error rate against the human
// transcripts.
func TestRealSpeechMatchesOpenAIWhisper(t *testing.T) {
	type row struct {
		model, clip, lang   string
		langProb, refProb   float64
		modes               []string
		werGreedy, werBeam  float64
		refGreedy, refBeam  float64
		words, wordsWithin  int
		worstWord           float64
		segments, segTokens int
	}
	var rows []row
	var allDeltas []float64
	var ties, diffs int
	var worstProb float64
	for _, name := range []string{"whisper-tiny.en", "whisper-base"} {
		t.Run(name, func(t *testing.T) {
			b := pipelinetest.ReadFile(t, filepath.Join("testdata", "openai", name+".json"))
			var ref openaiRef
			if err := json.Unmarshal(b, &ref); err != nil {
				t.Fatal(err)
			}
			m := realModel(t, name)
			if !m.HasWordTimestamps() {
				t.Fatalf("%s: the installed model does not output cross_attentions (word timestamps)", name)
			}
			human := realHuman(t, &realRef{Long: ref.Long})
			for _, c := range ref.Clips {
				if !openaiSubset(c.Name) {
					continue
				}
				t0 := time.Now()
				pcm := openaiAudio(t, &ref, c.Name)
				r := row{model: name, clip: c.Name}
				norm := realWords
				if strings.HasPrefix(c.Name, "nonen/") {
					norm = pipelinetest.Words
				}
				hw := norm(human[c.Name])
				if len(hw) == 0 {
					t.Errorf("%s: no human transcript", c.Name)
				}
				// the language, detected on the first 30 s of the padded
				// log-mel, as openai's transcribe (and ours) do
				r.lang = "en"
				if m.tok.Multilingual() {
					mel := LogMel(pcm, m.cfg.NumMelBins, nSamples)
					w := make([]float32, mel.Bands*nFrames)
					mel.Window(0, w)
					lang, probs, err := m.DetectLanguage(t.Context(), w)
					if err != nil {
						t.Fatal(err)
					}
					r.lang, r.langProb = lang, probs[lang]
					if c.LanguageProb == nil {
						t.Fatalf("%s: the reference has no language probability", c.Name)
					}
					r.refProb = *c.LanguageProb
					worstProb = math.Max(worstProb, math.Abs(probs[c.Language]-*c.LanguageProb))
					if lang != c.Language {
						t.Errorf("%s: language %s, openai-whisper %s", c.Name, lang, c.Language)
					} else if math.Abs(probs[lang]-*c.LanguageProb) > 2e-3 {
						t.Errorf("%s: P(%s) %.5f, openai-whisper %.5f", c.Name, lang, probs[lang], *c.LanguageProb)
					}
				}
				for _, mode := range []struct {
					name  string
					beam  int
					words bool
					ref   []openaiSeg
				}{{"greedy", 1, false, c.Greedy}, {"beam5", 5, false, c.Beam5},
					{"greedy+words", 1, true, c.GreedyWords}, {"beam5+words", 5, true, c.Beam5Words}} {
					if len(mode.ref) == 0 {
						t.Fatalf("%s %s: no reference segments", c.Name, mode.name)
					}
					tr, err := m.Transcribe(t.Context(), pcm, TranscribeOptions{Options: Options{BeamSize: mode.beam},
						Temperatures: []float64{0}, WordTimestamps: mode.words})
					if err != nil {
						t.Fatal(err)
					}
					if tr.Language != c.Language {
						t.Errorf("%s %s: transcribed as %s, openai-whisper %s", c.Name, mode.name, tr.Language, c.Language)
					}
					what := c.Name + " " + mode.name
					segs := make([]realRefSeg, len(mode.ref))
					var refText strings.Builder
					for i, s := range mode.ref {
						segs[i] = s.realRefSeg
						refText.WriteString(s.Text)
					}
					// segment times: exact (to the reference's 1 ms rounding)
					// without words; with words openai moves them onto the
					// first and last word, so they get the words' tolerance
					tol := 1e-3 + 1e-9
					if mode.words {
						tol = openaiWordTolerance
					}
					res, equalSegs := openaiCompare(t, m, pcm, what, c.Language, tr, segs, tol)
					r.modes = append(r.modes, res)
					switch {
					case strings.HasPrefix(res, "tie"):
						ties++
					case res != "equal":
						diffs++
					}
					if !mode.words {
						r.segments += len(tr.Segments)
						for _, s := range tr.Segments {
							r.segTokens += len(s.Tokens)
						}
						wer := pipelinetest.WordErrorRate(hw, norm(tr.Text))
						refWER := pipelinetest.WordErrorRate(hw, norm(refText.String()))
						if mode.beam == 1 {
							r.werGreedy, r.refGreedy = wer, refWER
						} else {
							r.werBeam, r.refBeam = wer, refWER
						}
						continue
					}
					// words of the segments decoded alike
					for i := 0; i < equalSegs; i++ {
						got, want := tr.Segments[i].Words, mode.ref[i].Words
						if len(got) != len(want) {
							t.Errorf("%s: segment %d has %d words, openai-whisper %d", what, i, len(got), len(want))
							continue
						}
						for j := range got {
							if got[j].Text != want[j].Word {
								t.Errorf("%s: segment %d word %d %q, openai-whisper %q", what, i, j, got[j].Text, want[j].Word)
							}
							for _, d := range []float64{got[j].Start - want[j].Start, got[j].End - want[j].End} {
								d = math.Abs(d)
								allDeltas = append(allDeltas, d)
								r.words++
								if d <= openaiWordTolerance {
									r.wordsWithin++
								} else {
									t.Logf("%s: %q at %.2f–%.2f, openai-whisper %.2f–%.2f", what, got[j].Text, got[j].Start, got[j].End, want[j].Start, want[j].End)
								}
								r.worstWord = math.Max(r.worstWord, d)
							}
						}
					}
				}
				rows = append(rows, r)
				t.Logf("%s: %v", c.Name, time.Since(t0).Round(time.Millisecond))
			}
		})
	}
	var tab strings.Builder
	fmt.Fprintf(&tab, "\n%-16s %-52s %-4s %-17s %-47s %-5s %-6s %-15s %-15s %s\n", "model", "clip", "lang", "P(lang) ours/oai",
		"greedy / beam5 / greedy+words / beam5+words", "segs", "tokens", "WER grd ours/oai", "WER beam ours/oai", "word bounds ≤20ms, max |Δ|")
	var segs, toks, within, total int
	for _, r := range rows {
		p := "-"
		if r.refProb != 0 {
			p = fmt.Sprintf("%.4f/%.4f", r.langProb, r.refProb)
		}
		fmt.Fprintf(&tab, "%-16s %-52s %-4s %-17s %-47s %-5d %-6d %.3f/%.3f       %.3f/%.3f       %d/%d, %.3f s\n", r.model, r.clip, r.lang, p,
			strings.Join(r.modes, " / "), r.segments, r.segTokens, r.werGreedy, r.refGreedy, r.werBeam, r.refBeam, r.wordsWithin, r.words, r.worstWord)
		segs, toks, within, total = segs+r.segments, toks+r.segTokens, within+r.wordsWithin, total+r.words
	}
	t.Log(tab.String())
	if total == 0 {
		t.Fatal("no word timestamps compared")
	}
	sort.Float64s(allDeltas)
	q := func(p float64) float64 { return allDeltas[min(len(allDeltas)-1, int(p*float64(len(allDeltas))))] }
	share := float64(within) / float64(total)
	t.Logf("%d clips × 4 runs: %d float32 ties, %d differences; %d segments, %d tokens (greedy and beam5); "+
		"P(language) max |Δ| %.1e; %d word boundaries: %.1f %% within 20 ms, |Δ| median %.3f, p99 %.3f, max %.3f s",
		len(rows), ties, diffs, segs, toks, worstProb, total, 100*share, q(0.5), q(0.99), allDeltas[len(allDeltas)-1])
	if share < openaiWordShare {
		t.Errorf("only %.1f %% of the word boundaries within 20 ms of openai-whisper's (want ≥ %.0f %%)", 100*share, 100*openaiWordShare)
	}
}

// openaiCompare checks one transcript against openai-whisper's segments,
// as realCompare does against faster-whisper's, with segment times within
// tol. It says how it compares ("equal", "tie@…", "DIFF@…") and how many
// leading segments are the same (tokens and seek).
func openaiCompare(t *testing.T, m *Model, pcm []float32, what, lang string, tr *Transcript, ref []realRefSeg, tol float64) (string, int) {
	t.Helper()
	same := 0
	for same < min(len(tr.Segments), len(ref)) && tr.Segments[same].Seek == ref[same].Seek && slices.Equal(tr.Segments[same].Tokens, ref[same].Tokens) {
		same++
	}
	for i := 0; i < same; i++ {
		s := tr.Segments[i]
		if math.Abs(s.Start-ref[i].Start) > tol || math.Abs(s.End-ref[i].End) > tol {
			t.Errorf("%s: segment %d at %.3f–%.3f, openai-whisper %.3f–%.3f", what, i, s.Start, s.End, ref[i].Start, ref[i].End)
		}
		if s.Text != ref[i].Text {
			t.Errorf("%s: segment %d text %q, openai-whisper %q", what, i, s.Text, ref[i].Text)
		}
		if math.Abs(s.AvgLogprob-ref[i].AvgLogprob) > 1e-3 {
			t.Errorf("%s: segment %d avg_logprob %.5f, openai-whisper %.5f", what, i, s.AvgLogprob, ref[i].AvgLogprob)
		}
	}
	if same == len(ref) && same == len(tr.Segments) {
		return "equal", same
	}
	// where the first differing window parts, and by how much (realCompare,
	// whose messages name faster-whisper: the reference here is openai's)
	t.Logf("%s: differs from openai-whisper after %d of its %d segments (messages below say faster-whisper for openai-whisper)", what, same, len(ref))
	return realCompare(t, m, pcm, what, lang, tr, ref), same
}
