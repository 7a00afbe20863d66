package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"

	"github.com/falocal/falocal/internal/testenv"
	"github.com/falocal/falocal/pipelines/pipelinetest"
)

// openapiDoc fetches an OpenAPI document, checks it is valid OpenAPI 3.1,
// and returns a validator for requests and responses, and the document.
func openapiDoc(t *testing.T, u string) (validator.Validator, map[string]any) {
	t.Helper()
	b := getBody(t, u)
	doc, err := libopenapi.NewDocument(b)
	if err != nil {
		t.Fatalf("%s: %v", u, err)
	}
	if v := doc.GetVersion(); v != "3.1.0" {
		t.Errorf("%s: OpenAPI %s, want 3.1.0", u, v)
	}
	v, errs := validator.NewValidator(doc)
	if len(errs) > 0 {
		t.Fatalf("%s: %v", u, errs)
	}
	if ok, verrs := v.ValidateDocument(); !ok {
		for _, e := range verrs {
			t.Errorf("%s is not valid OpenAPI: %s: %s %v", u, e.Message, e.Reason, e.SchemaValidationErrors)
		}
	}
	var raw map[string]any
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	return v, raw
}

// exchange sends a request and checks it and its response against the
// document; a request the document should refuse (bad input) is checked
// to be refused.
func exchange(t *testing.T, v validator.Validator, method, u string, body []byte, refused ...bool) (int, []byte) {
	t.Helper()
	newReq := func() *http.Request {
		var rd io.Reader
		if body != nil {
			rd = bytes.NewReader(body)
		}
		r, err := http.NewRequest(method, u, rd)
		if err != nil {
			t.Fatal(err)
		}
		if body != nil {
			r.Header.Set("Content-Type", "application/json")
		}
		return r
	}
	ok, errs := v.ValidateHttpRequest(newReq())
	if len(refused) > 0 && refused[0] {
		if ok {
			t.Errorf("request %s %s %s matches the document, which should refuse it", method, u, body)
		}
	} else if !ok {
		for _, e := range errs {
			t.Errorf("request %s %s does not match the document: %s: %s", method, u, e.Message, e.Reason)
		}
	}
	resp, err := http.DefaultClient.Do(newReq())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(b))
	if ok, errs := v.ValidateHttpResponse(newReq(), resp); !ok {
		for _, e := range errs {
			t.Errorf("response to %s %s (%d %.300s) does not match the document: %s: %s %v", method, u, resp.StatusCode, b, e.Message, e.Reason, e.SchemaValidationErrors)
		}
	}
	return resp.StatusCode, b
}

// runThroughQueue submits input to an endpoint, waits for the result, and
// checks every request and response against the document.
func runThroughQueue(t *testing.T, v validator.Validator, base, id string, input map[string]any, refused ...bool) (status int, body []byte, result string) {
	t.Helper()
	status, b := exchange(t, v, "POST", base+"/"+id, mustJSON(input), refused...)
	var sub struct {
		RequestID string `json:"request_id"`
	}
	if status != 200 || json.Unmarshal(b, &sub) != nil {
		t.Fatalf("%s: submit %d %s", id, status, b)
	}
	req := base + "/" + id + "/requests/" + sub.RequestID
	deadline := time.Now().Add(5 * time.Minute)
	for {
		status, b = exchange(t, v, "GET", req+"/status?logs=1", nil)
		var st struct{ Status string }
		if (status != 200 && status != 202) || json.Unmarshal(b, &st) != nil {
			t.Fatalf("%s: status %d %s", id, status, b)
		}
		if st.Status == "COMPLETED" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not done after 5 minutes: %s", id, b)
		}
		time.Sleep(200 * time.Millisecond)
	}
	status, body = exchange(t, v, "GET", req, nil)
	return status, body, req
}

func smallPNG(t *testing.T, w, h int) string {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			img.Set(x, y, color.NRGBA{uint8(x * 255 / w), uint8(y * 255 / h), 128, 255})
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return dataURI("image/png", buf.Bytes())
}

// The OpenAPI documents (all endpoints, and one per endpoint at fal's path)
// are valid OpenAPI 3.1; real requests of every endpoint and the server's
// real answers match them; llms.txt documents every field.
func TestOpenAPI(t *testing.T) {
	requireEspeakE2E(t)
	photo, err := os.ReadFile(testenv.Asset(t, "astronaut.png"))
	if err != nil {
		t.Fatal(err)
	}
	speech, err := os.ReadFile(testenv.Asset(t, "whisper/jfk.wav"))
	if err != nil {
		t.Fatal(err)
	}
	img, wav := dataURI("image/png", photo), dataURI("audio/wav", speech)
	small := smallPNG(t, 64, 64)
	t2i := func(extra map[string]any) map[string]any {
		in := map[string]any{"prompt": "a red cube", "num_inference_steps": 1, "image_size": map[string]int{"width": 64, "height": 64}, "seed": 1}
		for k, v := range extra {
			in[k] = v
		}
		return in
	}
	i2i := map[string]any{"prompt": "a red cube", "num_inference_steps": 2, "image_url": small, "seed": 1}
	// a real request per endpoint; diffusion runs on the tiny test exports
	inputs := map[string]map[string]any{
		"fal-ai/imageutils/rembg":            {"image_url": img, "crop_to_bbox": true},
		"fal-ai/birefnet":                    {"image_url": img, "output_format": "webp"},
		"fal-ai/birefnet/v2":                 {"image_url": img, "output_mask": true},
		"fal-ai/esrgan":                      {"image_url": small, "scale": 3},
		"fal-ai/whisper":                     {"audio_url": wav, "chunk_level": "word"},
		"fal-ai/wizper":                      {"audio_url": wav},
		"fal-ai/kokoro/american-english":     {"prompt": "Hello from a local server.", "speed": 1.2},
		"fal-ai/kokoro/british-english":      {"prompt": "Good morning.", "voice": "bm_lewis"},
		"fal-ai/kokoro/spanish":              {"prompt": "Buenos días."},
		"fal-ai/kokoro/french":               {"prompt": "Bonjour."},
		"fal-ai/kokoro/italian":              {"prompt": "Buongiorno."},
		"fal-ai/kokoro/brazilian-portuguese": {"prompt": "Bom dia."},
		"fal-ai/kokoro/hindi":                {"prompt": "नमस्ते"},
		"fal-ai/kokoro/japanese":             {"prompt": "こんにちは"},
		"fal-ai/kokoro/mandarin-chinese":     {"prompt": "你好"},
		"fal-ai/flux/dev":                    t2i(nil),
		"fal-ai/flux/schnell":                t2i(map[string]any{"output_format": "png"}),
		"fal-ai/flux/dev/image-to-image":     i2i,
		"fal-ai/fast-sdxl":                   t2i(map[string]any{"format": "png", "negative_prompt": "blue"}),
		"fal-ai/fast-sdxl/image-to-image":    i2i,
		"fal-ai/fast-sdxl/inpainting":        map[string]any{"prompt": "a red cube", "num_inference_steps": 2, "image_url": small, "mask_url": small},
		"fal-ai/stable-diffusion-v15":        t2i(nil),
		"fal-ai/fast-turbo-diffusion":        t2i(map[string]any{"model_name": "stabilityai/sd-turbo"}),
	}

	// the image and speech models of the default store; the diffusion
	// test exports in a store of their own
	s := startServer(t)
	diffDir := t.TempDir() // a store of its own: not the installed one's
	for _, m := range []struct{ name, dir string }{
		{"flux-dev", "flux-dev-tiny"}, {"flux-schnell", "flux-schnell-tiny"}, {"sdxl", "sdxl-tiny"}, {"sd15", "sd15-tiny"},
	} {
		serves := map[string][]string{"flux-dev": {"flux/dev"}, "flux-schnell": {"flux/schnell"}, "sdxl": {"fast-sdxl"},
			"sd15": {"stable-diffusion-v15", "fast-turbo-diffusion:stabilityai/sd-turbo"}}[m.name]
		args := []string{"weights", "import", "-data-dir", diffDir, "-ort-library", testenv.ORTLibrary(t), "-pipeline", "diffusion",
			"-name", m.name, "-dir", pipelinetest.ExpandDir(t, "../../pipelines/diffusion/testdata/models/"+m.dir), "-check=false"}
		for _, sv := range serves {
			args = append(args, "-serves", sv)
		}
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb); code != 0 {
			t.Fatalf("import %s: %s", m.name, errb.String())
		}
	}
	diff := testenv.StartServerAt(t, diffDir, "")

	v, all := openapiDoc(t, s.base+"/openapi.json")
	paths, _ := all["paths"].(map[string]any)
	var ids []string
	if err := json.Unmarshal(getBody(t, s.base+"/healthz"), &struct {
		Endpoints *[]string `json:"endpoints"`
	}{&ids}); err != nil || len(ids) == 0 {
		t.Fatalf("no endpoints in /healthz: %v", err)
	}
	for id := range inputs {
		if !slices.Contains(ids, id) {
			t.Errorf("%s is not served", id)
		}
	}
	for _, id := range ids {
		in, ok := inputs[id]
		if !ok {
			t.Errorf("%s: no real request in this test: add one", id)
			continue
		}
		t.Run(strings.ReplaceAll(id, "/", "_"), func(t *testing.T) {
			if _, ok := paths["/"+id]; !ok {
				t.Fatalf("/openapi.json has no path for %s", id)
			}
			one, doc := openapiDoc(t, s.base+"/api/openapi/queue/openapi.json?endpoint_id="+url.QueryEscape(id))
			if p, _ := doc["paths"].(map[string]any); len(p) != 4 {
				t.Errorf("%s's own document has paths %v", id, p)
			}
			// llms.txt names every input field, the id, and the calls
			txt := string(getBody(t, s.base+"/models/"+id+"/llms.txt"))
			schemas := doc["components"].(map[string]any)["schemas"].(map[string]any)
			var input map[string]any
			for name, sc := range schemas {
				if strings.HasSuffix(name, "Input") {
					input = sc.(map[string]any)
				}
			}
			for name := range input["properties"].(map[string]any) {
				if !strings.Contains(txt, "`"+name+"`") {
					t.Errorf("llms.txt of %s lacks %s", id, name)
				}
			}
			for _, want := range []string{id, "fal.subscribe", "fal_client.subscribe", "falocal run " + id} {
				if !strings.Contains(txt, want) {
					t.Errorf("llms.txt of %s lacks %q", id, want)
				}
			}
			vAll := v
			base := s.base
			if strings.Contains(fmt.Sprint(in["prompt"]), "red cube") {
				base = diff.Base
				one, _ = openapiDoc(t, base+"/api/openapi/queue/openapi.json?endpoint_id="+url.QueryEscape(id))
				vAll, _ = openapiDoc(t, base+"/openapi.json")
			}
			status, b, result := runThroughQueue(t, one, base, id, in)
			// espeak-ng reads only part of the Chinese script, depending on
			// its version (as the Kokoro tests allow): its 422 is a real
			// answer of the endpoint too
			if status != 200 && !(id == "fal-ai/kokoro/mandarin-chinese" && status == 422 && strings.Contains(string(b), "espeak-ng")) {
				t.Fatalf("%s: result %d %s", id, status, b)
			}
			// the same answer matches the document of every endpoint
			exchange(t, vAll, "GET", result, nil)
		})
	}
	// llms.txt's shell and curl calls run as written, with a local photo
	t.Run("llms.txt shell", func(t *testing.T) {
		dir := t.TempDir()
		photo, err := os.ReadFile(testenv.Asset(t, "rocket.jpg"))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "photo.jpg"), photo, 0o644); err != nil {
			t.Fatal(err)
		}
		txt := string(getBody(t, s.base+"/models/fal-ai/imageutils/rembg/llms.txt"))
		var blocks []string
		for _, part := range strings.Split(txt, "```sh\n")[1:] {
			block, _, _ := strings.Cut(part, "```")
			if strings.Contains(block, "falocal run") || strings.Contains(block, "curl") {
				blocks = append(blocks, block)
			}
		}
		if len(blocks) != 2 {
			t.Fatalf("want the falocal run and the curl block, got %q", blocks)
		}
		bin, err := filepath.Abs(testenv.ServerBinary())
		if err != nil || testenv.ServerBinary() == "" {
			t.Fatalf("no server binary (FALOCAL_TEST_BIN): %v", err)
		}
		for _, block := range blocks {
			cmd := exec.Command("bash", "-e", "-o", "pipefail", "-c", block)
			cmd.Dir = dir
			cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(bin)+":"+os.Getenv("PATH"))
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%s: %v\n%s", block, err, out)
			}
			if !strings.Contains(string(out), `"image"`) || !strings.Contains(string(out), ".png") {
				t.Errorf("%s printed %.500s", block, out)
			}
		}
		if _, err := os.Stat(filepath.Join(dir, "out")); err != nil {
			t.Errorf("falocal run -o out/ wrote nothing: %v", err)
		}
	})

	// an input the schema refuses: the 422 matches the document too
	status, b, _ := runThroughQueue(t, v, s.base, "fal-ai/esrgan", map[string]any{"image_url": small, "scale": 9}, true)
	if status != 422 || !strings.Contains(string(b), "less_than_equal") {
		t.Errorf("scale 9: %d %s", status, b)
	}
	if r := statusCodeOf(t, s.base+"/api/openapi/queue/openapi.json?endpoint_id=fal-ai/nothing"); r != 404 {
		t.Errorf("unknown endpoint's document: %d", r)
	}
	if r := statusCodeOf(t, s.base+"/models/fal-ai/nothing/llms.txt"); r != 404 {
		t.Errorf("unknown endpoint's llms.txt: %d", r)
	}
}

func getBody(t *testing.T, u string) []byte {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", u, resp.StatusCode, b)
	}
	return b
}

func statusCodeOf(t *testing.T, u string) int {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
