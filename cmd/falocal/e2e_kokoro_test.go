package main

import (
	"encoding/binary"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// requireEspeakE2E fails (under make test) or skips without espeak-ng,
// Kokoro's text front end, which .ci/run installs.
func requireEspeakE2E(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("espeak-ng"); err != nil {
		if os.Getenv("FALOCAL_REQUIRE_ASSETS") == "1" {
			t.Fatal("espeak-ng is missing: apt-get install espeak-ng")
		}
		t.Skip("espeak-ng not installed (apt-get install espeak-ng)")
	}
}

type kokoroOut struct {
	Audio struct {
		URL         string `json:"url"`
		ContentType string `json:"content_type"`
		FileName    string `json:"file_name"`
		FileSize    int    `json:"file_size"`
	} `json:"audio"`
}

// wavSeconds fetches an output WAV and checks it is 16-bit mono 24 kHz.
func wavSeconds(t *testing.T, c *http.Client, out kokoroOut) float64 {
	t.Helper()
	r := do(t, c, "GET", out.Audio.URL, nil)
	b := r.body
	if r.status != 200 || len(b) != out.Audio.FileSize || len(b) < 44 || string(b[:4]) != "RIFF" {
		t.Fatalf("GET %s: %d, %d bytes (file_size %d)", out.Audio.URL, r.status, len(b), out.Audio.FileSize)
	}
	if ct := r.header.Get("Content-Type"); ct != "audio/wav" {
		t.Errorf("content type %q", ct)
	}
	if ch, rate, bits := binary.LittleEndian.Uint16(b[22:]), binary.LittleEndian.Uint32(b[24:]), binary.LittleEndian.Uint16(b[34:]); ch != 1 || rate != 24000 || bits != 16 {
		t.Fatalf("%d channels, %d Hz, %d bits", ch, rate, bits)
	}
	return float64(binary.LittleEndian.Uint32(b[40:])) / 2 / 24000
}

// TestE2EKokoro speaks through the real server with the model setup
// installs: a sync run on each European endpoint, a queued long text with a
// log line per chunk, and bad input answered 4xx on every endpoint.
func TestE2EKokoro(t *testing.T) {
	requireEspeakE2E(t)
	s := startServer(t)
	c := &http.Client{}
	for _, tc := range []struct{ endpoint, prompt, voice string }{
		{"fal-ai/kokoro/american-english", "Hello from a local server.", ""},
		{"fal-ai/kokoro/british-english", "Good morning, how do you do?", "bm_lewis"},
		{"fal-ai/kokoro/spanish", "Buenos días, ¿cómo estás?", ""},
		{"fal-ai/kokoro/french", "Bonjour, comment allez-vous ?", ""},
		{"fal-ai/kokoro/italian", "Buongiorno, come stai?", "im_nicola"},
		{"fal-ai/kokoro/brazilian-portuguese", "Bom dia, tudo bem?", ""},
		{"fal-ai/kokoro/hindi", "नमस्ते, आप कैसे हैं?", ""},
		{"fal-ai/kokoro/japanese", "こんにちは", ""},
	} {
		in := map[string]any{"prompt": tc.prompt}
		if tc.voice != "" {
			in["voice"] = tc.voice
		}
		r := s.post(t, "/run/"+tc.endpoint, mustJSON(in))
		if r.status != 200 {
			t.Fatalf("%s: %d %s", tc.endpoint, r.status, r.body)
		}
		var out kokoroOut
		if err := json.Unmarshal(r.body, &out); err != nil {
			t.Fatal(err)
		}
		secs := wavSeconds(t, c, out)
		if out.Audio.ContentType != "audio/wav" || !strings.HasSuffix(out.Audio.FileName, ".wav") || secs < 0.5 || secs > 6 {
			t.Errorf("%s: %+v, %.2f s", tc.endpoint, out.Audio, secs)
		}
		t.Logf("%s: %.2f s", tc.endpoint, secs)
	}

	// a text of two chunks through the queue: a log line per chunk
	long := strings.Repeat("A pot of tea helps to pass the evening, and the salt breeze came across from the sea. ", 7)
	sub := submitQueue(t, c, s.base+"/fal-ai/kokoro/american-english", mustJSON(map[string]any{"prompt": long, "voice": "am_adam", "speed": 1.4}))
	st := waitStatus(t, c, sub.StatusURL, "COMPLETED", 5*time.Minute)
	if st.Error != "" {
		t.Fatalf("%s %s", st.ErrorType, st.Error)
	}
	if n := st.logsWith("INFO", "chunk "); n < 2 {
		t.Errorf("%d chunk log lines: %+v", n, st.Logs)
	}
	var out kokoroOut
	if err := json.Unmarshal(do(t, c, "GET", sub.ResponseURL, nil).body, &out); err != nil {
		t.Fatal(err)
	}
	if secs := wavSeconds(t, c, out); secs < 20 || secs > 60 {
		t.Errorf("long text: %.2f s", secs)
	}

	// bad input: a fal-shaped 422 naming the field, on every endpoint; the
	// server lives on
	for _, ep := range []string{"american-english", "british-english", "spanish", "french", "italian",
		"brazilian-portuguese", "hindi", "japanese", "mandarin-chinese"} {
		for _, bad := range []struct{ body, field string }{
			{`{"prompt": "hi", "speed": 0}`, "speed"},
			{`{"prompt": "hi", "voice": "zz_nobody"}`, "voice"},
			{`{"prompt": ""}`, "prompt"},
			{`{"prompt": "` + strings.Repeat("x", 100001) + `"}`, "prompt"},
		} {
			r := s.post(t, "/run/fal-ai/kokoro/"+ep, []byte(bad.body))
			var body struct {
				Detail []struct {
					Loc []string `json:"loc"`
				} `json:"detail"`
			}
			if r.status != 422 || json.Unmarshal(r.body, &body) != nil || len(body.Detail) == 0 || len(body.Detail[0].Loc) != 2 || body.Detail[0].Loc[1] != bad.field {
				t.Errorf("%s %.60s: %d %.200s", ep, bad.body, r.status, r.body)
			}
		}
	}
	// kanji, which espeak-ng reads only as "Chinese letter": a 422 that says so;
	// hanzi: spoken where espeak-ng's Mandarin dictionary has them (1.52), else the same 422 (1.51)
	if r := s.post(t, "/run/fal-ai/kokoro/japanese", mustJSON(map[string]any{"prompt": "日本語です。"})); r.status != 422 || !strings.Contains(string(r.body), "espeak-ng") {
		t.Errorf("japanese with kanji: %d %s", r.status, r.body)
	}
	if r := s.post(t, "/run/fal-ai/kokoro/mandarin-chinese", mustJSON(map[string]any{"prompt": "你好，世界。"})); r.status != 200 && (r.status != 422 || !strings.Contains(string(r.body), "espeak-ng")) {
		t.Errorf("mandarin: %d %s", r.status, r.body)
	}
	if r := s.post(t, "/run/fal-ai/kokoro/american-english", mustJSON(map[string]any{"prompt": "Still here."})); r.status != 200 {
		t.Fatalf("after bad input: %d %s", r.status, r.body)
	}
}
