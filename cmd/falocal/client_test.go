package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"image"
	"image/png"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/image/draw"

	"github.com/falocal/falocal/internal/testenv"
)

func TestClientRunArgs(t *testing.T) {
	dir := t.TempDir()
	photo := filepath.Join(dir, "photo.jpg")
	if err := os.WriteFile(photo, []byte("jpeg"), 0o644); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	getenv := func(k string) string { return env[k] }
	cases := []struct {
		name    string
		env     map[string]string
		args    []string
		want    *runArgs
		wantErr string // substring of the error; "" = no error
	}{
		{name: "strings, numbers, bools", args: []string{"fal-ai/esrgan", "model=RealESRGAN_x4_v3", "scale=2", "tile=0.5", "face=false", "zip=007", "n=-1e3"},
			want: &runArgs{endpoint: "fal-ai/esrgan", url: "http://127.0.0.1:8080", input: map[string]any{
				"model": "RealESRGAN_x4_v3", "scale": json.Number("2"), "tile": json.Number("0.5"), "face": false,
				"zip": "007", "n": json.Number("-1e3")}}},
		{name: "raw JSON", args: []string{"fal-ai/x", `tags:=["a", "b"]`, `opts:={"k": 1}`, `prompt:="42"`, "seed:=12345678901234567890", "v:=null"},
			want: &runArgs{endpoint: "fal-ai/x", url: "http://127.0.0.1:8080", input: map[string]any{
				"tags": []any{"a", "b"}, "opts": map[string]any{"k": json.Number("1")}, "prompt": "42",
				"seed": json.Number("12345678901234567890"), "v": nil}}},
		{name: "a value with = and spaces", args: []string{"fal-ai/x", "prompt=a=b c", "empty="},
			want: &runArgs{endpoint: "fal-ai/x", url: "http://127.0.0.1:8080", input: map[string]any{"prompt": "a=b c", "empty": ""}}},
		{name: "file upload", args: []string{"fal-ai/imageutils/rembg", "image_url=@" + photo},
			want: &runArgs{endpoint: "fal-ai/imageutils/rembg", url: "http://127.0.0.1:8080", input: map[string]any{},
				uploads: map[string]string{"image_url": photo}}},
		{name: "flags anywhere", args: []string{"-o", "out", "fal-ai/x", "a=1", "--url", "http://h:9/", "--key=k:s", "b=x"},
			want: &runArgs{endpoint: "fal-ai/x", url: "http://h:9", key: "k:s", outDir: "out", input: map[string]any{"a": json.Number("1"), "b": "x"}}},
		{name: "after -- nothing is a flag", args: []string{"fal-ai/x", "--", "-o=x", "--url=y"},
			want: &runArgs{endpoint: "fal-ai/x", url: "http://127.0.0.1:8080", input: map[string]any{"-o": "x", "--url": "y"}}},
		{name: "environment", env: map[string]string{"FALOCAL_URL": "https://gpu.lan:8443", "FAL_KEY": "id:secret"}, args: []string{"/fal-ai/x/"},
			want: &runArgs{endpoint: "fal-ai/x", url: "https://gpu.lan:8443", key: "id:secret", input: map[string]any{}}},
		{name: "flags win over the environment", env: map[string]string{"FALOCAL_URL": "https://gpu.lan:8443", "FAL_KEY": "id:secret"},
			args: []string{"fal-ai/x", "--url", "http://127.0.0.1:1", "--key", "other:key"},
			want: &runArgs{endpoint: "fal-ai/x", url: "http://127.0.0.1:1", key: "other:key", input: map[string]any{}}},
		{name: "no endpoint", args: nil, wantErr: "missing the endpoint id"},
		{name: "input instead of endpoint", args: []string{"image_url=@" + photo}, wantErr: "must be an endpoint id"},
		{name: "endpoint without owner", args: []string{"rembg"}, wantErr: "must be an endpoint id"},
		{name: "not key=value", args: []string{"fal-ai/x", "scale"}, wantErr: "is not key=value"},
		{name: "empty key", args: []string{"fal-ai/x", "=3"}, wantErr: "has no key"},
		{name: "bad JSON", args: []string{"fal-ai/x", "tags:=[1,"}, wantErr: "is not JSON"},
		{name: "two JSON values", args: []string{"fal-ai/x", "n:=1 2"}, wantErr: "more than one JSON value"},
		{name: "bare string as JSON", args: []string{"fal-ai/x", "prompt:=hello"}, wantErr: "is not JSON"},
		{name: "key twice", args: []string{"fal-ai/x", "scale=2", "scale:=3"}, wantErr: `"scale" is given twice`},
		{name: "upload twice", args: []string{"fal-ai/x", "image_url=@" + photo, "image_url=x"}, wantErr: `"image_url" is given twice`},
		{name: "missing file", args: []string{"fal-ai/x", "image_url=@" + filepath.Join(dir, "nope.jpg")}, wantErr: "no such file"},
		{name: "directory as file", args: []string{"fal-ai/x", "image_url=@" + dir}, wantErr: "not a regular file"},
		{name: "no file after @", args: []string{"fal-ai/x", "image_url=@"}, wantErr: "no file name"},
		{name: "bad url", args: []string{"fal-ai/x", "--url", "127.0.0.1:8080"}, wantErr: "is not an http:// or https:// URL"},
		{name: "unknown flag", args: []string{"fal-ai/x", "--sync"}, wantErr: "flag provided but not defined: -sync"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			env = c.env
			got, err := parseRunArgs(c.args, getenv)
			if c.wantErr != "" {
				var ue *usageError
				if err == nil || !strings.Contains(err.Error(), c.wantErr) || !errors.As(err, &ue) {
					t.Fatalf("got %+v, %v; want a usage error containing %q", got, err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.want.uploads == nil {
				c.want.uploads = map[string]string{}
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("got  %+v\nwant %+v", got, c.want)
			}
		})
	}
	if _, err := parseRunArgs([]string{"-h"}, getenv); err != flag.ErrHelp {
		t.Errorf("-h: %v, want flag.ErrHelp", err)
	}
}

// TestClientRunReplies: fal's error replies map to the documented exit codes
// and messages.
func TestClientRunReplies(t *testing.T) {
	cases := []struct {
		status int
		body   string
		code   int
		want   []string
	}{
		{422, `{"detail":[{"loc":["body","scale"],"msg":"Input should be less than or equal to 8","type":"less_than_equal"},{"loc":["body"],"msg":"bad","type":"x"}]}`,
			exitRejected, []string{"input was rejected (422)", "\n  scale: Input should be less than or equal to 8 (less_than_equal)", "\n  body: bad (x)"}},
		{422, `{"detail":"image_url: not an image"}`, exitRejected, []string{"rejected (422): image_url: not an image"}},
		{401, `{"detail":"Missing credentials"}`, exitUnreachable, []string{"401 Unauthorized: Missing credentials", "--key or $FAL_KEY"}},
		{403, `{"detail":"Invalid credentials"}`, exitUnreachable, []string{"403 Forbidden: Invalid credentials"}},
		{503, `{"detail":"model 'x' is not installed","error_type":"runner_scheduling_failure"}`, exitFailed,
			[]string{"503 Service Unavailable: model 'x' is not installed (runner_scheduling_failure)"}},
		{499, `{"detail":"Request cancelled by the client.","error_type":"client_cancelled"}`, exitFailed, []string{"cancelled by the client. (client_cancelled)"}},
		{502, `<html>bad gateway</html>`, exitFailed, []string{"502 Bad Gateway: <html>bad gateway</html>"}},
	}
	for _, c := range cases {
		f := replyFailure("step", c.status, []byte(c.body))
		if f.code != c.code {
			t.Errorf("%d %s: exit %d, want %d", c.status, c.body, f.code, c.code)
		}
		for _, w := range c.want {
			if !strings.Contains(f.msg, w) {
				t.Errorf("%d %s: message %q lacks %q", c.status, c.body, f.msg, w)
			}
		}
	}
}

func TestClientRunFindFiles(t *testing.T) {
	var result any
	dec := json.NewDecoder(strings.NewReader(`{"images":[{"url":"http://h/cdn/files/1/a.png","file_name":"a.png"},
		{"url":"data:text/plain;base64,aGk=","file_name":"../../etc/passwd"}],
		"mask_image":{"url":"https://h/f/x/m.webp"},"seed":3,"text":"url","nested":{"url":5}}`))
	dec.UseNumber()
	if err := dec.Decode(&result); err != nil {
		t.Fatal(err)
	}
	var got []outputFile
	findFiles(result, &got)
	want := []outputFile{{"http://h/cdn/files/1/a.png", "a.png"}, {"data:text/plain;base64,aGk=", "../../etc/passwd"}, {"https://h/f/x/m.webp", ""}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	for in, out := range map[string]string{"a.png": "a.png", "../../etc/passwd": "passwd", "..": "", "": "", "/": "", ".hidden": "", `..\x.png`: "x.png"} {
		if s := safeName(in); s != out {
			t.Errorf("safeName(%q) = %q, want %q", in, s, out)
		}
	}
}

// cliResult is one 'falocal run' invocation.
type cliResult struct {
	code           int
	stdout, stderr string
}

// runCLI runs the real binary's 'falocal run' with args in dir, against
// base through $FALOCAL_URL (not inheriting the caller's $FAL_KEY).
func runCLI(t *testing.T, dir, base string, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, testenv.Binary(t), append([]string{"run"}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(cliEnv(), "FALOCAL_URL="+base)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("falocal run %v: %v", args, err)
	}
	return cliResult{cmd.ProcessState.ExitCode(), out.String(), errb.String()}
}

// cliEnv is the environment without the variables 'falocal run' reads.
func cliEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "FALOCAL_URL=") && !strings.HasPrefix(kv, "FAL_KEY=") {
			env = append(env, kv)
		}
	}
	return env
}

// savedPNG decodes the PNG that 'falocal run -o' saved for the result's
// image and checks it against what the result says.
func savedPNG(t *testing.T, dir string, r cliResult) image.Image {
	t.Helper()
	var out struct{ Image imageOut }
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("stdout is not the result JSON: %v\n%s", err, r.stdout)
	}
	p := filepath.Join(dir, out.Image.FileName)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("output file: %v (stderr: %s)", err, r.stderr)
	}
	if len(b) != out.Image.FileSize || !strings.Contains(r.stderr, "saved "+p) {
		t.Errorf("%s: %d bytes, result says %d; stderr %s", p, len(b), out.Image.FileSize, r.stderr)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("%s is not a PNG: %v", p, err)
	}
	if bb := img.Bounds(); bb.Dx() != out.Image.Width || bb.Dy() != out.Image.Height {
		t.Errorf("%s is %v, result says %dx%d", p, bb, out.Image.Width, out.Image.Height)
	}
	return img
}

// TestClientRunE2E runs 'falocal run' against the real server on real
// photographs: background removal and an upscale through uploaded files,
// then each documented exit code.
func TestClientRunE2E(t *testing.T) {
	s := startServer(t)
	dir := t.TempDir()
	astronaut := testenv.Asset(t, "astronaut.png")

	// A 96×64 crop of chelsea.png keeps the upscale quick on a CPU.
	f, err := os.Open(testenv.Asset(t, "chelsea.png"))
	if err != nil {
		t.Fatal(err)
	}
	chelsea, err := png.Decode(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	crop := image.NewNRGBA(image.Rect(0, 0, 96, 64))
	draw.Draw(crop, crop.Bounds(), chelsea, image.Pt(120, 70), draw.Src)
	var buf bytes.Buffer
	png.Encode(&buf, crop)
	cropFile := filepath.Join(dir, "crop.png")
	notImage := filepath.Join(dir, "notes.txt")
	for p, b := range map[string][]byte{cropFile: buf.Bytes(), notImage: []byte("not a picture")} {
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("rembg", func(t *testing.T) {
		out := filepath.Join(dir, "rembg-out")
		r := runCLI(t, dir, s.base, "fal-ai/imageutils/rembg", "image_url=@"+astronaut, "-o", out)
		if r.code != exitOK {
			t.Fatalf("exit %d\n%s", r.code, r.stderr)
		}
		// The server's logs reach stderr.
		if !strings.Contains(r.stderr, "[INFO] ") || !strings.Contains(r.stderr, "request ") {
			t.Errorf("stderr has no logs:\n%s", r.stderr)
		}
		checkAstronaut(t, savedPNG(t, out, r))
	})

	t.Run("data URIs of sync_mode, two outputs", func(t *testing.T) {
		out := filepath.Join(dir, "sync-out")
		r := runCLI(t, dir, s.base, "fal-ai/birefnet/v2", "image_url=@"+astronaut, "sync_mode=true", "output_mask=true", "-o", out)
		if r.code != exitOK {
			t.Fatalf("exit %d\n%s", r.code, r.stderr)
		}
		if !strings.Contains(r.stdout, `"url": "data:image/png;base64,`) {
			t.Errorf("result without data URIs: %.300s", r.stdout)
		}
		checkAstronaut(t, savedPNG(t, out, r))
		var res struct {
			Mask imageOut `json:"mask_image"`
		}
		json.Unmarshal([]byte(r.stdout), &res)
		b, err := os.ReadFile(filepath.Join(out, res.Mask.FileName))
		if err != nil {
			t.Fatal(err)
		}
		if m, err := png.DecodeConfig(bytes.NewReader(b)); err != nil || len(b) != res.Mask.FileSize || m.Width != 512 || m.Height != 512 {
			t.Errorf("mask %s: %d bytes (result says %d), %+v, %v", res.Mask.FileName, len(b), res.Mask.FileSize, m, err)
		}
	})

	t.Run("esrgan scale 3", func(t *testing.T) {
		out := filepath.Join(dir, "esrgan-out")
		r := runCLI(t, dir, "http://127.0.0.1:1", "fal-ai/esrgan", "image_url=@crop.png", "model=RealESRGAN_x4_v3", "scale=3", "-o", out, "--url", s.base)
		if r.code != exitOK {
			t.Fatalf("exit %d\n%s", r.code, r.stderr)
		}
		img := savedPNG(t, out, r)
		if b := img.Bounds(); b.Dx() != 288 || b.Dy() != 192 {
			t.Fatalf("upscaled to %v, want 288x192", b)
		}
		ref := image.NewNRGBA(img.Bounds())
		draw.CatmullRom.Scale(ref, ref.Bounds(), crop, crop.Bounds(), draw.Src, nil)
		if p := psnr(img, ref); p <= 25 {
			t.Errorf("PSNR against a bicubic upscale %.1f dB, want > 25", p)
		}
	})

	unreachable := "http://" + testenv.FreeAddr(t)
	for _, c := range []struct {
		name string
		base string
		args []string
		code int
		want []string // substrings of stderr
	}{
		{"422 at submission", s.base, []string{"fal-ai/esrgan", "image_url=@crop.png", "scale=9"}, exitRejected,
			[]string{"input was rejected (422)", "\n  scale: "}},
		{"422 from the run", s.base, []string{"fal-ai/imageutils/rembg", "image_url=@notes.txt"}, exitRejected,
			[]string{"input was rejected (422)", "\n  image_url: "}},
		{"string for a number", s.base, []string{"fal-ai/esrgan", "image_url=@crop.png", `scale:="2"`}, exitRejected,
			[]string{"\n  scale: "}},
		{"failed on the server", s.base, []string{"fal-ai/esrgan", "image_url=@crop.png", "model=RealESRGAN_x2plus"}, exitFailed,
			[]string{"the request failed: 503", "model 'RealESRGAN_x2plus' is not installed on this server"}},
		{"unknown endpoint", s.base, []string{"fal-ai/no-such-model", "prompt=x"}, exitFailed, []string{"404", "not served"}},
		{"unreachable", unreachable, []string{"fal-ai/imageutils/rembg", "image_url=@crop.png"}, exitUnreachable,
			[]string{"cannot reach the server at " + unreachable, "connection refused"}},
		{"usage", s.base, []string{"fal-ai/imageutils/rembg", "image_url"}, exitUsage, []string{"is not key=value"}},
		{"missing file", s.base, []string{"fal-ai/imageutils/rembg", "image_url=@photo.jpg"}, exitUsage, []string{"photo.jpg: no such file"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := runCLI(t, dir, c.base, c.args...)
			if r.code != c.code || r.stdout != "" {
				t.Errorf("exit %d, stdout %q; want exit %d and nothing on stdout", r.code, r.stdout, c.code)
			}
			for _, w := range c.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, r.stderr)
				}
			}
		})
	}

	t.Run("help", func(t *testing.T) {
		r := runCLI(t, dir, s.base, "-h")
		if r.code != exitOK || !strings.Contains(r.stdout, "Exit codes:") {
			t.Errorf("exit %d, stdout %s", r.code, r.stdout)
		}
	})

	t.Run("ctrl-c cancels on the server", func(t *testing.T) {
		// The whole photo at ×4 with the default model runs for seconds:
		// long enough to interrupt.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, testenv.Binary(t), "run", "fal-ai/esrgan", "image_url=@"+testenv.Asset(t, "chelsea.png"), "scale:=4")
		cmd.Env = append(cliEnv(), "FALOCAL_URL="+s.base)
		stderr, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var log strings.Builder
		var id string
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			log.WriteString(line + "\n")
			if rest, ok := strings.CutPrefix(line, "falocal run: request "); ok {
				id = rest
			}
			if strings.HasPrefix(line, "[INFO] decoded") {
				break // running now
			}
		}
		if id == "" {
			cmd.Process.Kill()
			t.Fatalf("no request id before the run started:\n%s", log.String())
		}
		cmd.Process.Signal(syscall.SIGINT)
		for sc.Scan() {
			log.WriteString(sc.Text() + "\n")
		}
		cmd.Wait()
		if code := cmd.ProcessState.ExitCode(); code != exitInterrupted || !strings.Contains(log.String(), "request "+id+" cancelled") {
			t.Fatalf("exit %d, want %d, and the cancel reported:\n%s", code, exitInterrupted, log.String())
		}
		resp, err := http.Get(s.base + "/fal-ai/esrgan/requests/" + id + "/status")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var st struct {
			Status    string `json:"status"`
			ErrorType string `json:"error_type"`
		}
		json.NewDecoder(resp.Body).Decode(&st)
		// The worker stops at its next cancellation point; wait for it.
		for deadline := time.Now().Add(30 * time.Second); st.Status != "COMPLETED" && time.Now().Before(deadline); {
			time.Sleep(200 * time.Millisecond)
			resp, err := http.Get(s.base + "/fal-ai/esrgan/requests/" + id + "/status")
			if err != nil {
				t.Fatal(err)
			}
			json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
		}
		if st.Status != "COMPLETED" || st.ErrorType != "client_cancelled" {
			t.Errorf("request %s on the server: %+v, want COMPLETED with client_cancelled", id, st)
		}
	})
}

// TestClientRunAuth: a server with keys refuses a missing or wrong key with
// exit 4 and accepts --key and $FAL_KEY.
func TestClientRunAuth(t *testing.T) {
	s := startServer(t, "--keys", "cli:secret")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("not a picture"), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"fal-ai/imageutils/rembg", "image_url=@notes.txt"}
	for _, c := range []struct {
		name  string
		extra []string
		code  int
		want  string
	}{
		{"no key", nil, exitUnreachable, "401 Unauthorized: Missing credentials"},
		{"wrong key", []string{"--key", "cli:wrong"}, exitUnreachable, "403 Forbidden: Invalid credentials"},
		// Accepted: the upload and submission pass, and the run rejects the text file.
		{"--key", []string{"--key", "cli:secret"}, exitRejected, "\n  image_url: "},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := runCLI(t, dir, s.base, append(args, c.extra...)...)
			if r.code != c.code || !strings.Contains(r.stderr, c.want) {
				t.Errorf("exit %d, want %d with %q:\n%s", r.code, c.code, c.want, r.stderr)
			}
		})
	}
	t.Run("$FAL_KEY", func(t *testing.T) {
		cmd := exec.Command(testenv.Binary(t), append([]string{"run"}, args...)...)
		cmd.Dir = dir
		cmd.Env = append(cliEnv(), "FALOCAL_URL="+s.base, "FAL_KEY=cli:secret")
		b, _ := cmd.CombinedOutput()
		if code := cmd.ProcessState.ExitCode(); code != exitRejected {
			t.Errorf("exit %d, want %d:\n%s", code, exitRejected, b)
		}
	})
}

// TestClientRunServerRestart: the server stops (draining the running
// request) and starts again on the same address while 'falocal run'
// follows the request; the client gets its stream back, prints each log
// line once and saves the result.
func TestClientRunServerRestart(t *testing.T) {
	addr, data := testenv.FreeAddr(t), testenv.NewDataDir(t)
	s1 := testenv.StartServerAt(t, data, addr)
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, testenv.Binary(t), "run", "fal-ai/imageutils/rembg", "image_url=@"+testenv.Asset(t, "astronaut.png"), "-o", out)
	cmd.Env = append(cliEnv(), "FALOCAL_URL="+s1.Base)
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		log.WriteString(sc.Text() + "\n")
		if sc.Text() == "[INFO] request started" {
			break
		}
	}
	if code := s1.Stop(t, syscall.SIGTERM, time.Minute); code != 0 {
		t.Fatalf("server exit %d after SIGTERM", code)
	}
	testenv.StartServerAt(t, data, addr)
	for sc.Scan() {
		log.WriteString(sc.Text() + "\n")
	}
	cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); code != exitOK {
		t.Fatalf("exit %d across the restart:\n%s", code, log.String())
	}
	for _, l := range []string{"[INFO] request started\n", "[INFO] request completed in "} {
		if n := strings.Count(log.String(), l); n != 1 {
			t.Errorf("%q printed %d times, want once:\n%s", l, n, log.String())
		}
	}
	checkAstronaut(t, savedPNG(t, out, cliResult{exitOK, stdout.String(), log.String()}))
}

// fakeQueue is a queue server for one request, r1 of fal-ai/x: submit
// (if not nil) runs before the submission's answer, stream serves the
// status stream, and each cancel sends the id on cancelled.
func fakeQueue(t *testing.T, submit, stream http.HandlerFunc, cancelled chan<- string) *httptest.Server {
	t.Helper()
	var srv *httptest.Server
	mux := http.NewServeMux()
	mux.HandleFunc("POST /fal-ai/x", func(w http.ResponseWriter, r *http.Request) {
		if submit != nil {
			submit(w, r)
		}
		base := srv.URL + "/fal-ai/x/requests/r1"
		json.NewEncoder(w).Encode(submitReply{RequestID: "r1", StatusURL: base + "/status", ResponseURL: base, CancelURL: base + "/cancel"})
	})
	mux.HandleFunc("GET /fal-ai/x/requests/r1/status/stream", stream)
	mux.HandleFunc("GET /fal-ai/x/requests/r1", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"ok":true}`))
	})
	mux.HandleFunc("PUT /fal-ai/x/requests/r1/cancel", func(w http.ResponseWriter, r *http.Request) {
		cancelled <- "r1"
		w.Write([]byte(`{"status":"CANCELLATION_REQUESTED"}`))
	})
	srv = httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// Ctrl-C while the submission is in flight: the server may have queued
// the request, so the client waits for the answer and cancels it.
func TestClientRunInterruptedSubmission(t *testing.T) {
	ctx, interrupt := context.WithCancel(context.Background())
	defer interrupt()
	cancelled := make(chan string, 1)
	srv := fakeQueue(t, func(w http.ResponseWriter, r *http.Request) {
		interrupt()
		// A client that gave up on the submission closes the connection.
		select {
		case <-r.Context().Done():
		case <-time.After(100 * time.Millisecond):
		}
	}, func(w http.ResponseWriter, r *http.Request) {
		t.Error("the stream followed after Ctrl-C")
	}, cancelled)
	var stdout, stderr bytes.Buffer
	code := clientRunCmd(ctx, []string{"fal-ai/x", "--url", srv.URL, "--key", ""}, &stdout, &stderr)
	if code != exitInterrupted || len(cancelled) != 1 || !strings.Contains(stderr.String(), "request r1 cancelled") {
		t.Errorf("exit %d, %d cancel(s); stderr:\n%s", code, len(cancelled), stderr.String())
	}
}

// A status stream that keeps delivering events and ending is followed
// however long the request takes, however many times it ends; each log
// line is printed once.
func TestClientRunStreamEndsOften(t *testing.T) {
	var streams atomic.Int32
	srv := fakeQueue(t, nil, func(w http.ResponseWriter, r *http.Request) {
		n := int(streams.Add(1))
		status := "IN_PROGRESS"
		if n == 3 {
			status = "COMPLETED"
		}
		var logs []string
		for i := 1; i <= n; i++ {
			logs = append(logs, fmt.Sprintf(`{"message":"step %d","level":"INFO"}`, i))
		}
		fmt.Fprintf(w, "data: {\"status\":%q,\"logs\":[%s]}\n\n", status, strings.Join(logs, ","))
	}, nil)
	a, err := parseRunArgs([]string{"fal-ai/x", "--url", srv.URL, "--key", ""}, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	// No grace after a loss: only the events since the last one keep it going.
	c := &client{args: a, hc: &http.Client{}, p: newRunProgress(&stderr), reconnectFor: 0, submitWait: submitWait}
	if code := c.run(context.Background(), &stdout); code != exitOK || stdout.String() != "{\n  \"ok\": true\n}\n" {
		t.Fatalf("exit %d, stdout %q; stderr:\n%s", code, stdout.String(), stderr.String())
	}
	for i := 1; i <= 3; i++ {
		if n := strings.Count(stderr.String(), fmt.Sprintf("[INFO] step %d\n", i)); n != 1 {
			t.Errorf("step %d printed %d times:\n%s", i, n, stderr.String())
		}
	}
}

// On a terminal the status line is cut to its width, so that it can be
// redrawn in place, log lines go above it whole, and close clears it.
func TestClientRunProgressTerminal(t *testing.T) {
	var out bytes.Buffer
	p := &runProgress{w: &out, start: time.Now(), bar: &progress{w: &out, tty: true, now: time.Now, redraw: time.Hour, width: 30}}
	p.status("uploading a-photo-with-a-very-long-name.jpg (1.5 MiB)")
	p.line("[INFO] a log line longer than the terminal stays whole")
	p.close()
	p.status("after close")
	got := out.String()
	for _, l := range strings.Split(got, "\r\x1b[K") {
		if !strings.HasSuffix(l, "\n") && len([]rune(l)) > 29 {
			t.Errorf("%d columns: %q", len([]rune(l)), l)
		}
	}
	if !strings.Contains(got, "\r\x1b[K[INFO] a log line longer than the terminal stays whole\n") ||
		!strings.HasSuffix(got, "\r\x1b[K") || strings.Contains(got, "after close") {
		t.Errorf("output %q", got)
	}
}

// A submission left unanswered is a server that cannot be reached (exit
// 4), not an interruption.
func TestClientRunSubmissionUnanswered(t *testing.T) {
	srv := fakeQueue(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body) // the server notices a closed connection only after the body
		<-r.Context().Done()        // until the client gives up
	}, http.NotFound, nil)
	a, err := parseRunArgs([]string{"fal-ai/x", "--url", srv.URL, "--key", ""}, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	c := &client{args: a, hc: &http.Client{}, p: newRunProgress(&stderr), submitWait: 50 * time.Millisecond}
	if code := c.run(context.Background(), &stdout); code != exitUnreachable || !strings.Contains(stderr.String(), "cannot reach the server") {
		t.Errorf("exit %d; stderr:\n%s", code, stderr.String())
	}
}
