package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// falClient makes the HTTP calls of fal's clients against one origin: the
// queue (submit, status or its SSE stream, result) and storage uploads
// (JS storage.upload: initiate, then PUT).
type falClient struct {
	base   string // http://127.0.0.1:8080
	key    string // "key_id:key_secret" or empty
	http   *http.Client
	status string        // "stream" or "poll"
	poll   time.Duration // poll interval
}

func newClient(base, key, status string, poll time.Duration) *falClient {
	return &falClient{base: strings.TrimRight(base, "/"), key: key, status: status, poll: poll,
		http: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256, IdleConnTimeout: time.Minute}}}
}

func (c *falClient) do(ctx context.Context, method, url string, body []byte, contentType string) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return 0, nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if c.key != "" {
		req.Header.Set("Authorization", "Key "+c.key)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// sample is one request as the client saw it.
type sample struct {
	Image      string  `json:"image"`
	LatencyMs  float64 `json:"latency_ms"`   // submit sent → result body read
	InferMs    float64 `json:"inference_ms"` // the server's metrics.inference_time
	WaitMs     float64 `json:"queue_wait_ms,omitempty"`
	ResultJSON []byte  `json:"-"`
	Err        string  `json:"error,omitempty"`
}

type statusBody struct {
	Status    string `json:"status"`
	Error     string `json:"error"`
	ErrorType string `json:"error_type"`
	Metrics   struct {
		InferenceTime float64 `json:"inference_time"`
	} `json:"metrics"`
}

// run submits body to endpoint id through the queue, follows its status to
// COMPLETED and fetches the result.
func (c *falClient) run(ctx context.Context, id string, body []byte) (s sample) {
	t0 := time.Now()
	code, b, err := c.do(ctx, "POST", c.base+"/"+id, body, "application/json")
	if err != nil {
		return sample{Err: err.Error()}
	}
	if code != 200 {
		return sample{Err: fmt.Sprintf("submit: %d %s", code, trim(b))}
	}
	var sub struct {
		RequestID   string `json:"request_id"`
		StatusURL   string `json:"status_url"`
		ResponseURL string `json:"response_url"`
	}
	if err := json.Unmarshal(b, &sub); err != nil || sub.StatusURL == "" || sub.ResponseURL == "" {
		return sample{Err: fmt.Sprintf("submit: bad answer %s", trim(b))}
	}
	var st statusBody
	var started time.Time
	if c.status == "poll" {
		st, started, err = c.pollStatus(ctx, sub.StatusURL)
	} else {
		st, started, err = c.streamStatus(ctx, sub.StatusURL)
	}
	if err != nil {
		return sample{Err: err.Error()}
	}
	if st.Error != "" {
		return sample{Err: fmt.Sprintf("request failed: %s (%s)", st.Error, st.ErrorType)}
	}
	code, b, err = c.do(ctx, "GET", sub.ResponseURL, nil, "")
	if err != nil {
		return sample{Err: err.Error()}
	}
	if code != 200 {
		return sample{Err: fmt.Sprintf("result: %d %s", code, trim(b))}
	}
	s.LatencyMs = ms(time.Since(t0))
	s.InferMs = st.Metrics.InferenceTime * 1000
	if !started.IsZero() {
		s.WaitMs = ms(started.Sub(t0))
	}
	s.ResultJSON = b
	return s
}

// streamStatus follows GET status_url/stream (SSE) to COMPLETED. started is
// when IN_PROGRESS was first seen (zero if never seen).
func (c *falClient) streamStatus(ctx context.Context, statusURL string) (statusBody, time.Time, error) {
	var started time.Time
	req, err := http.NewRequestWithContext(ctx, "GET", statusURL+"/stream", nil)
	if err != nil {
		return statusBody{}, started, err
	}
	if c.key != "" {
		req.Header.Set("Authorization", "Key "+c.key)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return statusBody{}, started, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		return statusBody{}, started, fmt.Errorf("status stream: %d %s", resp.StatusCode, trim(b))
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		var st statusBody
		if err := json.Unmarshal([]byte(line), &st); err != nil {
			return st, started, fmt.Errorf("status stream: %v in %s", err, trim([]byte(line)))
		}
		switch st.Status {
		case "IN_PROGRESS":
			if started.IsZero() {
				started = time.Now()
			}
		case "COMPLETED":
			io.Copy(io.Discard, resp.Body)
			return st, started, nil
		}
	}
	if err := sc.Err(); err != nil {
		return statusBody{}, started, err
	}
	return statusBody{}, started, errors.New("status stream ended before COMPLETED")
}

// pollStatus GETs status_url every c.poll until COMPLETED.
func (c *falClient) pollStatus(ctx context.Context, statusURL string) (statusBody, time.Time, error) {
	var started time.Time
	for {
		code, b, err := c.do(ctx, "GET", statusURL, nil, "")
		if err != nil {
			return statusBody{}, started, err
		}
		if code != 200 && code != 202 {
			return statusBody{}, started, fmt.Errorf("status: %d %s", code, trim(b))
		}
		var st statusBody
		if err := json.Unmarshal(b, &st); err != nil {
			return st, started, fmt.Errorf("status: %v in %s", err, trim(b))
		}
		switch st.Status {
		case "IN_PROGRESS":
			if started.IsZero() {
				started = time.Now()
			}
		case "COMPLETED":
			return st, started, nil
		}
		select {
		case <-ctx.Done():
			return st, started, ctx.Err()
		case <-time.After(c.poll):
		}
	}
}

// upload stores data through the storage API (JS client: initiate, PUT)
// and returns the file URL to use as an input.
func (c *falClient) upload(ctx context.Context, data []byte, contentType, name string) (string, error) {
	req, _ := json.Marshal(map[string]string{"content_type": contentType, "file_name": name})
	code, b, err := c.do(ctx, "POST", c.base+"/rest/storage/upload/initiate?storage_type=fal-cdn-v3", req, "application/json")
	if err != nil {
		return "", err
	}
	if code != 200 {
		return "", fmt.Errorf("upload initiate: %d %s", code, trim(b))
	}
	var in struct {
		UploadURL string `json:"upload_url"`
		FileURL   string `json:"file_url"`
	}
	if err := json.Unmarshal(b, &in); err != nil || in.UploadURL == "" || in.FileURL == "" {
		return "", fmt.Errorf("upload initiate: bad answer %s", trim(b))
	}
	code, b, err = c.do(ctx, "PUT", in.UploadURL, data, contentType)
	if err != nil {
		return "", err
	}
	if code/100 != 2 {
		return "", fmt.Errorf("upload PUT: %d %s", code, trim(b))
	}
	return in.FileURL, nil
}

// fetchOutput downloads the first image URL in a result ({"image": {"url"}}
// or {"images": [{"url"}]}); data: URIs are decoded.
func (c *falClient) fetchOutput(ctx context.Context, result []byte) ([]byte, error) {
	var r struct {
		Image  *struct{ URL string }  `json:"image"`
		Images []struct{ URL string } `json:"images"`
	}
	if err := json.Unmarshal(result, &r); err != nil {
		return nil, err
	}
	u := ""
	if r.Image != nil {
		u = r.Image.URL
	} else if len(r.Images) > 0 {
		u = r.Images[0].URL
	}
	if u == "" {
		return nil, fmt.Errorf("no image url in result %s", trim(result))
	}
	if strings.HasPrefix(u, "data:") {
		return decodeDataURI(u)
	}
	code, b, err := c.do(ctx, "GET", u, nil, "")
	if err != nil {
		return nil, err
	}
	if code != 200 {
		return nil, fmt.Errorf("GET %s: %d", u, code)
	}
	return b, nil
}

func ms(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }

func trim(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}
