package main

import (
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/falocal/falocal/internal/testenv"
	"github.com/falocal/falocal/pipelines/pipelinetest"
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

// TestE2EWhisperTenMinutes transcribes ten minutes of real speech through
// the queue, sequentially (batch_size 1) and batched, with progress in the
// logs for every window.
func TestE2EWhisperTenMinutes(t *testing.T) {
	s := startServer(t, "-whisper-model", "whisper-tiny.en")
	var pcm []int16
	clips := []struct {
		file  string
		words int // in its human transcript
	}{{"jfk.wav", 22}, {"librivox/sense_and_sensibility_01_austen_64kb-0870.wav", 23},
		{"librivox/sense_and_sensibility_01_austen_64kb-0890.wav", 14}, {"librivox/sense_and_sensibility_01_austen_64kb-0920.wav", 19}}
	said := 0
	for i := 0; len(pcm) < 600*16000; i++ {
		said += clips[i%len(clips)].words
		b, err := os.ReadFile(testenv.Asset(t, "whisper/"+clips[i%len(clips)].file))
		if err != nil {
			t.Fatal(err)
		}
		for j := 44; j+1 < len(b); j += 2 { // 16 kHz mono 16-bit PCM after the 44-byte header
			pcm = append(pcm, int16(uint16(b[j])|uint16(b[j+1])<<8))
		}
		pcm = append(pcm, make([]int16, 8000)...) // half a second of pause
	}
	samples := make([]float32, len(pcm))
	for i, v := range pcm {
		samples[i] = float32(v) / 32768
	}
	wav := pipelinetest.WAV(samples, 16000)
	dur := float64(len(pcm)) / 16000
	audio := dataURI("audio/wav", wav)
	c := &http.Client{}
	for _, mode := range []struct {
		batch    int
		progress string
	}{{1, "transcribed "}, {64, " decoded: "}} {
		sub := submitQueue(t, c, s.base+"/fal-ai/whisper", mustJSON(map[string]any{"audio_url": audio, "batch_size": mode.batch}))
		st := waitStatus(t, c, sub.StatusURL, "COMPLETED", 10*time.Minute)
		if st.Error != "" {
			t.Fatalf("batch_size %d: %s %s", mode.batch, st.ErrorType, st.Error)
		}
		r := do(t, c, "GET", sub.ResponseURL, nil)
		var out struct {
			Text   string `json:"text"`
			Chunks []struct {
				Timestamp [2]float64 `json:"timestamp"`
			} `json:"chunks"`
		}
		if err := json.Unmarshal(r.body, &out); err != nil || r.status != 200 {
			t.Fatalf("batch_size %d: %d %s", mode.batch, r.status, r.body)
		}
		n := st.logsWith("INFO", mode.progress)
		last := out.Chunks[len(out.Chunks)-1].Timestamp[1]
		words := len(strings.Fields(out.Text))
		t.Logf("batch_size %d: %.0f s of audio, %d words of %d said, %d chunks ending at %.1f s, %d progress lines",
			mode.batch, dur, words, said, len(out.Chunks), last, n)
		// tiny.en merges and drops a few words; whole windows lost would show
		if float64(words) < 0.85*float64(said) || last < dur-15 {
			t.Errorf("batch_size %d: %d words of %d said, last chunk ends at %.1f of %.1f s", mode.batch, words, said, last, dur)
		}
		if n < 20 { // a line for every window of at most 30 s
			t.Errorf("batch_size %d: %d progress lines with %q", mode.batch, n, mode.progress)
		}
	}
}
