package rembg_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/gif"
	"image/png"
	"net/http"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/image/webp"

	"github.com/falocal/falocal/pipelines"
	_ "github.com/falocal/falocal/pipelines/rembg"
)

func TestEndpointIDs(t *testing.T) {
	e := newEnv(t, envOpts{})
	var ids []string
	for id := range e.eps {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	want := []string{idV1, idV2, idRembg}
	sort.Strings(want)
	if !slices.Equal(ids, want) {
		t.Fatalf("endpoint ids %v, want %v", ids, want)
	}
}

func keys(m map[string]any) []string {
	var k []string
	for n := range m {
		k = append(k, n)
	}
	sort.Strings(k)
	return k
}

var imageFileKeys = []string{"content_type", "file_name", "file_size", "height", "url", "width"}

// checkFile checks one ImageFile object and returns its decoded image.
func (e *env) checkFile(t *testing.T, v any, wantCT, wantName string, wantW, wantH int, wantSync bool) image.Image {
	t.Helper()
	obj, ok := v.(map[string]any)
	if !ok {
		t.Fatalf("image file is %T, want object", v)
	}
	if got := keys(obj); !slices.Equal(got, imageFileKeys) {
		t.Fatalf("image file keys %v, want %v", got, imageFileKeys)
	}
	url, _ := obj["url"].(string)
	ct, _ := obj["content_type"].(string)
	name, _ := obj["file_name"].(string)
	size, _ := obj["file_size"].(float64)
	w, _ := obj["width"].(float64)
	h, _ := obj["height"].(float64)
	if ct != wantCT {
		t.Errorf("content_type %q, want %q", ct, wantCT)
	}
	if name != wantName {
		t.Errorf("file_name %q, want %q", name, wantName)
	}
	if int(w) != wantW || int(h) != wantH {
		t.Errorf("width×height %v×%v, want %d×%d", w, h, wantW, wantH)
	}
	if wantSync {
		if prefix := "data:" + wantCT + ";base64,"; !strings.HasPrefix(url, prefix) {
			t.Errorf("sync_mode url %.40q..., want prefix %q", url, prefix)
		}
	} else if !strings.HasPrefix(url, "http://files.test/") || !strings.HasSuffix(url, "/"+wantName) {
		t.Errorf("url %q is not a stored file named %s", url, wantName)
	}
	data, gotCT := e.fetch(t, url)
	if gotCT != wantCT {
		t.Errorf("stored content type %q, want %q", gotCT, wantCT)
	}
	if int(size) != len(data) {
		t.Errorf("file_size %v, but the file has %d bytes", size, len(data))
	}
	var img image.Image
	var err error
	switch wantCT {
	case "image/png":
		img, err = png.Decode(bytes.NewReader(data))
	case "image/webp":
		img, err = webp.Decode(bytes.NewReader(data))
	case "image/gif":
		img, err = gif.Decode(bytes.NewReader(data))
	default:
		t.Fatalf("unexpected content type %q", wantCT)
	}
	if err != nil {
		t.Fatalf("decode %s output: %v", wantCT, err)
	}
	if b := img.Bounds(); b.Dx() != wantW || b.Dy() != wantH {
		t.Errorf("decoded %v, want %d×%d", b, wantW, wantH)
	}
	return img
}

// checkAlpha compares an output's alpha with want (w×h) within ±tol.
func checkAlpha(t *testing.T, img image.Image, want []uint8, w int, tol int) {
	t.Helper()
	n := toNRGBA(img)
	bad := 0
	for i, a := range want {
		x, y := i%w, i/w
		got := n.NRGBAAt(x, y).A
		if absDiff(got, a) > tol {
			if bad < 5 {
				t.Errorf("alpha at (%d,%d) = %d, want %d", x, y, got, a)
			}
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%d pixels with wrong alpha", bad)
	}
}

// checkGrayMask compares a mask output's gray level with want.
func checkGrayMask(t *testing.T, img image.Image, want []uint8, w int) {
	t.Helper()
	bad := 0
	for i, a := range want {
		x, y := i%w, i/w
		r, g, b, al := img.At(x, y).RGBA()
		if r != g || g != b || al != 0xffff || absDiff(uint8(r>>8), a) > 1 {
			if bad < 5 {
				t.Errorf("mask at (%d,%d) = %v, want gray %d", x, y, img.At(x, y), a)
			}
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%d mask pixels wrong", bad)
	}
}

func TestOutputShapes(t *testing.T) {
	const w, h = 48, 40
	type tc struct {
		name     string
		id       string
		fields   map[string]any
		wantKeys []string
		ct, ext  string
		maskOnly bool // image is the mask
		sync     bool
	}
	cases := []tc{
		{name: "v1 defaults", id: idV1, wantKeys: []string{"image"}, ct: "image/png", ext: ".png"},
		{name: "v2 defaults", id: idV2, wantKeys: []string{"image"}, ct: "image/png", ext: ".png"},
		{name: "rembg defaults", id: idRembg, wantKeys: []string{"image"}, ct: "image/png", ext: ".png"},
		{name: "v1 output_mask", id: idV1, fields: map[string]any{"output_mask": true}, wantKeys: []string{"image", "mask_image"}, ct: "image/png", ext: ".png"},
		{name: "v2 output_mask", id: idV2, fields: map[string]any{"output_mask": true}, wantKeys: []string{"image", "mask_image"}, ct: "image/png", ext: ".png"},
		{name: "v2 output_mask false", id: idV2, fields: map[string]any{"output_mask": false}, wantKeys: []string{"image"}, ct: "image/png", ext: ".png"},
		{name: "v2 mask_only", id: idV2, fields: map[string]any{"mask_only": true}, wantKeys: []string{"image"}, ct: "image/png", ext: ".png", maskOnly: true},
		{name: "v2 mask_only webp", id: idV2, fields: map[string]any{"mask_only": true, "output_format": "webp"}, wantKeys: []string{"image"}, ct: "image/webp", ext: ".webp", maskOnly: true},
		{name: "v1 ignores mask_only", id: idV1, fields: map[string]any{"mask_only": true}, wantKeys: []string{"image"}, ct: "image/png", ext: ".png"},
		{name: "v1 webp", id: idV1, fields: map[string]any{"output_format": "webp"}, wantKeys: []string{"image"}, ct: "image/webp", ext: ".webp"},
		{name: "v2 webp with mask", id: idV2, fields: map[string]any{"output_format": "webp", "output_mask": true}, wantKeys: []string{"image", "mask_image"}, ct: "image/webp", ext: ".webp"},
		{name: "v1 gif", id: idV1, fields: map[string]any{"output_format": "gif"}, wantKeys: []string{"image"}, ct: "image/gif", ext: ".gif"},
		{name: "v2 gif with mask", id: idV2, fields: map[string]any{"output_format": "gif", "output_mask": true}, wantKeys: []string{"image", "mask_image"}, ct: "image/gif", ext: ".gif"},
		{name: "v2 png explicit", id: idV2, fields: map[string]any{"output_format": "png"}, wantKeys: []string{"image"}, ct: "image/png", ext: ".png"},
		{name: "v1 sync", id: idV1, fields: map[string]any{"sync_mode": true}, wantKeys: []string{"image"}, ct: "image/png", ext: ".png", sync: true},
		{name: "v2 sync with mask webp", id: idV2, fields: map[string]any{"sync_mode": true, "output_mask": true, "output_format": "webp"}, wantKeys: []string{"image", "mask_image"}, ct: "image/webp", ext: ".webp", sync: true},
		{name: "v2 sync mask_only", id: idV2, fields: map[string]any{"sync_mode": true, "mask_only": true}, wantKeys: []string{"image"}, ct: "image/png", ext: ".png", maskOnly: true, sync: true},
		{name: "rembg sync", id: idRembg, fields: map[string]any{"sync_mode": true}, wantKeys: []string{"image"}, ct: "image/png", ext: ".png", sync: true},
		{name: "rembg always png", id: idRembg, fields: map[string]any{"output_format": "webp", "output_mask": true, "mask_only": true}, wantKeys: []string{"image"}, ct: "image/png", ext: ".png"},
		{name: "unknown fields ignored", id: idV2, fields: map[string]any{"whatever": []int{1, 2}, "seed": 3, "nested": map[string]any{"a": "b"}}, wantKeys: []string{"image"}, ct: "image/png", ext: ".png"},
		{name: "v2 explicit model", id: idV2, fields: map[string]any{"model": "General Use (Light)"}, wantKeys: []string{"image"}, ct: "image/png", ext: ".png"},
	}
	e := newEnv(t, envOpts{})
	in := testScene()
	uri := pngURI(t, in)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fields := map[string]any{"image_url": uri}
			for k, v := range c.fields {
				fields[k] = v
			}
			saves := e.files.Saves()
			out, err := e.run(t, c.id, jsonInput(t, fields))
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if got := keys(out); !slices.Equal(got, c.wantKeys) {
				t.Fatalf("output keys %v, want %v", got, c.wantKeys)
			}
			alpha := e.expectedAlpha(t, w, h)
			name := "req1" + c.ext
			if c.maskOnly {
				name = "req1-mask" + c.ext
			}
			img := e.checkFile(t, out["image"], c.ct, name, w, h, c.sync)
			exact := c.ct != "image/gif"
			switch {
			case c.maskOnly && exact:
				checkGrayMask(t, img, alpha, w)
			case c.maskOnly:
			case exact:
				checkAlpha(t, img, alpha, w, 1)
			default:
				// GIF: alpha is binary, cut at 128.
				bin := make([]uint8, len(alpha))
				for i, a := range alpha {
					if a >= 128 {
						bin[i] = 255
					}
				}
				checkAlpha(t, img, bin, w, 0)
			}
			if mv, ok := out["mask_image"]; ok {
				m := e.checkFile(t, mv, c.ct, "req1-mask"+c.ext, w, h, c.sync)
				if exact {
					checkGrayMask(t, m, alpha, w)
				}
			}
			wantSaves := saves + len(c.wantKeys)
			if c.sync {
				wantSaves = saves
			}
			if got := e.files.Saves(); got != wantSaves {
				t.Errorf("files saved: %d, want %d", got-saves, wantSaves-saves)
			}
		})
	}
}

// TestNormalisation checks the tensor the model gets: NCHW, (v-128)/256.
func TestNormalisation(t *testing.T) {
	e := newEnv(t, envOpts{})
	const s = modelSize
	img := image.NewNRGBA(image.Rect(0, 0, s, s))
	for y := 0; y < s; y++ {
		for x := 0; x < s; x++ {
			img.SetNRGBA(x, y, color.NRGBA{uint8(x * 8), uint8(y * 8), uint8(255 - x*y%256), 255})
		}
	}
	out, err := e.run(t, idV1, jsonInput(t, map[string]any{"image_url": pngURI(t, img), "refine_foreground": false}))
	if err != nil {
		t.Fatal(err)
	}
	in := e.input()
	bad := 0
	for c := 0; c < 3; c++ {
		for y := 0; y < s; y++ {
			for x := 0; x < s; x++ {
				p := img.NRGBAAt(x, y)
				v := [3]uint8{p.R, p.G, p.B}[c]
				want := (float32(v) - 128) / 256
				if got := in[c*s*s+y*s+x]; got != want && bad < 5 {
					t.Errorf("input[%d,%d,%d] = %v, want %v", c, y, x, got, want)
					bad++
				}
			}
		}
	}
	// The fake's mask is red/255, so at the model size alpha is red.
	got := toNRGBA(e.checkFile(t, out["image"], "image/png", "req1.png", s, s, false))
	for y := 0; y < s; y++ {
		for x := 0; x < s; x++ {
			p, q := img.NRGBAAt(x, y), got.NRGBAAt(x, y)
			if absDiff(q.A, p.R) > 1 {
				t.Fatalf("alpha at (%d,%d) = %d, want red %d", x, y, q.A, p.R)
			}
			if q.A > 0 && (q.R != p.R || q.G != p.G || q.B != p.B) {
				t.Fatalf("colour at (%d,%d) = %v, want %v", x, y, q, p)
			}
		}
	}
}

func TestComposition(t *testing.T) {
	const w, h = 48, 40
	in := testScene()
	for _, id := range []string{idV1, idV2, idRembg} {
		for _, refine := range []bool{false, true} {
			if id == idRembg && refine {
				continue // rembg has no refine_foreground
			}
			t.Run(fmt.Sprintf("%s/refine=%v", id, refine), func(t *testing.T) {
				e := newEnv(t, envOpts{})
				fields := map[string]any{"image_url": pngURI(t, in)}
				if id != idRembg {
					fields["refine_foreground"] = refine
				}
				out, err := e.run(t, id, jsonInput(t, fields))
				if err != nil {
					t.Fatal(err)
				}
				alpha := e.expectedAlpha(t, w, h)
				got := toNRGBA(e.checkFile(t, out["image"], "image/png", "req1.png", w, h, false))
				checkAlpha(t, got, alpha, w, 1)
				// The subject must be opaque and the background clear.
				if a := got.NRGBAAt(24, 20).A; a != 255 {
					t.Errorf("subject centre alpha %d, want 255", a)
				}
				if a := got.NRGBAAt(1, 1).A; a != 0 {
					t.Errorf("background alpha %d, want 0", a)
				}
				for y := 0; y < h; y++ {
					for x := 0; x < w; x++ {
						p, q := in.NRGBAAt(x, y), got.NRGBAAt(x, y)
						tol := 0
						switch {
						case !refine && q.A > 0:
						case refine && q.A == 255:
							tol = 2 // blur fusion gives F = I where alpha = 1
						default:
							continue
						}
						if absDiff(p.R, q.R) > tol || absDiff(p.G, q.G) > tol || absDiff(p.B, q.B) > tol {
							t.Fatalf("colour at (%d,%d) = %v, want %v", x, y, q, p)
						}
					}
				}
			})
		}
	}
}

// TestRefineKeepsSourceAlpha: a translucent input must give the same alpha
// with and without refine_foreground.
func TestRefineKeepsSourceAlpha(t *testing.T) {
	const w, h = 48, 40
	in := testScene()
	for y := 0; y < h; y++ {
		for x := 0; x < w/2; x++ {
			in.Pix[in.PixOffset(x, y)+3] = 100 // left half translucent
		}
	}
	e := newEnv(t, envOpts{})
	var alphas [2]*image.NRGBA
	for i, refine := range []bool{false, true} {
		out, err := e.run(t, idV2, jsonInput(t, map[string]any{"image_url": pngURI(t, in), "refine_foreground": refine}))
		if err != nil {
			t.Fatal(err)
		}
		alphas[i] = toNRGBA(e.checkFile(t, out["image"], "image/png", "req1.png", w, h, false))
	}
	mask := e.expectedAlpha(t, w, h)
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			src := float64(in.NRGBAAt(x, y).A) / 255
			want := uint8(float64(mask[y*w+x])*src + 0.5)
			for i, refine := range []bool{false, true} {
				if got := alphas[i].NRGBAAt(x, y).A; absDiff(got, want) > 1 {
					t.Fatalf("refine=%v: alpha at (%d,%d) = %d, want mask %d × source alpha %.2f = %d", refine, x, y, got, mask[y*w+x], src, want)
				}
			}
		}
	}
}

func TestCropToBBox(t *testing.T) {
	const w, h = 48, 40
	e := newEnv(t, envOpts{})
	in := testScene()
	out, err := e.run(t, idRembg, jsonInput(t, map[string]any{"image_url": pngURI(t, in), "crop_to_bbox": true}))
	if err != nil {
		t.Fatal(err)
	}
	alpha := e.expectedAlpha(t, w, h)
	bb := image.Rectangle{Min: image.Pt(w, h)}
	for i, a := range alpha {
		if a >= 16 {
			p := image.Pt(i%w, i/w)
			bb = bb.Union(image.Rectangle{Min: p, Max: p.Add(image.Pt(1, 1))})
		}
	}
	// The mask is blurred by the 48×40 → 32×32 → 48×40 round trip, so the
	// box may grow by a pixel or two around the subject, never shrink.
	if !subject.In(bb) || bb.Min.X < subject.Min.X-3 || bb.Min.Y < subject.Min.Y-3 ||
		bb.Max.X > subject.Max.X+3 || bb.Max.Y > subject.Max.Y+3 {
		t.Fatalf("expected box %v is not around the subject %v", bb, subject)
	}
	got := toNRGBA(e.checkFile(t, out["image"], "image/png", "req1.png", bb.Dx(), bb.Dy(), false))
	for y := 0; y < bb.Dy(); y++ {
		for x := 0; x < bb.Dx(); x++ {
			sx, sy := bb.Min.X+x, bb.Min.Y+y
			if a := got.NRGBAAt(x, y).A; absDiff(a, alpha[sy*w+sx]) > 1 {
				t.Fatalf("cropped alpha at (%d,%d) = %d, want %d", x, y, a, alpha[sy*w+sx])
			}
		}
	}

	// Without crop_to_bbox (and with nothing opaque) the size is kept.
	out, err = e.run(t, idRembg, jsonInput(t, map[string]any{"image_url": pngURI(t, in), "crop_to_bbox": false}))
	if err != nil {
		t.Fatal(err)
	}
	e.checkFile(t, out["image"], "image/png", "req1.png", w, h, false)
	dark := scene(w, h, subject, bgColor, bgColor)
	out, err = e.run(t, idRembg, jsonInput(t, map[string]any{"image_url": pngURI(t, dark), "crop_to_bbox": true}))
	if err != nil {
		t.Fatal(err)
	}
	e.checkFile(t, out["image"], "image/png", "req1.png", w, h, false)
}

// TestStoredInputURL reads the input through Files.Open.
func TestStoredInputURL(t *testing.T) {
	e := newEnv(t, envOpts{})
	url, err := e.files.Save(context.Background(), pngBytes(t, testScene()), "image/png", "in.png")
	if err != nil {
		t.Fatal(err)
	}
	out, err := e.run(t, idV2, jsonInput(t, map[string]any{"image_url": url}))
	if err != nil {
		t.Fatal(err)
	}
	e.checkFile(t, out["image"], "image/png", "req1.png", 48, 40, false)
}

func TestSigmoidActivation(t *testing.T) {
	p := defaultParams()
	p["activation"] = "sigmoid"
	e := newEnv(t, envOpts{params: p, fn: func(in []float32, s int) ([]float32, error) {
		out := make([]float32, s*s)
		for i := range out {
			out[i] = -20 // logit: clear
			if in[i] > 0 {
				out[i] = 20 // opaque
			}
		}
		out[0] = 0 // sigmoid(0) = 0.5
		return out, nil
	}})
	img := scene(modelSize, modelSize, image.Rect(8, 8, 24, 24), bgColor, fgColor)
	out, err := e.run(t, idV1, jsonInput(t, map[string]any{"image_url": pngURI(t, img)}))
	if err != nil {
		t.Fatal(err)
	}
	got := toNRGBA(e.checkFile(t, out["image"], "image/png", "req1.png", modelSize, modelSize, false))
	for _, c := range []struct {
		x, y int
		a    uint8
	}{{0, 0, 128}, {16, 16, 255}, {2, 30, 0}} {
		if a := got.NRGBAAt(c.x, c.y).A; absDiff(a, c.a) > 1 {
			t.Errorf("alpha at (%d,%d) = %d, want %d", c.x, c.y, a, c.a)
		}
	}
}

type wantErr struct {
	loc  []any
	typ  string
	msgs []string // substrings of msg
}

func checkValidation(t *testing.T, err error, want wantErr) {
	t.Helper()
	var ve *pipelines.ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("err = %v (%T), want *pipelines.ValidationError", err, err)
	}
	for _, f := range ve.Errors {
		if fmt.Sprint(f.Loc) != fmt.Sprint(want.loc) || f.Type != want.typ {
			continue
		}
		for _, m := range want.msgs {
			if !strings.Contains(f.Msg, m) {
				t.Errorf("msg %q does not contain %q", f.Msg, m)
			}
		}
		return
	}
	t.Fatalf("errors %+v, want one with loc %v type %q", ve.Errors, want.loc, want.typ)
}

func TestValidation(t *testing.T) {
	e := newEnv(t, envOpts{})
	good := pngURI(t, testScene())
	pngData := pngBytes(t, testScene())
	with := func(fields map[string]any) map[string]any {
		m := map[string]any{"image_url": good}
		for k, v := range fields {
			m[k] = v
		}
		return m
	}
	loc := func(field string) []any {
		if field == "" {
			return []any{"body"}
		}
		return []any{"body", field}
	}
	all := []string{idV1, idV2, idRembg}
	biref := []string{idV1, idV2}
	cases := []struct {
		name string
		ids  []string
		raw  string         // raw JSON input, or
		in   map[string]any // fields
		want wantErr
	}{
		{name: "missing image_url", ids: all, in: map[string]any{"sync_mode": true}, want: wantErr{loc("image_url"), "missing", []string{"Field required"}}},
		{name: "empty object", ids: all, raw: `{}`, want: wantErr{loc("image_url"), "missing", nil}},
		{name: "empty image_url", ids: all, in: map[string]any{"image_url": ""}, want: wantErr{loc("image_url"), "value_error", nil}},
		{name: "image_url number", ids: all, raw: `{"image_url": 5}`, want: wantErr{loc("image_url"), "string_type", []string{"valid string"}}},
		{name: "image_url object", ids: all, raw: `{"image_url": {"url": "x"}}`, want: wantErr{loc("image_url"), "string_type", nil}},
		{name: "sync_mode string", ids: all, in: with(map[string]any{"sync_mode": "yes"}), want: wantErr{loc("sync_mode"), "bool_type", []string{"valid boolean"}}},
		{name: "output_mask string", ids: biref, in: with(map[string]any{"output_mask": "yes"}), want: wantErr{loc("output_mask"), "bool_type", nil}},
		{name: "refine_foreground number", ids: biref, in: with(map[string]any{"refine_foreground": 1}), want: wantErr{loc("refine_foreground"), "bool_type", nil}},
		{name: "crop_to_bbox string", ids: []string{idRembg}, in: with(map[string]any{"crop_to_bbox": "true"}), want: wantErr{loc("crop_to_bbox"), "bool_type", nil}},
		{name: "mask_only string", ids: []string{idV2}, in: with(map[string]any{"mask_only": "no"}), want: wantErr{loc("mask_only"), "bool_type", nil}},
		{name: "model number", ids: biref, in: with(map[string]any{"model": 3}), want: wantErr{loc("model"), "string_type", nil}},
		{name: "unknown model", ids: biref, in: with(map[string]any{"model": "Tiny"}), want: wantErr{loc("model"), "literal_error", []string{"'General Use (Light)'", "'Portrait'"}}},
		{name: "v2-only model on v1", ids: []string{idV1}, in: with(map[string]any{"model": "Matting"}), want: wantErr{loc("model"), "literal_error", []string{"Input should be 'General Use (Light)', 'General Use (Heavy)' or 'Portrait'"}}},
		{name: "Light 2K on v1", ids: []string{idV1}, in: with(map[string]any{"model": "General Use (Light 2K)"}), want: wantErr{loc("model"), "literal_error", nil}},
		{name: "Dynamic on v1", ids: []string{idV1}, in: with(map[string]any{"model": "General Use (Dynamic)"}), want: wantErr{loc("model"), "literal_error", nil}},
		{name: "resolution 2048", ids: biref, in: with(map[string]any{"operating_resolution": "2048x2048"}), want: wantErr{loc("operating_resolution"), "value_error", []string{"'2048x2048'", "32x32 only", "test-model"}}},
		{name: "resolution 1024 explicit", ids: biref, in: with(map[string]any{"operating_resolution": "1024x1024"}), want: wantErr{loc("operating_resolution"), "value_error", []string{"32x32 only"}}},
		{name: "resolution 2304 on v1", ids: []string{idV1}, in: with(map[string]any{"operating_resolution": "2304x2304"}), want: wantErr{loc("operating_resolution"), "literal_error", []string{"'1024x1024' or '2048x2048'"}}},
		{name: "resolution 2304 without Dynamic", ids: []string{idV2}, in: with(map[string]any{"operating_resolution": "2304x2304"}), want: wantErr{loc("operating_resolution"), "value_error", []string{"General Use (Dynamic)"}}},
		{name: "resolution 2304 with Light", ids: []string{idV2}, in: with(map[string]any{"operating_resolution": "2304x2304", "model": "General Use (Light)"}), want: wantErr{loc("operating_resolution"), "value_error", []string{"General Use (Dynamic)"}}},
		{name: "resolution free-form", ids: biref, in: with(map[string]any{"operating_resolution": "32x32"}), want: wantErr{loc("operating_resolution"), "literal_error", nil}},
		{name: "output_format jpeg", ids: biref, in: with(map[string]any{"output_format": "jpeg"}), want: wantErr{loc("output_format"), "literal_error", []string{"'webp', 'png' or 'gif'"}}},
		{name: "output_format case", ids: biref, in: with(map[string]any{"output_format": "PNG"}), want: wantErr{loc("output_format"), "literal_error", nil}},
		{name: "malformed JSON", ids: all, raw: `{"image_url": "x",`, want: wantErr{loc(""), "json_invalid", nil}},
		{name: "trailing garbage", ids: all, raw: `{"image_url": "x"} x`, want: wantErr{loc(""), "json_invalid", nil}},
		{name: "not JSON", ids: all, raw: `image_url=x`, want: wantErr{loc(""), "json_invalid", nil}},
		{name: "empty body", ids: all, raw: ``, want: wantErr{loc(""), "json_invalid", nil}},
		{name: "array", ids: all, raw: `[{"image_url": "x"}]`, want: wantErr{loc(""), "model_attributes_type", nil}},
		{name: "string", ids: all, raw: `"x"`, want: wantErr{loc(""), "model_attributes_type", nil}},
		{name: "null", ids: all, raw: `null`, want: wantErr{loc(""), "model_attributes_type", nil}},
		{name: "text data URI", ids: all, in: map[string]any{"image_url": "data:text/plain;base64,aGVsbG8gd29ybGQ="}, want: wantErr{loc("image_url"), "value_error", []string{"could not read the image"}}},
		{name: "truncated PNG", ids: all, in: map[string]any{"image_url": "data:image/png;base64," + b64(pngData[:len(pngData)/2])}, want: wantErr{loc("image_url"), "value_error", []string{"could not read the image"}}},
		{name: "PNG header only", ids: all, in: map[string]any{"image_url": "data:image/png;base64," + b64(pngData[:8])}, want: wantErr{loc("image_url"), "value_error", nil}},
		{name: "empty data URI", ids: all, in: map[string]any{"image_url": "data:image/png;base64,"}, want: wantErr{loc("image_url"), "value_error", nil}},
		{name: "bad base64", ids: all, in: map[string]any{"image_url": "data:image/png;base64,!!!!"}, want: wantErr{loc("image_url"), "value_error", []string{"invalid data URI"}}},
		{name: "data URI without comma", ids: all, in: map[string]any{"image_url": "data:image/png;base64"}, want: wantErr{loc("image_url"), "value_error", []string{"invalid data URI"}}},
		{name: "unknown URL", ids: all, in: map[string]any{"image_url": "http://files.test/nope.png"}, want: wantErr{loc("image_url"), "value_error", []string{"no such file"}}},
	}
	for _, c := range cases {
		for _, id := range c.ids {
			t.Run(c.name+"/"+id, func(t *testing.T) {
				input := c.raw
				if c.in != nil {
					input = jsonInput(t, c.in)
				}
				_, err := e.run(t, id, input)
				checkValidation(t, err, c.want)
			})
		}
	}
	if _, _, runs, _ := e.rt.Stats(); runs != 0 {
		t.Errorf("the model ran %d times for invalid inputs", runs)
	}
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func TestTooManyPixels(t *testing.T) {
	e := newEnv(t, envOpts{})
	big := image.NewGray(image.Rect(0, 0, 1100, 1000)) // 1.1 Mpx > 1<<20
	uri := pngURI(t, big)
	for _, id := range []string{idV1, idV2, idRembg} {
		_, err := e.run(t, id, jsonInput(t, map[string]any{"image_url": uri}))
		var he *pipelines.HTTPError
		if !errors.As(err, &he) || he.Status != http.StatusRequestEntityTooLarge {
			t.Fatalf("%s: err = %v (%T), want a 413 *pipelines.HTTPError", id, err, err)
		}
		if !strings.Contains(he.Msg, "image_url") {
			t.Errorf("%s: msg %q does not name image_url", id, he.Msg)
		}
	}
	if opened, _, _, _ := e.rt.Stats(); opened != 0 {
		t.Errorf("a session was opened (%d) for an oversized input", opened)
	}
}

func TestCancellation(t *testing.T) {
	e := newEnv(t, envOpts{delay: true})
	for _, id := range []string{idV2, idRembg} {
		ctx, cancel := context.WithCancel(context.Background())
		_, _, before, _ := e.rt.Stats()
		done := make(chan error, 1)
		go func() {
			_, err := e.runCtx(ctx, t, id, jsonInput(t, map[string]any{"image_url": pngURI(t, testScene())}))
			done <- err
		}()
		deadline := time.After(5 * time.Second)
		for {
			if _, _, runs, _ := e.rt.Stats(); runs > before {
				break
			}
			select {
			case err := <-done:
				t.Fatalf("%s: Run returned before the model ran: %v", id, err)
			case <-deadline:
				t.Fatalf("%s: the model never ran", id)
			case <-time.After(time.Millisecond):
			}
		}
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("%s: err = %v, want one wrapping context.Canceled", id, err)
			}
		case <-time.After(2 * time.Second):
			t.Fatalf("%s: Run did not return after cancel", id)
		}
	}
	// A cancelled request is not a broken model: nothing was saved.
	if n := e.files.Saves(); n != 0 {
		t.Errorf("%d files saved for cancelled requests", n)
	}
}

func TestModelFailures(t *testing.T) {
	cases := []struct {
		name string
		fn   func(in []float32, s int) ([]float32, error)
	}{
		{"error", func([]float32, int) ([]float32, error) { return nil, errors.New("boom") }},
		{"wrong size", func(in []float32, s int) ([]float32, error) { return make([]float32, s), nil }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, envOpts{fn: c.fn})
			_, err := e.run(t, idV1, jsonInput(t, map[string]any{"image_url": pngURI(t, testScene())}))
			if err == nil {
				t.Fatal("Run succeeded")
			}
			var ve *pipelines.ValidationError
			if errors.As(err, &ve) {
				t.Fatalf("model failure reported as bad input: %v", err)
			}
		})
	}
	e := newEnv(t, envOpts{fn: cases[0].fn})
	_, err := e.run(t, idV1, jsonInput(t, map[string]any{"image_url": pngURI(t, testScene())}))
	var he *pipelines.HTTPError
	if !errors.As(err, &he) || he.Status != http.StatusServiceUnavailable {
		t.Fatalf("err = %v, want a 503", err)
	}
}

func TestNoModelInstalled(t *testing.T) {
	e := newEnv(t, envOpts{serves: []string{"something-else"}})
	uri := pngURI(t, testScene())
	_, err := e.run(t, idRembg, jsonInput(t, map[string]any{"image_url": uri}))
	var he *pipelines.HTTPError
	if !errors.As(err, &he) || he.Status != http.StatusServiceUnavailable {
		t.Fatalf("rembg: err = %v, want a 503", err)
	}
	_, err = e.run(t, idV1, jsonInput(t, map[string]any{"image_url": uri}))
	checkNotInstalled(t, err, "'General Use (Light)'", "test-model (serves something-else)")
}

// A model choice without local weights is the one "not installed" answer:
// 503 naming the choice and what is installed.
func TestVariantNotInstalled(t *testing.T) {
	e := newEnv(t, envOpts{})
	cases := []struct {
		name string
		ids  []string
		in   map[string]any
		msgs []string
	}{
		{"Matting on v2", []string{idV2}, map[string]any{"model": "Matting"}, []string{"'Matting'", "test-model (serves rembg, birefnet:General Use (Light))"}},
		{"Portrait", []string{idV1, idV2}, map[string]any{"model": "Portrait"}, []string{"'Portrait'", "falocal weights import"}},
		{"Heavy", []string{idV1, idV2}, map[string]any{"model": "General Use (Heavy)"}, []string{"'General Use (Heavy)'"}},
		{"resolution 2304 with Dynamic", []string{idV2}, map[string]any{"operating_resolution": "2304x2304", "model": "General Use (Dynamic)"}, []string{"'General Use (Dynamic)'"}},
	}
	for _, c := range cases {
		for _, id := range c.ids {
			t.Run(c.name+"/"+id, func(t *testing.T) {
				in := map[string]any{"image_url": pngURI(t, testScene())}
				for k, v := range c.in {
					in[k] = v
				}
				_, err := e.run(t, id, jsonInput(t, in))
				checkNotInstalled(t, err, c.msgs...)
			})
		}
	}
	if _, _, runs, _ := e.rt.Stats(); runs != 0 {
		t.Errorf("the model ran %d times", runs)
	}
}

func checkNotInstalled(t *testing.T, err error, msgs ...string) {
	t.Helper()
	var he *pipelines.HTTPError
	if !errors.As(err, &he) || he.Status != http.StatusServiceUnavailable || !errors.Is(err, pipelines.ErrNoModel) ||
		!strings.Contains(he.Msg, "is not installed on this server") {
		t.Fatalf("err = %v, want a 503 saying the model is not installed", err)
	}
	for _, m := range msgs {
		if !strings.Contains(he.Msg, m) {
			t.Errorf("%q does not contain %q", he.Msg, m)
		}
	}
}

func TestBadManifestParams(t *testing.T) {
	for _, kv := range [][2]string{{"size", "0"}, {"size", "x"}, {"mean", "1,2"}, {"std", "a,b,c"}, {"activation", "relu"}, {"scale", "-1"}} {
		p := defaultParams()
		p[kv[0]] = kv[1]
		e := newEnv(t, envOpts{params: p})
		_, err := e.run(t, idRembg, jsonInput(t, map[string]any{"image_url": pngURI(t, testScene())}))
		if err == nil || !strings.Contains(err.Error(), "test-model") {
			t.Errorf("%s=%q: err = %v, want an error naming the model", kv[0], kv[1], err)
		}
	}
}

// TestPinnedModel: Config.Models picks the model for a role.
func TestPinnedModel(t *testing.T) {
	e := newEnv(t, envOpts{models: map[string]string{"rembg": "other"}})
	other := installModel(t, e.store, "other", []string{"rembg"}, defaultParams())
	path, err := e.store.Path(other, "model")
	if err != nil {
		t.Fatal(err)
	}
	if path == e.path {
		t.Fatal("the two models share a blob")
	}
	// No fake is registered at other's path, so using it fails to open.
	_, err = e.run(t, idRembg, jsonInput(t, map[string]any{"image_url": pngURI(t, testScene())}))
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("err = %v, want a failure opening %s", err, path)
	}
	// BiRefNet's role is not pinned and still uses test-model.
	if _, err := e.run(t, idV1, jsonInput(t, map[string]any{"image_url": pngURI(t, testScene())})); err != nil {
		t.Fatal(err)
	}
}

func TestWarmAndClose(t *testing.T) {
	e := newEnv(t, envOpts{})
	if err := e.p.Warm(context.Background(), idRembg); err != nil {
		t.Fatal(err)
	}
	if opened, _, runs, _ := e.rt.Stats(); opened != 1 || runs != 0 {
		t.Fatalf("after Warm: opened %d runs %d, want 1 and 0", opened, runs)
	}
	// All three endpoints share the warmed session.
	for _, id := range []string{idV1, idV2, idRembg} {
		if _, err := e.run(t, id, jsonInput(t, map[string]any{"image_url": pngURI(t, testScene())})); err != nil {
			t.Fatal(err)
		}
	}
	if opened, _, runs, _ := e.rt.Stats(); opened != 1 || runs != 3 {
		t.Fatalf("opened %d runs %d, want 1 and 3", opened, runs)
	}
	if err := e.p.Close(); err != nil {
		t.Fatal(err)
	}
	if _, closed, _, _ := e.rt.Stats(); closed != 1 {
		t.Fatalf("closed %d sessions, want 1", closed)
	}
}

func TestRegistered(t *testing.T) {
	e := newEnv(t, envOpts{})
	r, err := pipelines.Build(pipelines.Deps{
		Store: e.store, Runtime: e.rt, Ops: nil,
		Config: pipelines.Config{SessionsPerModel: 1, Models: map[string]string{}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for _, id := range []string{idV1, idV2, idRembg} {
		if _, ok := r.Lookup(id); !ok {
			t.Errorf("%s not registered", id)
		}
	}
}
