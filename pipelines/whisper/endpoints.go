// Package whisper is speech-to-text on fal's whisper and wizper endpoints:
// audio decoding and resampling (audio/), Whisper's log-mel front end, its
// tokenizer (tokenizer/), and its decoding (greedy, beam search, timestamp
// rules, temperature fallback, long-form seeking) over optimum ONNX exports.
package whisper

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/falocal/falocal/pipelines"
	"github.com/falocal/falocal/pipelines/whisper/audio"
	"github.com/falocal/falocal/pipelines/whisper/tokenizer"
	"github.com/falocal/falocal/weights"
)

func init() { pipelines.Register("whisper", New) }

// DefaultMaxAudio is the longest input accepted unless configured.
const DefaultMaxAudio = 4 * time.Hour

// Pipeline serves both endpoints over the installed Whisper models.
type Pipeline struct {
	deps   pipelines.Deps
	models *pipelines.Models
}

// New builds fal-ai/whisper and fal-ai/wizper.
func New(d pipelines.Deps) (pipelines.Pipeline, error) {
	return &Pipeline{deps: d, models: pipelines.NewModels(d)}, nil
}

// Endpoints are fal-ai/whisper and fal-ai/wizper.
func (p *Pipeline) Endpoints() []pipelines.Endpoint {
	return []pipelines.Endpoint{&endpoint{p: p, id: "fal-ai/whisper"}, &endpoint{p: p, id: "fal-ai/wizper", wizper: true}}
}

// Close releases the loaded sessions.
func (p *Pipeline) Close() error { return p.models.Close() }

// model picks the installed Whisper model for an endpoint: the one the
// server config names for it ("whisper" or "wizper", which falls back to
// whisper's setting), else one whose manifest serves the endpoint (setup's
// whisper-base serves both), else the first installed one.
func (p *Pipeline) model(wizper bool) (*Model, error) {
	w := pipelines.Want{Pipeline: "whisper", Key: "whisper", What: "a Whisper model",
		Install: "run 'falocal setup', or import a faster-whisper model directory or an optimum ONNX export with " +
			"'falocal weights import -pipeline whisper -name NAME -dir DIR'"}
	if wizper {
		w.Key, w.Keys = "wizper", []string{"whisper"}
	}
	man, err := p.deps.Resolve(w)
	if errors.Is(err, pipelines.ErrNoModel) && p.deps.Config.Models[w.Key] == "" && (!wizper || p.deps.Config.Models["whisper"] == "") {
		w.Match = func(weights.Manifest) bool { return true }
		man, err = p.deps.Resolve(w)
	}
	if err != nil {
		return nil, err
	}
	return pipelines.Loaded(p.models, man, func() (*Model, error) { return LoadModel(man, p.deps.Store, p.models) })
}

// vad is the installed voice activity model that cuts the batched mode's
// windows at silences; nil when there is none.
func (p *Pipeline) vad() (*VAD, error) {
	man, err := p.deps.Resolve(pipelines.Want{Pipeline: "vad", Key: "silero-vad", What: "a voice activity model",
		Match: func(weights.Manifest) bool { return true }})
	if errors.Is(err, pipelines.ErrNoModel) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return pipelines.Loaded(p.models, man, func() (*VAD, error) { return LoadVAD(man, p.models) })
}

// Warm opens the sessions of the endpoint's model: encoder and decoders.
func (p *Pipeline) Warm(ctx context.Context, endpoint string) error {
	m, err := p.model(endpoint == "fal-ai/wizper")
	if err != nil {
		return err
	}
	for _, n := range []*decoderNet{m.enc, m.dec, m.decPast} {
		if n == nil {
			continue
		}
		if err := n.pool.Warm(ctx); err != nil {
			return fmt.Errorf("whisper model %s: %w", m.Name, err)
		}
	}
	return nil
}

type endpoint struct {
	p      *Pipeline
	id     string
	wizper bool
}

func (e *endpoint) ID() string { return e.id }

// input is the union of fal's whisper and wizper inputs; pointers tell
// absent from zero.
type input struct {
	AudioURL      *string  `json:"audio_url"`
	Task          *string  `json:"task"`
	Language      *string  `json:"language"`
	Diarize       *bool    `json:"diarize"`
	ChunkLevel    *string  `json:"chunk_level"`
	Version       *string  `json:"version"`
	BatchSize     *int     `json:"batch_size"`
	Prompt        *string  `json:"prompt"`
	NumSpeakers   *int     `json:"num_speakers"`
	MaxSegmentLen *float64 `json:"max_segment_len"`
	MergeChunks   *bool    `json:"merge_chunks"`
}

// Chunk is fal's output chunk: [start, end] seconds and its text.
type Chunk struct {
	Timestamp [2]float64 `json:"timestamp"`
	Text      string     `json:"text"`
}

// WhisperOutput is fal-ai/whisper's output.
type WhisperOutput struct {
	Text                string   `json:"text"`
	Chunks              []Chunk  `json:"chunks"`
	InferredLanguages   []string `json:"inferred_languages"`
	DiarizationSegments []Chunk  `json:"diarization_segments"`
}

// WizperOutput is fal-ai/wizper's output.
type WizperOutput struct {
	Text      string   `json:"text"`
	Chunks    []Chunk  `json:"chunks"`
	Languages []string `json:"languages"`
}

// Describe documents fal-ai/whisper and fal-ai/wizper.
func (e *endpoint) Describe() pipelines.Description {
	codes := make([]string, 0, len(tokenizer.LanguageNames))
	for c := range tokenizer.LanguageNames {
		codes = append(codes, c)
	}
	sort.Strings(codes)
	lang := pipelines.Field{Name: "language", Type: pipelines.String, Enum: codes, OpenEnum: true, Nullable: true,
		Description: "The language spoken, as a code ('en', 'de', 'zh', …) or an English name; null detects it."}
	if e.wizper {
		lang.Default = "en"
		lang.Description = "The language spoken, as a code ('en', 'de', 'zh', …) or an English name; null detects it (default 'en')."
	}
	fs := []pipelines.Field{
		{Name: "audio_url", Type: pipelines.String, Title: "Audio", Required: true, Media: "audio",
			Description: "The audio to transcribe (WAV, MP3, FLAC, Ogg/Opus/Vorbis, M4A/AAC, WebM): an http(s) URL this server may read (its own file URLs, allow-listed hosts) or a data: URI.",
			Examples:    []any{"https://storage.googleapis.com/falserverless/model_tests/whisper/dinner_conversation.mp3"}},
		{Name: "task", Type: pipelines.String, Enum: []string{"transcribe", "translate"}, Default: "transcribe",
			Description: "Transcribe in the spoken language, or translate into English."},
		lang,
		{Name: "chunk_level", Type: pipelines.String, Enum: []string{"none", "segment", "word"}, Default: "segment",
			Description: "The timestamped chunks returned: none, one per segment, or one per word."},
		{Name: "version", Type: pipelines.String, Enum: []string{"3"}, Default: "3", Advanced: true,
			Description: "fal's Whisper version; the installed model answers whatever it is."},
		{Name: "batch_size", Type: pipelines.Integer, Default: 64, Min: pipelines.Num(1), Max: pipelines.Num(64), Advanced: true,
			Description: "How many 30-second windows are decoded together; 1 decodes sequentially, each window conditioned on the text before it."},
		{Name: "prompt", Type: pipelines.String, Default: "", Advanced: true,
			Description: "Text that comes before the audio, to guide spelling and style."},
	}
	if e.wizper {
		fs = append(fs,
			pipelines.Field{Name: "max_segment_len", Type: pipelines.Number, Default: 29.0, Min: pipelines.Num(10), Max: pipelines.Num(29), Advanced: true,
				Description: "The longest merged chunk, in seconds."},
			pipelines.Field{Name: "merge_chunks", Type: pipelines.Boolean, Default: true, Advanced: true,
				Description: "Merge consecutive segments into chunks of up to max_segment_len seconds."})
		return pipelines.Description{Title: "Speech to text (Wizper)", Category: "speech-to-text",
			Summary: "Transcribes or translates speech with Whisper, returning merged timestamped chunks.",
			Input:   pipelines.Schema{Fields: fs}, Output: WizperOutput{}}
	}
	fs = append(fs,
		pipelines.Field{Name: "diarize", Type: pipelines.Boolean, Default: false, Advanced: true,
			Description: "Label speakers; needs a diarization model, which this server does not have."},
		pipelines.Field{Name: "num_speakers", Type: pipelines.Integer, Min: pipelines.Num(1), Nullable: true, Advanced: true,
			Description: "How many speakers, for diarization."})
	return pipelines.Description{Title: "Speech to text (Whisper)", Category: "speech-to-text",
		Summary: "Transcribes or translates speech with Whisper, with segment or word timestamps.",
		Input:   pipelines.Schema{Fields: fs}, Output: WhisperOutput{}}
}

func (e *endpoint) Run(ctx context.Context, req *pipelines.Request) (any, error) {
	var in input
	if _, err := e.Describe().Input.Decode(req.Input, &in); err != nil {
		return nil, err
	}
	v := &pipelines.ValidationError{}
	url, task, level, batch := *in.AudioURL, *in.Task, *in.ChunkLevel, *in.BatchSize
	lang := ""
	if in.Language != nil {
		lang = strings.ToLower(*in.Language)
		if code, ok := tokenizer.LanguageCode(lang); ok {
			lang = code
		} else {
			v.Add("language", "literal_error", "Input should be a language code Whisper knows, such as 'en', 'de' or 'zh', or null to detect it")
		}
	}
	maxSeg := 29.0
	if e.wizper {
		maxSeg = *in.MaxSegmentLen
	}
	if !e.wizper && *in.Diarize {
		v.Add("diarize", "value_error", "speaker diarization needs a diarization model, and none runs locally; set diarize to false")
	}
	if err := v.Err(); err != nil {
		return nil, err
	}
	m, err := e.p.model(e.wizper)
	if err != nil {
		return nil, err
	}
	if lang != "" {
		if _, ok := m.tok.LanguageToken(lang); !ok && m.tok.Multilingual() {
			return nil, pipelines.Invalid("language", fmt.Sprintf("model %s does not know language %q", m.Name, lang))
		}
		if !m.tok.Multilingual() && lang != "en" {
			return nil, pipelines.Invalid("language", fmt.Sprintf("model %s is English-only", m.Name))
		}
	}
	if level == "word" && !m.HasWordTimestamps() {
		return nil, pipelines.Invalid("chunk_level", fmt.Sprintf("model %s cannot time words: its decoder does not output the alignment heads' cross-attention weights "+
			"(exports converted from faster-whisper by 'falocal setup' or 'falocal weights import' do; Hugging Face optimum exports do not); use 'segment' or 'none'", m.Name))
	}
	// whatever the language says: an English-only model has no translate task
	if !m.tok.Multilingual() && task == "translate" {
		return nil, pipelines.Invalid("task", fmt.Sprintf("model %s is English-only and cannot translate", m.Name))
	}

	data, err := pipelines.LoadBytes(ctx, req, e.p.deps.Config, "audio_url", url)
	if err != nil {
		return nil, err
	}
	limit := e.p.deps.Config.MaxAudioDuration
	if limit == 0 {
		limit = DefaultMaxAudio
	}
	t0 := time.Now()
	a, err := audio.Decode(data, limit)
	if err != nil {
		return nil, audioError(err, limit)
	}
	pcm := a.Mono16k()
	dur := float64(len(pcm)) / SampleRate
	req.Logf(pipelines.Info, "audio: %.1f s, %d Hz, %d channel(s), decoded in %v", a.Duration().Seconds(), a.Rate, a.Channels, time.Since(t0).Round(time.Millisecond))

	// the input is here: keep the encoder and decoder resident across the
	// many runs of the request
	hold, err := e.p.models.Hold(ctx, m.man)
	if err != nil {
		return nil, err
	}
	defer hold.Release()
	m = m.Held(hold)

	opt := TranscribeOptions{Options: Options{Task: task, Language: lang}, WordTimestamps: level == "word"}
	prompt := *in.Prompt
	var tr *Transcript
	windows := int(math.Ceil(dur / chunkSecs))
	if batch > 1 && windows > 1 {
		if opt.VAD, err = e.p.vad(); err != nil {
			return nil, err
		}
		if opt.VAD == nil {
			req.Logf(pipelines.Warn, "no voice activity model is installed (run 'falocal setup'): windows are cut every 30 s, and a word at a cut may be lost; batch_size 1 avoids that")
		}
		tr, err = m.TranscribeBatched(ctx, pcm, opt, prompt, batch, func(f string, a ...any) { req.Logf(pipelines.Info, f, a...) })
	} else {
		opt.InitialPrompt = prompt
		opt.Progress = func(done, total int) {
			req.Logf(pipelines.Info, "transcribed %.1f of %.1f s", float64(done)/framesPerSec, float64(total)/framesPerSec)
		}
		tr, err = m.Transcribe(ctx, pcm, opt)
	}
	if err != nil {
		return nil, err
	}
	req.Logf(pipelines.Info, "done: %d segments, language %s, %.2fx real time", len(tr.Segments), tr.Language, dur/time.Since(t0).Seconds())
	chunks := toChunks(tr, level, dur)
	if e.wizper && *in.MergeChunks && level == "segment" {
		chunks = mergeChunks(chunks, maxSeg)
	}
	text := strings.TrimSpace(tr.Text)
	if e.wizper {
		return WizperOutput{Text: text, Chunks: chunks, Languages: []string{tr.Language}}, nil
	}
	return WhisperOutput{Text: text, Chunks: chunks, InferredLanguages: []string{tr.Language}, DiarizationSegments: []Chunk{}}, nil
}

// audioError maps decoding failures to 4xx answers.
func audioError(err error, limit time.Duration) error {
	var unsup *audio.UnsupportedError
	var long *audio.TooLongError
	switch {
	case errors.As(err, &unsup):
		return pipelines.Invalid("audio_url", err.Error())
	case errors.As(err, &long) && long.Length > 0:
		return &pipelines.HTTPError{Status: http.StatusRequestEntityTooLarge, Msg: fmt.Sprintf("audio_url: the audio is %v long, over this server's limit of %v", long.Length, limit)}
	case errors.Is(err, audio.ErrTooLong):
		return &pipelines.HTTPError{Status: http.StatusRequestEntityTooLarge, Msg: fmt.Sprintf("audio_url: the audio is longer than this server's limit of %v", limit)}
	case errors.Is(err, audio.ErrEmpty):
		return pipelines.Invalid("audio_url", "the audio has no samples")
	case errors.Is(err, audio.ErrUnknownFormat):
		return pipelines.Invalid("audio_url", "not an audio file this server can decode (supported: "+strings.Join(audio.SupportedFormats, ", ")+")")
	}
	return pipelines.Invalid("audio_url", "could not decode the audio: "+err.Error())
}

// windowSegments cuts one independently decoded window at its timestamp
// pairs; text after the last timestamp runs to the window's end.
func windowSegments(tok *tokenizer.Tokenizer, r Result, off, end float64) []Segment {
	tsBegin := tok.TimestampBegin()
	var segs []Segment
	var cur []int
	start := off
	emit := func(stop float64) {
		var text []int
		for _, x := range cur {
			if x < tok.EOT() {
				text = append(text, x)
			}
		}
		if t := tok.Decode(text); strings.TrimSpace(t) != "" {
			segs = append(segs, Segment{Start: start, End: math.Max(start, stop), Text: t, Tokens: text,
				Temperature: r.Temperature, AvgLogprob: r.AvgLogprob, CompressionRatio: r.CompressionRatio, NoSpeechProb: r.NoSpeechProb})
		}
		cur = nil
	}
	open := false
	for _, x := range r.Tokens {
		if x >= tsBegin {
			ts := off + float64(x-tsBegin)*0.02
			if open && len(cur) > 0 {
				emit(math.Min(ts, end))
				open = false
			} else {
				start, open = math.Min(ts, end), true
			}
			continue
		}
		if !open && len(cur) == 0 && len(segs) > 0 {
			start = segs[len(segs)-1].End
		}
		cur = append(cur, x)
	}
	if len(cur) > 0 {
		emit(end)
	}
	return segs
}

// toChunks turns segments (or their words, at level "word") into fal's
// chunks; level "none" is one chunk.
func toChunks(tr *Transcript, level string, dur float64) []Chunk {
	chunks := []Chunk{}
	if level == "none" {
		if t := strings.TrimSpace(tr.Text); t != "" {
			chunks = append(chunks, Chunk{Timestamp: [2]float64{0, round2(dur)}, Text: t})
		}
		return chunks
	}
	for _, s := range tr.Segments {
		if strings.TrimSpace(s.Text) == "" {
			continue
		}
		if level == "word" {
			for _, w := range s.Words {
				st, en := math.Min(w.Start, dur), math.Min(w.End, dur)
				chunks = append(chunks, Chunk{Timestamp: [2]float64{round2(st), round2(en)}, Text: w.Text})
			}
			continue
		}
		// Whisper may place a timestamp past the end of the audio
		st, en := math.Min(s.Start, dur), math.Min(s.End, dur)
		chunks = append(chunks, Chunk{Timestamp: [2]float64{round2(st), round2(en)}, Text: s.Text})
	}
	sort.SliceStable(chunks, func(i, j int) bool { return chunks[i].Timestamp[0] < chunks[j].Timestamp[0] })
	return chunks
}

// mergeChunks joins neighbouring chunks while the result stays within
// maxLen seconds, as wizper's merge_chunks does.
func mergeChunks(in []Chunk, maxLen float64) []Chunk {
	out := []Chunk{}
	for _, c := range in {
		if n := len(out); n > 0 && c.Timestamp[1]-out[n-1].Timestamp[0] <= maxLen {
			out[n-1].Timestamp[1] = c.Timestamp[1]
			out[n-1].Text += c.Text
			continue
		}
		out = append(out, c)
	}
	return out
}

func round2(x float64) float64 { return math.Round(x*100) / 100 }
