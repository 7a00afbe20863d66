package pipelines_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/falocal/falocal/pipelines"
)

type sample struct {
	Name   *string   `json:"name"`
	Flag   *bool     `json:"flag"`
	Count  *int      `json:"count"`
	Ratio  *float64  `json:"ratio"`
	Tags   *[]string `json:"tags"`
	Nested *struct {
		Inner *int `json:"inner"`
	} `json:"nested"`
}

func TestDecodeInput(t *testing.T) {
	cases := []struct {
		name string
		raw  string
		loc  []any // nil: success
		typ  string
		msg  string // substring
	}{
		{name: "ok", raw: `{"name": "a", "flag": true, "count": 3, "ratio": 0.5, "tags": ["x"]}`},
		{name: "empty object", raw: `{}`},
		{name: "surrounding space", raw: " \n\t{\"name\": \"a\"}\n "},
		{name: "unknown fields ignored", raw: `{"name": "a", "other": {"deep": [1, 2]}, "x": null}`},
		{name: "string as number", raw: `{"name": 5}`, loc: []any{"body", "name"}, typ: "string_type", msg: "Input should be a valid string"},
		{name: "string as bool", raw: `{"name": true}`, loc: []any{"body", "name"}, typ: "string_type"},
		{name: "bool as string", raw: `{"flag": "yes"}`, loc: []any{"body", "flag"}, typ: "bool_type", msg: "Input should be a valid boolean"},
		{name: "bool as number", raw: `{"flag": 1}`, loc: []any{"body", "flag"}, typ: "bool_type"},
		{name: "int as string", raw: `{"count": "3"}`, loc: []any{"body", "count"}, typ: "int_type", msg: "Input should be a valid integer"},
		{name: "int as float", raw: `{"count": 1.5}`, loc: []any{"body", "count"}, typ: "int_type"},
		{name: "float as string", raw: `{"ratio": "x"}`, loc: []any{"body", "ratio"}, typ: "float_type", msg: "Input should be a valid number"},
		{name: "list as string", raw: `{"tags": "x"}`, loc: []any{"body", "tags"}, typ: "list_type", msg: "Input should be a valid list"},
		{name: "object as string", raw: `{"nested": "x"}`, loc: []any{"body", "nested"}, typ: "model_type", msg: "Input should be a valid object"},
		{name: "nested field", raw: `{"nested": {"inner": "x"}}`, loc: []any{"body", "nested", "inner"}, typ: "int_type"},
		{name: "malformed", raw: `{"name": "a",`, loc: []any{"body"}, typ: "json_invalid", msg: "JSON decode error"},
		{name: "trailing garbage", raw: `{"name": "a"}}`, loc: []any{"body"}, typ: "json_invalid"},
		{name: "empty", raw: ``, loc: []any{"body"}, typ: "json_invalid"},
		{name: "whitespace only", raw: "  \n", loc: []any{"body"}, typ: "json_invalid"},
		{name: "not JSON", raw: `name=a`, loc: []any{"body"}, typ: "json_invalid"},
		{name: "array", raw: `[{"name": "a"}]`, loc: []any{"body"}, typ: "model_attributes_type", msg: "valid dictionary"},
		{name: "string", raw: `"a"`, loc: []any{"body"}, typ: "model_attributes_type"},
		{name: "number", raw: `5`, loc: []any{"body"}, typ: "model_attributes_type"},
		{name: "null", raw: `null`, loc: []any{"body"}, typ: "model_attributes_type"},
		{name: "broken array", raw: `[1,`, loc: []any{"body"}, typ: "json_invalid"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var dst sample
			err := pipelines.DecodeInput(json.RawMessage(c.raw), &dst)
			if c.loc == nil {
				if err != nil {
					t.Fatalf("DecodeInput: %v", err)
				}
				return
			}
			var ve *pipelines.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("err = %v (%T), want *ValidationError", err, err)
			}
			if len(ve.Errors) != 1 {
				t.Fatalf("errors %+v, want exactly one", ve.Errors)
			}
			f := ve.Errors[0]
			if fmt.Sprint(f.Loc) != fmt.Sprint(c.loc) || f.Type != c.typ || !strings.Contains(f.Msg, c.msg) {
				t.Fatalf("got {loc %v type %q msg %q}, want {loc %v type %q msg ~%q}", f.Loc, f.Type, f.Msg, c.loc, c.typ, c.msg)
			}
		})
	}

	// Absent fields stay nil; present zero values do not.
	var dst sample
	if err := pipelines.DecodeInput(json.RawMessage(`{"flag": false, "count": 0}`), &dst); err != nil {
		t.Fatal(err)
	}
	if dst.Name != nil || dst.Flag == nil || *dst.Flag || dst.Count == nil || *dst.Count != 0 {
		t.Fatalf("decoded %+v", dst)
	}
}

func TestLiteral(t *testing.T) {
	str := func(s string) *string { return &s }
	cases := []struct {
		name    string
		val     *string
		allowed []string
		want    string
		msg     string // "" = valid
	}{
		{"absent gives default", nil, []string{"a", "b"}, "def", ""},
		{"allowed", str("b"), []string{"a", "b"}, "b", ""},
		{"one allowed", str("x"), []string{"a"}, "def", "Input should be 'a'"},
		{"two allowed", str("x"), []string{"a", "b"}, "def", "Input should be 'a' or 'b'"},
		{"three allowed", str("x"), []string{"a", "b", "c"}, "def", "Input should be 'a', 'b' or 'c'"},
		{"case sensitive", str("A"), []string{"a"}, "def", "Input should be 'a'"},
		{"empty string", str(""), []string{"a"}, "def", "Input should be 'a'"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := &pipelines.ValidationError{}
			got := pipelines.Literal(v, "field", c.val, "def", c.allowed...)
			if got != c.want {
				t.Errorf("Literal = %q, want %q", got, c.want)
			}
			if c.msg == "" {
				if v.Err() != nil {
					t.Fatalf("unexpected error %v", v)
				}
				return
			}
			want := []pipelines.FieldError{{Loc: []any{"body", "field"}, Msg: c.msg, Type: "literal_error"}}
			if fmt.Sprint(v.Errors) != fmt.Sprint(want) {
				t.Fatalf("errors %+v, want %+v", v.Errors, want)
			}
		})
	}
}

func TestRequiredAndBool(t *testing.T) {
	str := func(s string) *string { return &s }
	v := &pipelines.ValidationError{}
	if got := pipelines.Required(v, "a", nil); got != "" {
		t.Errorf("Required(nil) = %q", got)
	}
	if got := pipelines.Required(v, "b", str("")); got != "" {
		t.Errorf("Required(\"\") = %q", got)
	}
	if got := pipelines.Required(v, "c", str("x")); got != "x" {
		t.Errorf("Required(x) = %q", got)
	}
	want := []pipelines.FieldError{
		{Loc: []any{"body", "a"}, Msg: "Field required", Type: "missing"},
		{Loc: []any{"body", "b"}, Msg: "value must not be empty", Type: "value_error"},
	}
	if fmt.Sprint(v.Errors) != fmt.Sprint(want) {
		t.Fatalf("errors %+v, want %+v", v.Errors, want)
	}
	tr, fa := true, false
	if !pipelines.Bool(nil, true) || pipelines.Bool(nil, false) || !pipelines.Bool(&tr, false) || pipelines.Bool(&fa, true) {
		t.Error("Bool")
	}
}

func TestValidationErrorShape(t *testing.T) {
	v := &pipelines.ValidationError{}
	if v.Err() != nil {
		t.Fatal("empty ValidationError is not nil")
	}
	v.Add("image_url", "missing", "Field required")
	v.Add("a.b", "int_type", "bad")
	v.Add("", "json_invalid", "JSON decode error")
	err := v.Err()
	if err == nil {
		t.Fatal("Err() = nil")
	}
	b, jerr := json.Marshal(map[string]any{"detail": v.Errors})
	if jerr != nil {
		t.Fatal(jerr)
	}
	want := `{"detail":[{"loc":["body","image_url"],"msg":"Field required","type":"missing"},` +
		`{"loc":["body","a","b"],"msg":"bad","type":"int_type"},` +
		`{"loc":["body"],"msg":"JSON decode error","type":"json_invalid"}]}`
	if string(b) != want {
		t.Fatalf("JSON\n%s\nwant\n%s", b, want)
	}
	if s := err.Error(); !strings.HasPrefix(s, "invalid input: ") || !strings.Contains(s, "image_url") || !strings.Contains(s, "Field required") {
		t.Errorf("Error() = %q", s)
	}

	var ve *pipelines.ValidationError
	if err := pipelines.Invalid("model", "nope"); !errors.As(err, &ve) ||
		fmt.Sprint(ve.Errors) != fmt.Sprint([]pipelines.FieldError{{Loc: []any{"body", "model"}, Msg: "nope", Type: "value_error"}}) {
		t.Fatalf("Invalid = %#v", err)
	}
}

func TestHTTPError(t *testing.T) {
	e := pipelines.Errorf(http.StatusNotFound, "no %s", "thing")
	if e.Status != 404 || e.Msg != "no thing" || e.Error() != "no thing" || e.Unwrap() != nil {
		t.Fatalf("Errorf = %+v", e)
	}
	cause := errors.New("cuda out of memory")
	u := pipelines.Unavailable("model m failed", cause)
	if u.Status != 503 || u.Type != "runner_scheduling_failure" || !errors.Is(u, cause) || u.Error() != "model m failed: cuda out of memory" {
		t.Fatalf("Unavailable = %+v (%q)", u, u.Error())
	}
	var he *pipelines.HTTPError
	if !errors.As(fmt.Errorf("wrapped: %w", u), &he) || he != u {
		t.Fatal("errors.As through a wrap")
	}
}

// memFiles is an in-memory Files.
type memFiles struct {
	files   map[string]pipelines.Blob
	saved   []string
	openErr error
}

func (f *memFiles) Open(ctx context.Context, url string, limit int64) (pipelines.Blob, error) {
	if f.openErr != nil {
		return pipelines.Blob{}, f.openErr
	}
	b, ok := f.files[url]
	if !ok {
		return pipelines.Blob{}, fmt.Errorf("no such file %s", url)
	}
	return b, nil
}

func (f *memFiles) Save(ctx context.Context, data []byte, ct, name string) (string, error) {
	url := "http://files.test/" + name
	if f.files == nil {
		f.files = map[string]pipelines.Blob{}
	}
	f.files[url] = pipelines.Blob{Data: data, ContentType: ct}
	f.saved = append(f.saved, url)
	return url, nil
}

func testPNG(t *testing.T, w, h int) []byte {
	t.Helper()
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for i := range img.Pix {
		img.Pix[i] = uint8(i)
	}
	img.SetNRGBA(0, 0, color.NRGBA{1, 2, 3, 255})
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestLoadImage(t *testing.T) {
	cfg := pipelines.Config{MaxInputBytes: 4096, MaxPixels: 1000}
	small := testPNG(t, 10, 8)
	dataURI := "data:image/png;base64," + base64.StdEncoding.EncodeToString(small)
	files := &memFiles{files: map[string]pipelines.Blob{"http://files.test/in.png": {Data: small, ContentType: "image/png"}}}
	req := &pipelines.Request{Files: files}
	ctx := context.Background()

	for _, url := range []string{dataURI, "http://files.test/in.png"} {
		img, info, err := pipelines.LoadImage(ctx, req, cfg, "image_url", url)
		if err != nil {
			t.Fatalf("%.30s: %v", url, err)
		}
		if b := img.Bounds(); b.Dx() != 10 || b.Dy() != 8 || info.Format != "png" {
			t.Fatalf("%.30s: %v %+v", url, b, info)
		}
		if c := img.NRGBAAt(0, 0); c != (color.NRGBA{1, 2, 3, 255}) {
			t.Fatalf("pixel %v", c)
		}
	}

	big := testPNG(t, 40, 30) // 1200 px > 1000
	cases := []struct {
		name   string
		url    string
		status int    // HTTPError status, or
		typ    string // ValidationError type
	}{
		{"too many pixels", "data:image/png;base64," + base64.StdEncoding.EncodeToString(big), 413, ""},
		{"too many bytes", "data:image/png;base64," + base64.StdEncoding.EncodeToString(append(bytes.Clone(small), make([]byte, 5000)...)), 413, ""},
		{"not an image", "data:text/plain,hello", 0, "value_error"},
		{"truncated", "data:image/png;base64," + base64.StdEncoding.EncodeToString(small[:len(small)-20]), 0, "value_error"},
		{"empty", "data:image/png;base64,", 0, "value_error"},
		{"bad data URI", "data:image/png;base64,%%%", 0, "value_error"},
		{"unknown file", "http://files.test/missing.png", 0, "value_error"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := pipelines.LoadImage(ctx, req, cfg, "image_url", c.url)
			if c.status != 0 {
				var he *pipelines.HTTPError
				if !errors.As(err, &he) || he.Status != c.status || !strings.Contains(he.Msg, "image_url") {
					t.Fatalf("err = %v (%T), want HTTP %d naming image_url", err, err, c.status)
				}
				return
			}
			var ve *pipelines.ValidationError
			if !errors.As(err, &ve) || ve.Errors[0].Type != c.typ || fmt.Sprint(ve.Errors[0].Loc) != "[body image_url]" {
				t.Fatalf("err = %v (%T), want %s on image_url", err, err, c.typ)
			}
		})
	}

	// Errors from Files that are already HTTP errors pass through.
	files.openErr = pipelines.Errorf(http.StatusForbidden, "host not allowed")
	_, _, err := pipelines.LoadImage(ctx, req, cfg, "image_url", "http://elsewhere/x.png")
	var he *pipelines.HTTPError
	if !errors.As(err, &he) || he.Status != 403 {
		t.Fatalf("err = %v, want the 403 from Files", err)
	}
	// A cancelled fetch is not the client's input error.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	files.openErr = fmt.Errorf("fetch: %w", context.Canceled)
	_, _, err = pipelines.LoadImage(cctx, req, cfg, "image_url", "http://elsewhere/x.png")
	var ve *pipelines.ValidationError
	if !errors.Is(err, context.Canceled) || errors.As(err, &ve) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

func TestSaveImage(t *testing.T) {
	img := image.NewNRGBA(image.Rect(0, 0, 6, 4))
	files := &memFiles{}
	req := &pipelines.Request{Files: files}
	ctx := context.Background()

	f, err := pipelines.SaveImage(ctx, req, img, "png", false, "out")
	if err != nil {
		t.Fatal(err)
	}
	want := pipelines.ImageFile{URL: "http://files.test/out.png", ContentType: "image/png", FileName: "out.png", FileSize: len(files.files["http://files.test/out.png"].Data), Width: 6, Height: 4}
	if f != want || f.FileSize == 0 {
		t.Fatalf("SaveImage = %+v, want %+v", f, want)
	}
	b, _ := json.Marshal(f)
	var m map[string]any
	json.Unmarshal(b, &m)
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	if fmt.Sprint(ks) != "[content_type file_name file_size height url width]" {
		t.Errorf("ImageFile JSON keys %v", ks)
	}

	f, err = pipelines.SaveImage(ctx, req, img.SubImage(image.Rect(2, 1, 5, 4)), "webp", true, "sync")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(f.URL, "data:image/webp;base64,") || f.ContentType != "image/webp" || f.FileName != "sync.webp" || f.Width != 3 || f.Height != 3 {
		t.Fatalf("sync SaveImage = %.60v", f)
	}
	data, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(f.URL, "data:image/webp;base64,"))
	if err != nil || len(data) != f.FileSize {
		t.Fatalf("inline data: %v, %d bytes, file_size %d", err, len(data), f.FileSize)
	}
	if len(files.saved) != 1 {
		t.Fatalf("sync mode stored a file: %v", files.saved)
	}
	if _, err := pipelines.SaveImage(ctx, req, img, "tiff", false, "x"); err == nil {
		t.Fatal("unknown format saved")
	}
}

type fakeEndpoint struct{ id string }

func (e fakeEndpoint) ID() string { return e.id }
func (e fakeEndpoint) Run(context.Context, *pipelines.Request) (any, error) {
	return nil, nil
}

func TestRegistry(t *testing.T) {
	r := pipelines.NewRegistry(fakeEndpoint{"b"}, fakeEndpoint{"a"})
	if ids := r.IDs(); !slices.Equal(ids, []string{"a", "b"}) {
		t.Fatalf("IDs = %v", ids)
	}
	if e, ok := r.Lookup("a"); !ok || e.ID() != "a" {
		t.Fatal("Lookup(a)")
	}
	if _, ok := r.Lookup("c"); ok {
		t.Fatal("Lookup(c)")
	}
	var logged []string
	req := &pipelines.Request{Log: func(l pipelines.Level, m string) { logged = append(logged, string(l)+" "+m) }}
	req.Logf(pipelines.Info, "n=%d", 3)
	(&pipelines.Request{}).Logf(pipelines.Info, "dropped")
	if !slices.Equal(logged, []string{"INFO n=3"}) {
		t.Fatalf("logged %v", logged)
	}
}

// warmPipeline records its warm-ups and closes; its endpoint "nomodel"
// has nothing to load and "bad" fails to load.
type warmPipeline struct {
	ids    []string
	warmed *[]string
	closes *int
}

func (p warmPipeline) Endpoints() []pipelines.Endpoint {
	var eps []pipelines.Endpoint
	for _, id := range p.ids {
		eps = append(eps, fakeEndpoint{id})
	}
	return eps
}

func (p warmPipeline) Warm(_ context.Context, id string) error {
	switch id {
	case "nomodel":
		return fmt.Errorf("wrapped: %w", pipelines.ErrNoModel)
	case "bad":
		return errors.New("disk on fire")
	}
	*p.warmed = append(*p.warmed, id)
	return nil
}

func (p warmPipeline) Close() error { *p.closes++; return nil }

func TestRegistryWarm(t *testing.T) {
	cases := []struct {
		name    string
		ids     []string
		warmed  string
		wantErr string
	}{
		{"all, skipping endpoints with no model", nil, "[a c]", ""},
		{"named", []string{"c"}, "[c]", ""},
		{"named without a model", []string{"nomodel"}, "[]", "nomodel: wrapped: no installed model"},
		{"unknown endpoint", []string{"a", "zz"}, "[]", "no endpoint zz to preload"},
		{"endpoint with nothing to preload", []string{"plain"}, "[]", "plain: nothing to load"},
		{"a failing load", []string{"bad", "a"}, "[]", "bad: disk on fire"},
		{"all, past a failing load", nil, "[a c]", "bad: disk on fire"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var warmed []string
			var closes int
			ids := []string{"a", "nomodel", "c"}
			if strings.Contains(tc.name, "failing") {
				// "bad" sorts between a and c: preloading all must go past it.
				ids = append(ids, "bad")
			}
			r, err := pipelines.Assemble(warmPipeline{ids: ids, warmed: &warmed, closes: &closes},
				pipelines.Static(fakeEndpoint{"plain"}))
			if err != nil {
				t.Fatal(err)
			}
			err = r.Warm(context.Background(), tc.ids...)
			if (tc.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("err %v, want %q", err, tc.wantErr)
			}
			if got := fmt.Sprint(warmed); got != tc.warmed {
				t.Errorf("warmed %s, want %s", got, tc.warmed)
			}
			if err := r.Close(); err != nil || closes != 1 {
				t.Errorf("Close: %v; the pipeline closed %d times, want once", err, closes)
			}
		})
	}
}

// Two pipelines may not serve one endpoint.
func TestAssembleDuplicate(t *testing.T) {
	if _, err := pipelines.Assemble(pipelines.Static(fakeEndpoint{"a"}), pipelines.Static(fakeEndpoint{"a"})); err == nil {
		t.Fatal("endpoint a served twice")
	}
}
