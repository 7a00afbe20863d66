//go:build cgo

package whisper

import (
	"fmt"
	"strings"
	"testing"

	"github.com/falocal/falocal/engine"
	"github.com/falocal/falocal/engine/ort"
	"github.com/falocal/falocal/internal/testenv"
	"github.com/falocal/falocal/pipelines"
	"github.com/falocal/falocal/pipelines/pipelinetest"
	"github.com/falocal/falocal/weights"
)

// longSpeech is 72 s of real speech (the LibriVox clips and jfk, twice)
// with 0.2 s pauses, so that fixed 30 s windows cut through words; and what
// is said, from the recordings' human transcripts.
func longSpeech(t *testing.T) ([]float32, string) {
	clips := []struct{ file, text string }{
		{"librivox/sense_and_sensibility_01_austen_64kb-0870.wav", "and mister john dashwood had then leisure to consider how much there might be prudently in his power to do for them"},
		{"librivox/sense_and_sensibility_01_austen_64kb-0880.wav", "he was not an ill disposed young man"},
		{"librivox/sense_and_sensibility_01_austen_64kb-0890.wav", "unless to be rather cold hearted and rather selfish is to be ill disposed"},
		{"librivox/sense_and_sensibility_01_austen_64kb-0920.wav", "had he married a more amiable woman he might have been made still more respectable than he was"},
		{"librivox/sense_and_sensibility_01_austen_64kb-0930.wav", "he might even have been made amiable himself"},
		{"jfk.wav", "and so my fellow americans ask not what your country can do for you ask what you can do for your country"},
	}
	var pcm []float32
	var text []string
	for range 2 {
		for _, c := range clips {
			pcm = append(pcm, readAudio(t, "whisper/"+c.file)...)
			pcm = append(pcm, make([]float32, SampleRate/5)...)
			text = append(text, c.text)
		}
	}
	return pcm, strings.Join(text, " ")
}

// The batched mode loses no speech at window cuts: on long real speech its
// transcript is as good as the sequential algorithm's, with windows cut at
// silences (voice activity) and with windows every 30 s (where Whisper
// leaves the segment running into the cut unfinished, and its remainder is
// decoded again).
func TestBatchedVADLosesNothing(t *testing.T) {
	lib := testenv.ORTLibrary(t)
	st, err := weights.Open(testenv.DataDir(t))
	if err != nil {
		t.Fatal(err)
	}
	rt, err := ort.Init(ort.Config{LibraryPath: lib})
	if err != nil {
		t.Fatal(err)
	}
	models := pipelines.NewModels(pipelines.Deps{Store: st, Runtime: rt, Ops: engine.CPUOps(),
		Config: pipelines.Config{SessionsPerModel: 1}})
	t.Cleanup(func() { models.Close() })
	load := func(name string) weights.Manifest {
		m, err := st.Get(name)
		if err != nil {
			t.Fatalf("%s: %v (run 'make test', whose setup installs it)", name, err)
		}
		return m
	}
	m, err := LoadModel(load("whisper-base"), st, models)
	if err != nil {
		t.Fatal(err)
	}
	vad, err := LoadVAD(load("silero-vad"), models)
	if err != nil {
		t.Fatal(err)
	}
	pcm, said := longSpeech(t)
	ref := pipelinetest.Words(said)
	opt := TranscribeOptions{Options: Options{Language: "en"}}
	seq, err := m.Transcribe(t.Context(), pcm, opt)
	if err != nil {
		t.Fatal(err)
	}
	var logs []string
	logf := func(f string, a ...any) { logs = append(logs, fmt.Sprintf(f, a...)) }
	fixed, err := m.TranscribeBatched(t.Context(), pcm, opt, "", 8, nil)
	if err != nil {
		t.Fatal(err)
	}
	withVAD := opt
	withVAD.VAD = vad
	cut, err := m.TranscribeBatched(t.Context(), pcm, withVAD, "", 8, logf)
	if err != nil {
		t.Fatal(err)
	}
	wSeq, wFixed, wVAD := pipelinetest.WordErrorRate(ref, pipelinetest.Words(seq.Text)), pipelinetest.WordErrorRate(ref, pipelinetest.Words(fixed.Text)), pipelinetest.WordErrorRate(ref, pipelinetest.Words(cut.Text))
	t.Logf("%.1f s, %d words; WER sequential %.3f, batched every 30 s %.3f, batched at silences %.3f", float64(len(pcm))/SampleRate, len(ref), wSeq, wFixed, wVAD)
	t.Logf("logs: %q", logs)
	if wVAD > wSeq+0.02 {
		t.Errorf("batched at silences: WER %.3f, sequential %.3f\n%s\n%s", wVAD, wSeq, cut.Text, seq.Text)
	}
	if wFixed > wSeq+0.02 {
		t.Errorf("batched every 30 s: WER %.3f, sequential %.3f\n%s\n%s", wFixed, wSeq, fixed.Text, seq.Text)
	}
	if !strings.Contains(strings.Join(logs, "\n"), "voice activity: ") {
		t.Errorf("no voice activity log line: %q", logs)
	}
	// segments are in order, inside the recording, and mapped back from the
	// speech-only audio (the pauses are kept)
	last := 0.0
	for _, s := range cut.Segments {
		if s.Start < last-0.01 || s.End < s.Start || s.End > float64(len(pcm))/SampleRate+0.01 {
			t.Errorf("segment %.2f-%.2f after %.2f: %q", s.Start, s.End, last, s.Text)
		}
		last = s.End
	}
	if end := cut.Segments[len(cut.Segments)-1].End; end < float64(len(pcm))/SampleRate-3 {
		t.Errorf("last segment ends at %.2f of %.2f s", end, float64(len(pcm))/SampleRate)
	}
}
