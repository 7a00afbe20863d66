package bench

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/falocal/falocal/engine"
	"github.com/falocal/falocal/engine/ort"
	"github.com/falocal/falocal/internal/testenv"
	"github.com/falocal/falocal/pipelines"
	"github.com/falocal/falocal/pipelines/kokoro"
	"github.com/falocal/falocal/pipelines/pipelinetest"
	"github.com/falocal/falocal/weights"
)

// kokoroText is what BenchmarkKokoro speaks: 859 characters of English prose
// in eleven sentences (47 s of speech with af_heart, two chunks of the
// model's window).
const kokoroText = `The old lighthouse stood at the edge of the cliff, its white paint faded by a hundred winters. ` +
	`Every evening the keeper climbed the narrow stairs, counted the steps out of habit, and lit the great lamp. ` +
	`Ships passing in the night never saw him, but they trusted the light, and that was enough. ` +
	`One autumn a storm came in from the west, stronger than any he remembered. ` +
	`The wind tore at the shutters, rain hammered the glass, and the sea rose until spray reached the gallery. ` +
	`He stayed by the lamp all night, trimming the wick and cleaning the lens whenever salt clouded it. ` +
	`By morning the storm had passed. ` +
	`A fishing boat limped into the harbour, its crew tired but alive. ` +
	`They walked up the hill to thank him, and found him asleep in his chair, the lamp still burning. ` +
	`Nobody woke him. ` +
	`They left a basket of bread and fish by the door, and went quietly home.`

// peerRun is one mode of bench/kokoro-peer/run.py's report.
type peerRun struct {
	RunsS  []float64 `json:"runs_s"`
	AudioS float64   `json:"audio_s"`
}

// peerReport is bench/kokoro-peer/run.py's report.
type peerReport struct {
	Version  string  `json:"kokoro_onnx"`
	ORT      string  `json:"onnxruntime"`
	Text     peerRun `json:"text"`
	Phonemes peerRun `json:"phonemes"`
}

// loadavg is the 1-minute load average.
func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}

// kokoroPeerPython is the interpreter of bench/kokoro-peer/setup.sh's venv
// ($FALOCAL_KOKORO_PEER, default ~/.cache/falocal/venv-kokoro-peer/bin/python).
func kokoroPeerPython(b *testing.B) string {
	if p := os.Getenv("FALOCAL_KOKORO_PEER"); p != "" {
		return p
	}
	home, _ := os.UserHomeDir()
	p := filepath.Join(home, ".cache", "falocal", "venv-kokoro-peer", "bin", "python")
	if _, err := os.Stat(p); err != nil {
		b.Fatalf("kokoro-onnx, the peer, is not installed at %s: run 'bash bench/kokoro-peer/setup.sh'", p)
	}
	return p
}

// BenchmarkKokoro speaks kokoroText with af_heart through the
// fal-ai/kokoro/american-english endpoint (espeak-ng front end, chunking,
// the int8 model kokoro-v1.0 on ONNX Runtime's CPU provider with its default
// threads, trimming, joining, WAV) and, in turn after each of its b.N runs,
// with kokoro-onnx (bench/kokoro-peer/run.py: the same model file, voice and
// text; one timed run from the text and one from our phonemes, after an
// untimed warm-up), so that both meet the same load. It reports the median
// real-time factor (processing seconds per audio second: lower is faster) of
// ours (rtf) and of kokoro-onnx from the text (peer_rtf) and from our
// phonemes (peer_rtf_phonemes: the same tokens as ours), and the audio
// seconds each made.
func BenchmarkKokoro(b *testing.B) {
	if _, err := exec.LookPath(kokoro.EspeakBinary); err != nil {
		b.Fatal("espeak-ng is not installed (apt-get install espeak-ng)")
	}
	peer := kokoroPeerPython(b)
	dataDir := testenv.DataDir(b)
	st, err := weights.Open(dataDir)
	if err != nil {
		b.Fatal(err)
	}
	rt, err := ort.Init(ort.Config{LibraryPath: testenv.ORTLibrary(b)})
	if err != nil {
		b.Fatal(err)
	}
	p, err := kokoro.New(pipelines.Deps{Store: st, Runtime: rt, Ops: engine.CPUOps(), Config: pipelines.Config{SessionsPerModel: 1}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Close() })
	var ep pipelines.Endpoint
	for _, e := range p.Endpoints() {
		if e.ID() == "fal-ai/kokoro/american-english" {
			ep = e
		}
	}
	ctx := context.Background()
	input := map[string]any{"prompt": kokoroText, "voice": "af_heart"}
	if res := pipelinetest.Call(ctx, ep, map[string]any{"prompt": "Warm up.", "voice": "af_heart"}, nil); res.Err != nil {
		b.Fatal(res.Err)
	}
	// the peer's inputs: the same text, and our phonemes of it
	dir := b.TempDir()
	ps, err := kokoro.EspeakFrontEnd(kokoro.Languages[0]).Phonemize(ctx, kokoroText)
	if err != nil {
		b.Fatal(err)
	}
	for name, s := range map[string]string{"text.txt": kokoroText, "phonemes.txt": ps} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	// ours and the peer take turns, so that both meet the same load
	var runs, peerText, peerPhonemes []float64
	var audioSecs, peerAudio float64
	var logs []string
	var res peerReport
	var msg []byte
	for i := 0; i < b.N; i++ {
		files := pipelinetest.NewFiles()
		t0 := time.Now()
		r := pipelinetest.Call(ctx, ep, input, files)
		if r.Err != nil {
			b.Fatal(r.Err)
		}
		runs = append(runs, time.Since(t0).Seconds())
		audioSecs = float64(int(r.Out["audio"].(map[string]any)["file_size"].(float64))-44) / 2 / kokoro.SampleRate
		logs = r.Logs

		out := filepath.Join(dir, "peer.json")
		cmd := exec.Command(peer, filepath.Join("kokoro-peer", "run.py"), "--data-dir", dataDir,
			"--text", filepath.Join(dir, "text.txt"), "--phonemes", filepath.Join(dir, "phonemes.txt"),
			"--voice", "af_heart", "--runs", "1", "--out", out)
		if msg, err = cmd.CombinedOutput(); err != nil {
			b.Fatalf("kokoro-onnx: %v\n%s", err, msg)
		}
		raw, err := os.ReadFile(out)
		if err != nil {
			b.Fatal(err)
		}
		if err := json.Unmarshal(raw, &res); err != nil {
			b.Fatal(err)
		}
		peerText = append(peerText, res.Text.RunsS[0])
		peerPhonemes = append(peerPhonemes, res.Phonemes.RunsS[0])
		peerAudio = res.Text.AudioS
		b.Logf("run %d: ours %.2f s, kokoro-onnx %.2f s (text), %.2f s (our phonemes); load %s", i+1, runs[i], peerText[i], peerPhonemes[i], loadavg())
	}
	median := func(x []float64) float64 { x = slices.Clone(x); slices.Sort(x); return x[len(x)/2] }
	b.ReportMetric(median(runs)/audioSecs, "rtf")
	b.ReportMetric(slices.Min(runs)/audioSecs, "rtf_min")
	b.ReportMetric(audioSecs, "audio_s")
	b.ReportMetric(median(peerText)/peerAudio, "peer_rtf")
	b.ReportMetric(median(peerPhonemes)/res.Phonemes.AudioS, "peer_rtf_phonemes")
	b.ReportMetric(peerAudio, "peer_audio_s")
	b.Logf("ours: %s", strings.Join(logs, " | "))
	b.Logf("kokoro-onnx %s (onnxruntime %s), last run: %s", res.Version, res.ORT, strings.TrimSpace(string(msg)))
}
