package upscale_test

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/png"
	"net/http"
	"strings"
	"testing"

	"github.com/falocal/falocal/pipelines"
	"github.com/falocal/falocal/pipelines/internal/imageio"
	"github.com/falocal/falocal/pipelines/upscale"
)

// serverLimits are cmd/falocal's default input limits.
var serverLimits = pipelines.Config{MaxPixels: 25_000_000, MaxInputBytes: 48 << 20}

// A 5000×5000 black PNG (about 25 KB) is within the input pixel limit and,
// at scale 1, within the output limit; but the network works at ×4: 400 M
// model pixels, more with the tile overlaps. It is refused from its header,
// before a pixel is decoded or the model runs, with the budget and the
// request's cost in the message.
func TestNativeWorkBudget(t *testing.T) {
	var buf bytes.Buffer
	if err := (&png.Encoder{CompressionLevel: png.BestSpeed}).Encode(&buf, image.NewGray(image.Rect(0, 0, 5000, 5000))); err != nil {
		t.Fatal(err)
	}
	black := buf.Bytes()
	tile := upscale.AutoTile("RRDBNet", 5000, 5000)
	cost := upscale.Work(5000, 5000, 4, 10, tile)
	if cost <= 5000*5000*16 {
		t.Fatalf("cost %d does not count the tile overlaps", cost)
	}
	for _, c := range []struct {
		name string
		data []byte
	}{
		{"black PNG", black},
		// the same header without its pixels: only a refusal made before
		// decoding answers it with the budget rather than as unreadable
		{"header only", black[:33]},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, serverLimits)
			_, _, _, err := e.run(t, map[string]any{"image_url": imageio.DataURI(c.data, "image/png"), "scale": 1})
			var he *pipelines.HTTPError
			if !errors.As(err, &he) || he.Status != http.StatusRequestEntityTooLarge {
				t.Fatalf("got %v, want a 413", err)
			}
			for _, want := range []string{fmt.Sprint(pipelines.DefaultMaxUpscaleWork), fmt.Sprint(cost), "5000x5000", "×4"} {
				if !strings.Contains(he.Msg, want) {
					t.Errorf("message %q lacks %q", he.Msg, want)
				}
			}
			if n := len(e.runs()); n != 0 {
				t.Errorf("the model ran %d times", n)
			}
		})
	}
}

// The default budget lets every input up to the output limit at scale 4
// through, on both kinds of network and whatever the tiling.
func TestNativeWorkDefaultAllowsOutputLimit(t *testing.T) {
	for _, arch := range []string{"RRDBNet", "SRVGGNetCompact"} {
		for _, side := range []int{64, 500, 1000, 1500, 2000, 2048} {
			if w := upscale.Work(side, side, 4, 10, upscale.AutoTile(arch, side, side)); w > pipelines.DefaultMaxUpscaleWork {
				t.Errorf("%s %d²: %d model pixels over the default budget", arch, side, w)
			}
		}
		if w := upscale.Work(5000, 5000, 4, 10, upscale.AutoTile(arch, 5000, 5000)); w <= pipelines.DefaultMaxUpscaleWork {
			t.Errorf("%s 5000²: %d model pixels within the default budget", arch, w)
		}
	}
}

// The budget is input pixels × scale², each tile's padded window counted:
// at exactly the budget a request runs, one model pixel over it does not,
// and a small tile (more overlap) costs more.
func TestNativeWorkFormula(t *testing.T) {
	uri := pngURI(t, texture(25, 25))
	for _, c := range []struct {
		budget int64
		tile   int
		ok     bool
	}{
		{25 * 25 * 16, 0, true},
		{25*25*16 - 1, 0, false},
		// tiles of 10 read windows of 25 (10 + 2×10 padding, cut to the
		// image): 9 of them
		{9 * 25 * 25 * 16, 10, true},
		{25 * 25 * 16, 10, false},
		{-1, 10, true},
	} {
		e := newEnv(t, pipelines.Config{MaxUpscaleWork: c.budget})
		_, f, _, err := e.run(t, map[string]any{"image_url": uri, "scale": 4, "tile": c.tile})
		if c.ok != (err == nil) {
			t.Errorf("budget %d, tile %d: %v", c.budget, c.tile, err)
		}
		if err == nil && f.Width != 100 {
			t.Errorf("budget %d, tile %d: output %dx%d", c.budget, c.tile, f.Width, f.Height)
		}
		var he *pipelines.HTTPError
		if err != nil && (!errors.As(err, &he) || he.Status != http.StatusRequestEntityTooLarge || !strings.Contains(he.Msg, fmt.Sprint(c.budget))) {
			t.Errorf("budget %d, tile %d: %v, want a 413 naming the budget", c.budget, c.tile, err)
		}
	}
}
