package main

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"image"
	"image/draw"
	_ "image/jpeg"
	"image/png"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// input is one image as sent to an endpoint.
type input struct {
	Name        string `json:"name"`
	Width       int    `json:"width"`
	Height      int    `json:"height"`
	Bytes       int    `json:"bytes"`
	contentType string
	data        []byte
	path        string // the file as sent (for the peer); empty when cropped in memory
}

// loadInputs reads names from dir; crop > 0 cuts the central crop×crop
// square (or less, on a smaller image) and re-encodes it as PNG.
func loadInputs(dir string, names []string, crop int) ([]input, error) {
	var out []input
	for _, n := range names {
		p := filepath.Join(dir, n)
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("%w (the test photographs come from `make test-assets`)", err)
		}
		cfg, _, err := image.DecodeConfig(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		in := input{Name: n, Width: cfg.Width, Height: cfg.Height, contentType: http.DetectContentType(b), data: b, path: p}
		if crop > 0 && (cfg.Width > crop || cfg.Height > crop) {
			img, _, err := image.Decode(bytes.NewReader(b))
			if err != nil {
				return nil, fmt.Errorf("%s: %w", p, err)
			}
			r := img.Bounds()
			w, h := min(crop, r.Dx()), min(crop, r.Dy())
			x0, y0 := r.Min.X+(r.Dx()-w)/2, r.Min.Y+(r.Dy()-h)/2
			dst := image.NewNRGBA(image.Rect(0, 0, w, h))
			draw.Draw(dst, dst.Bounds(), img, image.Pt(x0, y0), draw.Src)
			var buf bytes.Buffer
			if err := png.Encode(&buf, dst); err != nil {
				return nil, err
			}
			in = input{Name: fmt.Sprintf("%s[%dx%d]", n, w, h), Width: w, Height: h, contentType: "image/png", data: buf.Bytes()}
		}
		in.Bytes = len(in.data)
		out = append(out, in)
	}
	return out, nil
}

func dataURI(ct string, b []byte) string {
	return "data:" + ct + ";base64," + base64.StdEncoding.EncodeToString(b)
}

func decodeDataURI(u string) ([]byte, error) {
	meta, payload, ok := strings.Cut(strings.TrimPrefix(u, "data:"), ",")
	if !ok {
		return nil, errors.New("bad data URI")
	}
	if strings.HasSuffix(meta, ";base64") {
		return base64.StdEncoding.DecodeString(payload)
	}
	return []byte(payload), nil
}

// decodeNRGBA is the server's decode of an input: the standard library
// decoder, then conversion to 8-bit NRGBA.
func decodeNRGBA(data []byte) (*image.NRGBA, error) {
	src, _, err := image.Decode(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	out := image.NewNRGBA(src.Bounds())
	draw.Draw(out, out.Bounds(), src, src.Bounds().Min, draw.Src)
	return out, nil
}

// CodecResult is the image codec work of one request, measured in this
// process with the standard library the server uses: decode of the input
// (to NRGBA) and PNG encode of the server's own output image (default
// compression, as the server encodes).
type CodecResult struct {
	Endpoint string  `json:"endpoint"`
	Image    string  `json:"image"`
	Output   string  `json:"output"` // WxH of the output that was encoded
	DecodeMs float64 `json:"decode_ms"`
	EncodeMs float64 `json:"encode_ms"`
	TotalMs  float64 `json:"total_ms"`
	Runs     int     `json:"runs"`
}

// measureCodec times decode(in) and encode(out) runs times each and keeps
// the medians.
func measureCodec(endpoint string, in input, output []byte, runs int) (CodecResult, error) {
	outImg, err := decodeNRGBA(output)
	if err != nil {
		return CodecResult{}, fmt.Errorf("decoding the server's output: %w", err)
	}
	var dec, enc []float64
	var buf bytes.Buffer
	for i := 0; i < runs; i++ {
		t := time.Now()
		if _, err := decodeNRGBA(in.data); err != nil {
			return CodecResult{}, err
		}
		dec = append(dec, ms(time.Since(t)))
		buf.Reset()
		t = time.Now()
		if err := png.Encode(&buf, outImg); err != nil {
			return CodecResult{}, err
		}
		enc = append(enc, ms(time.Since(t)))
	}
	r := CodecResult{Endpoint: endpoint, Image: in.Name, Runs: runs,
		Output:   fmt.Sprintf("%dx%d", outImg.Rect.Dx(), outImg.Rect.Dy()),
		DecodeMs: median(dec), EncodeMs: median(enc)}
	r.TotalMs = r.DecodeMs + r.EncodeMs
	return r, nil
}
