package whisper

import (
	"context"
	"math"
	"math/rand/v2"
	"strings"

	"github.com/falocal/falocal/pipelines/whisper/tokenizer"
)

// Segment is one timed piece of a transcript, as Whisper's transcribe returns it.
type Segment struct {
	ID               int
	Seek             int
	Start, End       float64
	Text             string
	Tokens           []int
	Temperature      float64
	AvgLogprob       float64
	CompressionRatio float64
	NoSpeechProb     float64
	Words            []Word // with TranscribeOptions.WordTimestamps
}

// Transcript is a whole recording's result.
type Transcript struct {
	Text     string
	Language string
	Segments []Segment
}

// TranscribeOptions are transcribe()'s knobs; zero values take Whisper's defaults.
type TranscribeOptions struct {
	Options
	// Temperatures to try in order when a decode fails the thresholds
	// (nil = 0, 0.2, …, 1.0).
	Temperatures          []float64
	CompressionRatioLimit float64 // 2.4
	LogprobThreshold      float64 // -1
	NoSpeechThreshold     float64 // 0.6
	NoConditionOnPrevious bool
	InitialPrompt         string
	DisableThresholds     bool // no fallback and no silence skip (tests)
	Progress              func(done, total int)
	OnWindow              func(w WindowTrace) // observes every decode attempt (tests, logs)
	// VAD, in the batched mode, cuts the windows at silences (nil: every
	// 30 s of the recording).
	VAD *VAD

	// WordTimestamps times every word (Segment.Words), as openai-whisper's
	// word_timestamps: the decoder must output the alignment heads'
	// cross-attention (ErrNoCrossAttentions otherwise).
	WordTimestamps bool
}

// WindowTrace describes one decode attempt of one window.
type WindowTrace struct {
	Seek         int
	Result       Result
	NeedFallback bool
	Skipped      bool // judged silent
}

// needsFallback is openai-whisper's decode_with_fallback rule: a result too
// repetitive (compression ratio) or too improbable (average log-probability)
// is decoded again at the next temperature, unless the window is probably
// silent and improbable; a silent but too repetitive window with a good
// log-probability falls back.
func (opt TranscribeOptions) needsFallback(r Result) bool {
	if r.NoSpeechProb > opt.NoSpeechThreshold && r.AvgLogprob < opt.LogprobThreshold {
		return false
	}
	return r.CompressionRatio > opt.CompressionRatioLimit || r.AvgLogprob < opt.LogprobThreshold
}

var defaultTemperatures = []float64{0, 0.2, 0.4, 0.6, 0.8, 1.0}

func (o *TranscribeOptions) defaults() {
	if o.Temperatures == nil {
		o.Temperatures = defaultTemperatures
	}
	if o.CompressionRatioLimit == 0 {
		o.CompressionRatioLimit = 2.4
	}
	if o.LogprobThreshold == 0 {
		o.LogprobThreshold = -1
	}
	if o.NoSpeechThreshold == 0 {
		o.NoSpeechThreshold = 0.6
	}
	if o.Rand == nil {
		o.Rand = rand.New(rand.NewPCG(0, 0))
	}
}

// windowEncoder encodes windows (encoder inputs, each bands×3000) once and
// returns a decoder over them, so that a temperature fallback decodes again
// without running the encoder again.
type windowEncoder func(ctx context.Context, mels [][]float32) (windowDecode, windowAlign, error)

// windowDecode decodes the encoded windows in a single batch.
type windowDecode func(ctx context.Context, opt Options) ([]Result, error)

// windowAlign times the text tokens of the first encoded window, of which
// numFrames mel frames are audio (word timestamps).
type windowAlign func(ctx context.Context, text []int, numFrames int, language, task string) ([]wordTiming, error)

// transcribe is Whisper's long-form algorithm: decode the 30 s window at
// seek, cut it into segments at consecutive timestamp tokens, move seek to
// the last complete segment, and retry a window at higher temperatures when
// its text is too repetitive or improbable.
func transcribe(ctx context.Context, enc windowEncoder, detect func(ctx context.Context, mel []float32) (string, error),
	tok *tokenizer.Tokenizer, mel *Mel, opt TranscribeOptions) (*Transcript, error) {
	opt.defaults()
	content := mel.Frames - nFrames // the log-mel carries 30 s of padding
	if opt.Language == "" {
		if !tok.Multilingual() {
			opt.Language = "en"
		} else {
			w := make([]float32, mel.Bands*nFrames)
			mel.Window(0, w)
			lang, err := detect(ctx, w)
			if err != nil {
				return nil, err
			}
			opt.Language = lang
		}
	}
	var allTokens []int
	var initial []int
	if opt.InitialPrompt != "" {
		initial = tok.Encode(" " + strings.TrimSpace(opt.InitialPrompt))
		allTokens = append(allTokens, initial...)
	}
	promptReset := 0
	var segments []Segment
	tsBegin := tok.TimestampBegin()
	const inputStride = 2 // mel frames per encoder position
	const timePrecision = 0.02
	seek := 0
	lastSpeech := 0.0 // word timestamps: the end of the last word so far
	buf := make([]float32, mel.Bands*nFrames)
	for seek < content {
		timeOffset := float64(seek) * hopLength / SampleRate
		size := min(nFrames, content-seek)
		segDuration := float64(size) * hopLength / SampleRate
		// pad_or_trim: frames past the segment are zeros, not the padding
		for b := 0; b < mel.Bands; b++ {
			row := buf[b*nFrames : (b+1)*nFrames]
			clear(row)
			copy(row, mel.Data[b*mel.Frames+seek:b*mel.Frames+seek+size])
		}
		o := opt.Options
		o.Prompt = append([]int(nil), allTokens[promptReset:]...)
		dec, align, err := enc(ctx, [][]float32{buf})
		if err != nil {
			return nil, err
		}
		var res Result
		for i, temp := range opt.Temperatures {
			o.Temperature = temp
			if temp > 0 {
				o.BeamSize = 0
			} else {
				o.BeamSize = opt.BeamSize
			}
			rs, err := dec(ctx, o)
			if err != nil {
				return nil, err
			}
			res = rs[0]
			need := !opt.DisableThresholds && opt.needsFallback(res)
			if opt.OnWindow != nil {
				opt.OnWindow(WindowTrace{Seek: seek, Result: res, NeedFallback: need})
			}
			if !need || i == len(opt.Temperatures)-1 {
				break
			}
		}
		if !opt.DisableThresholds {
			skip := res.NoSpeechProb > opt.NoSpeechThreshold && !(res.AvgLogprob > opt.LogprobThreshold)
			if skip {
				if opt.OnWindow != nil {
					opt.OnWindow(WindowTrace{Seek: seek, Result: res, Skipped: true})
				}
				seek += size
				continue
			}
		}
		tokens := res.Tokens
		newSeg := func(start, end float64, toks []int) Segment {
			var text []int
			for _, x := range toks {
				if x < tok.EOT() {
					text = append(text, x)
				}
			}
			return Segment{Seek: seek, Start: start, End: end, Text: tok.Decode(text), Tokens: append([]int(nil), toks...),
				Temperature: res.Temperature, AvgLogprob: res.AvgLogprob, CompressionRatio: res.CompressionRatio, NoSpeechProb: res.NoSpeechProb}
		}
		isTS := func(i int) bool { return tokens[i] >= tsBegin }
		n := len(tokens)
		singleEnding := n >= 2 && !isTS(n-2) && isTS(n-1)
		var consecutive []int
		for i := 0; i+1 < n; i++ {
			if isTS(i) && isTS(i+1) {
				consecutive = append(consecutive, i+1)
			}
		}
		var current []Segment
		prevSeek := seek
		if len(consecutive) > 0 {
			slices := consecutive
			if singleEnding {
				slices = append(slices, n)
			}
			last := 0
			for _, cur := range slices {
				st := tokens[last:cur]
				start := timeOffset + float64(st[0]-tsBegin)*timePrecision
				end := timeOffset + float64(st[len(st)-1]-tsBegin)*timePrecision
				current = append(current, newSeg(start, end, st))
				last = cur
			}
			if singleEnding {
				seek += size
			} else {
				seek += (tokens[last-1] - tsBegin) * inputStride
			}
		} else {
			duration := segDuration
			lastTS := -1
			for _, x := range tokens {
				if x >= tsBegin {
					lastTS = x
				}
			}
			if lastTS >= 0 && lastTS != tsBegin {
				duration = float64(lastTS-tsBegin) * timePrecision
			}
			current = append(current, newSeg(timeOffset, timeOffset+duration, tokens))
			seek += size
		}
		if opt.WordTimestamps {
			ptrs := make([]*Segment, len(current))
			var text []int
			for i := range current {
				ptrs[i] = &current[i]
				text = append(text, textTokens(tok, current[i].Tokens)...)
			}
			al, err := align(ctx, text, size, opt.Language, opt.Task)
			if err != nil {
				return nil, err
			}
			addWordTimestamps(tok, [][]*Segment{ptrs}, [][]wordTiming{al}, []float64{timeOffset}, lastSpeech)
			// the next window starts after the last word
			if e, ok := lastWordEnd(ptrs); ok && !singleEnding && e > timeOffset {
				seek = int(math.RoundToEven(e * framesPerSec))
			}
			if e, ok := lastWordEnd(ptrs); ok {
				lastSpeech = e
			}
		}
		for i := range current {
			if current[i].Start == current[i].End || strings.TrimSpace(current[i].Text) == "" {
				current[i].Text = ""
				current[i].Tokens = nil
				current[i].Words = nil
			}
		}
		for _, s := range current {
			s.ID = len(segments)
			segments = append(segments, s)
			allTokens = append(allTokens, s.Tokens...)
		}
		if opt.NoConditionOnPrevious || res.Temperature > 0.5 {
			promptReset = len(allTokens)
		}
		if seek <= prevSeek {
			// the timestamp rules make this impossible; never loop on a broken model
			seek = prevSeek + size
		}
		if opt.Progress != nil {
			opt.Progress(min(content, seek), content)
		}
	}
	return &Transcript{Text: tok.Decode(allTokens[len(initial):]), Language: opt.Language, Segments: segments}, nil
}
