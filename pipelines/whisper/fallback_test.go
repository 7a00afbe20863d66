package whisper

import "testing"

// The temperature fallback follows openai-whisper's decode_with_fallback:
// too repetitive or too improbable falls back, except a window that is
// probably silent and improbable; a silent window that is only too
// repetitive still falls back.
func TestNeedsFallback(t *testing.T) {
	opt := TranscribeOptions{CompressionRatioLimit: 2.4, LogprobThreshold: -1, NoSpeechThreshold: 0.6}
	cases := []struct {
		name string
		r    Result
		want bool
	}{
		{"good speech", Result{CompressionRatio: 1.5, AvgLogprob: -0.3, NoSpeechProb: 0.01}, false},
		{"repetitive", Result{CompressionRatio: 3, AvgLogprob: -0.3, NoSpeechProb: 0.01}, true},
		{"improbable", Result{CompressionRatio: 1.5, AvgLogprob: -1.5, NoSpeechProb: 0.01}, true},
		{"silent and improbable", Result{CompressionRatio: 1.5, AvgLogprob: -1.5, NoSpeechProb: 0.9}, false},
		{"silent, repetitive and improbable", Result{CompressionRatio: 3, AvgLogprob: -1.5, NoSpeechProb: 0.9}, false},
		{"silent and repetitive, probable", Result{CompressionRatio: 3, AvgLogprob: -0.3, NoSpeechProb: 0.9}, true},
		{"silent, good otherwise", Result{CompressionRatio: 1.5, AvgLogprob: -0.3, NoSpeechProb: 0.9}, false},
	}
	for _, c := range cases {
		if got := opt.needsFallback(c.r); got != c.want {
			t.Errorf("%s: %+v: fallback %v, want %v", c.name, c.r, got, c.want)
		}
	}
}
