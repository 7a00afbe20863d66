// Package imageio decodes and encodes the images that the pipelines accept
// and return. Decoding always yields 8-bit non-premultiplied *image.NRGBA
// with EXIF orientation applied, and refuses oversized inputs before any
// pixel memory is allocated.
package imageio

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"

	"golang.org/x/image/bmp"
	"golang.org/x/image/webp"
)

// Errors returned by Decode (possibly wrapped; test with errors.Is). They map
// onto HTTP 4xx responses: ErrTooLarge to 413, ErrUnsupportedFormat to 415,
// ErrEmpty and ErrCorrupt to 400.
var (
	ErrUnsupportedFormat = errors.New("imageio: unsupported image format")
	ErrTooLarge          = errors.New("imageio: image too large")
	ErrEmpty             = errors.New("imageio: empty image data")
	ErrCorrupt           = errors.New("imageio: corrupt image data")
)

// errPanic marks a recovered decoder panic so the fuzz test can tell it
// apart from an ordinary ErrCorrupt.
var errPanic = errors.New("decoder panic")

// DefaultMaxPixels is the pixel limit used when Limits.MaxPixels is zero or
// negative, so that a zero Limits value is still safe.
const DefaultMaxPixels = 64 << 20

// Limits bounds the resources Decode may use.
type Limits struct {
	// MaxPixels is the largest accepted width*height (<= 0: DefaultMaxPixels).
	MaxPixels int64
	// MaxBytes is the largest accepted encoded size (<= 0: unlimited).
	MaxBytes int64
}

// Info describes a decoded image.
type Info struct {
	Format   string // "png", "jpeg", "webp", "gif" or "bmp"
	Width    int    // after EXIF orientation
	Height   int    // after EXIF orientation
	HasAlpha bool   // source had an alpha channel or transparent pixels
	Gray     bool   // source was grayscale
	Bits16   bool   // source had 16 bits per sample
}

type codec struct {
	name   string
	magic  string // '?' matches any byte
	config func(io.Reader) (image.Config, error)
	decode func(io.Reader) (image.Image, error)
}

// Formats are sniffed here rather than through image.Decode so that the set
// of accepted formats does not depend on what other packages register.
var codecs = []codec{
	{"png", "\x89PNG\r\n\x1a\n", png.DecodeConfig, png.Decode},
	{"jpeg", "\xff\xd8", jpeg.DecodeConfig, jpeg.Decode},
	{"gif", "GIF8?a", gif.DecodeConfig, gif.Decode},
	{"webp", "RIFF????WEBPVP8", webp.DecodeConfig, webp.Decode},
	{"bmp", "BM????\x00\x00\x00\x00", bmp.DecodeConfig, bmp.Decode},
}

func sniff(data []byte) *codec {
	for i := range codecs {
		c := &codecs[i]
		if len(data) < len(c.magic) {
			continue
		}
		ok := true
		for j := 0; j < len(c.magic) && ok; j++ {
			ok = c.magic[j] == '?' || c.magic[j] == data[j]
		}
		if ok {
			return c
		}
	}
	return nil
}

// Decode decodes a PNG, JPEG, WebP, GIF (first frame) or BMP image into an
// 8-bit non-premultiplied NRGBA image whose bounds start at (0, 0). JPEG EXIF
// orientation is applied. The image size is checked against lim before
// pixels are decoded. It never panics; errors wrap ErrEmpty, ErrTooLarge,
// ErrUnsupportedFormat or ErrCorrupt.
func Decode(data []byte, lim Limits) (img *image.NRGBA, info Info, err error) {
	defer func() {
		// Last resort: a decoder bug must not take down the server.
		if r := recover(); r != nil {
			img, info = nil, Info{}
			err = fmt.Errorf("%w: %w: %v", ErrCorrupt, errPanic, r)
		}
	}()

	if len(data) == 0 {
		return nil, Info{}, ErrEmpty
	}
	if lim.MaxBytes > 0 && int64(len(data)) > lim.MaxBytes {
		return nil, Info{}, fmt.Errorf("%w: %d bytes exceeds the limit of %d", ErrTooLarge, len(data), lim.MaxBytes)
	}
	c := sniff(data)
	if c == nil {
		return nil, Info{}, ErrUnsupportedFormat
	}

	cfg, err := c.config(bytes.NewReader(data))
	if err != nil {
		return nil, Info{}, decodeError(c.name, err)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 {
		return nil, Info{}, fmt.Errorf("%w: %s: invalid size %dx%d", ErrCorrupt, c.name, cfg.Width, cfg.Height)
	}
	maxPixels := lim.MaxPixels
	if maxPixels <= 0 {
		maxPixels = DefaultMaxPixels
	}
	// Divide rather than multiply so that huge dimensions cannot overflow.
	if int64(cfg.Width) > maxPixels/int64(cfg.Height) {
		return nil, Info{}, fmt.Errorf("%w: %dx%d exceeds the limit of %d pixels", ErrTooLarge, cfg.Width, cfg.Height, maxPixels)
	}

	src, err := c.decode(bytes.NewReader(data))
	if err != nil {
		return nil, Info{}, decodeError(c.name, err)
	}

	// The canvas is the size the header declared: this places a GIF's first
	// frame at its offset within the logical screen.
	img = toNRGBA(src, image.Rect(0, 0, cfg.Width, cfg.Height))
	if c.name == "jpeg" {
		img = orient(img, jpegOrientation(data))
	}
	info = Info{
		Format:   c.name,
		Width:    img.Rect.Dx(),
		Height:   img.Rect.Dy(),
		HasAlpha: hasAlphaChannel(src, c.name) || !img.Opaque(),
		Gray:     isGray(src, data, c.name),
	}
	switch src.(type) {
	case *image.Gray16, *image.RGBA64, *image.NRGBA64:
		info.Bits16 = true
	}
	return img, info, nil
}

func decodeError(format string, err error) error {
	// The decoders' UnsupportedError means a valid file using a feature they
	// lack (e.g. arithmetic-coded JPEG), which is not the client's fault.
	var ju jpeg.UnsupportedError
	var pu png.UnsupportedError
	if errors.As(err, &pu) && pu == "dimension overflow" {
		return fmt.Errorf("%w: %s: %w", ErrTooLarge, format, err)
	}
	if errors.As(err, &ju) || errors.As(err, &pu) {
		return fmt.Errorf("%w: %s: %w", ErrUnsupportedFormat, format, err)
	}
	return fmt.Errorf("%w: %s: %w", ErrCorrupt, format, err)
}

// hasAlphaChannel reports an alpha channel declared by the source even when
// every pixel is opaque, so callers can preserve it (e.g. an RGBA PNG).
func hasAlphaChannel(src image.Image, format string) bool {
	switch src.(type) {
	case *image.NYCbCrA:
		return true // lossy WebP with an ALPH chunk
	case *image.NRGBA, *image.NRGBA64:
		// The PNG decoder only returns these for colour types with alpha or
		// a tRNS chunk; lossless WebP always decodes to NRGBA, so it is
		// judged by its pixels instead.
		return format == "png"
	}
	return false
}

func isGray(src image.Image, data []byte, format string) bool {
	if format == "png" && len(data) > 25 {
		// IHDR colour type (byte 25) 0 is gray and 4 is gray+alpha; the
		// latter decodes to NRGBA so the image type alone cannot tell.
		return data[25] == 0 || data[25] == 4
	}
	switch src.(type) {
	case *image.Gray, *image.Gray16:
		return true
	}
	return false
}

// toNRGBA copies the part of src inside canvas into a new NRGBA image whose
// origin is canvas.Min; pixels of canvas not covered by src stay transparent.
func toNRGBA(src image.Image, canvas image.Rectangle) *image.NRGBA {
	if m, ok := src.(*image.NRGBA); ok && m.Rect == canvas && canvas.Min == (image.Point{}) {
		return m
	}
	dst := image.NewNRGBA(image.Rect(0, 0, canvas.Dx(), canvas.Dy()))
	r := src.Bounds().Intersect(canvas)
	set := func(x, y int, c color.NRGBA) {
		i := dst.PixOffset(x-canvas.Min.X, y-canvas.Min.Y)
		dst.Pix[i+0], dst.Pix[i+1], dst.Pix[i+2], dst.Pix[i+3] = c.R, c.G, c.B, c.A
	}
	// Non-premultiplied sources are copied directly: a round trip through
	// premultiplied colour would lose precision at low alpha.
	switch s := src.(type) {
	case *image.NRGBA:
		for y := r.Min.Y; y < r.Max.Y; y++ {
			i := s.PixOffset(r.Min.X, y)
			copy(dst.Pix[dst.PixOffset(r.Min.X-canvas.Min.X, y-canvas.Min.Y):], s.Pix[i:i+4*r.Dx()])
		}
	case *image.NRGBA64:
		for y := r.Min.Y; y < r.Max.Y; y++ {
			for x := r.Min.X; x < r.Max.X; x++ {
				c := s.NRGBA64At(x, y)
				set(x, y, color.NRGBA{uint8(c.R >> 8), uint8(c.G >> 8), uint8(c.B >> 8), uint8(c.A >> 8)})
			}
		}
	case *image.Paletted:
		// A full 256-entry table so that out-of-range indices read as
		// transparent instead of panicking.
		var pal [256]color.NRGBA
		for i, c := range s.Palette {
			if i < len(pal) {
				pal[i] = color.NRGBAModel.Convert(c).(color.NRGBA)
			}
		}
		for y := r.Min.Y; y < r.Max.Y; y++ {
			for x := r.Min.X; x < r.Max.X; x++ {
				set(x, y, pal[s.Pix[s.PixOffset(x, y)]])
			}
		}
	case image.RGBA64Image:
		// Gray, YCbCr, CMYK, RGBA, ...: RGBA64At avoids a per-pixel
		// interface allocation.
		for y := r.Min.Y; y < r.Max.Y; y++ {
			for x := r.Min.X; x < r.Max.X; x++ {
				c := s.RGBA64At(x, y)
				set(x, y, unpremultiply(uint32(c.R), uint32(c.G), uint32(c.B), uint32(c.A)))
			}
		}
	default:
		for y := r.Min.Y; y < r.Max.Y; y++ {
			for x := r.Min.X; x < r.Max.X; x++ {
				set(x, y, unpremultiply(s.At(x, y).RGBA()))
			}
		}
	}
	return dst
}

// unpremultiply converts 16-bit premultiplied colour to 8-bit NRGBA.
func unpremultiply(r, g, b, a uint32) color.NRGBA {
	switch a {
	case 0xffff:
		return color.NRGBA{uint8(r >> 8), uint8(g >> 8), uint8(b >> 8), 0xff}
	case 0:
		return color.NRGBA{}
	}
	return color.NRGBA{
		uint8((r * 0xffff / a) >> 8),
		uint8((g * 0xffff / a) >> 8),
		uint8((b * 0xffff / a) >> 8),
		uint8(a >> 8),
	}
}
