package main

// The playground in a real headless Chromium, driven over the DevTools
// protocol, against the real server and models: the home page, a
// background removal of an uploaded photograph, an upscale at a scale
// other than the default, the key prompt of a server with -keys, labels
// and keyboard reach of every form control, and no console errors.
// FALOCAL_SCREENSHOTS=dir also saves screenshots there (make screenshots).

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"golang.org/x/image/draw"

	"github.com/falocal/falocal/internal/testenv"
)

// chromium finds the browser; under FALOCAL_REQUIRE_ASSETS=1 a missing one
// fails the test instead of skipping it.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{os.Getenv("FALOCAL_TEST_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"} {
		if name == "" {
			continue
		}
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	msg := "no Chromium (install the Debian package chromium, or set FALOCAL_TEST_CHROMIUM)"
	if os.Getenv("FALOCAL_REQUIRE_ASSETS") == "1" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// browser is one headless Chromium tab that records console errors,
// uncaught exceptions and failed loads.
type browser struct {
	ctx    context.Context
	mu     sync.Mutex
	errors []string
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	bin := chromium(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(bin),
		chromedp.NoSandbox, // CI runs as root, where Chromium's sandbox cannot start
		chromedp.WindowSize(1200, 860))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	ctx, cancelTime := context.WithTimeout(ctx, 6*time.Minute)
	t.Cleanup(func() { cancelTime(); cancelTab(); cancelAlloc() })
	b := &browser{ctx: ctx}
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start Chromium: %v", err)
	}
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.IsException() {
				b.mu.Lock()
				b.errors = append(b.errors, fmt.Sprintf("%s (%s:%d)", m, m.URL, m.Line+1))
				b.mu.Unlock()
			}
		}
	}()
	return b
}

func (b *browser) do(t *testing.T, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	// A step that hangs (an element that never shows) fails alone, in time.
	ctx, cancel := context.WithTimeout(b.ctx, time.Minute)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatalf("%s: %v\nconsole errors: %v", what, err, b.consoleErrors(nil))
	}
}

// js evaluates a JavaScript expression in the page.
func js[T any](t *testing.T, b *browser, expr string) T {
	t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	return v
}

func (b *browser) text(t *testing.T, css string) string {
	t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Text(chromedp.CSS(css)))
	if err != nil {
		t.Fatalf("text of %s: %v", css, err)
	}
	return v
}

// consoleErrors are the errors seen so far, less those allowed says are
// expected.
func (b *browser) consoleErrors(allowed func(string) bool) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, e := range b.errors {
		if allowed == nil || !allowed(e) {
			out = append(out, e)
		}
	}
	return out
}

// waitJS polls a JavaScript expression until it is true.
func (b *browser) waitJS(t *testing.T, what, expr string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !js[bool](t, b, "!!("+expr+")") {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after %v: %s\nstatus: %s\nerrors: %s\nlogs: %s\nconsole: %v", what, timeout, expr,
				js[string](t, b, `(document.getElementById("run-status")||{}).textContent||""`),
				js[string](t, b, `[...document.querySelectorAll(".error")].map(e=>e.textContent).join("; ")`),
				js[string](t, b, `(document.getElementById("logs")||{}).textContent||""`), b.consoleErrors(nil))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// checkForm checks that every control of the page's forms has a label of
// its own and that Tab reaches each one, advanced fields (opened) included.
func (b *browser) checkForm(t *testing.T, where string) {
	t.Helper()
	unlabelled := js[[]string](t, b, `(() => {
		document.querySelectorAll("form details").forEach(d => d.open = true);
		return [...document.querySelectorAll("form input, form select, form textarea")]
			.filter(e => !e.labels || !e.labels.length || !e.labels[0].textContent.trim())
			.map(e => e.outerHTML);
	})()`)
	if len(unlabelled) > 0 {
		t.Errorf("%s: form controls without a label: %v", where, unlabelled)
	}
	controls := js[[]string](t, b, `[...document.querySelectorAll("form input, form select, form textarea, form button")]
		.filter(e => !e.disabled && e.offsetParent !== null).map(e => e.id || e.name || e.textContent)`)
	if len(controls) == 0 {
		t.Fatalf("%s: no form controls", where)
	}
	js[bool](t, b, `(document.activeElement && document.activeElement.blur(), true)`)
	reached := map[string]bool{}
	for range 2 * (len(controls) + 15) {
		b.do(t, where+": Tab", chromedp.KeyEvent("\t"))
		reached[js[string](t, b, `(e => e.id || e.name || e.textContent)(document.activeElement)`)] = true
	}
	for _, c := range controls {
		if !reached[c] {
			t.Errorf("%s: Tab never reaches form control %q", where, c)
		}
	}
}

func (b *browser) screenshot(t *testing.T, dir, name string) {
	t.Helper()
	if dir == "" {
		return
	}
	// JPEG at quality 60 keeps the three pictures near 300 KB together.
	buf, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(60))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), buf, 0o644); err != nil {
		t.Fatal(err)
	}
}

// openEndpoint opens an endpoint's page and waits until it shows (the
// page before stays until the next is ready).
func openEndpoint(base, id string) chromedp.Action[chromedp.Void] {
	return chromedp.Steps(chromedp.Navigate(base+"/#/"+id), chromedp.WaitVisible(chromedp.CSS(`h1[data-endpoint="`+id+`"]`)))
}

// runByKeyboard presses Run with the keyboard: focus, then Enter (a mouse
// click could miss while the chosen file's preview still moves the button).
var runByKeyboard = chromedp.Steps(chromedp.Focus(chromedp.CSS("#run")), chromedp.KeyEvent("\r"))

// resultImage waits for the result's output image and returns its natural size.
func (b *browser) resultImage(t *testing.T, what string, timeout time.Duration) (w, h int) {
	t.Helper()
	b.waitJS(t, what, `(() => { const i = document.querySelector("#result img.result-image"); return i && i.complete && i.naturalWidth > 0; })()`, timeout)
	return js[int](t, b, `document.querySelector("#result img.result-image").naturalWidth`),
		js[int](t, b, `document.querySelector("#result img.result-image").naturalHeight`)
}

// cropPNG writes a w×h crop of a test photograph to a file, for a quick
// upscale.
func cropPNG(t *testing.T, asset string, x, y, w, h int) string {
	t.Helper()
	f, err := os.Open(testenv.Asset(t, asset))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	crop := image.NewNRGBA(image.Rect(0, 0, w, h))
	draw.Draw(crop, crop.Bounds(), img, image.Pt(x, y), draw.Src)
	var buf bytes.Buffer
	if err := png.Encode(&buf, crop); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "crop.png")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPlaygroundBrowser(t *testing.T) {
	shots := os.Getenv("FALOCAL_SCREENSHOTS")
	if shots != "" {
		if err := os.MkdirAll(shots, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	s := startServer(t) // first: without the models it skips before a browser starts
	b := newBrowser(t)

	// Home: every served endpoint, its models, the runtime and the queue.
	b.do(t, "open home", chromedp.Navigate(s.base+"/"),
		chromedp.WaitVisible(chromedp.CSS(`#endpoints tr[data-endpoint="fal-ai/esrgan"]`)))
	rows := js[[]string](t, b, `[...document.querySelectorAll("#endpoints tbody tr")].map(r => r.dataset.endpoint + " | " + r.textContent)`)
	for _, id := range []string{"fal-ai/imageutils/rembg", "fal-ai/birefnet", "fal-ai/esrgan", "fal-ai/whisper", "fal-ai/flux/dev"} {
		found := false
		for _, r := range rows {
			if !strings.HasPrefix(r, id+" |") {
				continue
			}
			found = true
			if id == "fal-ai/esrgan" && !(strings.Contains(r, "realesrgan-x4plus") && strings.Contains(r, "ready")) {
				t.Errorf("esrgan row = %q, want its installed model and ready", r)
			}
			if strings.Contains(r, "ready") == strings.Contains(r, "no model") {
				t.Errorf("%s row = %q, want either ready or no model", id, r)
			}
		}
		if !found {
			t.Errorf("home page does not list %s: %v", id, rows)
		}
	}
	if rt := b.text(t, ".card"); !strings.Contains(rt, "ONNX Runtime\n1.") || !strings.Contains(rt, "Providers\ncpu") {
		t.Errorf("runtime card = %q, want the ONNX Runtime version and providers", rt)
	}
	if q := b.text(t, "#queue-state"); !strings.Contains(q, "Running") {
		t.Errorf("queue card = %q", q)
	}
	b.screenshot(t, shots, "playground-home.jpg")

	// Background removal of a photograph uploaded through the file input.
	b.do(t, "open rembg", openEndpoint(s.base, "fal-ai/imageutils/rembg"),
		chromedp.WaitVisible(chromedp.CSS(`#run-form input[type=file][data-field=image_url]`)))
	b.checkForm(t, "rembg form")
	b.do(t, "upload photo", chromedp.SetUploadFiles(chromedp.CSS(`#run-form input[type=file][data-field=image_url]`),
		[]string{testenv.Asset(t, "astronaut.png")}))
	b.do(t, "run rembg", runByKeyboard)
	if w, h := b.resultImage(t, "rembg result", 2*time.Minute); w != 512 || h != 512 {
		t.Errorf("rembg output is %d×%d, want the photograph's 512×512", w, h)
	}
	if logs := b.text(t, "#logs"); strings.TrimSpace(logs) == "" {
		t.Error("no logs shown for the rembg run")
	}
	// The photograph went through the storage upload: the request names its file URL.
	code := b.text(t, "#code")
	if !strings.Contains(code, s.base+"/fal/proxy") || !strings.Contains(code, `"image_url": "`+s.base+"/cdn/files/") {
		t.Errorf("client code does not show the uploaded file's URL and this server:\n%s", code)
	}
	if before := js[string](t, b, `(document.querySelector("#result img.before")||{}).src||""`); !strings.HasPrefix(before, s.base+"/cdn/files/") {
		t.Errorf("before/after view shows %q as the input, want the uploaded file", before)
	}
	b.screenshot(t, shots, "playground-result.jpg")

	// An upscale of a 96×64 crop at scale 3 (the default is 2).
	b.do(t, "open esrgan", openEndpoint(s.base, "fal-ai/esrgan"),
		chromedp.WaitVisible(chromedp.CSS(`#run-form [name=scale]`)))
	b.checkForm(t, "esrgan form")
	if m := b.text(t, "#endpoint-model"); !strings.Contains(m, "realesrgan-x4plus") {
		t.Errorf("esrgan page names its model as %q", m)
	}
	b.do(t, "fill esrgan",
		chromedp.SetUploadFiles(chromedp.CSS(`#run-form input[type=file][data-field=image_url]`), []string{cropPNG(t, "chelsea.png", 120, 70, 96, 64)}),
		chromedp.SetValue(chromedp.CSS(`#run-form [name=scale]`), "3"))
	b.screenshot(t, shots, "playground-form.jpg")
	b.do(t, "run esrgan", runByKeyboard)
	if w, h := b.resultImage(t, "esrgan result", 3*time.Minute); w != 288 || h != 192 {
		t.Errorf("upscale ×3 of 96×64 is %d×%d, want 288×192", w, h)
	}
	if code := b.text(t, "#code"); !strings.Contains(code, `"scale": 3`) {
		t.Errorf("client code does not carry scale 3:\n%s", code)
	}

	// Cancel: a long upscale (the whole photograph ×4) stopped while it runs.
	b.do(t, "long esrgan", openEndpoint(s.base, "fal-ai/birefnet"), openEndpoint(s.base, "fal-ai/esrgan"),
		chromedp.WaitNotPresent(chromedp.CSS("#result")),
		chromedp.WaitVisible(chromedp.CSS(`#run-form [name=scale]`)),
		chromedp.SetUploadFiles(chromedp.CSS(`#run-form input[type=file][data-field=image_url]`), []string{testenv.Asset(t, "chelsea.png")}),
		chromedp.SetValue(chromedp.CSS(`#run-form [name=scale]`), "4"),
		runByKeyboard)
	b.waitJS(t, "long esrgan running", `/^Running/.test((document.getElementById("run-status") || {}).textContent)`, time.Minute)
	b.do(t, "cancel", chromedp.Click(chromedp.CSS("#cancel")))
	b.waitJS(t, "cancelled", `document.getElementById("run-error")`, time.Minute)
	if e := b.text(t, "#run-error"); !strings.Contains(strings.ToLower(e), "cancel") {
		t.Errorf("cancelled run shows %q", e)
	}

	// Whisper at word level: the transcript's timestamps seek the player.
	b.do(t, "open whisper", openEndpoint(s.base, "fal-ai/whisper"),
		chromedp.WaitVisible(chromedp.CSS(`#run-form input[type=file][data-field=audio_url]`)))
	b.checkForm(t, "whisper form")
	b.do(t, "run whisper",
		chromedp.SetUploadFiles(chromedp.CSS(`#run-form input[type=file][data-field=audio_url]`), []string{testenv.Asset(t, "whisper/jfk.wav")}),
		chromedp.SetValue(chromedp.CSS(`#run-form [name=chunk_level]`), `"word"`),
		runByKeyboard)
	b.waitJS(t, "whisper transcript", `document.querySelectorAll("#transcript .chunk").length > 5 && document.getElementById("result-audio").readyState >= 1`, 2*time.Minute)
	if tr := strings.ToLower(b.text(t, "#transcript")); !strings.Contains(tr, "americans") || !strings.Contains(tr, "country") {
		t.Errorf("transcript = %q", tr)
	}
	b.do(t, "click a word", chromedp.Click(chromedp.CSS("#transcript .chunk:nth-of-type(6)")))
	start := js[float64](t, b, `Number(document.querySelector("#transcript .chunk:nth-of-type(6)").dataset.start)`)
	if at := js[float64](t, b, `document.getElementById("result-audio").currentTime`); start <= 0 || at < start-0.05 || at > start+1 {
		t.Errorf("clicking the word at %.2f s put the player at %.2f s", start, at)
	}

	// Kokoro: the speech plays in an audio player.
	b.do(t, "open kokoro", openEndpoint(s.base, "fal-ai/kokoro/american-english"),
		chromedp.WaitVisible(chromedp.CSS(`#run-form [name=prompt]`)))
	b.checkForm(t, "kokoro form")
	b.do(t, "run kokoro", chromedp.SetValue(chromedp.CSS(`#run-form [name=prompt]`), "Hello from the playground."),
		runByKeyboard)
	b.waitJS(t, "kokoro audio", `(a => a && a.readyState >= 1 && a.duration > 0.5)(document.getElementById("result-audio"))`, 2*time.Minute)

	// The history lists every run.
	b.do(t, "open history", chromedp.Navigate(s.base+"/#/history"), chromedp.WaitVisible(chromedp.CSS("#history")))
	if hist := b.text(t, "#history"); !strings.Contains(hist, "fal-ai/esrgan") || !strings.Contains(hist, "fal-ai/imageutils/rembg") ||
		!strings.Contains(hist, "fal-ai/whisper") || !strings.Contains(hist, "fal-ai/kokoro/american-english") {
		t.Errorf("history = %q, want every run", hist)
	}

	// The cancelled request's result answers 499, which the page reads for its error body.
	if errs := b.consoleErrors(func(e string) bool {
		return strings.Contains(e, "Failed to load resource") && strings.Contains(e, "status of 499")
	}); len(errs) > 0 {
		t.Errorf("console errors: %v", errs)
	}
}

// With -keys the page loads without a key, asks for one, refuses a wrong
// one, and runs requests once given the right one.
func TestPlaygroundBrowserKeys(t *testing.T) {
	s := startServer(t, "--keys", "pg:secret")
	b := newBrowser(t)
	b.do(t, "open home", chromedp.Navigate(s.base+"/"), chromedp.WaitVisible(chromedp.CSS("#keyform")))
	b.checkForm(t, "key form")
	b.do(t, "wrong key", chromedp.SendKeys(chromedp.CSS("#keyform input"), "pg:wrong"), chromedp.Click(chromedp.CSS("#keyform button[type=submit]")),
		chromedp.WaitVisible(chromedp.CSS("#keyform .error")))
	b.do(t, "right key", chromedp.SendKeys(chromedp.CSS("#keyform input"), "pg:secret"),
		chromedp.KeyEvent("\r"),
		chromedp.WaitVisible(chromedp.CSS(`#endpoints tr[data-endpoint="fal-ai/imageutils/rembg"]`)))
	if k := js[string](t, b, `sessionStorage.getItem("falocal_key")`); k != "pg:secret" {
		t.Errorf("sessionStorage key = %q", k)
	}
	b.do(t, "run rembg", openEndpoint(s.base, "fal-ai/imageutils/rembg"),
		chromedp.WaitVisible(chromedp.CSS(`#run-form input[type=file][data-field=image_url]`)),
		chromedp.SetUploadFiles(chromedp.CSS(`#run-form input[type=file][data-field=image_url]`), []string{cropPNG(t, "astronaut.png", 100, 40, 160, 160)}),
		runByKeyboard)
	if w, h := b.resultImage(t, "rembg result with a key", 2*time.Minute); w != 160 || h != 160 {
		t.Errorf("rembg output is %d×%d, want 160×160", w, h)
	}
	if code := b.text(t, "#code"); strings.Contains(code, "pg:secret") {
		t.Error("the client code shows the key")
	}
	// The 401 and 403 answers before the right key was given are expected.
	if errs := b.consoleErrors(func(e string) bool {
		return strings.Contains(e, "Failed to load resource") && (strings.Contains(e, "401") || strings.Contains(e, "403"))
	}); len(errs) > 0 {
		t.Errorf("console errors: %v", errs)
	}
}
