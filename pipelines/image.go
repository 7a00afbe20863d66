package pipelines

import (
	"context"
	"errors"
	"fmt"
	"image"
	"net/http"
	"strings"

	"github.com/falocal/falocal/pipelines/internal/imageio"
)

// ImageFile is fal's Image/ImageFile output object.
type ImageFile struct {
	URL         string `json:"url"`
	ContentType string `json:"content_type"`
	FileName    string `json:"file_name"`
	FileSize    int    `json:"file_size"`
	Width       int    `json:"width"`
	Height      int    `json:"height"`
}

// LoadImage fetches and decodes the image behind an input URL field. Every
// failure is a 4xx naming the field.
func LoadImage(ctx context.Context, req *Request, cfg Config, field, url string) (*image.NRGBA, imageio.Info, error) {
	data, err := LoadBytes(ctx, req, cfg, field, url)
	if err != nil {
		return nil, imageio.Info{}, err
	}
	img, info, err := imageio.Decode(data, imageio.Limits{MaxPixels: cfg.MaxPixels, MaxBytes: cfg.MaxInputBytes})
	switch {
	case err == nil:
		return img, info, nil
	case errors.Is(err, imageio.ErrTooLarge):
		return nil, info, &HTTPError{Status: http.StatusRequestEntityTooLarge, Msg: fmt.Sprintf("%s: %v", field, err)}
	case errors.Is(err, imageio.ErrUnsupportedFormat), errors.Is(err, imageio.ErrEmpty), errors.Is(err, imageio.ErrCorrupt):
		return nil, info, Invalid(field, "could not read the image: "+err.Error())
	}
	return nil, info, Invalid(field, "could not read the image: "+err.Error())
}

// LoadBytes returns the content behind an input URL field: a data: URI, or
// a URL the server may read (its own files, allow-listed hosts). Failures
// are 4xx errors naming the field.
func LoadBytes(ctx context.Context, req *Request, cfg Config, field, url string) ([]byte, error) {
	if strings.HasPrefix(url, "data:") {
		data, _, err := imageio.ParseDataURI(url)
		if err != nil {
			return nil, Invalid(field, "invalid data URI: "+err.Error())
		}
		if cfg.MaxInputBytes > 0 && int64(len(data)) > cfg.MaxInputBytes {
			return nil, &HTTPError{Status: http.StatusRequestEntityTooLarge, Msg: fmt.Sprintf("%s: %d bytes, the limit is %d", field, len(data), cfg.MaxInputBytes)}
		}
		return data, nil
	}
	blob, err := req.Files.Open(ctx, url, cfg.MaxInputBytes)
	if err != nil {
		var he *HTTPError
		if ctx.Err() != nil || errors.As(err, &he) {
			return nil, err
		}
		return nil, Invalid(field, err.Error())
	}
	return blob.Data, nil
}

// SaveImage encodes img and stores it (or inlines it as a data URI when
// syncMode is set, as fal does).
func SaveImage(ctx context.Context, req *Request, img image.Image, format string, syncMode bool, name string) (ImageFile, error) {
	data, ct, err := imageio.Encode(img, format, 0)
	if err != nil {
		return ImageFile{}, fmt.Errorf("encode %s: %w", format, err)
	}
	file := name + imageio.Ext(format)
	b := img.Bounds()
	out := ImageFile{ContentType: ct, FileName: file, FileSize: len(data), Width: b.Dx(), Height: b.Dy()}
	if syncMode {
		out.URL = imageio.DataURI(data, ct)
		return out, nil
	}
	out.URL, err = req.Files.Save(ctx, data, ct, file)
	return out, err
}
