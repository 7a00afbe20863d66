package main

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/falocal/falocal/internal/testenv"
)

// TestE2EWhisper transcribes a real recording with the models setup
// installs (whisper-base, converted from faster-whisper's), through the real
// server, in WAV and MP3, on both endpoints.
func TestE2EWhisper(t *testing.T) {
	s := startServer(t)
	want := []string{"and so my fellow americans", "ask not what your country can do for you", "ask what you can do for your country"}
	for _, c := range []struct {
		endpoint, asset, ct string
		input               map[string]any
	}{
		{"fal-ai/whisper", "jfk.wav", "audio/wav", nil},
		{"fal-ai/whisper", "jfk.mp3", "audio/mpeg", map[string]any{"batch_size": 1, "language": nil}},
		{"fal-ai/wizper", "jfk.wav", "audio/wav", nil},
	} {
		b, err := os.ReadFile(testenv.Asset(t, "whisper/"+c.asset))
		if err != nil {
			t.Fatal(err)
		}
		in := map[string]any{"audio_url": dataURI(c.ct, b)}
		for k, v := range c.input {
			in[k] = v
		}
		r := s.post(t, "/run/"+c.endpoint, mustJSON(in))
		if r.status != 200 {
			t.Fatalf("%s %s: %d %s", c.endpoint, c.asset, r.status, r.body)
		}
		var out struct {
			Text   string `json:"text"`
			Chunks []struct {
				Timestamp [2]float64 `json:"timestamp"`
				Text      string     `json:"text"`
			} `json:"chunks"`
			Inferred  []string `json:"inferred_languages"`
			Languages []string `json:"languages"`
		}
		if err := json.Unmarshal(r.body, &out); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s %s: %q %v", c.endpoint, c.asset, out.Text, out.Chunks)
		text := strings.ToLower(strings.NewReplacer(",", "", ".", "").Replace(out.Text))
		for _, w := range want {
			if !strings.Contains(text, w) {
				t.Errorf("%s %s: transcript lacks %q: %q", c.endpoint, c.asset, w, out.Text)
			}
		}
		if len(out.Chunks) == 0 || out.Chunks[len(out.Chunks)-1].Timestamp[1] > 11.01 || out.Chunks[0].Timestamp[0] < 0 {
			t.Errorf("%s %s: chunks %v", c.endpoint, c.asset, out.Chunks)
		}
		if lang := append(out.Inferred, out.Languages...); len(lang) != 1 || lang[0] != "en" {
			t.Errorf("%s %s: languages %v", c.endpoint, c.asset, lang)
		}
	}
}

// TestE2EWhisperWords asks for word timestamps from the installed base
// model: one chunk a word, in order, inside the audio, spelling the text.
func TestE2EWhisperWords(t *testing.T) {
	s := startServer(t)
	b, err := os.ReadFile(testenv.Asset(t, "whisper/jfk.wav"))
	if err != nil {
		t.Fatal(err)
	}
	r := s.post(t, "/run/fal-ai/whisper", mustJSON(map[string]any{"audio_url": dataURI("audio/wav", b), "chunk_level": "word"}))
	if r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	var out struct {
		Text   string `json:"text"`
		Chunks []struct {
			Timestamp [2]float64 `json:"timestamp"`
			Text      string     `json:"text"`
		} `json:"chunks"`
	}
	if err := json.Unmarshal(r.body, &out); err != nil {
		t.Fatal(err)
	}
	var joined strings.Builder
	last := 0.0
	for _, c := range out.Chunks {
		joined.WriteString(c.Text)
		if c.Timestamp[0] < last-0.001 || c.Timestamp[1] < c.Timestamp[0] || c.Timestamp[1] > 11.01 || strings.Count(strings.TrimSpace(c.Text), " ") > 0 {
			t.Errorf("word %q at %v (previous end %.2f)", c.Text, c.Timestamp, last)
		}
		last = c.Timestamp[1]
	}
	if len(out.Chunks) < 20 || strings.TrimSpace(joined.String()) != strings.TrimSpace(out.Text) {
		t.Errorf("%d word chunks spell %q, text %q", len(out.Chunks), joined.String(), out.Text)
	}
	t.Logf("%d words, last ends at %.2f s", len(out.Chunks), last)
}
