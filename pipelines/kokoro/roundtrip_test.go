//go:build cgo

package kokoro

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/falocal/falocal/pipelines"
	"github.com/falocal/falocal/pipelines/pipelinetest"
	"github.com/falocal/falocal/pipelines/whisper"
	"github.com/falocal/falocal/pipelines/whisper/audio"
)

// heldOut are Harvard sentences (IEEE 1969, lists 1–3), spoken for the
// round trip and used for nothing else.
var heldOut = []string{
	"Glue the sheet to the dark blue background.",
	"It's easy to tell the depth of a well.",
	"These days a chicken leg is a rare dish.",
	"Rice is often served in round bowls.",
	"The juice of lemons makes fine punch.",
	"The box was thrown beside the parked truck.",
	"The hogs were fed chopped corn and garbage.",
	"Four hours of steady work faced us.",
	"A large size in stockings is hard to sell.",
	"A rod is used to catch pink salmon.",
	"The source of the huge river is the clear spring.",
	"Kick the ball straight and follow through.",
	"Help the woman get back to her feet.",
	"A pot of tea helps to pass the evening.",
	"Smoky fires lack flame and heat.",
	"The soft cushion broke the man's fall.",
	"The salt breeze came across from the sea.",
	"The girl at the booth sold fifty bonds.",
	"The small pup gnawed a hole in the sock.",
	"The fish twisted and turned on the bent hook.",
	"Press the pants and sew a button on the vest.",
	"The swan dive was far short of perfect.",
}

// roundTripVoices are one or two voices of each English family.
var roundTripVoices = []struct{ endpoint, voice string }{
	{"fal-ai/kokoro/american-english", "af_heart"},
	{"fal-ai/kokoro/american-english", "am_michael"},
	{"fal-ai/kokoro/british-english", "bf_emma"},
	{"fal-ai/kokoro/british-english", "bm_george"},
}

// maxRoundTripWER is the word error rate a voice may reach when Whisper
// (whisper-base, as setup installs it) transcribes what Kokoro said.
const maxRoundTripWER = 0.05

// TestRoundTrip speaks each held-out sentence with each voice through the
// endpoint and transcribes the WAV with our own Whisper: the word error rate
// per voice stays within maxRoundTripWER.
func TestRoundTrip(t *testing.T) {
	if testing.Short() {
		t.Skip("speaks and transcribes 88 sentences")
	}
	requireEspeak(t)
	d := installedDeps(t)
	_, eps := pipelinetest.Build(t, New, d)
	man, err := d.Store.Get("whisper-base")
	if err != nil {
		t.Fatalf("whisper-base: %v (run 'make test', whose setup installs it)", err)
	}
	models := pipelines.NewModels(d)
	t.Cleanup(func() { models.Close() })
	asr, err := whisper.LoadModel(man, d.Store, models)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var report []string
	for _, v := range roundTripVoices {
		t.Run(v.voice, func(t *testing.T) {
			var ref, hyp []string
			var errs []string
			for _, s := range heldOut {
				files := pipelinetest.NewFiles()
				res := pipelinetest.Call(ctx, eps[v.endpoint], map[string]any{"prompt": s, "voice": v.voice}, files)
				if res.Err != nil {
					t.Fatal(res.Err)
				}
				blob, err := files.Open(ctx, res.Out["audio"].(map[string]any)["url"].(string), 0)
				if err != nil {
					t.Fatal(err)
				}
				a, err := audio.Decode(blob.Data, 0)
				if err != nil {
					t.Fatal(err)
				}
				tr, err := asr.Transcribe(ctx, a.Mono16k(), whisper.TranscribeOptions{Options: whisper.Options{Task: "transcribe", Language: "en"}})
				if err != nil {
					t.Fatal(err)
				}
				r, h := spokenWords(s), spokenWords(tr.Text)
				if pipelinetest.WordErrorRate(r, h) > 0 {
					errs = append(errs, fmt.Sprintf("%q → %q", s, strings.TrimSpace(tr.Text)))
				}
				ref, hyp = append(ref, r...), append(hyp, h...)
			}
			wer := pipelinetest.WordErrorRate(ref, hyp)
			report = append(report, fmt.Sprintf("%s %.3f", v.voice, wer))
			t.Logf("%s: WER %.3f over %d sentences (%d words); misheard: %s", v.voice, wer, len(heldOut), len(ref), strings.Join(errs, "; "))
			if wer > maxRoundTripWER {
				t.Errorf("%s: WER %.3f > %.2f", v.voice, wer, maxRoundTripWER)
			}
		})
	}
	t.Logf("WER per voice: %s", strings.Join(report, ", "))
}

var (
	ones = strings.Fields("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen")
	tens = strings.Fields("_ _ twenty thirty forty fifty sixty seventy eighty ninety")
)

// spokenWords are the words to score, numbers under 100 spelled out
// (Whisper writes "fifty" as 50).
func spokenWords(s string) []string {
	var out []string
	for _, w := range pipelinetest.Words(s) {
		n, err := strconv.Atoi(w)
		switch {
		case err != nil || n < 0 || n > 99:
			out = append(out, w)
		case n < 20:
			out = append(out, ones[n])
		case n%10 == 0:
			out = append(out, tens[n/10])
		default:
			out = append(out, tens[n/10], ones[n%10])
		}
	}
	return out
}

func TestSpokenWords(t *testing.T) {
	if got := strings.Join(spokenWords("Sold 50 bonds, 7 cats and 42 dogs in 1999."), " "); got != "sold fifty bonds seven cats and forty two dogs in 1999" {
		t.Fatal(got)
	}
}
