//go:build cgo

package whisper

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"math"
	"os"
	"testing"

	"github.com/falocal/falocal/engine"
	"github.com/falocal/falocal/engine/ort"
	"github.com/falocal/falocal/internal/testenv"
	"github.com/falocal/falocal/pipelines"
	"github.com/falocal/falocal/weights"
)

// installedVAD opens the silero-vad model that setup installs into the
// test data directory, on ONNX Runtime's CPU provider.
func installedVAD(t testing.TB) (*VAD, weights.Manifest) {
	t.Helper()
	lib := testenv.ORTLibrary(t)
	st, err := weights.Open(testenv.DataDir(t))
	if err != nil {
		t.Fatal(err)
	}
	man, err := st.Get("silero-vad")
	if err != nil {
		if os.Getenv("FALOCAL_REQUIRE_ASSETS") == "1" {
			t.Fatalf("silero-vad: %v (run 'make test', whose setup installs it)", err)
		}
		t.Skipf("silero-vad not installed (%v); 'falocal setup' installs it", err)
	}
	rt, err := ort.Init(ort.Config{LibraryPath: lib})
	if err != nil {
		t.Fatal(err)
	}
	models := pipelines.NewModels(pipelines.Deps{Store: st, Runtime: rt, Ops: engine.CPUOps(),
		Config: pipelines.Config{SessionsPerModel: 1}})
	t.Cleanup(func() { models.Close() })
	v, err := LoadVAD(man, models)
	if err != nil {
		t.Fatal(err)
	}
	return v, man
}

// buildVADRecording makes a reference recording from its recipe: pinned
// test recordings, cut, with runs of digital silence between them.
func buildVADRecording(t testing.TB, rec *vadRefRecording) []float32 {
	t.Helper()
	pcm := []float32{}
	for _, it := range rec.Recipe {
		if it.File == "" {
			pcm = append(pcm, make([]float32, it.Silence)...)
			continue
		}
		a := readAudio(t, "whisper/"+it.File)
		if it.First != nil {
			a = a[:*it.First]
		}
		pcm = append(pcm, a...)
	}
	b := make([]byte, 4*len(pcm))
	for i, v := range pcm {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != rec.SHA256 || len(pcm) != rec.Samples {
		t.Fatalf("%s: built %d samples that differ from the reference's %d", rec.Name, len(pcm), rec.Samples)
	}
	return pcm
}

// Silero VAD through ONNX Runtime gives faster-whisper's probabilities
// within 1e-4, and from them its timestamps, chunks and restored times
// exactly. The recordings include one of over 10,000 chunks, which takes
// two runs with the LSTM state carried between them.
func TestVADMatchesFasterWhisper(t *testing.T) {
	ref := loadVADRef(t)
	v, man := installedVAD(t)
	if len(man.Files) != 1 || man.Files[0].SHA256 != ref.ModelSHA256 {
		t.Fatalf("silero-vad is %+v; the reference ran faster-whisper %s's model %s", man.Files, ref.FasterWhisper, ref.ModelSHA256)
	}
	var maxDiff float64
	worst := ""
	chunks := 0
	for i := range ref.Recordings {
		rec := &ref.Recordings[i]
		pcm := buildVADRecording(t, rec)
		probs, err := v.SpeechProbs(t.Context(), pcm)
		if err != nil {
			t.Fatalf("%s: %v", rec.Name, err)
		}
		if len(probs) != rec.ProbsCount {
			t.Fatalf("%s: %d probabilities, want %d", rec.Name, len(probs), rec.ProbsCount)
		}
		for j, p := range rec.Probs {
			if d := math.Abs(float64(probs[j*rec.ProbsEvery] - p)); d > maxDiff || math.IsNaN(d) {
				maxDiff, worst = d, rec.Name
			}
		}
		chunks += len(probs)
		checkVADRecording(t, ref, rec, probs)
	}
	t.Logf("%d recordings, %d chunks: max |Δp| %.3g (%s)", len(ref.Recordings), chunks, maxDiff, worst)
	if !(maxDiff <= 1e-4) {
		t.Errorf("probabilities differ from faster-whisper's by %g (%s)", maxDiff, worst)
	}
}
