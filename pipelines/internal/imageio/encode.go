package imageio

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/gif"
	"image/jpeg"
	"image/png"
	"strings"

	"github.com/HugoSmits86/nativewebp"
)

// DefaultJPEGQuality is used by Encode when quality is 0.
const DefaultJPEGQuality = 95

var contentTypes = map[string]string{
	"png":  "image/png",
	"jpeg": "image/jpeg",
	"webp": "image/webp",
	"gif":  "image/gif",
}

var extensions = map[string]string{
	"png":  ".png",
	"jpeg": ".jpg",
	"webp": ".webp",
	"gif":  ".gif",
}

// normFormat lower-cases format and accepts "jpg" for "jpeg".
func normFormat(format string) string {
	f := strings.ToLower(strings.TrimSpace(format))
	if f == "jpg" {
		return "jpeg"
	}
	return f
}

// Ext returns the file extension (with dot) for an Encode format, or "" if
// the format is unknown.
func Ext(format string) string {
	return extensions[normFormat(format)]
}

// Encode encodes img as "png", "jpeg" (alpha flattened onto white; quality
// 1-100, 0 means DefaultJPEGQuality), "webp" (lossless, with alpha) or "gif"
// (one frame, web-safe palette with Floyd–Steinberg dithering; alpha < 128
// becomes transparent). It returns the encoded bytes and their content type.
// Unknown formats give an error wrapping ErrUnsupportedFormat.
func Encode(img image.Image, format string, quality int) (out []byte, contentType string, err error) {
	if img == nil || img.Bounds().Empty() {
		return nil, "", errors.New("imageio: encode: empty image")
	}
	f := normFormat(format)
	ct, ok := contentTypes[f]
	if !ok {
		return nil, "", fmt.Errorf("%w: cannot encode %q", ErrUnsupportedFormat, format)
	}
	defer func() {
		// The WebP encoder is young; turn a bug there into an error.
		if r := recover(); r != nil {
			out, contentType, err = nil, "", fmt.Errorf("imageio: encode %s: panic: %v", f, r)
		}
	}()

	var buf bytes.Buffer
	switch f {
	case "png":
		err = png.Encode(&buf, img)
	case "jpeg":
		if quality <= 0 {
			quality = DefaultJPEGQuality
		}
		err = jpeg.Encode(&buf, flattenOnWhite(img), &jpeg.Options{Quality: min(quality, 100)})
	case "webp":
		err = nativewebp.Encode(&buf, img, nil)
	case "gif":
		err = gif.Encode(&buf, quantize(img), nil)
	}
	if err != nil {
		return nil, "", fmt.Errorf("imageio: encode %s: %w", f, err)
	}
	return buf.Bytes(), ct, nil
}

// flattenOnWhite composites img over white because JPEG has no alpha.
func flattenOnWhite(img image.Image) image.Image {
	switch img.(type) {
	case *image.Gray, *image.YCbCr:
		return img // opaque, and encoded natively by image/jpeg
	}
	b := img.Bounds()
	dst := image.NewRGBA(b)
	draw.Draw(dst, b, image.White, image.Point{}, draw.Src)
	draw.Draw(dst, b, img, b.Min, draw.Over)
	return dst
}

// gifPalette is the 216-colour web-safe cube (index r*36 + g*6 + b, levels
// multiples of 0x33) followed by one transparent entry, which image/gif
// detects and records as the transparent index.
var gifPalette = func() color.Palette {
	p := make(color.Palette, 0, 217)
	for r := 0; r < 6; r++ {
		for g := 0; g < 6; g++ {
			for b := 0; b < 6; b++ {
				p = append(p, color.RGBA{uint8(r * 51), uint8(g * 51), uint8(b * 51), 0xff})
			}
		}
	}
	return append(p, color.RGBA{})
}()

const gifTransparent = 216

// quantize maps img onto gifPalette with Floyd–Steinberg dithering. Pixels
// with alpha < 128 become transparent and neither receive nor pass on
// quantisation error, so dithering does not bleed across the cut-out edge.
func quantize(img image.Image) *image.Paletted {
	src := toNRGBA(img, img.Bounds())
	w, h := src.Rect.Dx(), src.Rect.Dy()
	dst := image.NewPaletted(src.Rect, gifPalette)
	// Error rows in 1/16 units, 3 channels, one pixel of padding each side.
	cur := make([]int32, 3*(w+2))
	next := make([]int32, 3*(w+2))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			p := src.Pix[y*src.Stride+4*x:]
			if p[3] < 128 {
				dst.Pix[y*dst.Stride+x] = gifTransparent
				continue
			}
			idx := 0
			for c := 0; c < 3; c++ {
				v := min(max(int32(p[c])+cur[3*(x+1)+c]/16, 0), 255)
				level := (v + 25) / 51 // nearest of the 6 levels
				idx = idx*6 + int(level)
				e := v - level*51
				cur[3*(x+2)+c] += 7 * e
				next[3*x+c] += 3 * e
				next[3*(x+1)+c] += 5 * e
				next[3*(x+2)+c] += e
			}
			dst.Pix[y*dst.Stride+x] = uint8(idx)
		}
		cur, next = next, cur
		clear(next)
	}
	return dst
}
