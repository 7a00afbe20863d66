package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/falocal/falocal/engine"
	"github.com/falocal/falocal/engine/ort"
	"github.com/falocal/falocal/internal/testenv"
	"github.com/falocal/falocal/pipelines"
	"github.com/falocal/falocal/pipelines/pipelinetest"
	"github.com/falocal/falocal/pipelines/whisper"
	"github.com/falocal/falocal/pipelines/whisper/audio"
	"github.com/falocal/falocal/weights"
)

// BenchmarkWhisper transcribes 150 s of real speech (the LibriVox clips and
// jfk.wav, repeated) with the tiny random-weight test models: sequential
// seeking (batch 1) and independent 30 s windows decoded 4 and 8 at a time.
// It reports the real-time factor (audio seconds per wall second) and the
// share of time in the log-mel front end, the encoder, the decoder and the
// Go glue (tokenizer, logit filters, beam bookkeeping, cache copies). The
// weights are random, so the text is meaningless, but the compute per token
// is the real architecture's at tiny width; decoding runs until EOT or 224
// tokens, as a real model's would.
func BenchmarkWhisper(b *testing.B) {
	var pcm []float32
	clips := []string{"whisper/jfk.wav"}
	ents, _ := filepath.Glob(filepath.Join(filepath.Dir(testenv.Asset(b, "whisper/jfk.wav")), "librivox", "*.wav"))
	for _, e := range ents {
		clips = append(clips, filepath.Join("whisper", "librivox", filepath.Base(e)))
	}
	for len(pcm) < 150*whisper.SampleRate {
		for _, c := range clips {
			data, err := os.ReadFile(testenv.Asset(b, c))
			if err != nil {
				b.Fatal(err)
			}
			a, err := audio.Decode(data, 0)
			if err != nil {
				b.Fatal(err)
			}
			pcm = append(pcm, a.Mono16k()...)
			pcm = append(pcm, make([]float32, whisper.SampleRate/2)...)
		}
	}
	pcm = pcm[:150*whisper.SampleRate]
	rt, err := ort.Init(ort.Config{LibraryPath: testenv.ORTLibrary(b)})
	if err != nil {
		b.Fatal(err)
	}
	for _, name := range []string{"tiny-multi", "tiny-en"} {
		st, err := weights.Open(b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		files, err := st.AddDir(pipelinetest.ExpandDir(b, filepath.Join("..", "pipelines", "whisper", "testdata", name)), "fp32")
		if err != nil {
			b.Fatal(err)
		}
		man := weights.Manifest{Name: name, Pipeline: "whisper", Files: files}
		if err := st.Put(man); err != nil {
			b.Fatal(err)
		}
		models := pipelines.NewModels(pipelines.Deps{Store: st, Runtime: rt, Ops: engine.CPUOps(), Config: pipelines.Config{
			SessionsPerModel: 1}, Session: threads(runtime.NumCPU())})
		m, err := whisper.LoadModel(man, st, models)
		if err != nil {
			b.Fatal(err)
		}
		for _, batch := range []int{1, 4, 8} {
			b.Run(fmt.Sprintf("%s/batch=%d", name, batch), func(b *testing.B) {
				opt := whisper.TranscribeOptions{Options: whisper.Options{Language: "en"}}
				var wall time.Duration
				m.ResetStats()
				for i := 0; i < b.N; i++ {
					t0 := time.Now()
					var err error
					if batch == 1 {
						_, err = m.Transcribe(b.Context(), pcm, opt)
					} else {
						_, err = m.TranscribeBatched(b.Context(), pcm, opt, "", batch, nil)
					}
					if err != nil {
						b.Fatal(err)
					}
					wall += time.Since(t0)
				}
				s := m.Stats()
				sec := wall.Seconds()
				b.ReportMetric(float64(len(pcm))/whisper.SampleRate*float64(b.N)/sec, "x_realtime")
				b.ReportMetric(100*s.FrontEnd.Seconds()/sec, "%frontend")
				b.ReportMetric(100*s.Encoder.Seconds()/sec, "%encoder")
				b.ReportMetric(100*s.Decoder.Seconds()/sec, "%decoder")
				b.ReportMetric(100*(sec-s.FrontEnd.Seconds()-s.Encoder.Seconds()-s.Decoder.Seconds())/sec, "%glue")
				b.ReportMetric(float64(s.DecoderCalls)/float64(b.N), "decoder_calls/op")
			})
		}
		models.Close()
	}
}
