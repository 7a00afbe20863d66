package audio

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"testing"
	"time"
)

// chunk is one RIFF chunk; odd-sized bodies get their pad byte.
func chunk(id string, body []byte) []byte {
	b := append([]byte(id), 0, 0, 0, 0)
	binary.LittleEndian.PutUint32(b[4:], uint32(len(body)))
	b = append(b, body...)
	if len(body)%2 == 1 {
		b = append(b, 0)
	}
	return b
}

func riff(chunks ...[]byte) []byte {
	b := []byte("RIFF\x00\x00\x00\x00WAVE")
	for _, c := range chunks {
		b = append(b, c...)
	}
	binary.LittleEndian.PutUint32(b[4:], uint32(len(b)-8))
	return b
}

func fmtChunk(tag uint16, channels, rate, bits int) []byte {
	width := (bits + 7) / 8
	b := make([]byte, 16)
	binary.LittleEndian.PutUint16(b[0:], tag)
	binary.LittleEndian.PutUint16(b[2:], uint16(channels))
	binary.LittleEndian.PutUint32(b[4:], uint32(rate))
	binary.LittleEndian.PutUint32(b[8:], uint32(rate*channels*width))
	binary.LittleEndian.PutUint16(b[12:], uint16(channels*width))
	binary.LittleEndian.PutUint16(b[14:], uint16(bits))
	return chunk("fmt ", b)
}

// extensible wraps a codec tag in WAVE_FORMAT_EXTENSIBLE.
func extensible(tag uint16, channels, rate, bits, validBits int) []byte {
	f := fmtChunk(wavExtensible, channels, rate, bits)[8:]
	ext := make([]byte, 24)
	binary.LittleEndian.PutUint16(ext[0:], 22)
	binary.LittleEndian.PutUint16(ext[2:], uint16(validBits))
	binary.LittleEndian.PutUint32(ext[4:], 0x3) // front left | front right
	binary.LittleEndian.PutUint16(ext[8:], tag)
	copy(ext[10:], ksSubtypeSuffix)
	return chunk("fmt ", append(append([]byte{}, f...), ext...))
}

func le16(v ...int16) []byte {
	b := make([]byte, 2*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint16(b[2*i:], uint16(x))
	}
	return b
}

func le24(v ...int32) []byte {
	var b []byte
	for _, x := range v {
		b = append(b, byte(x), byte(x>>8), byte(x>>16))
	}
	return b
}

func le32(v ...int32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], uint32(x))
	}
	return b
}

func f32(v ...float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

func f64(v ...float64) []byte {
	b := make([]byte, 8*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint64(b[8*i:], math.Float64bits(x))
	}
	return b
}

func TestDecodeWAVFormats(t *testing.T) {
	list := chunk("LIST", []byte("INFOISFT\x05\x00\x00\x00test\x00")) // odd size: padded
	tests := []struct {
		name     string
		file     []byte
		rate, ch int
		want     []float32
	}{
		{"u8", riff(fmtChunk(wavPCM, 1, 8000, 8), chunk("data", []byte{0, 64, 128, 192, 255})), 8000, 1,
			[]float32{-1, -0.5, 0, 0.5, 127.0 / 128}},
		{"s16", riff(fmtChunk(wavPCM, 1, 16000, 16), chunk("data", le16(-32768, -16384, 0, 1, 32767))), 16000, 1,
			[]float32{-1, -0.5, 0, 1.0 / 32768, 32767.0 / 32768}},
		{"s16 stereo, LIST before and after", riff(fmtChunk(wavPCM, 2, 44100, 16), list, chunk("data", le16(100, -100, 32767, -32768)), list), 44100, 2,
			[]float32{100.0 / 32768, -100.0 / 32768, 32767.0 / 32768, -1}},
		{"s24", riff(fmtChunk(wavPCM, 1, 48000, 24), chunk("data", le24(-8388608, -1, 0, 4194304, 8388607))), 48000, 1,
			[]float32{-1, -1.0 / 8388608, 0, 0.5, 8388607.0 / 8388608}},
		{"s32", riff(fmtChunk(wavPCM, 1, 48000, 32), chunk("data", le32(math.MinInt32, 0, 1<<30, -1<<29))), 48000, 1,
			[]float32{-1, 0, 0.5, -0.25}},
		{"f32", riff(fmtChunk(wavFloat, 1, 22050, 32), chunk("data", f32(-1, 0.25, 1, float32(math.NaN())))), 22050, 1,
			[]float32{-1, 0.25, 1, 0}},
		{"f64", riff(fmtChunk(wavFloat, 2, 32000, 64), chunk("data", f64(0.5, -0.125, math.Inf(1), 0.75))), 32000, 2,
			[]float32{0.5, -0.125, 0, 0.75}},
		{"extensible s24 (20 valid bits)", riff(extensible(wavPCM, 2, 96000, 24, 20), chunk("data", le24(0x100000, -0x200000))), 96000, 2,
			[]float32{0.125, -0.25}},
		{"extensible f32", riff(extensible(wavFloat, 1, 16000, 32, 32), chunk("data", f32(0.5, -0.5))), 16000, 1,
			[]float32{0.5, -0.5}},
		// G.711 reference points: µ-law 0xFF/0x7F are ±0, 0x80/0x00 the
		// extremes ±32124; A-law 0xD5/0x55 are ±8, 0xAA/0x2A ±32256.
		{"mu-law", riff(fmtChunk(wavMuLaw, 1, 8000, 8), chunk("data", []byte{0xFF, 0x80, 0x00, 0xF0})), 8000, 1,
			[]float32{0, 32124.0 / 32768, -32124.0 / 32768, 120.0 / 32768}},
		{"a-law", riff(fmtChunk(wavALaw, 1, 8000, 8), chunk("data", []byte{0xD5, 0x55, 0xAA, 0x2A})), 8000, 1,
			[]float32{8.0 / 32768, -8.0 / 32768, 32256.0 / 32768, -32256.0 / 32768}},
		{"streamed: data size 0xFFFFFFFF", streamed(riff(fmtChunk(wavPCM, 1, 16000, 16), chunk("data", le16(1, 2, 3))), 0xFFFFFFFF), 16000, 1,
			[]float32{1.0 / 32768, 2.0 / 32768, 3.0 / 32768}},
		{"streamed: data size 0", streamed(riff(fmtChunk(wavPCM, 1, 16000, 16), chunk("data", le16(1, 2))), 0), 16000, 1,
			[]float32{1.0 / 32768, 2.0 / 32768}},
		{"truncated: declared size past the end", streamed(riff(fmtChunk(wavPCM, 1, 16000, 16), chunk("data", le16(5, 6, 7))), 1<<30), 16000, 1,
			[]float32{5.0 / 32768, 6.0 / 32768, 7.0 / 32768}},
		{"partial last frame dropped", riff(fmtChunk(wavPCM, 2, 16000, 16), chunk("data", append(le16(1, 2, 3), 0xAA))), 16000, 2,
			[]float32{1.0 / 32768, 2.0 / 32768}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, err := Decode(tc.file, time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			if a.Rate != tc.rate || a.Channels != tc.ch {
				t.Fatalf("rate %d ch %d, want %d %d", a.Rate, a.Channels, tc.rate, tc.ch)
			}
			if len(a.Samples) != len(tc.want) {
				t.Fatalf("%d samples %v, want %v", len(a.Samples), a.Samples, tc.want)
			}
			for i := range tc.want {
				if a.Samples[i] != tc.want[i] {
					t.Fatalf("sample %d = %v, want %v (all %v)", i, a.Samples[i], tc.want[i], a.Samples)
				}
			}
		})
	}
}

// streamed rewrites the data chunk's size field as a streaming writer (or a
// truncated file) leaves it.
func streamed(wav []byte, size uint32) []byte {
	i := bytes.Index(wav, []byte("data"))
	binary.LittleEndian.PutUint32(wav[i+4:], size)
	return wav
}

func TestMuLawALawSymmetry(t *testing.T) {
	for b := 0; b < 128; b++ {
		if muLaw(byte(b)) != -muLaw(byte(b|0x80)) {
			t.Fatalf("µ-law %#x and %#x not symmetric", b, b|0x80)
		}
		if aLaw(byte(b)) != -aLaw(byte(b|0x80)) {
			t.Fatalf("A-law %#x and %#x not symmetric", b, b|0x80)
		}
	}
}

func TestDecodeWAVTooLong(t *testing.T) {
	const rate = 8000
	ten := riff(fmtChunk(wavPCM, 1, rate, 16), chunk("data", make([]byte, 2*10*rate)))
	if _, err := Decode(ten, 9*time.Second); !errors.Is(err, ErrTooLong) {
		t.Fatalf("10 s under a 9 s limit: %v", err)
	}
	if a, err := Decode(ten, 10*time.Second); err != nil || a.Duration() != 10*time.Second {
		t.Fatalf("10 s at a 10 s limit: %v", err)
	}
	if _, err := Decode(ten, 0); err != nil {
		t.Fatalf("no limit: %v", err)
	}
	// A streamed header says nothing; the bytes present decide.
	if _, err := Decode(streamed(ten, 0xFFFFFFFF), 5*time.Second); !errors.Is(err, ErrTooLong) {
		t.Fatalf("streamed 10 s under a 5 s limit: %v", err)
	}
}
