package audio

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/falocal/falocal/internal/testenv"
)

// Real recordings installed by `make test-assets` under whisper/.

func decodeAsset(t *testing.T, name string) *Audio {
	t.Helper()
	b, err := os.ReadFile(testenv.Asset(t, "whisper/"+name))
	if err != nil {
		t.Fatal(err)
	}
	a, err := Decode(b, 10*time.Minute)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return a
}

func TestJFKWAV(t *testing.T) {
	a := decodeAsset(t, "jfk.wav")
	if a.Rate != 16000 || a.Channels != 1 || len(a.Samples) != 176000 {
		t.Fatalf("rate %d ch %d samples %d, want 16000 1 176000", a.Rate, a.Channels, len(a.Samples))
	}
	m := a.Mono16k()
	for i := range m {
		if m[i] != a.Samples[i] {
			t.Fatalf("Mono16k changed 16 kHz mono sample %d", i)
		}
	}
}

// The lossless fixture must be exactly the start of the real file, which
// makes it a valid reference for the other fixture tests.
func TestFLACMatchesJFK(t *testing.T) {
	src := decodeAsset(t, "jfk.wav").Samples
	got := decodeFixture(t, "jfk_3s.flac").Samples
	if len(got) != 48000 {
		t.Fatalf("%d samples", len(got))
	}
	for i := range got {
		if got[i] != src[i] {
			t.Fatalf("sample %d: FLAC %v, WAV %v", i, got[i], src[i])
		}
	}
}

func TestJFKMP3(t *testing.T) {
	ref := decodeAsset(t, "jfk.wav").Samples
	a := decodeAsset(t, "jfk.mp3")
	mono := a.Mono16k()
	snr, lag := alignedSNR(ref, mono, 4000)
	t.Logf("jfk.mp3: %v at %d Hz × %d; SNR %.1f dB vs jfk.wav at a delay of %d samples", a.Duration(), a.Rate, a.Channels, snr, lag)
	if snr < 20 {
		t.Fatalf("SNR %.1f dB < 20 dB", snr)
	}
	// the LAME tag's delay and padding are trimmed: same length, no lag
	if n := len(mono); n != len(ref) || lag != 0 {
		t.Errorf("%d samples at a lag of %d, want %d at 0", n, lag, len(ref))
	}
}

func TestStereo44kAgainstJFK(t *testing.T) {
	ref := decodeAsset(t, "jfk.wav").Samples[:32000]
	mono := decodeFixture(t, "jfk_2s_44k_stereo_s24.flac").Mono16k()
	snr, lag := alignedSNR(ref, mono, 200)
	t.Logf("44.1 kHz stereo s24 → 16 kHz mono: SNR %.1f dB at lag %d", snr, lag)
	if snr < 25 {
		t.Fatalf("SNR %.1f dB < 25 dB", snr)
	}
}

func TestPocketsphinxRecordings(t *testing.T) {
	for _, set := range []struct{ dir, transcript string }{
		{"librivox", "transcription"},
		{"cards", "cards.transcription"},
	} {
		tr, err := os.ReadFile(testenv.Asset(t, filepath.Join("whisper", set.dir, set.transcript)))
		if err != nil {
			t.Fatal(err)
		}
		// Each transcript line ends with "(utterance-id)", the wav's name.
		n := 0
		for _, line := range strings.Split(strings.TrimSpace(string(tr)), "\n") {
			i, j := strings.LastIndex(line, "("), strings.LastIndex(line, ")")
			if i < 0 || j < i {
				t.Fatalf("odd transcript line %q", line)
			}
			name := filepath.Join(set.dir, line[i+1:j]+".wav")
			a := decodeAsset(t, name)
			if a.Rate != 16000 || a.Channels != 1 || a.Duration() < time.Second || rmsOf(a.Samples) < 1e-3 {
				t.Errorf("%s: rate %d ch %d %v rms %.2g", name, a.Rate, a.Channels, a.Duration(), rmsOf(a.Samples))
			}
			n++
		}
		if n < 5 {
			t.Errorf("%s: only %d recordings", set.dir, n)
		}
	}
}
