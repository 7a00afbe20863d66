package whisper

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/falocal/falocal/internal/testenv"
	"github.com/falocal/falocal/pipelines/pipelinetest"
	"github.com/falocal/falocal/pipelines/whisper/audio"
)

// Reference vectors written by tools/whisper-ref/generate.py (openai-whisper
// 20240930 on PyTorch 2.4.1; see its README).

func readJSON(t testing.TB, name string, v any) {
	t.Helper()
	b := pipelinetest.ReadFile(t, filepath.Join("testdata", "ref", name))
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
}

func readF32(t testing.TB, name string) []float32 {
	t.Helper()
	b := pipelinetest.ReadFile(t, filepath.Join("testdata", "ref", name))
	v := make([]float32, len(b)/4)
	for i := range v {
		v[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return v
}

// loadPCM reads a test asset as Whisper's reference does: WAV int16/32768.
func loadPCM(t testing.TB, asset string) []float32 {
	t.Helper()
	b, err := os.ReadFile(testenv.Asset(t, asset))
	if err != nil {
		t.Fatal(err)
	}
	a, err := audio.Decode(b, 0)
	if err != nil {
		t.Fatal(err)
	}
	if a.Rate != SampleRate || a.Channels != 1 {
		t.Fatalf("%s: %d Hz × %d", asset, a.Rate, a.Channels)
	}
	return a.Samples
}

// The log-mel of real speech equals Whisper's within 1e-4.
func TestLogMelMatchesReference(t *testing.T) {
	var ref struct {
		Items []struct {
			Name  string
			Input struct {
				File    string
				Samples int
			}
			NMels       int    `json:"n_mels"`
			TotalFrames int    `json:"total_frames"`
			Stored      [2]int `json:"stored_frames"`
			Data        struct {
				File  string
				Shape [2]int
			}
		}
	}
	readJSON(t, "log_mel.json", &ref)
	if len(ref.Items) == 0 {
		t.Fatal("no items")
	}
	for _, it := range ref.Items {
		t.Run(it.Name, func(t *testing.T) {
			pcm := loadPCM(t, it.Input.File)
			if len(pcm) != it.Input.Samples {
				t.Fatalf("%d samples, reference %d", len(pcm), it.Input.Samples)
			}
			m := LogMel(pcm, it.NMels, nSamples)
			if m.Frames != it.TotalFrames {
				t.Fatalf("%d frames, reference %d", m.Frames, it.TotalFrames)
			}
			want := readF32(t, it.Data.File)
			n := it.Data.Shape[1]
			var maxErr float64
			for b := 0; b < it.NMels; b++ {
				for f := 0; f < n; f++ {
					d := math.Abs(float64(m.Data[b*m.Frames+it.Stored[0]+f] - want[b*n+f]))
					maxErr = math.Max(maxErr, d)
				}
			}
			t.Logf("max |Δ| %.2g over %d×%d", maxErr, it.NMels, n)
			if maxErr > 1e-4 {
				t.Errorf("max |Δ| %g > 1e-4", maxErr)
			}
		})
	}
}
