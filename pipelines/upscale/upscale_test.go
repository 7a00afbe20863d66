package upscale_test

import (
	"context"
	"errors"
	"fmt"
	"image"
	"image/color"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/falocal/falocal/engine"
	"github.com/falocal/falocal/pipelines"
	"github.com/falocal/falocal/pipelines/upscale"
)

func TestRegistered(t *testing.T) {
	// Build runs every registered factory; ours must be among them.
	reg, err := pipelines.Build(pipelines.Deps{})
	if err == nil {
		defer reg.Close()
		if _, ok := reg.Lookup("fal-ai/esrgan"); !ok {
			t.Fatalf("fal-ai/esrgan not registered: %v", reg.IDs())
		}
	} else {
		t.Fatalf("build: %v", err)
	}
}

func TestValidation(t *testing.T) {
	e := newEnv(t, pipelines.Config{})
	uri := pngURI(t, texture(8, 6))
	cases := []struct {
		name   string
		fields map[string]any
		loc    string
		typ    string
		msg    string
	}{
		{"no image", map[string]any{}, "image_url", "missing", "Field required"},
		{"scale below 1", map[string]any{"image_url": uri, "scale": 0.5}, "scale", "greater_than_equal", "greater than or equal to 1"},
		{"scale above 8", map[string]any{"image_url": uri, "scale": 8.5}, "scale", "less_than_equal", "less than or equal to 8"},
		{"scale not a number", map[string]any{"image_url": uri, "scale": "big"}, "scale", "float_type", "valid number"},
		{"negative tile", map[string]any{"image_url": uri, "tile": -1}, "tile", "greater_than_equal", "greater than or equal to 0"},
		{"fractional tile", map[string]any{"image_url": uri, "tile": 1.5}, "tile", "int_type", "valid integer"},
		{"face", map[string]any{"image_url": uri, "face": true}, "face", "value_error", "GFPGAN"},
		{"unknown model", map[string]any{"image_url": uri, "model": "ESRGAN_x8"}, "model", "literal_error", "'RealESRGAN_x4plus'"},
		{"webp", map[string]any{"image_url": uri, "output_format": "webp"}, "output_format", "literal_error", "'png' or 'jpeg'"},
		{"bad image", map[string]any{"image_url": "data:image/png;base64,AAAA"}, "image_url", "value_error", "could not read"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, _, _, err := e.run(t, c.fields)
			var ve *pipelines.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("error %v, want a validation error", err)
			}
			if len(ve.Errors) != 1 {
				t.Fatalf("errors %+v, want one", ve.Errors)
			}
			f := ve.Errors[0]
			if fmt.Sprint(f.Loc) != fmt.Sprint([]any{"body", c.loc}) || f.Type != c.typ || !strings.Contains(f.Msg, c.msg) {
				t.Fatalf("got %v %s %q, want loc %s type %s msg containing %q", f.Loc, f.Type, f.Msg, c.loc, c.typ, c.msg)
			}
		})
	}
	if n := len(e.runs()); n != 0 {
		t.Errorf("the model ran %d times on bad input", n)
	}
	// Valid boundaries pass.
	for _, f := range []map[string]any{{"scale": 1}, {"scale": 8}, {"tile": 0}, {"face": false}, {"output_format": "jpeg"}} {
		f["image_url"] = uri
		if _, _, _, err := e.run(t, f); err != nil {
			t.Errorf("%v: %v", f, err)
		}
	}
}

func TestModelMapping(t *testing.T) {
	e := newEnv(t, pipelines.Config{},
		fakeModel{name: "x4plus", serves: []string{"esrgan:RealESRGAN_x4plus"}, scale: 4, arch: "RRDBNet"},
		fakeModel{name: "x4fast", serves: []string{"esrgan:RealESRGAN_x4_v3"}, scale: 4},
		fakeModel{name: "anime-x4", serves: []string{"esrgan:RealESRGAN_x4_anime_v3"}, scale: 4},
		fakeModel{name: "anime-x3", serves: []string{"esrgan:RealESRGAN_x4_anime_v3@3"}, scale: 3},
		fakeModel{name: "anime-x2", serves: []string{"esrgan:RealESRGAN_x4_anime_v3@2"}, scale: 2},
	)
	uri := pngURI(t, texture(10, 7))
	cases := []struct {
		model string
		scale float64
		want  string
		ns    int
	}{
		{"", 0, "x4plus", 4},
		{"RealESRGAN_x4plus", 3, "x4plus", 4},
		{"RealESRGAN_x4_v3", 1.5, "x4fast", 4},
		{"RealESRGAN_x4_anime_v3", 1, "anime-x2", 2},
		{"RealESRGAN_x4_anime_v3", 2, "anime-x2", 2},
		{"RealESRGAN_x4_anime_v3", 2.5, "anime-x3", 3},
		{"RealESRGAN_x4_anime_v3", 3, "anime-x3", 3},
		{"RealESRGAN_x4_anime_v3", 3.5, "anime-x4", 4},
		{"RealESRGAN_x4_anime_v3", 8, "anime-x4", 4},
	}
	for _, c := range cases {
		f := map[string]any{"image_url": uri}
		if c.model != "" {
			f["model"] = c.model
		}
		if c.scale != 0 {
			f["scale"] = c.scale
		}
		before := len(e.runs())
		_, file, _, err := e.run(t, f)
		if err != nil {
			t.Fatalf("%v: %v", f, err)
		}
		runs := e.runs()[before:]
		if len(runs) != 1 || runs[0].model != c.want {
			t.Errorf("%v ran %v, want one run of %s", f, runs, c.want)
		}
		s := c.scale
		if s == 0 {
			s = 2
		}
		if file.Width != int(10*s+0.5) || file.Height != int(7*s+0.5) {
			t.Errorf("%v: output %dx%d", f, file.Width, file.Height)
		}
	}
	// A model without weights here is the one "not installed" answer: 503
	// naming it and what is installed.
	for _, m := range []string{"RealESRGAN_x2plus", "RealESRGAN_x4_wdn_v3"} {
		_, _, _, err := e.run(t, map[string]any{"image_url": uri, "model": m})
		var he *pipelines.HTTPError
		if !errors.As(err, &he) || he.Status != http.StatusServiceUnavailable || !errors.Is(err, pipelines.ErrNoModel) ||
			!strings.Contains(he.Msg, "model '"+m+"' is not installed on this server") ||
			!strings.Contains(he.Msg, "anime-x2 (serves esrgan:RealESRGAN_x4_anime_v3@2)") {
			t.Errorf("%s: %v", m, err)
		}
	}
}

// TestOutscaleSizes checks round(w·s)×round(h·s) and that the resize after
// the native ×4 is a real filter: on the identity (nearest) model a smooth
// ramp stays smooth and keeps its values.
func TestOutscaleSizes(t *testing.T) {
	e := newEnv(t, pipelines.Config{}, fakeModel{name: "id", serves: []string{"esrgan:RealESRGAN_x4plus"}, scale: 4, fn: nearest})
	ramp := image.NewNRGBA(image.Rect(0, 0, 33, 21))
	for y := range 21 {
		for x := range 33 {
			ramp.SetNRGBA(x, y, color.NRGBA{uint8(x * 7), uint8(y * 11), 128, 255})
		}
	}
	uri := pngURI(t, ramp)
	for _, c := range []struct {
		scale float64
		w, h  int
	}{{1, 33, 21}, {1.5, 50, 32}, {2, 66, 42}, {2.5, 83, 53}, {3.3, 109, 69}, {4, 132, 84}, {5, 165, 105}, {8, 264, 168}} {
		img, file, _, err := e.run(t, map[string]any{"image_url": uri, "scale": c.scale})
		if err != nil {
			t.Fatalf("scale %g: %v", c.scale, err)
		}
		if file.Width != c.w || file.Height != c.h || img.Bounds().Dx() != c.w || img.Bounds().Dy() != c.h {
			t.Errorf("scale %g: %dx%d, want %dx%d", c.scale, file.Width, file.Height, c.w, c.h)
		}
		if c.scale == 1 {
			// ×4 nearest then ÷4 with an antialiased bicubic gives back the input.
			for y := range 21 {
				for x := range 33 {
					r, g, _, _ := img.At(x, y).RGBA()
					if d := int(r>>8) - x*7; d < -1 || d > 1 || int(g>>8) != y*11 && (int(g>>8)-y*11)*(int(g>>8)-y*11) > 1 {
						t.Fatalf("scale 1 at %d,%d: %d,%d want %d,%d", x, y, r>>8, g>>8, x*7, y*11)
					}
				}
			}
		}
		if c.scale == 4 {
			// Native size: the model's output unchanged (nearest ×4).
			for y := range 84 {
				for x := range 132 {
					r, _, _, _ := img.At(x, y).RGBA()
					if int(r>>8) != (x/4)*7 {
						t.Fatalf("scale 4 at %d,%d: %d, want %d", x, y, r>>8, (x/4)*7)
					}
				}
			}
		}
	}
}

func pixels(img image.Image) []uint8 {
	b := img.Bounds()
	out := make([]uint8, 0, 4*b.Dx()*b.Dy())
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			c := color.NRGBAModel.Convert(img.At(x, y)).(color.NRGBA)
			out = append(out, c.R, c.G, c.B, c.A)
		}
	}
	return out
}

// TestTiledEqualsUntiled: with a model whose output depends on a 3×3
// neighbourhood, tiling (any tile size, any scale) gives exactly the
// untiled image, and tiles of one shape share runs.
func TestTiledEqualsUntiled(t *testing.T) {
	e := newEnv(t, pipelines.Config{})
	src := texture(101, 77)
	uri := pngURI(t, src)
	for _, scale := range []float64{4, 2.5, 1.3} {
		whole, _, _, err := e.run(t, map[string]any{"image_url": uri, "scale": scale})
		if err != nil {
			t.Fatal(err)
		}
		if runs := e.runs(); runs[len(runs)-1].shape[2] != 77 || runs[len(runs)-1].shape[3] != 101 {
			t.Fatalf("automatic tiling split a 101×77 image: %v", runs[len(runs)-1])
		}
		ref := pixels(whole)
		for _, tile := range []int{16, 23, 40, 64} {
			before := len(e.runs())
			img, _, logs, err := e.run(t, map[string]any{"image_url": uri, "scale": scale, "tile": tile})
			if err != nil {
				t.Fatal(err)
			}
			if got := pixels(img); !slices.Equal(got, ref) {
				diff := 0
				for i := range got {
					if got[i] != ref[i] {
						diff++
					}
				}
				t.Errorf("scale %g tile %d: %d of %d values differ from the untiled output", scale, tile, diff, len(ref))
			}
			n := ((101 + tile - 1) / tile) * ((77 + tile - 1) / tile)
			runs := e.runs()[before:]
			batched := 0
			for _, r := range runs {
				batched += int(r.shape[0])
				if r.shape[2] != int64(min(tile+20, 77)) || r.shape[3] != int64(min(tile+20, 101)) {
					t.Errorf("tile %d: window %v, want %dx%d", tile, r.shape, min(tile+20, 101), min(tile+20, 77))
				}
			}
			if batched != n || (n > 1 && len(runs) >= n) {
				t.Errorf("tile %d: %d tiles in %d runs, want %d tiles batched", tile, batched, len(runs), n)
			}
			if !slices.Contains(logs, fmt.Sprintf("tile %d/%d", n, n)) || !slices.Contains(logs, fmt.Sprintf("tile 1/%d", n)) {
				t.Errorf("tile %d: logs %q lack per-tile progress", tile, logs)
			}
		}
	}
}

func TestAlpha(t *testing.T) {
	e := newEnv(t, pipelines.Config{})
	src := texture(40, 30)
	for y := range 30 {
		for x := range 40 {
			a := uint8(0)
			if x >= 20 {
				a = 255
			}
			if y >= 20 {
				a = 128
			}
			src.Pix[src.PixOffset(x, y)+3] = a
		}
	}
	img, _, _, err := e.run(t, map[string]any{"image_url": pngURI(t, src), "scale": 4, "tile": 16})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		x, y int
		a    uint8
	}{{10, 10, 0}, {60, 40, 0}, {100, 10, 255}, {150, 70, 255}, {40, 100, 128}, {140, 110, 128}} {
		_, _, _, a := img.At(c.x, c.y).RGBA()
		if uint8(a>>8) != c.a {
			t.Errorf("alpha at %d,%d = %d, want %d", c.x, c.y, a>>8, c.a)
		}
	}
	// The colour under transparent pixels still comes from the model (not
	// zeroed): non-premultiplied output.
	if c := color.NRGBAModel.Convert(img.At(41, 41)).(color.NRGBA); c.R == 0 && c.G == 0 && c.B == 0 {
		t.Errorf("colour under alpha 0 lost: %v", c)
	}
	// The model only ever gets RGB.
	for _, r := range e.runs() {
		if r.shape[1] != 3 {
			t.Fatalf("model got %v", r.shape)
		}
	}
	// An opaque input stays opaque; a gray one comes back as colour-equal RGB.
	gray := image.NewGray(image.Rect(0, 0, 12, 9))
	for i := range gray.Pix {
		gray.Pix[i] = uint8(i * 2)
	}
	img, _, _, err = e.run(t, map[string]any{"image_url": pngURI(t, gray), "scale": 2})
	if err != nil {
		t.Fatal(err)
	}
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			c := color.NRGBAModel.Convert(img.At(x, y)).(color.NRGBA)
			if c.A != 255 || c.R != c.G || c.G != c.B {
				t.Fatalf("gray input: %v at %d,%d", c, x, y)
			}
		}
	}
}

// Test16Bit: a 16-bit PNG is accepted (decoded to 8 bits) and gives the
// same result as its 8-bit version.
func Test16Bit(t *testing.T) {
	e := newEnv(t, pipelines.Config{})
	src := texture(20, 15)
	deep := image.NewNRGBA64(src.Bounds())
	for y := range 15 {
		for x := range 20 {
			c := src.NRGBAAt(x, y)
			deep.SetNRGBA64(x, y, color.NRGBA64{uint16(c.R) * 257, uint16(c.G) * 257, uint16(c.B) * 257, 65535})
		}
	}
	a, _, _, err := e.run(t, map[string]any{"image_url": pngURI(t, src)})
	if err != nil {
		t.Fatal(err)
	}
	b, _, _, err := e.run(t, map[string]any{"image_url": pngURI(t, deep)})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(pixels(a), pixels(b)) {
		t.Error("16-bit input differs from its 8-bit version")
	}
}

func TestOutputBudget(t *testing.T) {
	e := newEnv(t, pipelines.Config{MaxUpscalePixels: 100 * 100})
	uri := pngURI(t, texture(25, 25))
	if _, f, _, err := e.run(t, map[string]any{"image_url": uri, "scale": 4}); err != nil || f.Width != 100 {
		t.Fatalf("100×100 within a 100² budget: %v", err)
	}
	_, _, _, err := e.run(t, map[string]any{"image_url": uri, "scale": 4.1})
	var he *pipelines.HTTPError
	if !errors.As(err, &he) || he.Status != http.StatusRequestEntityTooLarge || !strings.Contains(he.Msg, "over this server's upscale limit of 10000 pixels") {
		t.Fatalf("over budget: %v", err)
	}
}

// runner is a fake engine.Pool for calling Upscale directly.
type runner struct {
	fn       func(x []float32, n, h, w, s int) []float32
	s        int
	runs     int
	maxInput int64
}

func (r *runner) Do(ctx context.Context, run engine.Run) ([]*engine.Tensor, error) {
	x := run.Inputs[0]
	r.runs++
	r.maxInput = max(r.maxInput, int64(len(x.F32)))
	n, h, w := int(x.Shape[0]), int(x.Shape[2]), int(x.Shape[3])
	return []*engine.Tensor{{DType: x.DType, Shape: []int64{int64(n), 3, int64(h * r.s), int64(w * r.s)}, F32: r.fn(x.F32, n, h, w, r.s)}}, nil
}

// TestLargeInput: a 4096×4096 input at scale 2 (8192², the default budget)
// completes tile by tile: no model run sees more than one 512² window.
func TestLargeInput(t *testing.T) {
	if testing.Short() {
		t.Skip("large input")
	}
	src := image.NewNRGBA(image.Rect(0, 0, 4096, 4096))
	for y := range 4096 {
		for x := range 4096 {
			i := src.PixOffset(x, y)
			src.Pix[i], src.Pix[i+1], src.Pix[i+2], src.Pix[i+3] = uint8(x/16*3), uint8(y/16*5), uint8((x/16)^(y/16)), 255
		}
	}
	r := &runner{fn: nearest, s: 4}
	t0 := time.Now()
	var tiles int
	req := &pipelines.Request{Log: func(_ pipelines.Level, msg string) { tiles++ }}
	out, err := upscale.Upscale(context.Background(), req, r, 4, 10, 492, src, 8192, 8192)
	if err != nil {
		t.Fatal(err)
	}
	if out.Bounds().Dx() != 8192 || out.Bounds().Dy() != 8192 {
		t.Fatalf("output %v", out.Bounds())
	}
	if r.maxInput > 3*512*512 || tiles != 81 || r.runs != 81 {
		t.Errorf("largest run input %d values (want ≤ 3·512²), %d tiles in %d runs (want 81)", r.maxInput, tiles, r.runs)
	}
	// Nearest ×4 then ÷2 of 16×16 flat blocks: block centres keep their colour.
	for _, p := range []image.Point{{8, 8}, {1000, 3000}, {4088, 24}, {2056, 2056}} {
		want := src.NRGBAAt(p.X, p.Y)
		got := out.NRGBAAt(2*p.X, 2*p.Y)
		if got != want {
			t.Errorf("at %v: %v, want ≈ %v", p, got, want)
		}
	}
	t.Logf("4096² → 8192² with a fake model: %v", time.Since(t0))
}

// TestSubImage: an image whose bounds do not start at the origin upscales
// as its copy does.
func TestSubImage(t *testing.T) {
	big := texture(60, 50)
	for i := 3; i < len(big.Pix); i += 8 {
		big.Pix[i] = 100
	}
	sub := big.SubImage(image.Rect(7, 5, 47, 35)).(*image.NRGBA)
	cp := image.NewNRGBA(image.Rect(0, 0, 40, 30))
	for y := range 30 {
		copy(cp.Pix[y*cp.Stride:(y+1)*cp.Stride], sub.Pix[y*sub.Stride:])
	}
	req := &pipelines.Request{}
	a, err := upscale.Upscale(context.Background(), req, &runner{fn: boxThenNearest, s: 4}, 4, 10, 16, sub, 100, 75)
	if err != nil {
		t.Fatal(err)
	}
	b, err := upscale.Upscale(context.Background(), req, &runner{fn: boxThenNearest, s: 4}, 4, 10, 16, cp, 100, 75)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(a.Pix, b.Pix) {
		t.Error("a sub-image upscales differently from its copy")
	}
}
