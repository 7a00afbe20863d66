// Package kokoro is text to speech with Kokoro-82M on fal's nine Kokoro
// endpoints (fal-ai/kokoro/<language>): text → phonemes (a Phonemizer per
// language; espeak-ng, run as a separate program, by default) → token ids
// (the model's vocabulary) → chunks of at most 510 tokens, cut at sentence,
// clause and word boundaries → one run of the ONNX model per chunk with the
// voice's style for its length → chunks trimmed and joined with the pause
// their punctuation asks for → 16-bit PCM WAV at 24 kHz.
package kokoro

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/falocal/falocal/pipelines"
	"github.com/falocal/falocal/weights"
)

func init() { pipelines.Register("kokoro", New) }

// MaxPromptChars is the longest prompt accepted, in characters.
const MaxPromptChars = 100_000

// Pipeline serves the nine endpoints over the installed Kokoro models.
type Pipeline struct {
	deps   pipelines.Deps
	models *pipelines.Models
	// FrontEnd gives the phonemizer of a language (its espeak-ng voice
	// name: en-us, en-gb, es, fr-fr, it, pt-br, hi, ja, cmn).
	FrontEnd func(lang Language) Phonemizer
}

// New builds the Kokoro endpoints: English is read by misaki's lexicons and
// rules (the installed misaki-en model), the other languages by espeak-ng.
func New(d pipelines.Deps) (pipelines.Pipeline, error) {
	en := &english{deps: d}
	return &Pipeline{deps: d, models: pipelines.NewModels(d), FrontEnd: en.frontEnd}, nil
}

// EspeakFrontEnd reads every language with espeak-ng.
func EspeakFrontEnd(l Language) Phonemizer { return Espeak{Voice: l.Espeak, Name: l.Name} }

// Endpoints are fal-ai/kokoro/<language>.
func (p *Pipeline) Endpoints() []pipelines.Endpoint {
	var eps []pipelines.Endpoint
	for _, l := range Languages {
		eps = append(eps, &endpoint{p: p, lang: l})
	}
	return eps
}

// Close releases the loaded sessions.
func (p *Pipeline) Close() error { return p.models.Close() }

// Model is the installed Kokoro model: the one the configuration pins for
// "kokoro", else the first (by name) whose manifest serves "kokoro" (setup's
// kokoro-v1.0 does; an import does with -serves kokoro), else the first
// installed Kokoro export.
func (p *Pipeline) Model() (*Model, error) {
	w := pipelines.Want{Pipeline: "kokoro", Key: "kokoro", What: "a Kokoro text-to-speech model",
		Match: func(m weights.Manifest) bool { return isModel(m) && slices.Contains(m.Serves, "kokoro") },
		Install: "run 'falocal setup' (or 'falocal weights install kokoro-v1.0'), or import a Kokoro ONNX export with its voices " +
			"with 'falocal weights import -pipeline kokoro -name NAME -dir DIR' (DIR: one .onnx file, voices/<name>.bin, optionally vocab.json)"}
	man, err := p.deps.Resolve(w)
	if errors.Is(err, pipelines.ErrNoModel) && p.deps.Config.Models["kokoro"] == "" {
		w.Match = isModel
		man, err = p.deps.Resolve(w)
	}
	if err != nil {
		return nil, err
	}
	return pipelines.Loaded(p.models, man, func() (*Model, error) { return LoadModel(man, p.deps.Store, p.models) })
}

// isModel tells a Kokoro model (one .onnx file) from other manifests of the
// pipeline, such as a front end's lexicons.
func isModel(m weights.Manifest) bool {
	n := 0
	for _, f := range m.Files {
		if strings.HasSuffix(f.Name, ".onnx") {
			n++
		}
	}
	return n == 1
}

// Warm opens the model's session.
func (p *Pipeline) Warm(ctx context.Context, endpoint string) error {
	m, err := p.Model()
	if err != nil {
		return err
	}
	return m.net.Warm(ctx)
}

type endpoint struct {
	p    *Pipeline
	lang Language
}

func (e *endpoint) ID() string { return e.lang.Endpoint }

type input struct {
	Prompt *string  `json:"prompt"`
	Voice  *string  `json:"voice"`
	Speed  *float64 `json:"speed"`
}

// File is fal's File output object.
type File struct {
	URL         string `json:"url"`
	ContentType string `json:"content_type"`
	FileName    string `json:"file_name"`
	FileSize    int    `json:"file_size"`
}

// Output is the endpoints' output.
type Output struct {
	Audio File `json:"audio"`
}

// Describe documents one language's endpoint.
func (e *endpoint) Describe() pipelines.Description {
	return pipelines.Description{Title: "Text to speech (Kokoro, " + e.lang.Name + ")", Category: "text-to-speech",
		Summary: "Speaks " + e.lang.Name + " text with Kokoro-82M in one of its voices, as a WAV file.",
		Input: pipelines.Schema{Fields: []pipelines.Field{
			{Name: "prompt", Type: pipelines.String, Title: "Text", Required: true, MaxLength: MaxPromptChars,
				Description: "The text to speak.", Examples: []any{"The quick brown fox jumped over the lazy dog."}},
			{Name: "voice", Type: pipelines.String, Enum: e.lang.Voices, OpenEnum: true, Default: e.lang.Default,
				Description: "The voice: one of fal's, or one an imported voice pack adds for this language."},
			{Name: "speed", Type: pipelines.Number, Default: 1.0, Min: pipelines.Num(0.1), Max: pipelines.Num(5),
				Description: "Speaking rate; 1 is the voice's own."},
		}},
		Output: Output{}}
}

func (e *endpoint) Run(ctx context.Context, req *pipelines.Request) (any, error) {
	var in input
	if _, err := e.Describe().Input.Decode(req.Input, &in); err != nil {
		return nil, err
	}
	v := &pipelines.ValidationError{}
	prompt, voice, speed := *in.Prompt, *in.Voice, *in.Speed
	if strings.TrimSpace(prompt) == "" {
		v.Add("prompt", "value_error", "prompt has no text to speak")
	}
	var m *Model
	if !slices.Contains(e.lang.Voices, voice) {
		// a voice of this language that an imported voice pack adds
		var err error
		if m, err = e.p.Model(); err != nil || voice == "" || voice[0] != e.lang.Letter || !m.HasVoice(voice) {
			pipelines.Literal(v, "voice", &voice, "", e.lang.Voices...)
		}
	}
	if err := v.Err(); err != nil {
		return nil, err
	}
	if m == nil {
		var err error
		if m, err = e.p.Model(); err != nil {
			return nil, err
		}
	}
	if !m.HasVoice(voice) {
		return nil, pipelines.Invalid("voice", fmt.Sprintf("model %s has no voice %s (it has %s)", m.Name, voice, strings.Join(m.Voices(), ", ")))
	}

	t0 := time.Now()
	ps, err := e.p.FrontEnd(e.lang).Phonemize(ctx, prompt)
	if err != nil {
		return nil, pipelines.MapError("could not read the text", err)
	}
	known := m.Known(strings.Join(strings.Fields(ps), " "))
	chunks := SplitPhonemes(known, MaxTokens)
	if len(chunks) == 0 {
		return nil, pipelines.Invalid("prompt", "the text gives no phonemes Kokoro can speak")
	}
	req.Logf(pipelines.Info, "%s: %d characters → %d phonemes in %d chunk(s), voice %s, speed %g (text read in %v)",
		m.Name, utf8.RuneCountInString(prompt), utf8.RuneCountInString(known), len(chunks), voice, speed, time.Since(t0).Round(time.Millisecond))

	hold, err := e.p.models.Hold(ctx, m.man)
	if err != nil {
		return nil, err
	}
	defer hold.Release()
	var audio []float32
	for i, c := range chunks {
		t1 := time.Now()
		tokens := m.Tokens(c)
		style, err := m.Style(voice, len(tokens))
		if err != nil {
			return nil, pipelines.MapError("model "+m.Name+" cannot be read", err)
		}
		raw, err := m.Synthesize(ctx, hold, tokens, style, float32(speed))
		if err != nil {
			return nil, pipelines.MapError("model "+m.Name+" failed", err)
		}
		part := Trim(raw)
		if i < len(chunks)-1 {
			part = append(part, make([]float32, int(PauseAfter(c)*SampleRate))...)
		}
		audio = append(audio, part...)
		secs := float64(len(part)) / SampleRate
		req.Logf(pipelines.Info, "chunk %d/%d: %d tokens → %.2f s of audio in %v", i+1, len(chunks), len(tokens), secs, time.Since(t1).Round(time.Millisecond))
		if req.Partial != nil {
			// fal.stream: each chunk as it is ready, as a WAV data URI
			wav := WAV(part, SampleRate)
			req.Partial(Output{Audio: File{URL: "data:audio/wav;base64," + base64.StdEncoding.EncodeToString(wav),
				ContentType: "audio/wav", FileName: fmt.Sprintf("%s-%d.wav", req.ID, i+1), FileSize: len(wav)}})
		}
	}
	if len(audio) == 0 {
		return nil, pipelines.Invalid("prompt", "the text gave no audible speech")
	}
	wav := WAV(audio, SampleRate)
	name := req.ID + ".wav"
	if req.ID == "" {
		name = "speech.wav"
	}
	url, err := req.Files.Save(ctx, wav, "audio/wav", name)
	if err != nil {
		if ctx.Err() != nil {
			return nil, err
		}
		return nil, errors.Join(errors.New("saving the audio"), err)
	}
	dur := float64(len(audio)) / SampleRate
	req.Logf(pipelines.Info, "done: %.2f s of audio in %v (%.2fx real time)", dur, time.Since(t0).Round(time.Millisecond), dur/time.Since(t0).Seconds())
	return Output{Audio: File{URL: url, ContentType: "audio/wav", FileName: name, FileSize: len(wav)}}, nil
}
