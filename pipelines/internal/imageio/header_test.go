package imageio

import (
	"encoding/binary"
	"errors"
	"testing"
)

func TestHeader(t *testing.T) {
	for _, c := range []struct {
		name string
		data []byte
		w, h int
	}{
		{"png", encodePNG(t, testNRGBA(7, 5)), 7, 5},
		{"jpeg", encodeJPEG(t, testNRGBA(40, 24)), 40, 24},
		// a header claiming a huge image, without its pixels: Header must
		// not need them
		{"png header only", pngHeader(100000, 50000), 100000, 50000},
		{"jpeg rotated", exifJPEG(t, 40, 24, 6, binary.BigEndian, false), 24, 40},
		{"jpeg mirrored", exifJPEG(t, 40, 24, 2, binary.LittleEndian, true), 40, 24},
	} {
		t.Run(c.name, func(t *testing.T) {
			info, err := Header(c.data)
			if err != nil || info.Width != c.w || info.Height != c.h {
				t.Fatalf("Header = %+v, %v; want %dx%d", info, err, c.w, c.h)
			}
			if c.w*c.h > 1<<20 {
				return
			}
			_, dec, err := Decode(c.data, Limits{})
			if err != nil || dec.Width != info.Width || dec.Height != info.Height || dec.Format != info.Format {
				t.Fatalf("Decode = %+v, %v; Header %+v", dec, err, info)
			}
		})
	}
	for _, c := range []struct {
		name string
		data []byte
		want error
	}{
		{"empty", nil, ErrEmpty},
		{"text", []byte("hello"), ErrUnsupportedFormat},
		{"zero size", pngHeader(0, 10), ErrCorrupt},
		{"truncated", pngHeader(10, 10)[:20], ErrCorrupt},
	} {
		if _, err := Header(c.data); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
}
