package kokoro

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"sort"
	"strings"
	"sync"

	"github.com/falocal/falocal/engine"
	"github.com/falocal/falocal/pipelines"
	"github.com/falocal/falocal/weights"
)

// SampleRate is Kokoro's output rate.
const SampleRate = 24000

// MaxTokens is the most phoneme tokens one run takes: Kokoro's window is
// 512, with a 0 pad token at each end.
const MaxTokens = 510

// StyleDim is the width of a voice's style vector.
const StyleDim = 256

// Model is one installed Kokoro export: its network, vocabulary and voices.
type Model struct {
	Name   string
	man    weights.Manifest
	store  *weights.Store
	net    *pipelines.Net
	vocab  map[rune]int64
	voices map[string]string // voice → file role

	mu     sync.Mutex
	styles map[string][]float32 // voice → 510×256, read on first use
}

// Voices lists the model's voices.
func (m *Model) Voices() []string {
	out := make([]string, 0, len(m.voices))
	for v := range m.voices {
		out = append(out, v)
	}
	sort.Strings(out)
	return out
}

// HasVoice reports whether the model has a voice.
func (m *Model) HasVoice(v string) bool { _, ok := m.voices[v]; return ok }

// LoadModel opens a store manifest as a Kokoro model: one .onnx file, voice
// files (voices/<name>.bin) and, optionally, vocab.json.
func LoadModel(man weights.Manifest, store *weights.Store, models *pipelines.Models) (*Model, error) {
	m := &Model{Name: man.Name, man: man, store: store, voices: map[string]string{}, styles: map[string][]float32{}}
	var onnx []string
	vocabRole := ""
	for _, f := range man.Files {
		switch {
		case strings.HasSuffix(f.Name, ".onnx"):
			onnx = append(onnx, f.Role)
		case f.Name == "vocab.json":
			vocabRole = f.Role
		default:
			if v, ok := weights.KokoroVoiceFile(f.Name); ok {
				if f.Size != weights.KokoroVoiceBytes {
					return nil, fmt.Errorf("kokoro model %s: voice %s has %d bytes, want %d", man.Name, f.Name, f.Size, weights.KokoroVoiceBytes)
				}
				m.voices[v] = f.Role
			}
		}
	}
	if len(onnx) != 1 {
		return nil, fmt.Errorf("kokoro model %s: want one .onnx file, have %d", man.Name, len(onnx))
	}
	if len(m.voices) == 0 {
		return nil, fmt.Errorf("kokoro model %s has no voices (voices/<name>.bin)", man.Name)
	}
	m.vocab = defaultVocab
	if vocabRole != "" {
		p, err := store.Path(man, vocabRole)
		if err != nil {
			return nil, err
		}
		if m.vocab, err = readVocab(p); err != nil {
			return nil, fmt.Errorf("kokoro model %s: %w", man.Name, err)
		}
	}
	net, err := models.PoolFor(man, onnx[0], []string{"tokens", "style", "speed"}, []string{"audio"})
	if err != nil {
		return nil, err
	}
	m.net = net
	return m, nil
}

func readVocab(path string) (map[rune]int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var v struct {
		Vocab map[string]int64 `json:"vocab"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("vocab.json: %w", err)
	}
	out := map[rune]int64{}
	for s, id := range v.Vocab {
		r := []rune(s)
		if len(r) != 1 || id <= 0 || id > 511 {
			return nil, fmt.Errorf("vocab.json: entry %q → %d is not one symbol with an id in 1..511", s, id)
		}
		out[r[0]] = id
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("vocab.json: no symbols")
	}
	return out, nil
}

// Style returns a voice's style for a sequence of n tokens: row n-1.
func (m *Model) Style(voice string, n int) ([]float32, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.styles[voice]
	if !ok {
		role, ok := m.voices[voice]
		if !ok {
			return nil, fmt.Errorf("kokoro model %s has no voice %s", m.Name, voice)
		}
		p, err := m.store.Path(m.man, role)
		if err != nil {
			return nil, err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		s = make([]float32, len(b)/4)
		for i := range s {
			s[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		}
		m.styles[voice] = s
	}
	rows := len(s) / StyleDim
	r := min(max(n, 1), rows) - 1
	return s[r*StyleDim : (r+1)*StyleDim], nil
}

// Tokens maps phonemes to token ids; symbols outside the vocabulary are
// dropped, as kokoro-onnx does.
func (m *Model) Tokens(phonemes string) []int64 {
	out := make([]int64, 0, len(phonemes))
	for _, r := range phonemes {
		if id, ok := m.vocab[r]; ok {
			out = append(out, id)
		}
	}
	return out
}

// Known keeps the phonemes the vocabulary has, one symbol per token.
func (m *Model) Known(phonemes string) string {
	var b strings.Builder
	for _, r := range phonemes {
		if _, ok := m.vocab[r]; ok {
			b.WriteRune(r)
		}
	}
	return b.String()
}

// Synthesize runs the network once on at most MaxTokens tokens (without the
// pads, which it adds) with a style row, and returns the raw audio.
func (m *Model) Synthesize(ctx context.Context, hold *engine.Hold, tokens []int64, style []float32, speed float32) ([]float32, error) {
	if len(tokens) == 0 || len(tokens) > MaxTokens {
		return nil, fmt.Errorf("kokoro: %d tokens, want 1..%d", len(tokens), MaxTokens)
	}
	raw := make([]byte, 8*(len(tokens)+2))
	for i, t := range tokens {
		binary.LittleEndian.PutUint64(raw[8*(i+1):], uint64(t))
	}
	tok := &engine.Tensor{DType: engine.Int64, Shape: []int64{1, int64(len(tokens) + 2)}, Raw: raw}
	st, err := engine.NewFloat32(append([]float32(nil), style...), 1, StyleDim)
	if err != nil {
		return nil, err
	}
	sp, err := engine.NewFloat32([]float32{speed}, 1)
	if err != nil {
		return nil, err
	}
	out, err := m.net.Do(ctx, engine.Run{Inputs: []*engine.Tensor{tok, st, sp}, Hold: hold})
	if err != nil {
		return nil, err
	}
	if len(out) == 0 || out[0].DType != engine.Float32 {
		return nil, fmt.Errorf("kokoro model %s: the audio output is not float32", m.Name)
	}
	return out[0].F32, nil
}
