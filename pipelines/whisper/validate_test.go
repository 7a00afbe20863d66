package whisper

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/falocal/falocal/engine"
	"github.com/falocal/falocal/engine/enginetest"
	"github.com/falocal/falocal/pipelines"
	"github.com/falocal/falocal/pipelines/pipelinetest"
	"github.com/falocal/falocal/weights"
)

// fakeDeps installs generated test models (testdata/<name>) over the fake
// engine, which has no sessions to open: input validation must answer
// before any model runs, without ONNX Runtime.
func fakeDeps(t testing.TB, names ...string) pipelines.Deps {
	t.Helper()
	st := pipelinetest.Store(t)
	for _, name := range names {
		pipelinetest.InstallDir(t, st, filepath.Join("testdata", name), weights.Manifest{Name: name, Pipeline: "whisper"})
	}
	return pipelines.Deps{Store: st, Runtime: enginetest.New(), Ops: engine.CPUOps(), Config: pipelines.Config{
		SessionsPerModel: 1, MaxInputBytes: 32 << 20, Models: map[string]string{}}}
}

type noFiles struct{}

func (noFiles) Open(ctx context.Context, url string, limit int64) (pipelines.Blob, error) {
	return pipelines.Blob{}, fmt.Errorf("no such file %s", url)
}
func (noFiles) Save(ctx context.Context, data []byte, ct, name string) (string, error) {
	return "", errors.New("no storage")
}

// wavURI encodes 16-bit mono PCM as a WAV data URI.
func wavURI(pcm []float32, rate int) string {
	return "data:audio/wav;base64," + base64.StdEncoding.EncodeToString(pipelinetest.WAV(pcm, rate))
}

type runResult struct {
	out  map[string]any
	logs []string
	err  error
}

func runEndpoint(t *testing.T, ep pipelines.Endpoint, input map[string]any) runResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	r := pipelinetest.Call(ctx, ep, input, noFiles{})
	return runResult{out: r.Out, logs: r.Logs, err: r.Err}
}

func endpoints(t *testing.T, d pipelines.Deps) map[string]pipelines.Endpoint {
	_, eps := pipelinetest.Build(t, New, d)
	return eps
}

// status returns the HTTP status an error would be answered with.
func status(err error) int {
	st, _ := pipelinetest.Status(err)
	return st
}

func TestEndpointBadInput(t *testing.T) {
	eps := endpoints(t, fakeDeps(t, "tiny-multi"))
	tone := make([]float32, 16000)
	good := wavURI(tone, 16000)
	m4a := "data:audio/mp4;base64," + base64.StdEncoding.EncodeToString(append([]byte{0, 0, 0, 0x20}, []byte("ftypM4A \x00\x00\x00\x00M4A mp42isom\x00\x00\x00\x00")...))
	cases := []struct {
		name, ep string
		in       map[string]any
		status   int
		loc      string
	}{
		{"missing audio", "fal-ai/whisper", map[string]any{}, 422, "audio_url"},
		{"bad task", "fal-ai/whisper", map[string]any{"audio_url": good, "task": "summarize"}, 422, "task"},
		{"bad language", "fal-ai/whisper", map[string]any{"audio_url": good, "language": "xx"}, 422, "language"},
		{"word chunks", "fal-ai/whisper", map[string]any{"audio_url": good, "chunk_level": "word"}, 422, "chunk_level"},
		{"diarize", "fal-ai/whisper", map[string]any{"audio_url": good, "diarize": true}, 422, "diarize"},
		{"batch 0", "fal-ai/whisper", map[string]any{"audio_url": good, "batch_size": 0}, 422, "batch_size"},
		{"version 2", "fal-ai/whisper", map[string]any{"audio_url": good, "version": "2"}, 422, "version"},
		{"wrong type", "fal-ai/whisper", map[string]any{"audio_url": 5}, 422, "audio_url"},
		{"segment len", "fal-ai/wizper", map[string]any{"audio_url": good, "max_segment_len": 100}, 422, "max_segment_len"},
		{"not audio", "fal-ai/whisper", map[string]any{"audio_url": "data:audio/wav;base64," + base64.StdEncoding.EncodeToString([]byte("hello, this is not audio at all"))}, 422, "audio_url"},
		{"m4a", "fal-ai/wizper", map[string]any{"audio_url": m4a}, 422, "audio_url"},
		{"empty wav", "fal-ai/whisper", map[string]any{"audio_url": wavURI(nil, 16000)}, 422, "audio_url"},
		{"bad data uri", "fal-ai/whisper", map[string]any{"audio_url": "data:audio/wav;base64,@@@"}, 422, "audio_url"},
		{"unknown url", "fal-ai/whisper", map[string]any{"audio_url": "http://elsewhere.test/a.wav"}, 422, "audio_url"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := runEndpoint(t, eps[c.ep], c.in)
			if r.err == nil {
				t.Fatalf("accepted: %v", r.out)
			}
			if got := status(r.err); got != c.status {
				t.Fatalf("status %d, want %d: %v", got, c.status, r.err)
			}
			var ve *pipelines.ValidationError
			if errors.As(r.err, &ve) {
				b, _ := json.Marshal(ve)
				if !strings.Contains(string(b), `"`+c.loc+`"`) {
					t.Fatalf("error %s does not name %s", b, c.loc)
				}
			}
			t.Logf("%v", r.err)
		})
	}
	// m4a names what is supported
	r := runEndpoint(t, eps["fal-ai/wizper"], map[string]any{"audio_url": m4a})
	if !strings.Contains(r.err.Error(), "FLAC") && !strings.Contains(strings.ToLower(r.err.Error()), "flac") {
		t.Errorf("m4a error does not name the supported formats: %v", r.err)
	}
}

func TestEndpointDurationLimit(t *testing.T) {
	d := fakeDeps(t, "tiny-multi")
	d.Config.MaxAudioDuration = 2 * time.Second
	eps := endpoints(t, d)
	r := runEndpoint(t, eps["fal-ai/whisper"], map[string]any{"audio_url": wavURI(make([]float32, 16000*3), 16000)})
	if status(r.err) != http.StatusRequestEntityTooLarge {
		t.Fatalf("3 s over a 2 s limit: %v", r.err)
	}
}

func TestEndpointNoModel(t *testing.T) {
	eps := endpoints(t, fakeDeps(t))
	r := runEndpoint(t, eps["fal-ai/whisper"], map[string]any{"audio_url": wavURI(make([]float32, 1600), 16000)})
	if status(r.err) != http.StatusServiceUnavailable || !strings.Contains(r.err.Error(), "weights import") {
		t.Fatalf("no model: %v", r.err)
	}
}

// An English-only model refuses to translate the same way whatever the
// language says, on both endpoints.
func TestEnglishOnlyTranslate(t *testing.T) {
	eps := endpoints(t, fakeDeps(t, "tiny-en"))
	good := wavURI(make([]float32, 16000), 16000)
	for _, c := range []struct {
		ep   string
		lang any
	}{{"fal-ai/whisper", nil}, {"fal-ai/whisper", "en"}, {"fal-ai/wizper", nil}, {"fal-ai/wizper", "en"}} {
		in := map[string]any{"audio_url": good, "task": "translate"}
		if c.lang != nil {
			in["language"] = c.lang
		}
		r := runEndpoint(t, eps[c.ep], in)
		var ve *pipelines.ValidationError
		if !errors.As(r.err, &ve) || len(ve.Errors) != 1 || fmt.Sprint(ve.Errors[0].Loc) != "[body task]" ||
			!strings.Contains(ve.Errors[0].Msg, "English-only and cannot translate") {
			t.Errorf("%s language %v: %v", c.ep, c.lang, r.err)
		}
	}
}
