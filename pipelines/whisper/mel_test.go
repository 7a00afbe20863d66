package whisper

import (
	"archive/zip"
	"encoding/binary"
	"io"
	"math"
	"strings"
	"testing"

	"github.com/falocal/falocal/internal/testenv"
)

// readNPZ reads float32 arrays from a NumPy .npz archive (little-endian,
// C order), by array name.
func readNPZ(t *testing.T, path string) map[string][]float32 {
	t.Helper()
	zr, err := zip.OpenReader(path)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	out := map[string][]float32{}
	for _, f := range zr.File {
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		if string(b[1:6]) != "NUMPY" {
			t.Fatalf("%s: not .npy", f.Name)
		}
		var hl, off int
		if b[6] == 1 {
			hl, off = int(binary.LittleEndian.Uint16(b[8:])), 10
		} else {
			hl, off = int(binary.LittleEndian.Uint32(b[8:])), 12
		}
		header := string(b[off : off+hl])
		if !strings.Contains(header, "'<f4'") || strings.Contains(header, "'fortran_order': True") {
			t.Fatalf("%s: unexpected header %s", f.Name, header)
		}
		data := b[off+hl:]
		v := make([]float32, len(data)/4)
		for i := range v {
			v[i] = math.Float32frombits(binary.LittleEndian.Uint32(data[4*i:]))
		}
		out[strings.TrimSuffix(f.Name, ".npy")] = v
	}
	return out
}

// The filter bank computed here equals the one Whisper ships.
func TestMelFiltersMatchWhisper(t *testing.T) {
	ref := readNPZ(t, testenv.Asset(t, "whisper/mel_filters.npz"))
	for _, n := range []int{80, 128} {
		want := ref["mel_"+itoa(n)]
		if len(want) != n*201 {
			t.Fatalf("mel_%d has %d values", n, len(want))
		}
		got := melFilters(n)
		var maxErr float64
		for b := 0; b < n; b++ {
			for k := 0; k < 201; k++ {
				maxErr = math.Max(maxErr, math.Abs(float64(got[b][k]-want[b*201+k])))
			}
		}
		// float32 rounding of values up to ~0.03
		if maxErr > 1e-8 {
			t.Errorf("mel_%d: max |Δ| %g", n, maxErr)
		}
	}
}

func itoa(n int) string {
	if n == 80 {
		return "80"
	}
	return "128"
}

// A pure tone puts its energy in the band around its frequency, and frame
// counts follow Whisper's (samples+padding)/160.
func TestLogMelTone(t *testing.T) {
	audio := make([]float32, SampleRate)
	for i := range audio {
		audio[i] = float32(0.5 * math.Sin(2*math.Pi*1000*float64(i)/SampleRate))
	}
	m := LogMel(audio, 80, nSamples)
	if m.Frames != (SampleRate+nSamples)/hopLength || m.Bands != 80 {
		t.Fatalf("%d×%d", m.Bands, m.Frames)
	}
	best, bestV := 0, float32(-10)
	for b := 0; b < 80; b++ {
		if v := m.Data[b*m.Frames+50]; v > bestV {
			best, bestV = b, v
		}
	}
	// 1 kHz sits at mel 15 of Slaney's scale: band ≈ 15/(mel(8k)/81)
	if best < 20 || best > 30 {
		t.Errorf("1 kHz tone peaks in band %d", best)
	}
	// the padded tail is floored at max−8, i.e. (max−8+4)/4
	tail := m.Data[10*m.Frames+m.Frames-10]
	if math.Abs(float64(tail-(bestV-2))) > 1e-5 {
		t.Errorf("silence %v, want %v", tail, bestV-2)
	}
}
