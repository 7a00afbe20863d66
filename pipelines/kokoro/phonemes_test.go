package kokoro

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestEspeakMatchesMisaki: our espeak-ng front end gives the phonemes that
// misaki 0.9.4's espeak fallbacks give (through phonemizer) on sentences of
// every language espeak-ng reads (testdata/phonemes.json, written by
// tools/kokoro-ref/phonemes.py).
func TestEspeakMatchesMisaki(t *testing.T) {
	requireEspeak(t)
	b, err := os.ReadFile("testdata/phonemes.json")
	if err != nil {
		t.Fatal(err)
	}
	var ref struct {
		Espeak string                `json:"espeak_ng"`
		Voices map[string][][]string `json:"voices"`
	}
	if err := json.Unmarshal(b, &ref); err != nil {
		t.Fatal(err)
	}
	for voice, pairs := range ref.Voices {
		for _, p := range pairs {
			got, err := Espeak{Voice: voice, Name: voice}.Phonemize(context.Background(), p[0])
			if err != nil {
				t.Fatalf("%s %q: %v", voice, p[0], err)
			}
			if got != p[1] {
				t.Errorf("%s %q:\n got %s\nwant %s (misaki, espeak-ng %s)", voice, p[0], got, p[1], ref.Espeak)
			}
		}
	}
}

// TestEspeakRefuses: text espeak-ng cannot read in the language is a 422
// on prompt that names the problem.
func TestEspeakRefuses(t *testing.T) {
	requireEspeak(t)
	if _, err := (Espeak{Voice: "ja", Name: "Japanese"}).Phonemize(context.Background(), "日本語です。"); err == nil || !strings.Contains(err.Error(), "espeak-ng cannot read") {
		t.Errorf("kanji: %v", err)
	}
	// espeak-ng 1.52 reads these; 1.51 (Debian bookworm) switches to English
	if _, err := (Espeak{Voice: "cmn", Name: "Mandarin Chinese"}).Phonemize(context.Background(), "我喜欢吃苹果。"); err != nil && !strings.Contains(err.Error(), "espeak-ng cannot read") {
		t.Errorf("hanzi: %v", err)
	}
	if _, err := (Espeak{Voice: "ja", Name: "Japanese"}).Phonemize(context.Background(), "こんにちは、げんきですか。"); err != nil {
		t.Errorf("kana: %v", err)
	}
	// control characters are spaces (a NUL would end espeak-ng's line)
	if got, err := (Espeak{Voice: "en-us"}).Phonemize(context.Background(), "\x00\x01hi\x07there"); err != nil || got != "hˈI ðˈɛɹ" {
		t.Errorf("control characters: %q, %v", got, err)
	}
}

// requireEspeak fails (under make test, whose CI installs espeak-ng) or
// skips without espeak-ng.
func requireEspeak(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath(EspeakBinary); err != nil {
		if os.Getenv("FALOCAL_REQUIRE_ASSETS") == "1" {
			t.Fatal("espeak-ng is missing: apt-get install espeak-ng (.ci/run installs it)")
		}
		t.Skip("espeak-ng not installed (apt-get install espeak-ng); FALOCAL_REQUIRE_ASSETS=1 makes this a failure")
	}
}
