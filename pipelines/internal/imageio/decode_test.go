package imageio

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"math/rand"
	"runtime"
	"testing"
)

// testNRGBA returns a w×h image mixing web-safe colours (so GIF quantisation
// is exact) with varied alpha, including fully transparent pixels with
// non-zero colour and a few low-alpha pixels.
func testNRGBA(w, h int) *image.NRGBA {
	m := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			c := color.NRGBA{uint8(51 * (x % 6)), uint8(51 * (y % 6)), uint8(51 * ((x + y) % 6)), 0xff}
			switch (x + 3*y) % 7 {
			case 0:
				c.A = 0
			case 1:
				c.A = 3
			case 2:
				c.A = 128
			}
			m.SetNRGBA(x, y, c)
		}
	}
	return m
}

func encodePNG(t testing.TB, m image.Image) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := png.Encode(&b, m); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func encodeJPEG(t testing.TB, m image.Image) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := jpeg.Encode(&b, m, &jpeg.Options{Quality: 95}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func mustDecode(t *testing.T, data []byte) (*image.NRGBA, Info) {
	t.Helper()
	m, info, err := Decode(data, Limits{})
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if m.Rect.Min != (image.Point{}) || m.Rect.Dx() != info.Width || m.Rect.Dy() != info.Height {
		t.Fatalf("bounds %v do not match info %dx%d", m.Rect, info.Width, info.Height)
	}
	return m, info
}

func TestDecodeConvertsToNRGBA(t *testing.T) {
	gray := image.NewGray(image.Rect(0, 0, 3, 2))
	gray16 := image.NewGray16(image.Rect(0, 0, 3, 2))
	nrgba64 := image.NewNRGBA64(image.Rect(0, 0, 3, 2))
	rgba64 := image.NewRGBA64(image.Rect(0, 0, 3, 2))
	pal := image.NewPaletted(image.Rect(0, 0, 3, 2), color.Palette{
		color.NRGBA{10, 20, 30, 255}, color.NRGBA{200, 100, 50, 7},
	})
	want := map[string][]color.NRGBA{}
	for i := 0; i < 6; i++ {
		x, y := i%3, i/3
		v := uint8(40 * i)
		gray.SetGray(x, y, color.Gray{v})
		want["gray"] = append(want["gray"], color.NRGBA{v, v, v, 255})
		gray16.SetGray16(x, y, color.Gray16{uint16(v)<<8 | 0xab})
		want["gray16"] = append(want["gray16"], color.NRGBA{v, v, v, 255})
		nrgba64.SetNRGBA64(x, y, color.NRGBA64{0x1234, 0xfedc, uint16(v) << 8, 0x0380})
		want["nrgba64"] = append(want["nrgba64"], color.NRGBA{0x12, 0xfe, v, 0x03})
		rgba64.SetRGBA64(x, y, color.RGBA64{uint16(v) << 8, 0x8000, 0xffff, 0xffff})
		want["rgba64"] = append(want["rgba64"], color.NRGBA{v, 0x80, 0xff, 0xff})
		pal.SetColorIndex(x, y, uint8(i%2))
		want["paletted"] = append(want["paletted"], color.NRGBAModel.Convert(pal.Palette[i%2]).(color.NRGBA))
	}
	tests := []struct {
		name                   string
		img                    image.Image
		gray, bits16, hasAlpha bool
	}{
		{"gray", gray, true, false, false},
		{"gray16", gray16, true, true, false},
		{"nrgba64", nrgba64, false, true, true},
		{"rgba64", rgba64, false, true, false},
		{"paletted", pal, false, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, info := mustDecode(t, encodePNG(t, tt.img))
			if info.Format != "png" || info.Gray != tt.gray || info.Bits16 != tt.bits16 || info.HasAlpha != tt.hasAlpha {
				t.Errorf("info = %+v, want gray=%v bits16=%v alpha=%v", info, tt.gray, tt.bits16, tt.hasAlpha)
			}
			for i, w := range want[tt.name] {
				if got := m.NRGBAAt(i%3, i/3); got != w {
					t.Errorf("pixel %d = %v, want %v", i, got, w)
				}
			}
		})
	}
}

func TestToNRGBAOpaqueModels(t *testing.T) {
	cmyk := image.NewCMYK(image.Rect(0, 0, 1, 1))
	cmyk.SetCMYK(0, 0, color.CMYK{0, 255, 255, 0}) // pure red
	ycc := image.NewYCbCr(image.Rect(0, 0, 1, 1), image.YCbCrSubsampleRatio444)
	ycc.Y[0], ycc.Cb[0], ycc.Cr[0] = 76, 85, 255 // about red
	for name, img := range map[string]image.Image{"cmyk": cmyk, "ycbcr": ycc} {
		got := toNRGBA(img, img.Bounds()).NRGBAAt(0, 0)
		if got.R < 250 || got.G > 5 || got.B > 5 || got.A != 255 {
			t.Errorf("%s: got %v, want opaque red", name, got)
		}
	}
}

func TestDecodeGIFFrameOffset(t *testing.T) {
	frame := image.NewPaletted(image.Rect(2, 3, 5, 5), color.Palette{color.RGBA{255, 0, 0, 255}})
	var b bytes.Buffer
	err := gif.EncodeAll(&b, &gif.GIF{
		Image: []*image.Paletted{frame}, Delay: []int{0},
		Config: image.Config{Width: 8, Height: 6, ColorModel: frame.Palette},
	})
	if err != nil {
		t.Fatal(err)
	}
	m, info := mustDecode(t, b.Bytes())
	if info.Width != 8 || info.Height != 6 || !info.HasAlpha {
		t.Errorf("info = %+v, want 8x6 with alpha", info)
	}
	if got := m.NRGBAAt(3, 4); got != (color.NRGBA{255, 0, 0, 255}) {
		t.Errorf("inside frame = %v, want red", got)
	}
	if got := m.NRGBAAt(0, 0); got.A != 0 {
		t.Errorf("outside frame = %v, want transparent", got)
	}
}

// exifJPEG returns a w×h JPEG with a red block at the top-left corner and a
// green block at the top-right, with an Exif APP1 segment carrying the
// orientation spliced in after SOI (preceded by an XMP APP1 when xmpFirst).
func exifJPEG(t testing.TB, w, h, orientation int, bo binary.ByteOrder, xmpFirst bool) []byte {
	m := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			c := color.RGBA{255, 255, 255, 255}
			if y < 8 && x < 8 {
				c = color.RGBA{255, 0, 0, 255}
			} else if y < 8 && x >= w-8 {
				c = color.RGBA{0, 255, 0, 255}
			}
			m.SetRGBA(x, y, c)
		}
	}
	j := encodeJPEG(t, m)

	tiff := make([]byte, 8+2+12+4)
	if bo == binary.LittleEndian {
		copy(tiff, "II")
	} else {
		copy(tiff, "MM")
	}
	bo.PutUint16(tiff[2:], 42)
	bo.PutUint32(tiff[4:], 8) // IFD0 offset
	bo.PutUint16(tiff[8:], 1) // one entry
	bo.PutUint16(tiff[10:], 0x0112)
	bo.PutUint16(tiff[12:], 3) // SHORT
	bo.PutUint32(tiff[14:], 1) // count
	bo.PutUint16(tiff[18:], uint16(orientation))
	app1 := segment(0xe1, append([]byte("Exif\x00\x00"), tiff...))

	out := append([]byte{}, j[:2]...)
	if xmpFirst {
		out = append(out, segment(0xe1, []byte("http://ns.adobe.com/xap/1.0/\x00<x/>"))...)
	}
	out = append(out, app1...)
	return append(out, j[2:]...)
}

func segment(marker byte, payload []byte) []byte {
	s := []byte{0xff, marker, 0, 0}
	binary.BigEndian.PutUint16(s[2:], uint16(len(payload)+2))
	return append(s, payload...)
}

func TestDecodeEXIFOrientation(t *testing.T) {
	const w, h = 40, 24
	// Where the stored top-left (red) and top-right (green) corners must be
	// displayed, per the EXIF definition of each orientation.
	type pt struct{ x, y int }
	tests := []struct {
		o          int
		red, green pt
	}{
		{1, pt{0, 0}, pt{w - 1, 0}},
		{2, pt{w - 1, 0}, pt{0, 0}},
		{3, pt{w - 1, h - 1}, pt{0, h - 1}},
		{4, pt{0, h - 1}, pt{w - 1, h - 1}},
		{5, pt{0, 0}, pt{0, w - 1}},
		{6, pt{h - 1, 0}, pt{h - 1, w - 1}},
		{7, pt{h - 1, w - 1}, pt{h - 1, 0}},
		{8, pt{0, w - 1}, pt{0, 0}},
	}
	for _, tt := range tests {
		for _, v := range []struct {
			name string
			bo   binary.ByteOrder
			xmp  bool
		}{{"MM", binary.BigEndian, false}, {"II+XMP", binary.LittleEndian, true}} {
			m, info := mustDecode(t, exifJPEG(t, w, h, tt.o, v.bo, v.xmp))
			wantW, wantH := w, h
			if tt.o >= 5 {
				wantW, wantH = h, w
			}
			if info.Width != wantW || info.Height != wantH {
				t.Errorf("o=%d %s: size %dx%d, want %dx%d", tt.o, v.name, info.Width, info.Height, wantW, wantH)
				continue
			}
			// Sample 2px inside the corner to stay clear of block edges.
			inset := func(p pt) (int, int) {
				x, y := p.x+2, p.y+2
				if p.x > 0 {
					x = p.x - 2
				}
				if p.y > 0 {
					y = p.y - 2
				}
				return x, y
			}
			if c := m.NRGBAAt(inset(tt.red)); c.R < 200 || c.G > 60 || c.B > 60 {
				t.Errorf("o=%d %s: red corner at %v is %v", tt.o, v.name, tt.red, c)
			}
			if c := m.NRGBAAt(inset(tt.green)); c.G < 200 || c.R > 60 || c.B > 60 {
				t.Errorf("o=%d %s: green corner at %v is %v", tt.o, v.name, tt.green, c)
			}
		}
	}
}

// pngChunk returns a PNG chunk with a correct CRC.
func pngChunk(typ string, data []byte) []byte {
	c := binary.BigEndian.AppendUint32(nil, uint32(len(data)))
	c = append(c, typ...)
	c = append(c, data...)
	return binary.BigEndian.AppendUint32(c, crc32.ChecksumIEEE(c[4:]))
}

func ihdr(w, h uint32, depth, colorType byte) []byte {
	d := binary.BigEndian.AppendUint32(nil, w)
	d = binary.BigEndian.AppendUint32(d, h)
	return pngChunk("IHDR", append(d, depth, colorType, 0, 0, 0))
}

// pngHeader returns a PNG signature plus an IHDR (8-bit RGBA) claiming the
// given size, and nothing else.
func pngHeader(w, h uint32) []byte {
	return append([]byte("\x89PNG\r\n\x1a\n"), ihdr(w, h, 8, 6)...)
}

// rawPNG builds an 8-bit PNG of the given colour type by hand, for the
// layouts image/png never writes (gray+alpha, opaque RGBA).
func rawPNG(t testing.TB, w, h int, colorType byte, pix []byte) []byte {
	var z bytes.Buffer
	zw := zlib.NewWriter(&z)
	stride := len(pix) / h
	for y := 0; y < h; y++ {
		zw.Write([]byte{0}) // filter: none
		zw.Write(pix[y*stride : (y+1)*stride])
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	out := append([]byte("\x89PNG\r\n\x1a\n"), ihdr(uint32(w), uint32(h), 8, colorType)...)
	out = append(out, pngChunk("IDAT", z.Bytes())...)
	return append(out, pngChunk("IEND", nil)...)
}

func TestDecodeRawPNG(t *testing.T) {
	tests := []struct {
		name           string
		colorType      byte
		pix            []byte
		want           color.NRGBA
		gray, hasAlpha bool
	}{
		{"gray+alpha", 4, []byte{90, 40, 90, 40}, color.NRGBA{90, 90, 90, 40}, true, true},
		{"gray+alpha opaque", 4, []byte{90, 255, 90, 255}, color.NRGBA{90, 90, 90, 255}, true, true},
		{"rgba opaque", 6, []byte{1, 2, 3, 255, 1, 2, 3, 255}, color.NRGBA{1, 2, 3, 255}, false, true},
		{"rgb", 2, []byte{1, 2, 3, 1, 2, 3}, color.NRGBA{1, 2, 3, 255}, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, info := mustDecode(t, rawPNG(t, 2, 1, tt.colorType, tt.pix))
			if info.Gray != tt.gray || info.HasAlpha != tt.hasAlpha || info.Bits16 || info.Width != 2 {
				t.Errorf("info = %+v, want gray=%v alpha=%v", info, tt.gray, tt.hasAlpha)
			}
			if got := m.NRGBAAt(1, 0); got != tt.want {
				t.Errorf("pixel = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestDecodeLimits(t *testing.T) {
	small := encodePNG(t, testNRGBA(100, 100))
	tests := []struct {
		name string
		data []byte
		lim  Limits
		want error
	}{
		{"bomb header", pngHeader(100000, 100000), Limits{MaxPixels: 50_000_000}, ErrTooLarge},
		{"bomb default limit", pngHeader(100000, 100000), Limits{}, ErrTooLarge},
		{"png dimension overflow", pngHeader(1<<31-1, 1<<31-1), Limits{MaxPixels: 1 << 62}, ErrTooLarge},
		{"at pixel limit", small, Limits{MaxPixels: 10000}, nil},
		{"over pixel limit", small, Limits{MaxPixels: 9999}, ErrTooLarge},
		{"at byte limit", small, Limits{MaxBytes: int64(len(small))}, nil},
		{"over byte limit", small, Limits{MaxBytes: int64(len(small) - 1)}, ErrTooLarge},
		{"zero size png", pngHeader(0, 0), Limits{}, ErrCorrupt},
		{"zero size gif", []byte("GIF89a\x00\x00\x00\x00\x00\x00\x00;"), Limits{}, ErrCorrupt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, _, err := Decode(tt.data, tt.lim)
			runtime.ReadMemStats(&after)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if err != nil && after.TotalAlloc-before.TotalAlloc > 1<<20 {
				t.Errorf("refusal allocated %d bytes", after.TotalAlloc-before.TotalAlloc)
			}
		})
	}
}

func TestDecodeBadInput(t *testing.T) {
	rnd := make([]byte, 4096)
	rand.New(rand.NewSource(1)).Read(rnd)
	rnd[0] = 'x' // never a magic number, whatever the seed
	pngData := encodePNG(t, testNRGBA(40, 30))
	jpegData := encodeJPEG(t, testNRGBA(40, 30))
	webpData, _, err := Encode(testNRGBA(40, 30), "webp", 0)
	if err != nil {
		t.Fatal(err)
	}
	gifData, _, err := Encode(testNRGBA(40, 30), "gif", 0)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		data []byte
		want error
	}{
		{"nil", nil, ErrEmpty},
		{"empty", []byte{}, ErrEmpty},
		{"random", rnd, ErrUnsupportedFormat},
		{"text", []byte("hello, world"), ErrUnsupportedFormat},
		{"short magic", []byte("\x89PN"), ErrUnsupportedFormat},
		{"png magic only", pngData[:8], ErrCorrupt},
		{"png bad crc", append(pngHeader(4, 4)[:29], 0, 0, 0, 0), ErrCorrupt},
		{"jpeg soi only", jpegData[:2], ErrCorrupt},
		{"png garbage body", append(append([]byte{}, pngData[:40]...), rnd...), ErrCorrupt},
	}
	// Truncations at several points, from inside the header to just
	// before the end.
	for _, f := range []struct {
		name string
		data []byte
	}{{"png", pngData}, {"jpeg", jpegData}, {"webp", webpData}, {"gif", gifData}} {
		for _, frac := range []int{10, 30, 50, 70, 90, 99} {
			n := len(f.data) * frac / 100
			tests = append(tests, struct {
				name string
				data []byte
				want error
			}{f.name + " truncated", f.data[:n], ErrCorrupt})
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, _, err := Decode(tt.data, Limits{})
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if m != nil {
				t.Error("non-nil image with error")
			}
			if errors.Is(err, errPanic) {
				t.Errorf("decoder panicked: %v", err)
			}
		})
	}
}

func TestJPEGOrientationParserRobust(t *testing.T) {
	j := exifJPEG(t, 16, 16, 6, binary.BigEndian, false)
	// Every truncation and single-byte corruption of the header area must
	// give a valid orientation, never a panic.
	for n := 0; n <= 60 && n <= len(j); n++ {
		if o := jpegOrientation(j[:n]); o < 1 || o > 8 {
			t.Fatalf("truncated at %d: orientation %d", n, o)
		}
	}
	for i := 2; i < 60; i++ {
		b := append([]byte{}, j...)
		b[i] ^= 0xff
		if o := jpegOrientation(b); o < 1 || o > 8 {
			t.Fatalf("corrupt byte %d: orientation %d", i, o)
		}
	}
	if o := jpegOrientation(j); o != 6 {
		t.Fatalf("orientation %d, want 6", o)
	}
}
