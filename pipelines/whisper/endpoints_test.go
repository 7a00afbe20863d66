//go:build cgo

package whisper

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/falocal/falocal/engine"
	"github.com/falocal/falocal/internal/metrics"
	"github.com/falocal/falocal/internal/testenv"
	"github.com/falocal/falocal/pipelines"
	"github.com/falocal/falocal/pipelines/pipelinetest"
	dto "github.com/prometheus/client_model/go"
)

// The endpoints answer in fal's shapes, with chunks inside the audio and
// progress in the logs.
func TestEndpointOutputShape(t *testing.T) {
	eps := endpoints(t, tinyDeps(t, "tiny-multi"))
	b, err := os.ReadFile(testenv.Asset(t, "whisper/jfk.wav"))
	if err != nil {
		t.Fatal(err)
	}
	uri := "data:audio/wav;base64," + base64.StdEncoding.EncodeToString(b)
	for _, c := range []struct {
		ep    string
		in    map[string]any
		langs string
	}{
		{"fal-ai/whisper", map[string]any{"audio_url": uri}, "inferred_languages"},
		{"fal-ai/whisper", map[string]any{"audio_url": uri, "chunk_level": "none", "language": "de", "task": "translate"}, "inferred_languages"},
		{"fal-ai/wizper", map[string]any{"audio_url": uri}, "languages"},
		{"fal-ai/wizper", map[string]any{"audio_url": uri, "merge_chunks": false, "language": nil}, "languages"},
	} {
		r := runEndpoint(t, eps[c.ep], c.in)
		if r.err != nil {
			t.Fatalf("%s %v: %v", c.ep, c.in["language"], r.err)
		}
		text, _ := r.out["text"].(string)
		chunks, _ := r.out["chunks"].([]any)
		langs, _ := r.out[c.langs].([]any)
		if len(langs) != 1 {
			t.Errorf("%s: %s = %v", c.ep, c.langs, r.out[c.langs])
		}
		if c.in["language"] == "de" && langs[0] != "de" {
			t.Errorf("language de answered as %v", langs)
		}
		if c.in["language"] == nil && c.ep == "fal-ai/wizper" && len(c.in) == 1 && langs[0] != "en" {
			t.Errorf("wizper's default language is en, got %v", langs)
		}
		if _, ok := r.out["diarization_segments"]; ok != (c.ep == "fal-ai/whisper") {
			t.Errorf("%s: diarization_segments present: %v", c.ep, ok)
		}
		for _, ch := range chunks {
			ts := ch.(map[string]any)["timestamp"].([]any)
			s, e := ts[0].(float64), ts[1].(float64)
			if s < 0 || e < s || e > 11.1 {
				t.Errorf("chunk %v outside the 11 s clip", ts)
			}
		}
		if c.in["chunk_level"] == "none" && len(chunks) > 1 {
			t.Errorf("chunk_level none gave %d chunks", len(chunks))
		}
		if strings.TrimSpace(text) == "" || len(r.logs) < 2 {
			t.Errorf("%s: text %q, logs %q", c.ep, text, r.logs)
		}
	}
}

// Warm opens the encoder and decoder sessions of the endpoint's model, and
// reports ErrNoModel when no Whisper model is installed.
func TestEndpointWarm(t *testing.T) {
	p, _ := pipelinetest.Build(t, New, tinyDeps(t))
	if err := p.Warm(context.Background(), "fal-ai/whisper"); !errors.Is(err, pipelines.ErrNoModel) {
		t.Fatalf("no model: %v", err)
	}
	met := metrics.New()
	loads := func() float64 {
		var m dto.Metric
		if err := met.ModelLoads.WithLabelValues("tiny-multi", "ok").Write(&m); err != nil {
			t.Fatal(err)
		}
		return m.GetCounter().GetValue()
	}
	d := tinyDeps(t, "tiny-multi")
	d.Residency = engine.NewResidency(0, -1, "cpu", nil)
	d.Residency.UseMetrics(met)
	p, _ = pipelinetest.Build(t, New, d)
	before := loads()
	for _, id := range []string{"fal-ai/whisper", "fal-ai/wizper"} {
		if err := p.Warm(context.Background(), id); err != nil {
			t.Fatalf("%s: %v", id, err)
		}
	}
	// tiny-multi has a merged decoder: encoder + decoder, once for both endpoints.
	if got := loads() - before; got != 2 {
		t.Errorf("%v sessions opened, want 2", got)
	}
	if got := fmt.Sprint(d.Residency.Resident()); got != "[tiny-multi]" {
		t.Errorf("resident %s", got)
	}
}
