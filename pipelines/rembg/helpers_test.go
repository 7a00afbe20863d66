package rembg_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/falocal/falocal/engine"
	"github.com/falocal/falocal/engine/enginetest"
	"github.com/falocal/falocal/pipelines"
	"github.com/falocal/falocal/pipelines/internal/imageio"
	"github.com/falocal/falocal/pipelines/pipelinetest"
	"github.com/falocal/falocal/pipelines/rembg"
	"github.com/falocal/falocal/weights"
)

// modelSize is the fake model's input size; small to keep tests fast.
const modelSize = 32

const (
	idV1    = "fal-ai/birefnet"
	idV2    = "fal-ai/birefnet/v2"
	idRembg = "fal-ai/imageutils/rembg"
)

// env is a rembg pipeline over a fake engine and a temporary store.
type env struct {
	store *weights.Store
	rt    *enginetest.Runtime
	files *pipelinetest.Files
	p     pipelines.Pipeline
	eps   map[string]pipelines.Endpoint
	path  string // the fake model's blob path

	mu      sync.Mutex
	lastIn  []float32 // what the model got last
	lastOut []float32 // the mask it returned last
}

type envOpts struct {
	serves []string
	params map[string]string
	delay  bool                                         // model blocks until ctx is cancelled
	fn     func(in []float32, s int) ([]float32, error) // overrides brightnessMask
	models map[string]string
}

func defaultParams() map[string]string {
	return map[string]string{
		"input": "input", "output": "output", "size": fmt.Sprint(modelSize),
		"mean": "128,128,128", "std": "256,256,256", "activation": "none",
	}
}

// brightnessMask is the fake segmentation: the mask is the red channel,
// undoing the (v-128)/256 normalisation, so alpha should equal red.
func brightnessMask(in []float32, s int) ([]float32, error) {
	out := make([]float32, s*s)
	for i := range out {
		out[i] = min(max((in[i]*256+128)/255, 0), 1)
	}
	return out, nil
}

func installModel(t *testing.T, st *weights.Store, name string, serves []string, params map[string]string) weights.Manifest {
	t.Helper()
	m, _ := pipelinetest.InstallFake(t, st, weights.Manifest{Name: name, Pipeline: "rembg", Serves: serves, Params: params})
	return m
}

func newEnv(t *testing.T, o envOpts) *env {
	t.Helper()
	st, err := weights.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if o.serves == nil {
		o.serves = []string{"rembg", "birefnet:General Use (Light)"}
	}
	if o.params == nil {
		o.params = defaultParams()
	}
	if o.fn == nil {
		o.fn = brightnessMask
	}
	if o.models == nil {
		o.models = map[string]string{}
	}
	m := installModel(t, st, "test-model", o.serves, o.params)
	path, err := st.Path(m, "model")
	if err != nil {
		t.Fatal(err)
	}
	e := &env{store: st, rt: enginetest.New(), files: pipelinetest.NewFiles(), path: path}
	size := 0
	fmt.Sscan(o.params["size"], &size)
	model := enginetest.Model{
		Inputs:  []engine.TensorInfo{{Name: "input", DType: engine.Float32, Shape: []int64{1, 3, int64(size), int64(size)}}},
		Outputs: []engine.TensorInfo{{Name: "output", DType: engine.Float32, Shape: []int64{1, 1, int64(size), int64(size)}}},
		Fn: func(in []*engine.Tensor) ([]*engine.Tensor, error) {
			x := in[0]
			want := []int64{1, 3, int64(size), int64(size)}
			if x.DType != engine.Float32 || fmt.Sprint(x.Shape) != fmt.Sprint(want) || len(x.F32) != 3*size*size {
				return nil, fmt.Errorf("fake model: got %s %v (%d values), want float32 %v", x.DType, x.Shape, len(x.F32), want)
			}
			out, err := o.fn(x.F32, size)
			if err != nil {
				return nil, err
			}
			e.mu.Lock()
			e.lastIn = bytesCloneF(x.F32)
			e.lastOut = bytesCloneF(out)
			e.mu.Unlock()
			return []*engine.Tensor{{DType: engine.Float32, Shape: []int64{1, 1, int64(size), int64(size)}, F32: out}}, nil
		},
	}
	if o.delay {
		model.Delay = time.Hour
	}
	e.rt.Add(path, model)
	e.p, e.eps = pipelinetest.Build(t, rembg.New, pipelines.Deps{
		Store: st, Runtime: e.rt, Ops: engine.CPUOps(),
		Config: pipelines.Config{SessionsPerModel: 2, MaxInputBytes: 1 << 20, MaxPixels: 1 << 20, Models: o.models},
	})
	return e
}

func bytesCloneF(v []float32) []float32 { return append([]float32(nil), v...) }

// run calls an endpoint with a JSON input and returns the output as it
// would be serialised.
func (e *env) run(t *testing.T, id, input string) (map[string]any, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return e.runCtx(ctx, t, id, input)
}

func (e *env) runCtx(ctx context.Context, t *testing.T, id, input string) (map[string]any, error) {
	t.Helper()
	ep, ok := e.eps[id]
	if !ok {
		t.Fatalf("no endpoint %s", id)
	}
	out, err := ep.Run(ctx, &pipelines.Request{ID: "req1", Endpoint: id, Input: json.RawMessage(input), Files: e.files})
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(out)
	if err != nil {
		t.Fatalf("marshal output: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("unmarshal output %s: %v", b, err)
	}
	return m, nil
}

func (e *env) mask() []float32 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return bytesCloneF(e.lastOut)
}

func (e *env) input() []float32 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return bytesCloneF(e.lastIn)
}

// fetch returns the bytes behind an output URL (stored file or data URI).
func (e *env) fetch(t *testing.T, url string) ([]byte, string) {
	t.Helper()
	if strings.HasPrefix(url, "data:") {
		data, ct, err := imageio.ParseDataURI(url)
		if err != nil {
			t.Fatalf("output data URI: %v", err)
		}
		return data, ct
	}
	b, err := e.files.Open(context.Background(), url, 0)
	if err != nil {
		t.Fatalf("output %s: %v", url, err)
	}
	return b.Data, b.ContentType
}

// expectedAlpha is the fake's last mask resized to w×h as 0..255.
func (e *env) expectedAlpha(t *testing.T, w, h int) []uint8 {
	t.Helper()
	small := e.mask()
	s := int(math.Round(math.Sqrt(float64(len(small)))))
	full := make([]float32, w*h)
	if err := engine.CPUOps().ResizePlane(full, w, h, small, s, s); err != nil {
		t.Fatal(err)
	}
	a := make([]uint8, w*h)
	for i, v := range full {
		a[i] = uint8(math.Round(float64(min(max(v, 0), 1)) * 255))
	}
	return a
}

// scene is a w×h image: a background of bg with a rectangle of fg.
func scene(w, h int, rect image.Rectangle, bg, fg color.NRGBA) *image.NRGBA {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			c := bg
			if image.Pt(x, y).In(rect) {
				c = fg
			}
			img.SetNRGBA(x, y, c)
		}
	}
	return img
}

var (
	bgColor = color.NRGBA{0, 80, 160, 255}
	fgColor = color.NRGBA{255, 40, 90, 255}
	subject = image.Rect(12, 10, 36, 30)
)

// testScene is the default input: 48×40, a red subject on a blue background.
func testScene() *image.NRGBA { return scene(48, 40, subject, bgColor, fgColor) }

func pngBytes(t *testing.T, img image.Image) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func pngURI(t *testing.T, img image.Image) string {
	return imageio.DataURI(pngBytes(t, img), "image/png")
}

// jsonInput builds an input object; values are JSON-encoded.
func jsonInput(t *testing.T, fields map[string]any) string {
	t.Helper()
	b, err := json.Marshal(fields)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func toNRGBA(img image.Image) *image.NRGBA {
	b := img.Bounds()
	out := image.NewNRGBA(image.Rect(0, 0, b.Dx(), b.Dy()))
	for y := 0; y < b.Dy(); y++ {
		for x := 0; x < b.Dx(); x++ {
			out.Set(x, y, color.NRGBAModel.Convert(img.At(b.Min.X+x, b.Min.Y+y)))
		}
	}
	return out
}

func absDiff(a, b uint8) int {
	if a > b {
		return int(a - b)
	}
	return int(b - a)
}
