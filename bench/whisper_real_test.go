package bench

import (
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
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

// WhisperRealAudio is where BenchmarkWhisperReal writes its recording (16 kHz
// mono 16-bit WAV) and, beside it with .txt, what is said, for the
// faster-whisper peer (bench/whisper-peer/run.py) to transcribe the same
// samples.
const WhisperRealAudio = "/tmp/falocal-whisper-real.wav"

// realClips are the recordings BenchmarkWhisperReal cycles through, and what
// is said in them (the human transcripts).
var realClips = []struct{ file, text string }{
	{"jfk.wav", "and so my fellow americans ask not what your country can do for you ask what you can do for your country"},
	{"librivox/sense_and_sensibility_01_austen_64kb-0870.wav", "and mister john dashwood had then leisure to consider how much there might be prudently in his power to do for them"},
	{"librivox/sense_and_sensibility_01_austen_64kb-0880.wav", "he was not an ill disposed young man"},
	{"librivox/sense_and_sensibility_01_austen_64kb-0890.wav", "unless to be rather cold hearted and rather selfish is to be ill disposed"},
	{"librivox/sense_and_sensibility_01_austen_64kb-0920.wav", "had he married a more amiable woman he might have been made still more respectable than he was"},
	{"librivox/sense_and_sensibility_01_austen_64kb-0930.wav", "he might even have been made amiable himself"},
}

// realSpeech is jfk.wav and the five LibriVox clips, in that order, each
// followed by 0.5 s of silence, cycled until the recording reaches 60 s
// (jfk, the five clips, jfk, 0870, 0880: 61.3 s); and what is said.
func realSpeech(b *testing.B) ([]float32, string) {
	var pcm []float32
	var said []string
	for i := 0; len(pcm) < 60*whisper.SampleRate; i++ {
		c := realClips[i%len(realClips)]
		data, err := os.ReadFile(testenv.Asset(b, "whisper/"+c.file))
		if err != nil {
			b.Fatal(err)
		}
		a, err := audio.Decode(data, 0)
		if err != nil {
			b.Fatal(err)
		}
		pcm = append(pcm, a.Mono16k()...)
		pcm = append(pcm, make([]float32, whisper.SampleRate/2)...)
		said = append(said, c.text)
	}
	return pcm, strings.Join(said, " ")
}

// writeWAV writes 16 kHz mono samples that are exact multiples of 1/32768
// (16-bit PCM, as the clips are) as a 16-bit WAV file.
func writeWAV(b *testing.B, path string, pcm []float32) {
	for _, v := range pcm {
		if s := v * 32768; s != float32(int16(s)) {
			b.Fatalf("sample %v is not 16-bit", v)
		}
	}
	if err := os.WriteFile(path, pipelinetest.WAV(pcm, whisper.SampleRate), 0o644); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkWhisperReal transcribes 61.3 s of real speech (realSpeech) with
// the real models that setup installs (whisper-base and whisper-tiny.en,
// float32 ONNX converted from faster-whisper's CTranslate2 files, and their
// int8 conversions whisper-base-int8 and whisper-tiny.en-int8), with
// Whisper's sequential long-form algorithm (batch 1), greedy and beam 5,
// language en, on runtime.NumCPU() intra-op threads. It reports the median
// real-time factor over the iterations (processing seconds per audio
// second: lower is faster; run with -benchtime 3x), the fastest, the share
// of time in the log-mel front end, the encoder, the decoder and the Go glue
// (tokenizer, logit filters, beam bookkeeping, temperature fallbacks'
// bookkeeping), decoder calls and output tokens per transcription, and the
// word error rate against the human transcripts. It writes the recording to
// WhisperRealAudio for bench/whisper-peer/run.py, which runs faster-whisper
// on the same weights and samples.
func BenchmarkWhisperReal(b *testing.B) {
	pcm, said := realSpeech(b)
	writeWAV(b, WhisperRealAudio, pcm)
	if err := os.WriteFile(strings.TrimSuffix(WhisperRealAudio, ".wav")+".txt", []byte(said+"\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	ref := pipelinetest.Words(said)
	dur := float64(len(pcm)) / whisper.SampleRate
	b.Logf("%s: %.2f s, %d words", WhisperRealAudio, dur, len(ref))

	st, err := weights.Open(testenv.DataDir(b))
	if err != nil {
		b.Fatal(err)
	}
	rt, err := ort.Init(ort.Config{LibraryPath: testenv.ORTLibrary(b)})
	if err != nil {
		b.Fatal(err)
	}
	models := pipelines.NewModels(pipelines.Deps{Store: st, Runtime: rt, Ops: engine.CPUOps(),
		Config: pipelines.Config{SessionsPerModel: 1}, Session: threads(runtime.NumCPU())})
	b.Cleanup(func() { models.Close() })
	for _, name := range []string{"whisper-base", "whisper-base-int8", "whisper-tiny.en", "whisper-tiny.en-int8"} {
		man, err := st.Get(name)
		if err != nil {
			b.Fatalf("%s: %v (run 'falocal setup -models whisper-base,whisper-base-int8,whisper-tiny.en,whisper-tiny.en-int8')", name, err)
		}
		model, compute, _ := strings.Cut(name, "-int8")
		compute = "fp32"
		if man.Params["compute_type"] == "int8" {
			compute = "int8"
		}
		m, err := whisper.LoadModel(man, st, models)
		if err != nil {
			b.Fatal(err)
		}
		for _, beam := range []int{1, 5} {
			b.Run(fmt.Sprintf("%s/%s/beam=%d", model, compute, beam), func(b *testing.B) {
				opt := whisper.TranscribeOptions{Options: whisper.Options{Language: "en", BeamSize: beam}}
				var runs []float64
				var tokens int
				var tr *whisper.Transcript
				m.ResetStats()
				for i := 0; i < b.N; i++ {
					t0 := time.Now()
					tr, err = m.Transcribe(b.Context(), pcm, opt)
					if err != nil {
						b.Fatal(err)
					}
					runs = append(runs, time.Since(t0).Seconds())
					for _, s := range tr.Segments {
						tokens += len(s.Tokens)
					}
				}
				s := m.Stats()
				var sec float64
				for _, r := range runs {
					sec += r
				}
				slices.Sort(runs)
				b.ReportMetric(runs[len(runs)/2]/dur, "rtf")
				b.ReportMetric(runs[0]/dur, "rtf_min")
				b.ReportMetric(100*s.FrontEnd.Seconds()/sec, "%frontend")
				b.ReportMetric(100*s.Encoder.Seconds()/sec, "%encoder")
				b.ReportMetric(100*s.Decoder.Seconds()/sec, "%decoder")
				b.ReportMetric(100*(sec-s.FrontEnd.Seconds()-s.Encoder.Seconds()-s.Decoder.Seconds())/sec, "%glue")
				b.ReportMetric(float64(s.DecoderCalls)/float64(b.N), "decoder_calls/op")
				b.ReportMetric(float64(tokens)/float64(b.N), "tokens/op")
				b.ReportMetric(pipelinetest.WordErrorRate(ref, pipelinetest.Words(tr.Text)), "wer")
				b.Logf("runs %.2f s; %d segments: %s", runs, len(tr.Segments), tr.Text)
			})
		}
	}
}
