package whisper

import (
	"cmp"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/falocal/falocal/engine"
	"github.com/falocal/falocal/pipelines"
	"github.com/falocal/falocal/pipelines/whisper/tokenizer"
	"github.com/falocal/falocal/weights"
)

// hfConfig is the part of a Hugging Face Whisper config.json that shapes
// the ONNX inputs.
type hfConfig struct {
	DModel        int `json:"d_model"`
	DecoderHeads  int `json:"decoder_attention_heads"`
	DecoderLayers int `json:"decoder_layers"`
	NumMelBins    int `json:"num_mel_bins"`
	VocabSize     int `json:"vocab_size"`
	MaxTarget     int `json:"max_target_positions"`
	MaxSource     int `json:"max_source_positions"`
}

// Model is one installed Whisper export: encoder, decoder (merged, or the
// plain + with-past pair) and tokenizer.
type Model struct {
	Name    string
	man     weights.Manifest
	cfg     hfConfig
	tok     *tokenizer.Tokenizer
	enc     *decoderNet // the encoder, same bookkeeping
	dec     *decoderNet // merged, or the first-step decoder
	decPast *decoderNet // unmerged layout: the with-past decoder
	merged  bool
	headDim int
	stats   *stats
	hold    *engine.Hold // a request's hold on the model (Held); nil on the shared Model
}

// Held is the model for one request that holds it resident (see
// pipelines.Models.Hold): its runs carry the hold.
func (m *Model) Held(h *engine.Hold) *Model {
	c := *m
	c.hold = h
	return &c
}

// stats accumulates where time goes, for benchmarks.
type stats struct {
	frontEnd, encoder, decoder atomic.Int64 // nanoseconds
	decoderCalls               atomic.Int64
}

// Stats is a snapshot of a model's time split since the last reset.
type Stats struct {
	FrontEnd, Encoder, Decoder time.Duration
	DecoderCalls               int64
}

// Stats returns the time spent in the front end, the encoder and the
// decoder since the last ResetStats.
func (m *Model) Stats() Stats {
	return Stats{time.Duration(m.stats.frontEnd.Load()), time.Duration(m.stats.encoder.Load()),
		time.Duration(m.stats.decoder.Load()), m.stats.decoderCalls.Load()}
}

// ResetStats zeroes the counters.
func (m *Model) ResetStats() {
	m.stats.frontEnd.Store(0)
	m.stats.encoder.Store(0)
	m.stats.decoder.Store(0)
	m.stats.decoderCalls.Store(0)
}

// Tokenizer returns the model's tokenizer.
func (m *Model) Tokenizer() *tokenizer.Tokenizer { return m.tok }

// Mels is the number of mel bands the encoder takes (80, or 128 for large-v3).
func (m *Model) Mels() int { return m.cfg.NumMelBins }

func (m *Model) vocab() int   { return m.cfg.VocabSize }
func (m *Model) textCtx() int { return m.cfg.MaxTarget }

// LoadModel opens a store manifest as a Whisper model. Sessions open lazily
// through models, which owns their lifetime.
func LoadModel(man weights.Manifest, store *weights.Store, models *pipelines.Models) (*Model, error) {
	files := map[string]string{}
	for _, f := range man.Files {
		p, err := store.Path(man, f.Role)
		if err != nil {
			return nil, err
		}
		files[f.Name] = p
	}
	b, err := os.ReadFile(files["config.json"])
	if err != nil {
		return nil, fmt.Errorf("whisper model %s: config.json: %w", man.Name, err)
	}
	var cfg hfConfig
	if err := json.Unmarshal(b, &cfg); err != nil {
		return nil, fmt.Errorf("whisper model %s: config.json: %w", man.Name, err)
	}
	if cfg.DModel <= 0 || cfg.DecoderHeads <= 0 || cfg.DModel%cfg.DecoderHeads != 0 || cfg.DecoderLayers <= 0 ||
		(cfg.NumMelBins != 80 && cfg.NumMelBins != 128) || cfg.VocabSize <= 0 || cfg.MaxTarget <= 0 {
		return nil, fmt.Errorf("whisper model %s: config.json does not describe a Whisper model (%+v)", man.Name, cfg)
	}
	if cfg.MaxSource != 0 && cfg.MaxSource != nFrames/2 {
		return nil, fmt.Errorf("whisper model %s: max_source_positions %d, want %d", man.Name, cfg.MaxSource, nFrames/2)
	}
	tok, err := tokenizer.FromHF(files)
	if err != nil {
		return nil, fmt.Errorf("whisper model %s: tokenizer: %w", man.Name, err)
	}
	if tok.VocabSize() > cfg.VocabSize {
		return nil, fmt.Errorf("whisper model %s: tokenizer has %d tokens, the model %d", man.Name, tok.VocabSize(), cfg.VocabSize)
	}
	m := &Model{Name: man.Name, man: man, cfg: cfg, tok: tok, headDim: cfg.DModel / cfg.DecoderHeads, stats: &stats{}}
	encPool, err := models.PoolFor(man, "encoder_model.onnx", []string{"input_features"}, []string{"last_hidden_state"})
	if err != nil {
		return nil, err
	}
	m.enc = &decoderNet{pool: encPool, inputs: []string{"input_features"}, outputs: []string{"last_hidden_state"}}
	// Exports differ in their inputs (newer ones add cache_position), so the
	// decoders are opened with the names their graphs declare.
	open := func(file string) (*decoderNet, error) {
		in, out, err := weights.ONNXIO(files[file])
		if err != nil {
			return nil, err
		}
		if file == "decoder_with_past_model.onnx" {
			// word timestamps read the first decoder's; not fetched per step
			out = slices.DeleteFunc(out, func(s string) bool { return s == crossAttentionsOutput })
		}
		pl, err := models.PoolFor(man, file, in, out)
		if err != nil {
			return nil, err
		}
		return &decoderNet{pool: pl, inputs: in, outputs: out}, nil
	}
	if _, ok := files["decoder_model_merged.onnx"]; ok {
		m.merged = true
		m.dec, err = open("decoder_model_merged.onnx")
		return m, err
	}
	if m.dec, err = open("decoder_model.onnx"); err != nil {
		return nil, err
	}
	m.decPast, err = open("decoder_with_past_model.onnx")
	return m, err
}

// decoderNet is a decoder session with its graph's input and output names.
type decoderNet struct {
	pool            *pipelines.Net
	inputs, outputs []string
	once            sync.Once
	dtypes          map[string]engine.DType // input name → element type
	err             error
}

// inputTypes opens a session once to learn which inputs are float16.
func (d *decoderNet) inputTypes(ctx context.Context) (map[string]engine.DType, error) {
	d.once.Do(func() {
		s, err := d.pool.Session(ctx)
		if err != nil {
			d.err = err
			return
		}
		d.dtypes = map[string]engine.DType{}
		for _, in := range s.Inputs() {
			d.dtypes[in.Name] = in.DType
		}
	})
	return d.dtypes, d.err
}

// floatTensor wraps float32 data as the element type an input wants.
func floatTensor(data []float32, dt engine.DType, shape ...int64) (*engine.Tensor, error) {
	if dt != engine.Float16 {
		return engine.NewFloat32(data, shape...)
	}
	if n := engine.Elements(shape); n != int64(len(data)) {
		return nil, fmt.Errorf("shape %v needs %d elements, have %d", shape, n, len(data))
	}
	h := make([]uint16, len(data))
	engine.CPUOps().F32ToF16(h, data)
	raw := make([]byte, 2*len(h))
	for i, v := range h {
		binary.LittleEndian.PutUint16(raw[2*i:], v)
	}
	return &engine.Tensor{DType: engine.Float16, Shape: shape, Raw: raw}, nil
}

// floats returns a float output as float32 values.
func floats(t *engine.Tensor) ([]float32, error) {
	switch t.DType {
	case engine.Float32:
		return t.F32, nil
	case engine.Float16:
		h := make([]uint16, len(t.Raw)/2)
		for i := range h {
			h[i] = binary.LittleEndian.Uint16(t.Raw[2*i:])
		}
		out := make([]float32, len(h))
		engine.CPUOps().F16ToF32(out, h)
		return out, nil
	}
	return nil, fmt.Errorf("output is %s, not a float type", t.DType)
}

// encode runs the encoder on windows of bands×3000 log-mel frames.
func (m *Model) encode(ctx context.Context, mels [][]float32) (*features, error) {
	per := m.cfg.NumMelBins * nFrames
	in := make([]float32, 0, per*len(mels))
	for _, w := range mels {
		if len(w) != per {
			return nil, fmt.Errorf("whisper: window has %d values, want %d", len(w), per)
		}
		in = append(in, w...)
	}
	types, err := m.enc.inputTypes(ctx)
	if err != nil {
		return nil, err
	}
	t, err := floatTensor(in, types["input_features"], int64(len(mels)), int64(m.cfg.NumMelBins), nFrames)
	if err != nil {
		return nil, err
	}
	shapes := map[string][]int64{"last_hidden_state": {int64(len(mels)), nFrames / 2, int64(m.cfg.DModel)}}
	t0 := time.Now()
	out, err := m.enc.pool.Do(ctx, engine.Run{Inputs: []*engine.Tensor{t}, OutputShapes: shapes, Hold: m.hold})
	m.stats.encoder.Add(int64(time.Since(t0)))
	if err != nil {
		return nil, err
	}
	h := out[0]
	data, err := floats(h)
	if err != nil || len(h.Shape) != 3 || h.Shape[0] != int64(len(mels)) || h.Shape[2] != int64(m.cfg.DModel) {
		return nil, fmt.Errorf("whisper: encoder output %s %v", h.DType, h.Shape)
	}
	return &features{n: len(mels), ctx: int(h.Shape[1]), d: m.cfg.DModel, data: data}, nil
}

// features is the encoder output of a batch of windows.
type features struct {
	n, ctx, d int
	data      []float32
}

// ortState is the decoder cache for rows that each attend to one window:
// row r reads window rowAudio[r].
type ortState struct {
	m        *Model
	f        *features
	rowAudio []int
	encH     []float32   // encoder states repeated per row
	self     [][]float32 // per layer: key, value [rows, heads, past, headDim]
	cross    [][]float32 // per layer: key, value [rows, heads, ctx, headDim]
	past     int
	keepAttn bool           // keep the next forward's cross_attentions output in attn
	attn     *engine.Tensor // word timestamps: the alignment heads' cross-attention
}

// newState makes a fresh cache of rows rows over windows f, each window
// repeated rows/f.n times in a row (beam groups).
func (m *Model) newState(f *features, rows int) *ortState {
	group := rows / f.n
	st := &ortState{m: m, f: f, rowAudio: make([]int, rows)}
	per := f.ctx * f.d
	st.encH = make([]float32, rows*per)
	for r := range st.rowAudio {
		a := r / group
		st.rowAudio[r] = a
		copy(st.encH[r*per:], f.data[a*per:(a+1)*per])
	}
	return st
}

func (s *ortState) reorder(src []int) {
	if s.past == 0 {
		return
	}
	h, hd := int64(s.m.cfg.DecoderHeads), int64(s.m.headDim)
	per := int(h) * s.past * int(hd)
	for i, kv := range s.self {
		out := make([]float32, len(kv))
		for r, from := range src {
			copy(out[r*per:(r+1)*per], kv[from*per:(from+1)*per])
		}
		s.self[i] = out
	}
	// the cross-attention cache is identical within a beam group, and beams
	// never move between groups, so it stays as it is
}

func (m *Model) forward(ctx context.Context, st decoderState, tokens [][]int) ([]float32, error) {
	s := st.(*ortState)
	rows, n := len(tokens), len(tokens[0])
	ids := make([]byte, 8*rows*n)
	for r, row := range tokens {
		if len(row) != n {
			return nil, fmt.Errorf("whisper: ragged decoder input")
		}
		for i, x := range row {
			binary.LittleEndian.PutUint64(ids[8*(r*n+i):], uint64(x))
		}
	}
	h, hd := int64(m.cfg.DecoderHeads), int64(m.headDim)
	first := s.past == 0
	net := m.dec
	if !first && !m.merged {
		net = m.decPast
	}
	types, err := net.inputTypes(ctx)
	if err != nil {
		return nil, err
	}
	in := make([]*engine.Tensor, len(net.inputs))
	for i, name := range net.inputs {
		dt := types[name]
		var t *engine.Tensor
		var err error
		switch {
		case name == "input_ids":
			t = &engine.Tensor{DType: engine.Int64, Shape: []int64{int64(rows), int64(n)}, Raw: ids}
		case name == "encoder_hidden_states":
			t, err = floatTensor(s.encH, dt, int64(rows), int64(s.f.ctx), int64(s.f.d))
		case name == "use_cache_branch":
			t = &engine.Tensor{DType: engine.Bool, Shape: []int64{1}, Raw: []byte{0}}
			if !first {
				t.Raw[0] = 1
			}
		case name == "cache_position":
			pos := make([]byte, 8*n)
			for j := 0; j < n; j++ {
				binary.LittleEndian.PutUint64(pos[8*j:], uint64(s.past+j))
			}
			t = &engine.Tensor{DType: engine.Int64, Shape: []int64{int64(n)}, Raw: pos}
		default:
			var layer int
			var kind string
			if _, e := fmt.Sscanf(name, "past_key_values.%d.%s", &layer, &kind); e != nil || layer >= m.cfg.DecoderLayers {
				return nil, fmt.Errorf("whisper: decoder input %q is not one this pipeline knows", name)
			}
			k := 0
			if kind == "decoder.value" || kind == "encoder.value" {
				k = 1
			}
			switch {
			case first:
				// the no-cache branch ignores the past; one step of zeros
				// keeps every tensor non-empty
				t, err = floatTensor(make([]float32, int64(rows)*h*hd), dt, int64(rows), h, 1, hd)
			case kind == "decoder.key" || kind == "decoder.value":
				t, err = floatTensor(s.self[2*layer+k], dt, int64(rows), h, int64(s.past), hd)
			case kind == "encoder.key" || kind == "encoder.value":
				t, err = floatTensor(s.cross[2*layer+k], dt, int64(rows), h, int64(s.f.ctx), hd)
			default:
				return nil, fmt.Errorf("whisper: decoder input %q is not one this pipeline knows", name)
			}
		}
		if err != nil {
			return nil, err
		}
		in[i] = t
	}
	L := m.cfg.DecoderLayers
	// float16 outputs need their shapes up front (see engine.Session.Run)
	hints := map[string][]int64{"logits": {int64(rows), int64(n), int64(m.cfg.VocabSize)}}
	for l := 0; l < L; l++ {
		for _, kv := range []string{"key", "value"} {
			hints[fmt.Sprintf("present.%d.decoder.%s", l, kv)] = []int64{int64(rows), h, int64(s.past + n), hd}
			x := []int64{int64(rows), h, int64(s.f.ctx), hd}
			if !first {
				x = []int64{0, h, 1, hd} // the merged decoder's cache branch outputs nothing here
			}
			hints[fmt.Sprintf("present.%d.encoder.%s", l, kv)] = x
		}
	}
	t0 := time.Now()
	outs, err := net.pool.Do(ctx, engine.Run{Inputs: in, OutputShapes: hints, Hold: m.hold})
	m.stats.decoder.Add(int64(time.Since(t0)))
	m.stats.decoderCalls.Add(1)
	if err != nil {
		return nil, err
	}
	var logits *engine.Tensor
	self := make([][]float32, 2*L)
	cross := make([][]float32, 2*L)
	for i, name := range net.outputs {
		if name == "logits" {
			logits = outs[i]
			continue
		}
		if name == crossAttentionsOutput {
			if s.keepAttn {
				s.attn = outs[i]
			}
			continue
		}
		var layer int
		var kind string
		if _, e := fmt.Sscanf(name, "present.%d.%s", &layer, &kind); e != nil || layer >= L {
			continue
		}
		if !first && kind[0] == 'e' {
			continue
		}
		v, err := floats(outs[i])
		if err != nil {
			return nil, fmt.Errorf("whisper: decoder output %s: %w", name, err)
		}
		switch kind {
		case "decoder.key":
			self[2*layer] = v
		case "decoder.value":
			self[2*layer+1] = v
		case "encoder.key":
			cross[2*layer] = v
		case "encoder.value":
			cross[2*layer+1] = v
		}
	}
	if logits == nil || len(logits.Shape) != 3 || logits.Shape[0] != int64(rows) || logits.Shape[1] != int64(n) || logits.Shape[2] != int64(m.cfg.VocabSize) {
		return nil, fmt.Errorf("whisper: decoder logits missing or not [%d,%d,%d]", rows, n, m.cfg.VocabSize)
	}
	lv, err := floats(logits)
	if err != nil {
		return nil, fmt.Errorf("whisper: logits: %w", err)
	}
	want := int(int64(rows)*h*hd) * (s.past + n)
	for i, kv := range self {
		if len(kv) != want {
			return nil, fmt.Errorf("whisper: decoder cache %d has %d values, want %d", i, len(kv), want)
		}
	}
	if first {
		wantX := int(int64(rows)*h*hd) * s.f.ctx
		for i, kv := range cross {
			if len(kv) != wantX {
				return nil, fmt.Errorf("whisper: cross-attention cache %d has %d values, want %d", i, len(kv), wantX)
			}
		}
		s.cross = cross
	}
	s.self = self
	s.past += n
	return lv, nil
}

// decodeWindows encodes windows and decodes them together as one batch.
func (m *Model) decodeWindows(ctx context.Context, mels [][]float32, opt Options) ([]Result, error) {
	dec, _, err := m.encodeWindows(ctx, mels)
	if err != nil {
		return nil, err
	}
	return dec(ctx, opt)
}

// encodeWindows runs the encoder once; the returned function decodes the
// windows at any options (a fallback's higher temperatures), and the other
// times the first window's words.
func (m *Model) encodeWindows(ctx context.Context, mels [][]float32) (windowDecode, windowAlign, error) {
	f, err := m.encode(ctx, mels)
	if err != nil {
		return nil, nil, err
	}
	dec := func(ctx context.Context, opt Options) ([]Result, error) {
		return m.decodeFeatures(ctx, f, opt)
	}
	align := func(ctx context.Context, text []int, numFrames int, lang, task string) ([]wordTiming, error) {
		al, err := m.alignFeatures(ctx, f.pick([]int{0}), m.alignSOT(lang, task), [][]int{text}, []int{numFrames}, lang)
		if err != nil {
			return nil, err
		}
		return al[0], nil
	}
	return dec, align, nil
}

func (m *Model) decodeFeatures(ctx context.Context, f *features, opt Options) ([]Result, error) {
	task := newDecodeTask(m, m.tok, opt)
	return task.run(ctx, func(rows int) (decoderState, error) { return m.newState(f, rows), nil }, f.n)
}

// pick returns the features of windows idx, in that order.
func (f *features) pick(idx []int) *features {
	per := f.ctx * f.d
	out := &features{n: len(idx), ctx: f.ctx, d: f.d, data: make([]float32, 0, len(idx)*per)}
	for _, i := range idx {
		out.data = append(out.data, f.data[i*per:(i+1)*per]...)
	}
	return out
}

// DetectLanguage returns the likeliest language of one window and the
// probability of every language.
func (m *Model) DetectLanguage(ctx context.Context, mel []float32) (string, map[string]float64, error) {
	if !m.tok.Multilingual() {
		return "en", map[string]float64{"en": 1}, nil
	}
	f, err := m.encode(ctx, [][]float32{mel})
	if err != nil {
		return "", nil, err
	}
	codes, probs, err := detectLanguage(ctx, m, m.tok, m.newState(f, 1), 1)
	if err != nil {
		return "", nil, err
	}
	return codes[0], probs[0], nil
}

// Transcribe runs Whisper's long-form transcription over 16 kHz mono audio.
func (m *Model) Transcribe(ctx context.Context, audio []float32, opt TranscribeOptions) (*Transcript, error) {
	t0 := time.Now()
	mel := LogMel(audio, m.cfg.NumMelBins, nSamples)
	m.stats.frontEnd.Add(int64(time.Since(t0)))
	detect := func(ctx context.Context, w []float32) (string, error) {
		c, _, err := m.DetectLanguage(ctx, w)
		return c, err
	}
	return transcribe(ctx, m.encodeWindows, detect, m.tok, mel, opt)
}

// batchWindow is one input of at most 30 s of the batched mode: frames
// [start, start+frames) of a log-mel, which start at off seconds of the
// timeline the mel was cut from.
type batchWindow struct {
	src    *Mel
	start  int
	frames int
	off    float64
}

func (w batchWindow) mel() []float32 { return melWindow(w.src, w.start, w.frames) }

// rest is the window's remainder from frame f on.
func (w batchWindow) rest(f int) batchWindow {
	return batchWindow{src: w.src, start: w.start + f, frames: w.frames - f, off: w.off + float64(f)/framesPerSec}
}

// logMel is LogMel, timed for the stats.
func (m *Model) logMel(audio []float32) *Mel {
	t0 := time.Now()
	mel := LogMel(audio, m.Mels(), nSamples)
	m.stats.frontEnd.Add(int64(time.Since(t0)))
	return mel
}

// batchPiece is a decoded window: its result and, with word timestamps,
// its timed segments.
type batchPiece struct {
	win   batchWindow
	res   Result
	words []Segment
}

// TranscribeBatched decodes independent windows of at most 30 s, batch at a
// time (each with its own temperature fallback). With opt.VAD the windows
// are cut from the speech only, at silences, as faster-whisper's batched
// pipeline cuts them, and long silences are skipped; the times are mapped
// back to the recording's. Without it the windows are every 30 s of the
// recording. A window whose decode stops at the start of an unfinished
// segment (speech running into the window's end, which Whisper leaves for
// the next window) has that remainder decoded again as a window of its own,
// so no speech is dropped at a cut.
func (m *Model) TranscribeBatched(ctx context.Context, pcm []float32, opt TranscribeOptions, prompt string, batch int, logf func(format string, args ...any)) (*Transcript, error) {
	opt.defaults()
	if logf == nil {
		logf = func(string, ...any) {}
	}
	var wins []batchWindow
	var speech *SpeechTimeMap
	if opt.VAD != nil {
		spans, err := opt.VAD.Detect(ctx, pcm, BatchedVADOptions())
		if err != nil {
			return nil, err
		}
		speech = NewSpeechTimeMap(spans)
		total := 0
		for _, c := range CollectChunks(spans, chunkSecs) {
			if c.Samples == 0 {
				continue
			}
			// each chunk its own log-mel, as faster-whisper computes them
			mel := m.logMel(c.Audio(pcm))
			wins = append(wins, batchWindow{src: mel, frames: min(nFrames, mel.Frames-nFrames), off: float64(c.Offset) / SampleRate})
			total += c.Samples
		}
		logf("voice activity: %d speech span(s), %.1f of %.1f s, in %d window(s)", len(spans),
			float64(total)/SampleRate, float64(len(pcm))/SampleRate, len(wins))
	} else {
		// one log-mel of the whole recording, as openai-whisper computes it
		mel := m.logMel(pcm)
		content := mel.Frames - nFrames
		for s := 0; s < content; s += nFrames {
			wins = append(wins, batchWindow{src: mel, start: s, frames: min(nFrames, content-s), off: float64(s) / framesPerSec})
		}
	}
	if opt.Language == "" {
		switch {
		case !m.tok.Multilingual():
			opt.Language = "en"
		case len(wins) == 0:
			opt.Language = "en" // nothing to listen to
		default:
			c, _, err := m.DetectLanguage(ctx, wins[0].mel())
			if err != nil {
				return nil, err
			}
			opt.Language = c
		}
	}
	if prompt != "" {
		opt.Prompt = m.tok.Encode(" " + strings.TrimSpace(prompt))
	}
	lastSpeech := 0.0
	var pieces []batchPiece
	for round := 0; len(wins) > 0; round++ {
		done, err := m.decodeBatch(ctx, wins, opt, batch, &lastSpeech, speech, logf)
		if err != nil {
			return nil, err
		}
		pieces = append(pieces, done...)
		// the remainders of unfinished windows, as windows of their own; a
		// remainder is shorter than its window, so this ends
		wins = wins[:0:0]
		for _, p := range done {
			if at, ok := m.unfinished(p.res); ok && at < p.win.frames && round < 8 {
				wins = append(wins, p.win.rest(at))
			}
		}
		if len(wins) > 0 {
			logf("%d window(s) end in an unfinished segment: decoding the rest again", len(wins))
		}
	}
	slices.SortStableFunc(pieces, func(a, b batchPiece) int { return cmp.Compare(a.win.off, b.win.off) })
	tr := &Transcript{Language: opt.Language}
	var all []int
	for _, p := range pieces {
		r, w := p.res, p.win
		if r.NoSpeechProb > opt.NoSpeechThreshold && !(r.AvgLogprob > opt.LogprobThreshold) {
			continue // silent window
		}
		segs := windowSegments(m.tok, r, w.off, w.off+float64(w.frames)/framesPerSec)
		if opt.WordTimestamps {
			segs = p.words
		}
		for _, s := range segs {
			speech.restore(&s)
			s.ID = len(tr.Segments)
			tr.Segments = append(tr.Segments, s)
			all = append(all, s.Tokens...)
		}
	}
	tr.Text = m.tok.Decode(all)
	return tr, nil
}

// decodeBatch decodes windows batch at a time, each falling back to
// higher temperatures on its own, and times their words when asked.
func (m *Model) decodeBatch(ctx context.Context, wins []batchWindow, opt TranscribeOptions, batch int, lastSpeech *float64,
	speech *SpeechTimeMap, logf func(string, ...any)) ([]batchPiece, error) {
	pieces := make([]batchPiece, len(wins))
	for i, w := range wins {
		pieces[i].win = w
	}
	for lo := 0; lo < len(wins); lo += batch {
		hi := min(len(wins), lo+batch)
		pending := make([]int, 0, hi-lo)
		mels := make([][]float32, 0, hi-lo)
		for i := lo; i < hi; i++ {
			pending = append(pending, i)
			mels = append(mels, wins[i].mel())
		}
		// one encoder run per batch; fallbacks decode subsets of it again
		all, err := m.encode(ctx, mels)
		if err != nil {
			return nil, err
		}
		for ti, temp := range opt.Temperatures {
			o := opt.Options
			o.Temperature = temp
			if temp > 0 {
				o.BeamSize = 0
			}
			idx := make([]int, len(pending))
			for j, i := range pending {
				idx[j] = i - lo
			}
			rs, err := m.decodeFeatures(ctx, all.pick(idx), o)
			if err != nil {
				return nil, err
			}
			var again []int
			for j, i := range pending {
				pieces[i].res = rs[j]
				r := rs[j]
				if opt.needsFallback(r) && ti < len(opt.Temperatures)-1 {
					again = append(again, i)
				}
			}
			if len(again) == 0 {
				break
			}
			logf("%d window(s) retried at temperature %.1f", len(again), opt.Temperatures[ti+1])
			pending = again
		}
		if opt.WordTimestamps {
			results := make([]Result, hi-lo)
			for i := lo; i < hi; i++ {
				results[i-lo] = pieces[i].res
			}
			ws, ls, err := m.windowWords(ctx, all, results, wins[lo:hi], opt, *lastSpeech)
			if err != nil {
				return nil, err
			}
			for i := lo; i < hi; i++ {
				pieces[i].words = ws[i-lo]
			}
			*lastSpeech = ls
		}
		for i := lo; i < hi; i++ {
			w, r := wins[i], pieces[i].res
			logf("window %d of %d decoded: %.1f-%.1f s, %d tokens at temperature %.1f", i+1, len(wins),
				speech.original(w.off, false), speech.original(w.off+float64(w.frames)/framesPerSec, true), len(r.Tokens), r.Temperature)
		}
	}
	return pieces, nil
}

// unfinished reports where, in mel frames from its window's start, a
// decode's last segment begins when Whisper left it unfinished: the tokens
// hold complete timestamped segments and end with a lone opening
// timestamp, the seek point of openai-whisper's long-form loop. A decode
// that ends on a single timestamp (speech to the end) or has no complete
// segment is finished.
func (m *Model) unfinished(r Result) (frame int, ok bool) {
	tsBegin := m.tok.TimestampBegin()
	toks := r.Tokens
	n := len(toks)
	isTS := func(i int) bool { return toks[i] >= tsBegin }
	if n < 2 || !isTS(n-1) || !isTS(n-2) {
		return 0, false
	}
	// from the end of the last complete segment, as openai-whisper seeks
	frame = (toks[n-2] - tsBegin) * 2 // mel frames per timestamp step
	return frame, frame > 0
}

// melWindow is a 30 s input of n mel frames from frame s, zero after them
// as openai-whisper pads a window (pad_or_trim).
func melWindow(mel *Mel, s, n int) []float32 {
	w := make([]float32, mel.Bands*nFrames)
	size := min(nFrames, n)
	for b := 0; b < mel.Bands; b++ {
		copy(w[b*nFrames:], mel.Data[b*mel.Frames+s:b*mel.Frames+s+size])
	}
	return w
}

// original is t (seconds in the speech-only audio) in the recording; the
// identity without a map (windows cut from the recording itself).
func (m *SpeechTimeMap) original(t float64, isEnd bool) float64 {
	if m == nil {
		return t
	}
	return m.OriginalTime(t, isEnd)
}

// restore maps a segment's times, and its words', from the speech-only
// audio back to the recording, as faster-whisper's restore_speech_timestamps
// does: a word keeps both ends in the span of its middle.
func (m *SpeechTimeMap) restore(s *Segment) {
	if m == nil {
		return
	}
	if len(s.Words) == 0 {
		s.Start, s.End = m.OriginalTime(s.Start, false), m.OriginalTime(s.End, true)
		return
	}
	for i := range s.Words {
		w := &s.Words[i]
		span := m.SpanIndex((w.Start+w.End)/2, false)
		w.Start, w.End = m.OriginalTimeIn(w.Start, span), m.OriginalTimeIn(w.End, span)
	}
	s.Start, s.End = s.Words[0].Start, s.Words[len(s.Words)-1].End
}
