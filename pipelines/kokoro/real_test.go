//go:build cgo

package kokoro

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/falocal/falocal/engine"
	"github.com/falocal/falocal/engine/ort"
	"github.com/falocal/falocal/internal/testenv"
	"github.com/falocal/falocal/pipelines"
	"github.com/falocal/falocal/pipelines/pipelinetest"
	"github.com/falocal/falocal/weights"
)

var (
	rtOnce sync.Once
	rt     engine.Runtime
	rtErr  error
)

// installedDeps is the store 'falocal setup' filled (which installs
// kokoro-v1.0) with ONNX Runtime's CPU provider.
func installedDeps(t testing.TB) pipelines.Deps {
	t.Helper()
	lib := testenv.ORTLibrary(t)
	st, err := weights.Open(testenv.DataDir(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Get("kokoro-v1.0"); err != nil {
		t.Fatalf("kokoro-v1.0: %v (run 'make test', whose setup installs it)", err)
	}
	rtOnce.Do(func() { rt, rtErr = ort.Init(ort.Config{LibraryPath: lib}) })
	if rtErr != nil {
		t.Fatal(rtErr)
	}
	return pipelines.Deps{Store: st, Runtime: rt, Ops: engine.CPUOps(), Config: pipelines.Config{SessionsPerModel: 1}}
}

// decodeWAV reads our own 16-bit mono WAV.
func decodeWAV(t testing.TB, b []byte) ([]float32, int) {
	t.Helper()
	if len(b) < 44 || string(b[:4]) != "RIFF" || string(b[8:16]) != "WAVEfmt " || string(b[36:40]) != "data" {
		t.Fatalf("not a WAV file (%d bytes)", len(b))
	}
	if ch, bits := binary.LittleEndian.Uint16(b[22:]), binary.LittleEndian.Uint16(b[34:]); ch != 1 || bits != 16 {
		t.Fatalf("%d channels of %d bits, want mono 16-bit", ch, bits)
	}
	n := int(binary.LittleEndian.Uint32(b[40:])) / 2
	pcm := make([]float32, n)
	for i := range pcm {
		pcm[i] = float32(int16(binary.LittleEndian.Uint16(b[44+2*i:]))) / 32768
	}
	return pcm, int(binary.LittleEndian.Uint32(b[24:]))
}

func rms(x []float32) float64 {
	var s float64
	for _, v := range x {
		s += float64(v) * float64(v)
	}
	return math.Sqrt(s / float64(max(1, len(x))))
}

// TestSpeak drives an endpoint end to end: the output is fal's File, a
// 24 kHz WAV of plausible length and loudness, with a log line per chunk.
func TestSpeak(t *testing.T) {
	requireEspeak(t)
	_, eps := pipelinetest.Build(t, New, installedDeps(t))
	files := pipelinetest.NewFiles()
	res := pipelinetest.Call(context.Background(), eps["fal-ai/kokoro/american-english"],
		map[string]any{"prompt": "Hello world. This is a test of the local Kokoro server."}, files)
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	audio := res.Out["audio"].(map[string]any)
	if audio["content_type"] != "audio/wav" || !strings.HasSuffix(audio["file_name"].(string), ".wav") {
		t.Fatalf("output %v", res.Out)
	}
	blob, err := files.Open(context.Background(), audio["url"].(string), 0)
	if err != nil {
		t.Fatal(err)
	}
	if int(audio["file_size"].(float64)) != len(blob.Data) {
		t.Fatalf("file_size %v, file has %d bytes", audio["file_size"], len(blob.Data))
	}
	pcm, rate := decodeWAV(t, blob.Data)
	secs := float64(len(pcm)) / float64(rate)
	if rate != SampleRate || secs < 2 || secs > 8 || rms(pcm) < 0.01 {
		t.Fatalf("%d Hz, %.2f s, RMS %.4f", rate, secs, rms(pcm))
	}
	var chunkLogs int
	for _, l := range res.Logs {
		if strings.HasPrefix(l, "chunk ") {
			chunkLogs++
		}
	}
	if chunkLogs != 1 {
		t.Fatalf("logs %q", res.Logs)
	}
	t.Logf("%.2f s of audio; logs %q", secs, res.Logs)
}

// TestStream checks that a long text is spoken in several chunks, each sent
// to a streaming caller as a WAV data URI as soon as it is ready, and that
// the final audio is the chunks joined.
func TestStream(t *testing.T) {
	requireEspeak(t)
	_, eps := pipelinetest.Build(t, New, installedDeps(t))
	text := strings.Repeat("The birch canoe slid on the smooth planks, and the boy was there when the sun rose. ", 7)
	var partials []Output
	files := pipelinetest.NewFiles()
	req := &pipelines.Request{ID: "r1", Endpoint: "fal-ai/kokoro/british-english", Files: files,
		Input:   []byte(`{"prompt": "` + text + `", "voice": "bm_george", "speed": 1.2}`),
		Partial: func(o any) { partials = append(partials, o.(Output)) }}
	out, err := eps["fal-ai/kokoro/british-english"].Run(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if len(partials) < 2 {
		t.Fatalf("%d partial outputs, want one per chunk (≥ 2)", len(partials))
	}
	var total int
	for _, p := range partials {
		b64, ok := strings.CutPrefix(p.Audio.URL, "data:audio/wav;base64,")
		if !ok {
			t.Fatalf("partial URL %.40q", p.Audio.URL)
		}
		b, err := base64.StdEncoding.DecodeString(b64)
		if err != nil || len(b) != p.Audio.FileSize {
			t.Fatalf("partial: %v, %d bytes, file_size %d", err, len(b), p.Audio.FileSize)
		}
		pcm, _ := decodeWAV(t, b)
		total += len(pcm)
	}
	blob, err := files.Open(context.Background(), out.(Output).Audio.URL, 0)
	if err != nil {
		t.Fatal(err)
	}
	pcm, _ := decodeWAV(t, blob.Data)
	if len(pcm) != total {
		t.Fatalf("final audio %d samples, the chunks %d", len(pcm), total)
	}
}

// TestImportedExport: an export imported as 'falocal weights import
// -pipeline kokoro -dir DIR' imports it (one .onnx file, voices/<name>.bin,
// no vocab.json: Kokoro v1.0's vocabulary is used), a voice only its pack
// has is accepted by its language's endpoint, and it speaks.
func TestImportedExport(t *testing.T) {
	requireEspeak(t)
	inst := installedDeps(t)
	man, err := inst.Store.Get("kokoro-v1.0")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "voices"), 0o755)
	link := func(role, to string) {
		p, err := inst.Store.Path(man, role)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(p, filepath.Join(dir, to)); err != nil {
			t.Fatal(err)
		}
	}
	link("kokoro-v1.0.int8.onnx", "model.onnx")
	link("voices/af_bella.bin", "voices/af_mine.bin")
	link("voices/bm_lewis.bin", "voices/bm_lewis.bin")
	if err := weights.CheckKokoroDir(dir); err != nil {
		t.Fatal(err)
	}
	st := pipelinetest.Store(t)
	pipelinetest.InstallDir(t, st, dir, weights.Manifest{Name: "kokoro-mine", Pipeline: "kokoro"})
	d := inst
	d.Store = st
	_, eps := pipelinetest.Build(t, New, d)
	res := pipelinetest.Call(context.Background(), eps["fal-ai/kokoro/american-english"], map[string]any{"prompt": "Mine.", "voice": "af_mine"}, nil)
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	// a fal voice the pack lacks; a pack voice of another language
	for _, in := range []map[string]any{{"prompt": "hi", "voice": "af_heart"}, {"prompt": "hi", "voice": "bm_lewis"}} {
		res := pipelinetest.Call(context.Background(), eps["fal-ai/kokoro/american-english"], in, nil)
		if status, _ := pipelinetest.Status(res.Err); status != 422 {
			t.Fatalf("%v: %d %v", in, status, res.Err)
		}
	}
}
