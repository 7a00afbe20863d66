package imageio

import (
	"errors"
	"image"
	"image/color"
	"testing"
)

// pixelChecks says, per lossless-ish format, whether a decoded pixel is
// right for its source pixel.
var pixelChecks = map[string]func(want, got color.NRGBA) bool{
	"png":  func(w, g color.NRGBA) bool { return w == g },
	"webp": func(w, g color.NRGBA) bool { return w == g },
	"gif": func(w, g color.NRGBA) bool {
		if w.A < 128 {
			return g.A == 0
		}
		w.A = 255
		return w == g // web-safe colours survive quantisation exactly
	},
}

// checkRoundTrip encodes src, decodes it and compares every pixel.
func checkRoundTrip(t *testing.T, src *image.NRGBA, format string) Info {
	t.Helper()
	data, _, err := Encode(src, format, 0)
	if err != nil {
		t.Fatal(err)
	}
	m, info := mustDecode(t, data)
	b := src.Bounds()
	if info.Format != format || info.Width != b.Dx() || info.Height != b.Dy() {
		t.Fatalf("info = %+v, want %s %dx%d", info, format, b.Dx(), b.Dy())
	}
	bad := 0
	for y := 0; y < b.Dy(); y++ {
		for x := 0; x < b.Dx(); x++ {
			w, g := src.NRGBAAt(b.Min.X+x, b.Min.Y+y), m.NRGBAAt(x, y)
			if !pixelChecks[format](w, g) {
				if bad++; bad < 5 {
					t.Errorf("(%d,%d) = %v, want %v", x, y, g, w)
				}
			}
		}
	}
	return info
}

func TestEncodeRoundTrip(t *testing.T) {
	full := testNRGBA(37, 23) // odd sizes catch stride/padding mistakes
	// Sub-images have a non-zero origin and a wider stride.
	sub := testNRGBA(40, 30).SubImage(image.Rect(5, 6, 22, 19)).(*image.NRGBA)
	tests := []struct{ format, ct, ext string }{
		{"png", "image/png", ".png"},
		{"webp", "image/webp", ".webp"},
		{"gif", "image/gif", ".gif"},
	}
	for _, tt := range tests {
		t.Run(tt.format, func(t *testing.T) {
			_, ct, err := Encode(full, tt.format, 0)
			if err != nil || ct != tt.ct || Ext(tt.format) != tt.ext {
				t.Errorf("content type %q ext %q err %v, want %q %q", ct, Ext(tt.format), err, tt.ct, tt.ext)
			}
			if info := checkRoundTrip(t, full, tt.format); !info.HasAlpha {
				t.Error("alpha lost")
			}
			checkRoundTrip(t, sub, tt.format)
		})
	}
}

func TestEncodeJPEG(t *testing.T) {
	// Opaque smooth gradient: lossy, so compare the mean error.
	src := image.NewNRGBA(image.Rect(0, 0, 64, 48))
	for y := 0; y < 48; y++ {
		for x := 0; x < 64; x++ {
			src.SetNRGBA(x, y, color.NRGBA{uint8(4 * x), uint8(5 * y), 128, 255})
		}
	}
	for _, q := range []int{0, 80} {
		data, ct, err := Encode(src, "jpg", q)
		if err != nil || ct != "image/jpeg" {
			t.Fatalf("q=%d: ct %q err %v", q, ct, err)
		}
		m, info := mustDecode(t, data)
		if info.Format != "jpeg" || info.HasAlpha || info.Width != 64 || info.Height != 48 {
			t.Errorf("q=%d: info = %+v", q, info)
		}
		var sum int
		for i := range src.Pix {
			d := int(src.Pix[i]) - int(m.Pix[i])
			sum += max(d, -d)
		}
		if mean := float64(sum) / float64(len(src.Pix)); mean > 3 {
			t.Errorf("q=%d: mean abs error %.2f", q, mean)
		}
	}

	// Transparent pixels are flattened onto white, not black.
	transparent := image.NewNRGBA(image.Rect(0, 0, 16, 16))
	data, _, err := Encode(transparent, "jpeg", 90)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := mustDecode(t, data)
	if c := m.NRGBAAt(8, 8); c.R < 250 || c.G < 250 || c.B < 250 || c.A != 255 {
		t.Errorf("flattened pixel = %v, want white", c)
	}
}

func TestEncodeGIFDithers(t *testing.T) {
	// A flat non-web-safe grey must dither to a mix of levels whose
	// average is close to the source, not collapse to one level.
	src := image.NewNRGBA(image.Rect(0, 0, 32, 32))
	for i := 0; i < len(src.Pix); i += 4 {
		copy(src.Pix[i:], []byte{120, 120, 120, 255})
	}
	data, _, err := Encode(src, "gif", 0)
	if err != nil {
		t.Fatal(err)
	}
	m, info := mustDecode(t, data)
	if info.HasAlpha {
		t.Error("opaque GIF reported alpha")
	}
	// Check every row, since error must spread along rows as well as down.
	for y := 0; y < 32; y++ {
		var sum int
		for x := 0; x < 32; x++ {
			sum += int(m.NRGBAAt(x, y).R)
		}
		if mean := float64(sum) / 32; mean < 110 || mean > 130 {
			t.Errorf("row %d: mean red %.1f, want about 120", y, mean)
		}
	}
}

func TestGIFPaletteIsWebSafeOrder(t *testing.T) {
	if len(gifPalette) != 217 || gifPalette[gifTransparent] != (color.RGBA{}) {
		t.Fatal("palette must be 216 colours plus transparent")
	}
	if gifPalette[2*36+3*6+5] != (color.RGBA{102, 153, 255, 255}) {
		t.Error("palette index is not r*36+g*6+b")
	}
}

func TestEncodeErrors(t *testing.T) {
	tests := []struct {
		name   string
		img    image.Image
		format string
	}{
		{"nil image", nil, "png"},
		{"empty image", image.NewNRGBA(image.Rect(0, 0, 0, 5)), "png"},
		{"unknown format", image.NewNRGBA(image.Rect(0, 0, 1, 1)), "tiff"},
		{"empty format", image.NewNRGBA(image.Rect(0, 0, 1, 1)), ""},
	}
	for _, tt := range tests {
		if data, _, err := Encode(tt.img, tt.format, 0); err == nil || data != nil {
			t.Errorf("%s: want error, got %d bytes", tt.name, len(data))
		}
	}
	if _, _, err := Encode(image.NewNRGBA(image.Rect(0, 0, 1, 1)), "bmp", 0); !errors.Is(err, ErrUnsupportedFormat) {
		t.Errorf("bmp: err = %v, want ErrUnsupportedFormat", err)
	}
	if Ext("tiff") != "" || Ext("JPEG") != ".jpg" {
		t.Error("Ext mismatch")
	}
}

func TestEncodeJPEGOffsetBounds(t *testing.T) {
	sub := testNRGBA(20, 20).SubImage(image.Rect(5, 6, 15, 13))
	data, _, err := Encode(sub, "jpeg", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, info := mustDecode(t, data); info.Width != 10 || info.Height != 7 {
		t.Errorf("size %dx%d, want 10x7", info.Width, info.Height)
	}
}
