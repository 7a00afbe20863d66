//go:build cgo

package whisper

import (
	"math"
	"strings"
	"testing"
)

// Both endpoints take batch_size: 1 runs the sequential long-form
// algorithm, larger values decode independent windows.
func TestBatchSizeOnBothEndpoints(t *testing.T) {
	eps := endpoints(t, tinyDeps(t, "tiny-multi"))
	pcm := make([]float32, 16000*45) // 45 s: two windows
	for i := range pcm {
		pcm[i] = float32(0.1 * math.Sin(float64(i)*0.05))
	}
	audio := wavURI(pcm, 16000)
	for _, ep := range []string{"fal-ai/whisper", "fal-ai/wizper"} {
		for _, c := range []struct {
			batch any
			log   string
		}{{1, "transcribed "}, {nil, "window 2 of 2 decoded"}, {8, "window 2 of 2 decoded"}} {
			in := map[string]any{"audio_url": audio, "language": "en"}
			if c.batch != nil {
				in["batch_size"] = c.batch
			}
			r := runEndpoint(t, eps[ep], in)
			if r.err != nil {
				t.Fatalf("%s batch %v: %v", ep, c.batch, r.err)
			}
			if !strings.Contains(strings.Join(r.logs, "\n"), c.log) {
				t.Errorf("%s batch %v: logs %q, want a line with %q", ep, c.batch, r.logs, c.log)
			}
		}
	}
}
