package audio

import (
	"errors"
	"testing"
	"time"
)

// Audio over the duration limit is refused with its length where the
// header declares it (before decoding), and still as ErrTooLong.
func TestTooLongLength(t *testing.T) {
	const rate = 8000
	ten := riff(fmtChunk(wavPCM, 1, rate, 16), chunk("data", make([]byte, 2*10*rate)))
	huge := append([]byte{}, fixture(t, "jfk_3s.flac")...)
	copy(huge[22:26], []byte{0xFF, 0xFF, 0xFF, 0xFF}) // STREAMINFO: 2³²-1 samples at 16 kHz
	for _, c := range []struct {
		name   string
		data   []byte
		limit  time.Duration
		length time.Duration
	}{
		{"WAV", ten, 9 * time.Second, 10 * time.Second},
		{"FLAC declaring 74 hours", huge, time.Minute, time.Duration(float64(1<<32-1) / 16000 * float64(time.Second)).Round(time.Millisecond)},
		{"Vorbis declaring 50 days", lastGranuleTo(fixture(t, "jfk_3s.ogg"), 1<<36), time.Minute, time.Duration(float64(1<<36) / 16000 * float64(time.Second)).Round(time.Millisecond)},
		// a streamed WAV's header declares no length: the bytes present do
		{"streamed WAV", streamed(ten, 0xFFFFFFFF), 5 * time.Second, 10 * time.Second},
	} {
		_, err := Decode(c.data, c.limit)
		var tl *TooLongError
		if !errors.Is(err, ErrTooLong) || !errors.As(err, &tl) || tl.Limit != c.limit {
			t.Fatalf("%s: %v", c.name, err)
		}
		if tl.Length != c.length {
			t.Errorf("%s: length %v, want %v", c.name, tl.Length, c.length)
		}
	}
}
