package imageio

import (
	"bytes"
	"fmt"
)

// Header reads an image's format and size (after EXIF orientation) from its
// header alone: no pixel memory is allocated, so a caller can weigh what
// decoding and processing the image would cost first. Errors wrap ErrEmpty,
// ErrUnsupportedFormat or ErrCorrupt.
func Header(data []byte) (info Info, err error) {
	defer func() {
		if r := recover(); r != nil {
			info, err = Info{}, fmt.Errorf("%w: %w: %v", ErrCorrupt, errPanic, r)
		}
	}()
	if len(data) == 0 {
		return Info{}, ErrEmpty
	}
	c := sniff(data)
	if c == nil {
		return Info{}, ErrUnsupportedFormat
	}
	cfg, err := c.config(bytes.NewReader(data))
	if err != nil {
		return Info{}, decodeError(c.name, err)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 {
		return Info{}, fmt.Errorf("%w: %s: invalid size %dx%d", ErrCorrupt, c.name, cfg.Width, cfg.Height)
	}
	info = Info{Format: c.name, Width: cfg.Width, Height: cfg.Height}
	if o := jpegOrientation(data); c.name == "jpeg" && o >= 5 && o <= 8 {
		// orientations 5-8 turn the image a quarter
		info.Width, info.Height = info.Height, info.Width
	}
	return info, nil
}
