package pipelines_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"image"
	"image/png"
	"net/http"
	"strings"
	"testing"

	"github.com/falocal/falocal/pipelines"
	"github.com/falocal/falocal/pipelines/internal/imageio"
)

func TestBudget(t *testing.T) {
	for _, c := range []struct{ v, def, want int64 }{{0, 10, 10}, {-1, 10, 0}, {5, 10, 5}} {
		if got := pipelines.Budget(c.v, c.def); got != c.want {
			t.Errorf("Budget(%d, %d) = %d, want %d", c.v, c.def, got, c.want)
		}
	}
}

// pngHeader is a PNG signature and an IHDR claiming w×h, without pixels.
func pngHeader(w, h uint32) []byte {
	d := binary.BigEndian.AppendUint32(nil, w)
	d = binary.BigEndian.AppendUint32(d, h)
	d = append(d, 8, 6, 0, 0, 0)
	c := binary.BigEndian.AppendUint32(nil, uint32(len(d)))
	c = append(append(c, "IHDR"...), d...)
	c = binary.BigEndian.AppendUint32(c, crc32.ChecksumIEEE(c[4:]))
	return append([]byte("\x89PNG\r\n\x1a\n"), c...)
}

// PeekImage refuses an image over MaxPixels from its header, names the
// size and the limit, and decodes one within it.
func TestPeekImage(t *testing.T) {
	cfg := pipelines.Config{MaxPixels: 1000, MaxInputBytes: 1 << 20}
	req := &pipelines.Request{}
	ctx := context.Background()
	_, err := pipelines.PeekImage(ctx, req, cfg, "image_url", imageio.DataURI(pngHeader(40, 26), "image/png"))
	var he *pipelines.HTTPError
	if !errors.As(err, &he) || he.Status != http.StatusRequestEntityTooLarge || !strings.Contains(he.Msg, "40x26 = 1040 pixels") || !strings.Contains(he.Msg, "limit of 1000") {
		t.Fatalf("over the limit: %v", err)
	}
	var ve *pipelines.ValidationError
	if _, err := pipelines.PeekImage(ctx, req, cfg, "image_url", "data:image/png;base64,aGk="); !errors.As(err, &ve) {
		t.Fatalf("not an image: %v", err)
	}
	var buf bytes.Buffer
	png.Encode(&buf, image.NewGray(image.Rect(0, 0, 40, 25)))
	enc, err := pipelines.PeekImage(ctx, req, cfg, "image_url", imageio.DataURI(buf.Bytes(), "image/png"))
	if err != nil || enc.Pixels() != 1000 || enc.Info.Format != "png" {
		t.Fatalf("within the limit: %+v, %v", enc, err)
	}
	img, _, err := enc.Decode(cfg)
	if err != nil || img.Bounds().Dx() != 40 || img.Bounds().Dy() != 25 {
		t.Fatalf("Decode: %v", err)
	}
}
