package whisper

import (
	"encoding/json"
	"math"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/falocal/falocal/pipelines/pipelinetest"
)

// vadRef is testdata/vad/ref.json, written by tools/vad-ref/generate.py
// from faster-whisper 1.2.1's own VAD.
type vadRef struct {
	FasterWhisper string  `json:"faster_whisper"`
	ORT           string  `json:"onnxruntime"`
	ModelSHA256   string  `json:"model_sha256"`
	ChunkSeconds  float64 `json:"chunk_seconds"`
	Options       map[string]struct {
		Threshold            float64  `json:"threshold"`
		NegThreshold         *float64 `json:"neg_threshold"`
		MinSpeechDurationMs  float64  `json:"min_speech_duration_ms"`
		MaxSpeechDurationS   *float64 `json:"max_speech_duration_s"`
		MinSilenceDurationMs float64  `json:"min_silence_duration_ms"`
		SpeechPadMs          float64  `json:"speech_pad_ms"`
	} `json:"options"`
	Recordings []vadRefRecording `json:"recordings"`
}

type vadRefRecording struct {
	Name   string `json:"name"`
	Recipe []struct {
		File    string `json:"file"`
		First   *int   `json:"first"`
		Silence int    `json:"silence"`
	} `json:"recipe"`
	Samples    int                 `json:"samples"`
	SHA256     string              `json:"sha256"`
	ProbsEvery int                 `json:"probs_every"` // Probs holds every ProbsEvery-th probability
	ProbsCount int                 `json:"probs_count"`
	Probs      []float32           `json:"probs"`
	Timestamps map[string][][2]int `json:"timestamps"`
	Chunks     map[string][]struct {
		Offset       float64  `json:"offset"`
		Duration     float64  `json:"duration"`
		Segments     [][2]int `json:"segments"`
		AudioSamples int      `json:"audio_samples"`
	} `json:"chunks"`
	Times map[string][][3]float64 `json:"times"` // speech-only time, original, original as an end
}

func loadVADRef(t testing.TB) *vadRef {
	t.Helper()
	b := pipelinetest.ReadFile(t, filepath.Join("testdata", "vad", "ref.json"))
	var r vadRef
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	if len(r.Recordings) == 0 || len(r.Options) == 0 {
		t.Fatal("ref.json holds no recordings")
	}
	return &r
}

// vadOptions are the reference's option set name as VADOptions.
func (r *vadRef) vadOptions(t testing.TB, name string) VADOptions {
	o, ok := r.Options[name]
	if !ok {
		t.Fatalf("no option set %q", name)
	}
	v := VADOptions{Threshold: o.Threshold, MinSpeechDurationMs: o.MinSpeechDurationMs,
		MinSilenceDurationMs: o.MinSilenceDurationMs, SpeechPadMs: o.SpeechPadMs, MaxSpeechDurationS: math.Inf(1)}
	if o.NegThreshold != nil {
		v.NegThreshold = *o.NegThreshold
	}
	if o.MaxSpeechDurationS != nil {
		v.MaxSpeechDurationS = *o.MaxSpeechDurationS
	}
	return v
}

func toSpans(p [][2]int) []SpeechSpan {
	out := make([]SpeechSpan, len(p))
	for i, s := range p {
		out[i] = SpeechSpan{s[0], s[1]}
	}
	return out
}

// checkVADRecording compares the timestamps, chunks and restored times
// that probs give with the reference's, exactly.
func checkVADRecording(t *testing.T, ref *vadRef, rec *vadRefRecording, probs []float32) {
	t.Helper()
	for name := range ref.Options {
		if _, ok := rec.Timestamps[name]; !ok {
			t.Fatalf("%s: no timestamps for %s", rec.Name, name)
		}
		want := toSpans(rec.Timestamps[name])
		got := SpeechTimestamps(probs, rec.Samples, ref.vadOptions(t, name))
		if !reflect.DeepEqual(got, want) && !(len(got) == 0 && len(want) == 0) {
			t.Errorf("%s/%s: timestamps\n got %v\nwant %v", rec.Name, name, got, want)
			continue
		}
		chunks := CollectChunks(got, ref.ChunkSeconds)
		wc := rec.Chunks[name]
		if len(chunks) != len(wc) {
			t.Errorf("%s/%s: %d chunks, want %d", rec.Name, name, len(chunks), len(wc))
			continue
		}
		var all []SpeechSpan
		for i, c := range chunks {
			w := wc[i]
			// faster-whisper's "segments" lacks the first span of every chunk but the first
			segs := c.Spans
			if i > 0 && len(segs) > 0 {
				segs = segs[1:]
			}
			if float64(c.Offset)/vadSampleRate != w.Offset || float64(c.Samples)/vadSampleRate != w.Duration ||
				c.Samples != w.AudioSamples || !reflect.DeepEqual(append([]SpeechSpan{}, segs...), append([]SpeechSpan{}, toSpans(w.Segments)...)) {
				t.Errorf("%s/%s: chunk %d is %+v, want %+v", rec.Name, name, i, c, w)
			}
			n := 0
			for _, s := range c.Spans {
				n += s.End - s.Start
			}
			if n != c.Samples {
				t.Errorf("%s/%s: chunk %d: spans of %d samples, Samples %d", rec.Name, name, i, n, c.Samples)
			}
			all = append(all, c.Spans...)
		}
		if !reflect.DeepEqual(all, got) && len(got) > 0 {
			t.Errorf("%s/%s: the chunks' spans are not the timestamps", rec.Name, name)
		}
		if len(got) == 0 {
			continue
		}
		m := NewSpeechTimeMap(got)
		for _, tt := range rec.Times[name] {
			if o, e := m.OriginalTime(tt[0], false), m.OriginalTime(tt[0], true); o != tt[1] || e != tt[2] {
				t.Errorf("%s/%s: time %v → %v / %v (as end), want %v / %v", rec.Name, name, tt[0], o, e, tt[1], tt[2])
			}
		}
	}
}

// The algorithms, run on faster-whisper's own probabilities, give its
// timestamps, chunks and restored times exactly (no model needed).
func TestVADReferenceAlgorithms(t *testing.T) {
	ref := loadVADRef(t)
	spans := 0
	for i := range ref.Recordings {
		rec := &ref.Recordings[i]
		if want := rec.Samples/vadWindow + 1; rec.ProbsCount != want || len(rec.Probs) != (want+rec.ProbsEvery-1)/rec.ProbsEvery {
			t.Fatalf("%s: %d probabilities (%d kept) for %d samples, want %d", rec.Name, rec.ProbsCount, len(rec.Probs), rec.Samples, want)
		}
		if rec.ProbsEvery != 1 {
			continue // only the model test can check it
		}
		checkVADRecording(t, ref, rec, rec.Probs)
		for _, ts := range rec.Timestamps {
			spans += len(ts)
		}
	}
	t.Logf("%d recordings, %d option sets, %d spans", len(ref.Recordings), len(ref.Options), spans)
}

func TestVADOptionsDefaults(t *testing.T) {
	ref := loadVADRef(t)
	if got, want := DefaultVADOptions(), ref.vadOptions(t, "default"); got != want {
		t.Errorf("DefaultVADOptions %+v, faster-whisper's VadOptions() %+v", got, want)
	}
	if got, want := BatchedVADOptions(), ref.vadOptions(t, "batched"); got != want {
		t.Errorf("BatchedVADOptions %+v, the batched pipeline's %+v", got, want)
	}
}

func rep(p float32, n int) []float32 {
	out := make([]float32, n)
	for i := range out {
		out[i] = p
	}
	return out
}

func cat(parts ...[]float32) []float32 {
	var out []float32
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// SpeechTimestamps on made-up probabilities, each worked out by hand from
// get_speech_timestamps (a chunk is 512 samples).
func TestSpeechTimestampsSynthetic(t *testing.T) {
	// no padding, 64 ms (1024 samples) of silence ends speech, no limits
	base := VADOptions{Threshold: 0.5, MinSilenceDurationMs: 64, MaxSpeechDurationS: math.Inf(1)}
	with := func(f func(*VADOptions)) VADOptions { o := base; f(&o); return o }
	cases := []struct {
		name  string
		probs []float32
		n     int
		opt   VADOptions
		want  []SpeechSpan
	}{
		{"silence", rep(0.1, 10), 5120, base, nil},
		{"one span", cat(rep(0, 2), rep(0.9, 3), rep(0.1, 5)), 5120, base, []SpeechSpan{{1024, 2560}}},
		// between the thresholds speech goes on
		{"hysteresis", cat(rep(0.9, 1), rep(0.4, 2), rep(0.9, 1), rep(0.2, 6)), 5120, base, []SpeechSpan{{0, 2048}}},
		// 0.4 does not start speech
		{"below threshold", cat(rep(0.4, 4), rep(0.1, 6)), 5120, base, nil},
		// a gap shorter than the minimum silence does not split
		{"short gap", []float32{0.9, 0.1, 0.9, 0.1, 0.1, 0.1, 0.1}, 3584, base, []SpeechSpan{{0, 1536}}},
		// a gap of exactly the minimum silence does
		{"gap at minimum", cat(rep(0.9, 2), rep(0.1, 3), rep(0.9, 2), rep(0.1, 3)), 5120, base,
			[]SpeechSpan{{0, 1024}, {2560, 3584}}},
		// speech open at the end runs to the last sample
		{"open at end", []float32{0, 0.9, 0.9}, 1400, base, []SpeechSpan{{512, 1400}}},
		// exactly the threshold is speech; exactly float32(0.35), the
		// negative threshold 0.5-0.15 as numpy compares it, is not silence
		{"thresholds in float32", cat([]float32{0.5}, rep(0.35, 9)), 5120, base, []SpeechSpan{{0, 5120}}},
		{"below neg threshold", cat([]float32{0.5}, rep(0.3499999, 9)), 5120, base, []SpeechSpan{{0, 512}}},
		// an explicit negative threshold
		{"neg threshold", cat(rep(0.9, 2), rep(0.3, 4), rep(0.1, 4)), 5120, with(func(o *VADOptions) { o.NegThreshold = 0.2 }),
			[]SpeechSpan{{0, 3072}}},
		// minimum speech 64 ms: a 512-sample span is dropped, 1536 kept
		{"min speech", cat(rep(0.9, 1), rep(0.1, 4), rep(0.9, 3), rep(0.1, 4)), 6144, with(func(o *VADOptions) { o.MinSpeechDurationMs = 64 }),
			[]SpeechSpan{{2560, 4096}}},
		// and at the end too
		{"min speech at end", cat(rep(0.1, 3), rep(0.9, 2)), 2000, with(func(o *VADOptions) { o.MinSpeechDurationMs = 64 }), nil},
		// padding 32 ms (512): a gap under 1024 is split in half, a wider
		// one padded on both sides, clamped to the recording
		{"padding", cat(rep(0.9, 2), rep(0.1, 3), rep(0.9, 1), rep(0.1, 5), rep(0.9, 1), rep(0.1, 2)), 7000,
			with(func(o *VADOptions) { o.SpeechPadMs = 32; o.MinSilenceDurationMs = 32 }),
			// raw spans [0,1024] [2560,3072] [5632,6144]; gaps 1536, 2560
			[]SpeechSpan{{0, 1536}, {2048, 3584}, {5120, 6656}}},
		{"padding clamped", cat(rep(0.9, 2), rep(0.1, 3), rep(0.9, 2)), 3300,
			with(func(o *VADOptions) { o.SpeechPadMs = 32; o.MinSilenceDurationMs = 32 }),
			// raw [0,1024] [2560,3300 (open at the end)]
			[]SpeechSpan{{0, 1536}, {2048, 3300}}},
		{"padding half gap", cat(rep(0.1, 2), rep(0.9, 2), rep(0.1, 2), rep(0.9, 2), rep(0.1, 4)), 6144,
			with(func(o *VADOptions) { o.SpeechPadMs = 48; o.MinSilenceDurationMs = 32 }),
			// raw [1024,2048] [3072,4096]: gap 1024 < 2*768 → 512 each; pads 768 outside
			[]SpeechSpan{{256, 2560}, {2560, 4864}}},
		// maximum speech 128 ms: 2048-512 = 1536 samples; no silence, so a
		// hard cut, and the chunk of the cut is lost
		{"max speech hard cut", rep(0.9, 10), 5120,
			with(func(o *VADOptions) { o.MaxSpeechDurationS = 0.128; o.MinSilenceDurationMs = 10000 }),
			[]SpeechSpan{{0, 2048}, {2560, 4608}}},
		// maximum 0.5 s (7488 samples): split at the silence of more than
		// 98 ms, the next speech starting where speech resumed
		{"max speech at silence", cat(rep(0.9, 3), rep(0.1, 5), rep(0.9, 12)), 10240,
			with(func(o *VADOptions) { o.MaxSpeechDurationS = 0.5; o.MinSilenceDurationMs = 10000 }),
			[]SpeechSpan{{0, 1536}, {4096, 10240}}},
		// still silent when the maximum is reached: speech ends there
		{"max speech in silence", cat(rep(0.9, 3), rep(0.1, 17)), 10240,
			with(func(o *VADOptions) { o.MaxSpeechDurationS = 0.5; o.MinSilenceDurationMs = 10000 }),
			[]SpeechSpan{{0, 1536}}},
		// a silence of 98 ms or less is no place to split
		{"max speech short silence", cat(rep(0.9, 3), rep(0.1, 4), rep(0.9, 13)), 10240,
			with(func(o *VADOptions) { o.MaxSpeechDurationS = 0.5; o.MinSilenceDurationMs = 10000 }),
			[]SpeechSpan{{0, 7680}, {8192, 10240}}},
	}
	for _, c := range cases {
		got := SpeechTimestamps(c.probs, c.n, c.opt)
		if len(got) == 0 && len(c.want) == 0 {
			continue
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, got, c.want)
		}
	}
}

func TestCollectChunks(t *testing.T) {
	sec := func(a, b float64) SpeechSpan { return SpeechSpan{int(a * vadSampleRate), int(b * vadSampleRate)} }
	spans := []SpeechSpan{sec(0, 10), sec(12, 25), sec(30, 38), sec(40, 41), sec(50, 80), sec(90, 91)}
	got := CollectChunks(spans, 30)
	want := []VADChunk{
		{Offset: 0, Samples: 23 * vadSampleRate, Spans: spans[:2]},
		{Offset: 23 * vadSampleRate, Samples: 9 * vadSampleRate, Spans: spans[2:4]},
		{Offset: 32 * vadSampleRate, Samples: 30 * vadSampleRate, Spans: spans[4:5]},
		{Offset: 62 * vadSampleRate, Samples: 1 * vadSampleRate, Spans: spans[5:]},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	// a first span over the limit follows an empty chunk, as in faster-whisper
	got = CollectChunks([]SpeechSpan{sec(0, 31), sec(32, 33)}, 30)
	if len(got) != 3 || got[0].Samples != 0 || len(got[0].Spans) != 0 || got[1].Samples != 31*vadSampleRate || got[2].Offset != 31*vadSampleRate {
		t.Errorf("long first span: %+v", got)
	}
	if got := CollectChunks(nil, 30); len(got) != 1 || got[0].Samples != 0 {
		t.Errorf("no speech: %+v", got)
	}
	if got := CollectChunks(spans, math.Inf(1)); len(got) != 1 || len(got[0].Spans) != len(spans) {
		t.Errorf("no limit: %+v", got)
	}
	pcm := make([]float32, 100)
	for i := range pcm {
		pcm[i] = float32(i)
	}
	c := CollectChunks([]SpeechSpan{{2, 4}, {10, 13}}, 30)[0]
	if a := c.Audio(pcm); !reflect.DeepEqual(a, []float32{2, 3, 10, 11, 12}) {
		t.Errorf("Audio %v", a)
	}
}

func TestSpeechTimeMap(t *testing.T) {
	// speech 1-3 s and 5-6 s: speech-only time 0-2 s is 1-3 s, 2-3 s is 5-6 s
	m := NewSpeechTimeMap([]SpeechSpan{{16000, 48000}, {80000, 96000}})
	for _, c := range []struct {
		t     float64
		isEnd bool
		want  float64
	}{
		{0, false, 1}, {1.5, false, 2.5}, {2, false, 5}, {2, true, 3}, {2.5, false, 5.5}, {3, false, 6}, {9, false, 12},
		{0.123456, false, 1.12},
	} {
		if got := m.OriginalTime(c.t, c.isEnd); got != c.want {
			t.Errorf("OriginalTime(%v, %v) = %v, want %v", c.t, c.isEnd, got, c.want)
		}
	}
	if got := m.OriginalTimeIn(2, 0); got != 3 {
		t.Errorf("OriginalTimeIn(2, 0) = %v", got)
	}
	// Python's round(x, 2): 0.125 is exact, a tie, and goes to even
	if pyRound2(0.125) != 0.12 || pyRound2(0.375) != 0.38 || pyRound2(2.675) != 2.67 {
		t.Errorf("pyRound2: %v %v %v", pyRound2(0.125), pyRound2(0.375), pyRound2(2.675))
	}
}
