package bench

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"image"
	"image/draw"
	"image/png"
	"io"
	"net/http"
	"os"
	"runtime"
	"testing"

	"github.com/falocal/falocal/engine"
	"github.com/falocal/falocal/engine/ort"
	"github.com/falocal/falocal/internal/testenv"
	"github.com/falocal/falocal/pipelines"
	_ "github.com/falocal/falocal/pipelines/rembg"
	"github.com/falocal/falocal/weights"
)

// BenchmarkRembg times one background removal of astronaut.png (512²) four
// ways: the bare ISNet run on a ready tensor (engine), the image codec work
// alone (codec), the whole pipeline in process (pipeline), and a client's
// POST /run/fal-ai/birefnet to the real server binary (http). http − engine
// is what the server adds; pipeline − engine − codec is the pre/post
// processing (resize, normalise, mask resize, foreground refinement).
func BenchmarkRembg(b *testing.B) {
	photo, err := os.ReadFile(testenv.Asset(b, "astronaut.png"))
	if err != nil {
		b.Fatal(err)
	}
	rt, err := ort.Init(ort.Config{LibraryPath: testenv.ORTLibrary(b)})
	if err != nil {
		b.Fatal(err)
	}
	store, err := weights.Open(testenv.DataDir(b))
	if err != nil {
		b.Fatal(err)
	}
	m, err := store.Get("isnet-general-use")
	if err != nil {
		b.Fatal(err)
	}
	path, err := store.Path(m, "model")
	if err != nil {
		b.Fatal(err)
	}
	nthreads := runtime.NumCPU()
	input := make([]float32, 3*1024*1024)
	img, err := decodeNRGBA(photo)
	if err != nil {
		b.Fatal(err)
	}
	engine.CPUOps().ImageToTensor(input, img.Pix, 512, 512, img.Stride, 4, 1024, 1024, 1, [3]float32{128, 128, 128}, [3]float32{256, 256, 256})
	tensor, _ := engine.NewFloat32(input, 1, 3, 1024, 1024)

	b.Run("engine", func(b *testing.B) {
		s, err := rt.Open(context.Background(), engine.SessionSpec{Path: path, Inputs: []string{"input"}, Outputs: []string{"output"}, IntraOpThreads: nthreads})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		s.Run(context.Background(), []*engine.Tensor{tensor}, nil) // warm-up
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, err := s.Run(context.Background(), []*engine.Tensor{tensor}, nil); err != nil {
				b.Fatal(err)
			}
		}
	})

	b.Run("codec", func(b *testing.B) {
		out := image.NewNRGBA(image.Rect(0, 0, 512, 512))
		copy(out.Pix, img.Pix)
		for i := 0; i < b.N; i++ {
			if _, err := decodeNRGBA(photo); err != nil {
				b.Fatal(err)
			}
			if err := png.Encode(io.Discard, out); err != nil {
				b.Fatal(err)
			}
		}
	})

	uri := "data:image/png;base64," + base64.StdEncoding.EncodeToString(photo)
	body, _ := json.Marshal(map[string]any{"image_url": uri})

	b.Run("pipeline", func(b *testing.B) {
		reg, err := pipelines.Build(pipelines.Deps{Store: store, Runtime: rt, Ops: engine.CPUOps(),
			Session: threads(nthreads), Config: pipelines.Config{SessionsPerModel: 1, MaxInputBytes: 64 << 20, MaxPixels: 1 << 26, Models: map[string]string{}}})
		if err != nil {
			b.Fatal(err)
		}
		defer reg.Close()
		ep, ok := reg.Lookup("fal-ai/birefnet")
		if !ok {
			b.Fatal("fal-ai/birefnet not registered")
		}
		files := &memFiles{}
		run := func() {
			if _, err := ep.Run(context.Background(), &pipelines.Request{ID: "bench", Input: body, Files: files}); err != nil {
				b.Fatal(err)
			}
		}
		run()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			run()
		}
	})

	b.Run("http", func(b *testing.B) {
		srv := testenv.StartServer(b, "--preload", "--log-level", "warn")
		post := func() {
			resp, err := http.Post(srv.Base+"/run/fal-ai/birefnet", "application/json", bytes.NewReader(body))
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Fatalf("status %d", resp.StatusCode)
			}
		}
		post()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			post()
		}
	})
}

type memFiles struct{}

func (memFiles) Open(context.Context, string, int64) (pipelines.Blob, error) {
	return pipelines.Blob{}, io.EOF
}

func (memFiles) Save(_ context.Context, data []byte, _, name string) (string, error) {
	return "mem://" + name, nil
}

// decodeNRGBA is what the server's decoder does for a PNG (image/png, then
// conversion to 8-bit NRGBA).
func decodeNRGBA(data []byte) (*image.NRGBA, error) {
	src, err := png.Decode(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	out := image.NewNRGBA(src.Bounds())
	draw.Draw(out, out.Bounds(), src, src.Bounds().Min, draw.Src)
	return out, nil
}
