package whisper

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/falocal/falocal/pipelines"
)

// Audio over the duration limit is a 413 that states its length and the
// limit.
func TestEndpointDurationLimitMessage(t *testing.T) {
	d := fakeDeps(t, "tiny-multi")
	d.Config.MaxAudioDuration = 2 * time.Second
	eps := endpoints(t, d)
	for _, id := range []string{"fal-ai/whisper", "fal-ai/wizper"} {
		r := runEndpoint(t, eps[id], map[string]any{"audio_url": wavURI(make([]float32, 16000*3), 16000)})
		var he *pipelines.HTTPError
		if !errors.As(r.err, &he) || he.Status != http.StatusRequestEntityTooLarge || !strings.Contains(he.Msg, "3s long") || !strings.Contains(he.Msg, "limit of 2s") {
			t.Errorf("%s: 3 s over a 2 s limit: %v", id, r.err)
		}
	}
}
