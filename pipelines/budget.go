package pipelines

import (
	"context"
	"errors"
	"fmt"
	"image"
	"net/http"

	"github.com/falocal/falocal/pipelines/internal/imageio"
)

// Compute budgets: what a request may cost, weighed before it runs. A zero
// Config field means the default below, a negative one no limit.
const (
	// DefaultMaxUpscaleWork is the upscale budget in model-native pixels
	// (the pixels the network outputs, tile overlaps included): 128 Mi,
	// twice what a 2048² input at ×4 makes, so every input up to the
	// output limit at scale 4 passes whatever its tiling, and a 5000² input
	// on a ×4 network (over 400 M) does not.
	DefaultMaxUpscaleWork = 128 << 20
	// DefaultMaxDiffusionWork is the diffusion budget in pixel-steps
	// (steps × generated pixels × images): 200 Mi, e.g. eight 1024²
	// images at 25 steps, four at 50, or one 2048² at 50.
	DefaultMaxDiffusionWork = 200 << 20
)

// Budget is a configured budget: def when v is 0, none (0) when v < 0.
func Budget(v, def int64) int64 {
	switch {
	case v == 0:
		return def
	case v < 0:
		return 0
	}
	return v
}

// EncodedImage is an input image fetched but not yet decoded: its header
// says its format and size, so that what it will cost to decode and
// process can be checked first.
type EncodedImage struct {
	Field string
	Data  []byte
	// Info holds the format and size (after EXIF orientation) only.
	Info imageio.Info
}

// Pixels is the image's width × height.
func (e *EncodedImage) Pixels() int64 { return int64(e.Info.Width) * int64(e.Info.Height) }

// PeekImage fetches the image behind an input URL field and reads its
// header. An image over cfg.MaxPixels is refused (413) here, before any
// pixel is decoded. Every failure is a 4xx naming the field.
func PeekImage(ctx context.Context, req *Request, cfg Config, field, url string) (*EncodedImage, error) {
	data, err := LoadBytes(ctx, req, cfg, field, url)
	if err != nil {
		return nil, err
	}
	info, err := imageio.Header(data)
	if err != nil {
		return nil, imageError(field, err)
	}
	e := &EncodedImage{Field: field, Data: data, Info: info}
	maxPixels := cfg.MaxPixels
	if maxPixels <= 0 {
		maxPixels = imageio.DefaultMaxPixels
	}
	if e.Pixels() > maxPixels {
		return nil, &HTTPError{Status: http.StatusRequestEntityTooLarge,
			Msg: fmt.Sprintf("%s: the image is %dx%d = %d pixels, over this server's limit of %d pixels", field, info.Width, info.Height, e.Pixels(), maxPixels)}
	}
	return e, nil
}

// Decode decodes the image, as LoadImage does.
func (e *EncodedImage) Decode(cfg Config) (*image.NRGBA, imageio.Info, error) {
	img, info, err := imageio.Decode(e.Data, imageio.Limits{MaxPixels: cfg.MaxPixels, MaxBytes: cfg.MaxInputBytes})
	if err != nil {
		return nil, info, imageError(e.Field, err)
	}
	return img, info, nil
}

// imageError is LoadImage's mapping of decoding errors to 4xx answers.
func imageError(field string, err error) error {
	if errors.Is(err, imageio.ErrTooLarge) {
		return &HTTPError{Status: http.StatusRequestEntityTooLarge, Msg: fmt.Sprintf("%s: %v", field, err)}
	}
	return Invalid(field, "could not read the image: "+err.Error())
}
