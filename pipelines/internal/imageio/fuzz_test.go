package imageio

import (
	"encoding/binary"
	"errors"
	"testing"
)

// FuzzDecode checks that Decode never panics (a recovered panic is reported
// via errPanic), returns only the documented errors, and keeps its limits.
// Run with: go test -run '^$' -fuzz FuzzDecode -fuzztime 20s
func FuzzDecode(f *testing.F) {
	src := testNRGBA(13, 9)
	for _, format := range []string{"png", "jpeg", "webp", "gif"} {
		data, _, err := Encode(src, format, 0)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
		f.Add(data[:len(data)/2])
	}
	f.Add(exifJPEG(f, 16, 16, 6, binary.LittleEndian, true))
	f.Add(pngHeader(100000, 100000))
	f.Add(pngHeader(0, 0))
	f.Add([]byte("GIF89a\x00\x00\x00\x00\x00\x00\x00;"))
	f.Add([]byte("BM\x00\x00\x00\x00\x00\x00\x00\x00"))

	const maxPixels = 1 << 20
	f.Fuzz(func(t *testing.T, data []byte) {
		m, info, err := Decode(data, Limits{MaxPixels: maxPixels})
		if err != nil {
			if errors.Is(err, errPanic) {
				t.Fatalf("decoder panicked: %v", err)
			}
			if !errors.Is(err, ErrEmpty) && !errors.Is(err, ErrTooLarge) &&
				!errors.Is(err, ErrUnsupportedFormat) && !errors.Is(err, ErrCorrupt) {
				t.Fatalf("untyped error: %v", err)
			}
			return
		}
		w, h := m.Rect.Dx(), m.Rect.Dy()
		if m.Rect.Min.X != 0 || m.Rect.Min.Y != 0 || w != info.Width || h != info.Height ||
			w <= 0 || h <= 0 || int64(w)*int64(h) > maxPixels || len(m.Pix) < 4*w*h {
			t.Fatalf("bad result: rect %v info %+v len %d", m.Rect, info, len(m.Pix))
		}
	})
}
