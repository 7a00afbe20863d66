package rembg_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"net/http"
	"strings"
	"testing"

	"github.com/falocal/falocal/pipelines"
)

// headerOnlyPNG is a PNG signature and an IHDR claiming w×h, and no pixels.
func headerOnlyPNG(w, h uint32) []byte {
	d := binary.BigEndian.AppendUint32(nil, w)
	d = binary.BigEndian.AppendUint32(d, h)
	d = append(d, 8, 6, 0, 0, 0)
	c := binary.BigEndian.AppendUint32(nil, uint32(len(d)))
	c = append(append(c, "IHDR"...), d...)
	c = binary.BigEndian.AppendUint32(c, crc32.ChecksumIEEE(c[4:]))
	return append([]byte("\x89PNG\r\n\x1a\n"), c...)
}

// The pixel limit is applied from the image's header, before the pixels
// are decoded: images over it that carry no pixels at all are refused as
// too large (413, with their size and the limit), not as unreadable.
func TestPixelLimitFromHeader(t *testing.T) {
	var j bytes.Buffer
	if err := jpeg.Encode(&j, image.NewGray(image.Rect(0, 0, 1100, 1000)), nil); err != nil {
		t.Fatal(err)
	}
	// up to the start of the entropy-coded data
	sos := bytes.Index(j.Bytes(), []byte{0xff, 0xda})
	sos += 2 + int(binary.BigEndian.Uint16(j.Bytes()[sos+2:]))
	var g bytes.Buffer
	if err := gif.Encode(&g, image.NewPaletted(image.Rect(0, 0, 1100, 1000), color.Palette{color.Black}), nil); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, ct string
		data     []byte
	}{
		{"png", "image/png", headerOnlyPNG(1100, 1000)},
		{"huge png", "image/png", headerOnlyPNG(1<<30, 1<<30)},
		{"jpeg", "image/jpeg", j.Bytes()[:sos]},
		{"gif", "image/gif", g.Bytes()[:13+6]}, // screen descriptor and palette
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, envOpts{})
			uri := "data:" + c.ct + ";base64," + b64(c.data)
			for _, id := range []string{idV1, idV2, idRembg} {
				_, err := e.run(t, id, jsonInput(t, map[string]any{"image_url": uri}))
				var he *pipelines.HTTPError
				if !errors.As(err, &he) || he.Status != http.StatusRequestEntityTooLarge {
					t.Fatalf("%s: %v, want a 413", id, err)
				}
				if !strings.Contains(he.Msg, "image_url") || (c.name != "huge png" && !strings.Contains(he.Msg, "1100x1000 exceeds the limit of 1048576 pixels")) {
					t.Errorf("%s: %q does not name the field, the size and the limit", id, he.Msg)
				}
			}
			if opened, _, _, _ := e.rt.Stats(); opened != 0 {
				t.Errorf("a session was opened (%d) for an oversized input", opened)
			}
		})
	}
}
