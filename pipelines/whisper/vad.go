package whisper

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strconv"

	"github.com/falocal/falocal/engine"
	"github.com/falocal/falocal/pipelines"
	"github.com/falocal/falocal/weights"
)

// Silero voice activity detection, as faster-whisper does it
// (faster_whisper/vad.py of faster-whisper 1.2.1): the same model file
// (its assets/silero_vad_v6.onnx, installed as "silero-vad"), the same
// chunking of the audio and the same algorithms, line for line, so that
// audio is cut where faster-whisper's BatchedInferencePipeline cuts it.
// Everything is at 16 kHz; positions are sample offsets.

const (
	vadSampleRate = SampleRate
	vadWindow     = 512   // new samples per chunk
	vadContext    = 64    // samples of the previous chunk that each chunk sees
	vadRunChunks  = 10000 // chunks per model run (SileroVADModel's encoder_batch_size)
	vadStateSize  = 128
)

// VAD runs Silero VAD on 16 kHz audio.
type VAD struct {
	net  *pipelines.Net
	hold *engine.Hold
}

// LoadVAD opens an installed Silero VAD (faster-whisper's export, see
// weights/vad.go) through models, which owns its sessions.
func LoadVAD(man weights.Manifest, models *pipelines.Models) (*VAD, error) {
	net, err := models.PoolFor(man, "model", []string{"input", "h", "c"}, []string{"speech_probs", "hn", "cn"})
	if err != nil {
		return nil, err
	}
	return &VAD{net: net}, nil
}

// NewVAD wraps an opened network of the model (inputs input, h, c; outputs
// speech_probs, hn, cn).
func NewVAD(net *pipelines.Net) *VAD { return &VAD{net: net} }

// Held is the VAD for one request that holds the model resident (see
// pipelines.Models.Hold): its runs carry the hold.
func (v *VAD) Held(h *engine.Hold) *VAD {
	c := *v
	c.hold = h
	return &c
}

// SpeechProbs returns the probability of speech in each 512-sample chunk of
// pcm (16 kHz mono), as faster-whisper's get_speech_timestamps computes
// them: pcm padded with zeros to the next multiple of 512 (a whole chunk of
// zeros when it is one already), so len(pcm)/512+1 chunks; each chunk
// preceded by the last 64 samples of the one before (zeros for the first);
// the LSTM state carried from chunk to chunk, 10,000 chunks a run. Like
// SileroVADModel, it also zeroes the last 64 samples of the padded audio
// (its context view writes through to the audio), which changes the last
// chunk when len(pcm)%512 > 448.
func (v *VAD) SpeechProbs(ctx context.Context, pcm []float32) ([]float32, error) {
	n := len(pcm)/vadWindow + 1
	padded := make([]float32, n*vadWindow)
	copy(padded, pcm)
	clear(padded[len(padded)-vadContext:])
	probs := make([]float32, 0, n)
	h := make([]float32, vadStateSize)
	c := make([]float32, vadStateSize)
	const row = vadContext + vadWindow
	for first := 0; first < n; first += vadRunChunks {
		b := min(vadRunChunks, n-first)
		in := make([]float32, b*row)
		for i := 0; i < b; i++ {
			k := first + i
			r := in[i*row : (i+1)*row]
			if k > 0 {
				copy(r[:vadContext], padded[k*vadWindow-vadContext:k*vadWindow])
			}
			copy(r[vadContext:], padded[k*vadWindow:(k+1)*vadWindow])
		}
		x, err := engine.NewFloat32(in, int64(b), row)
		if err != nil {
			return nil, err
		}
		ht, _ := engine.NewFloat32(h, 1, 1, vadStateSize)
		ct, _ := engine.NewFloat32(c, 1, 1, vadStateSize)
		shapes := map[string][]int64{"speech_probs": {int64(b)}, "hn": {1, 1, vadStateSize}, "cn": {1, 1, vadStateSize}}
		out, err := v.net.Do(ctx, engine.Run{Inputs: []*engine.Tensor{x, ht, ct}, OutputShapes: shapes, Hold: v.hold})
		if err != nil {
			return nil, err
		}
		if len(out) != 3 {
			return nil, fmt.Errorf("vad: model gave %d outputs, want 3", len(out))
		}
		p, err := floats(out[0])
		if err != nil {
			return nil, fmt.Errorf("vad: speech_probs: %w", err)
		}
		if len(p) != b {
			return nil, fmt.Errorf("vad: %d probabilities for %d chunks", len(p), b)
		}
		probs = append(probs, p...)
		if h, err = floats(out[1]); err != nil || len(h) != vadStateSize {
			return nil, fmt.Errorf("vad: hn %s %v", out[1].DType, out[1].Shape)
		}
		if c, err = floats(out[2]); err != nil || len(c) != vadStateSize {
			return nil, fmt.Errorf("vad: cn %s %v", out[2].DType, out[2].Shape)
		}
	}
	return probs, nil
}

// Detect returns the speech spans of pcm (16 kHz mono): SpeechProbs, then
// SpeechTimestamps.
func (v *VAD) Detect(ctx context.Context, pcm []float32, opt VADOptions) ([]SpeechSpan, error) {
	probs, err := v.SpeechProbs(ctx, pcm)
	if err != nil {
		return nil, err
	}
	return SpeechTimestamps(probs, len(pcm), opt), nil
}

// VADOptions are faster-whisper's VadOptions.
type VADOptions struct {
	// Threshold: a chunk with a probability at or above it is speech.
	Threshold float64
	// NegThreshold: below it a chunk is silence; between the two it
	// continues what came before. 0 means max(Threshold-0.15, 0.01), as
	// faster-whisper's None does.
	NegThreshold float64
	// MinSpeechDurationMs: shorter speech is dropped.
	MinSpeechDurationMs float64
	// MaxSpeechDurationS: longer speech is split, at the last silence of
	// more than 98 ms if there is one, else just before the limit. 0 or
	// +Inf means no limit.
	MaxSpeechDurationS float64
	// MinSilenceDurationMs: the silence that ends speech.
	MinSilenceDurationMs float64
	// SpeechPadMs: each span is widened by this much on both sides (by
	// half the gap where two spans are closer than twice it).
	SpeechPadMs float64
}

// DefaultVADOptions are VadOptions()'s defaults, as
// WhisperModel.transcribe(vad_filter=True) uses them.
func DefaultVADOptions() VADOptions {
	return VADOptions{Threshold: 0.5, MaxSpeechDurationS: math.Inf(1), MinSilenceDurationMs: 2000, SpeechPadMs: 400}
}

// BatchedVADOptions are the options faster-whisper's
// BatchedInferencePipeline.transcribe(vad_filter=True) uses: speech no
// longer than one 30 s window, split at silences of 160 ms.
func BatchedVADOptions() VADOptions {
	o := DefaultVADOptions()
	o.MaxSpeechDurationS = chunkSecs // faster-whisper's chunk_length
	o.MinSilenceDurationMs = 160
	return o
}

// SpeechSpan is a stretch of speech, [Start, End) in samples at 16 kHz.
type SpeechSpan struct {
	Start, End int
}

// SpeechTimestamps finds the speech in a recording of nSamples samples
// from its chunk probabilities (SpeechProbs), as faster-whisper's
// get_speech_timestamps does: a span starts at a chunk at or above the
// threshold and ends at the first chunk below the negative threshold that
// is followed by enough silence; spans longer than the maximum are split;
// then each is padded. The comparisons of probabilities with the thresholds
// are in float32, as numpy makes them.
func SpeechTimestamps(probs []float32, nSamples int, opt VADOptions) []SpeechSpan {
	const sr, window = vadSampleRate, vadWindow
	threshold := float32(opt.Threshold)
	neg := opt.NegThreshold
	if neg == 0 {
		neg = math.Max(opt.Threshold-0.15, 0.01)
	}
	negThreshold := float32(neg)
	maxSpeechS := opt.MaxSpeechDurationS
	if maxSpeechS == 0 {
		maxSpeechS = math.Inf(1)
	}
	minSpeechSamples := sr * opt.MinSpeechDurationMs / 1000
	speechPadSamples := sr * opt.SpeechPadMs / 1000
	maxSpeechSamples := sr*maxSpeechS - window - 2*speechPadSamples
	minSilenceSamples := sr * opt.MinSilenceDurationMs / 1000
	minSilenceSamplesAtMaxSpeech := float64(sr) * 98 / 1000

	type speech struct{ start, end int }
	var speeches []speech
	var cur speech
	open := false // current_speech holds a start
	triggered := false
	tempEnd, prevEnd, nextStart := 0, 0, 0
	for i, p := range probs {
		at := window * i
		if p >= threshold && tempEnd != 0 {
			tempEnd = 0
			if nextStart < prevEnd {
				nextStart = at
			}
		}
		if p >= threshold && !triggered {
			triggered = true
			cur, open = speech{start: at}, true
			continue
		}
		if triggered && float64(at-cur.start) > maxSpeechSamples {
			if prevEnd != 0 {
				cur.end = prevEnd
				speeches = append(speeches, cur)
				cur, open = speech{}, false
				// previously reached silence (< neg) and is still not speech (< threshold)
				if nextStart < prevEnd {
					triggered = false
				} else {
					cur, open = speech{start: nextStart}, true
				}
				prevEnd, nextStart, tempEnd = 0, 0, 0
			} else {
				cur.end = at
				speeches = append(speeches, cur)
				cur, open = speech{}, false
				prevEnd, nextStart, tempEnd = 0, 0, 0
				triggered = false
				continue
			}
		}
		if p < negThreshold && triggered {
			if tempEnd == 0 {
				tempEnd = at
			}
			// avoid cutting in a very short silence
			if float64(at-tempEnd) > minSilenceSamplesAtMaxSpeech {
				prevEnd = tempEnd
			}
			if float64(at-tempEnd) < minSilenceSamples {
				continue
			}
			cur.end = tempEnd
			if float64(cur.end-cur.start) > minSpeechSamples {
				speeches = append(speeches, cur)
			}
			cur, open = speech{}, false
			prevEnd, nextStart, tempEnd = 0, 0, 0
			triggered = false
			continue
		}
	}
	if open && float64(nSamples-cur.start) > minSpeechSamples {
		cur.end = nSamples
		speeches = append(speeches, cur)
	}

	for i := range speeches {
		s := &speeches[i]
		if i == 0 {
			s.start = int(math.Max(0, float64(s.start)-speechPadSamples))
		}
		if i != len(speeches)-1 {
			next := &speeches[i+1]
			silence := next.start - s.end
			if float64(silence) < 2*speechPadSamples {
				s.end += floorDiv(silence, 2)
				next.start = max(0, next.start-floorDiv(silence, 2))
			} else {
				s.end = int(math.Min(float64(nSamples), float64(s.end)+speechPadSamples))
				next.start = int(math.Max(0, float64(next.start)-speechPadSamples))
			}
		} else {
			s.end = int(math.Min(float64(nSamples), float64(s.end)+speechPadSamples))
		}
	}
	out := make([]SpeechSpan, len(speeches))
	for i, s := range speeches {
		out[i] = SpeechSpan{s.start, s.end}
	}
	return out
}

// floorDiv is Python's // on ints.
func floorDiv(a, b int) int {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}

// VADChunk is one window's worth of speech: spans of the recording cut out
// and joined, silence dropped, as faster-whisper's collect_chunks makes
// them for BatchedInferencePipeline.
type VADChunk struct {
	// Offset is where the chunk starts in the speech-only audio (all the
	// spans joined), in samples; faster-whisper's "offset" is Offset/16000.
	Offset int
	// Samples is the chunk's length: the sum of its spans' lengths.
	Samples int
	// Spans are the stretches of the recording that make up the chunk, in
	// order. (faster-whisper's "segments" leaves out the first span of every
	// chunk but the first, though its audio holds it.)
	Spans []SpeechSpan
}

// Audio joins the chunk's spans of pcm.
func (c VADChunk) Audio(pcm []float32) []float32 {
	out := make([]float32, 0, c.Samples)
	for _, s := range c.Spans {
		out = append(out, pcm[s.Start:s.End]...)
	}
	return out
}

// CollectChunks groups speech spans, in order, into chunks of at most
// maxSeconds (+Inf for one chunk), as faster-whisper's collect_chunks does:
// a span that would take the current chunk past the limit starts the next
// one. Like it, no spans give one empty chunk, and a first span longer than
// the limit is preceded by an empty chunk (with BatchedVADOptions no span
// is longer than 30 s, so chunks of 30 s see neither); callers may skip
// chunks of no samples.
func CollectChunks(spans []SpeechSpan, maxSeconds float64) []VADChunk {
	if len(spans) == 0 {
		return []VADChunk{{}}
	}
	limit := maxSeconds * vadSampleRate
	var out []VADChunk
	var cur VADChunk
	total := 0
	for _, s := range spans {
		if float64(cur.Samples+s.End-s.Start) > limit {
			out = append(out, cur)
			total += cur.Samples
			cur = VADChunk{Offset: total}
		}
		cur.Spans = append(cur.Spans, s)
		cur.Samples += s.End - s.Start
	}
	return append(out, cur)
}

// SpeechTimeMap takes times in the speech-only audio (the spans joined)
// back to the recording's, as faster-whisper's SpeechTimestampsMap does for
// restore_speech_timestamps.
type SpeechTimeMap struct {
	chunkEnd      []int     // end of each span in the speech-only audio, samples
	silenceBefore []float64 // seconds of the recording dropped before each span
}

// NewSpeechTimeMap maps the speech-only audio of spans.
func NewSpeechTimeMap(spans []SpeechSpan) *SpeechTimeMap {
	m := &SpeechTimeMap{}
	prevEnd, silent := 0, 0
	for _, s := range spans {
		silent += s.Start - prevEnd
		prevEnd = s.End
		m.chunkEnd = append(m.chunkEnd, s.End-silent)
		m.silenceBefore = append(m.silenceBefore, float64(silent)/vadSampleRate)
	}
	return m
}

// SpanIndex is the span a time (seconds in the speech-only audio) falls in;
// an end time exactly at a span's end belongs to that span.
func (m *SpeechTimeMap) SpanIndex(t float64, isEnd bool) int {
	sample := int(t * vadSampleRate)
	if isEnd {
		for i, e := range m.chunkEnd {
			if e == sample {
				return i
			}
		}
	}
	i := sort.Search(len(m.chunkEnd), func(i int) bool { return m.chunkEnd[i] > sample })
	return min(i, len(m.chunkEnd)-1)
}

// OriginalTime is the recording's time of t (seconds in the speech-only
// audio), rounded to 10 ms as faster-whisper rounds it.
func (m *SpeechTimeMap) OriginalTime(t float64, isEnd bool) float64 {
	if len(m.chunkEnd) == 0 {
		return pyRound2(t)
	}
	return m.OriginalTimeIn(t, m.SpanIndex(t, isEnd))
}

// OriginalTimeIn is OriginalTime with the span given (restore_speech_timestamps
// resolves a word's start and end to the span of its middle).
func (m *SpeechTimeMap) OriginalTimeIn(t float64, span int) float64 {
	return pyRound2(m.silenceBefore[span] + t)
}

// pyRound2 is Python's round(x, 2): the exact binary value rounded
// correctly, ties to even.
func pyRound2(x float64) float64 {
	v, _ := strconv.ParseFloat(strconv.FormatFloat(x, 'f', 2, 64), 64)
	return v
}
