package kokoro

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/falocal/falocal/engine"
	"github.com/falocal/falocal/pipelines"
	"github.com/falocal/falocal/pipelines/pipelinetest"
)

func TestEndpoints(t *testing.T) {
	_, eps := pipelinetest.Build(t, New, pipelines.Deps{Store: pipelinetest.Store(t), Ops: engine.CPUOps()})
	if len(eps) != 9 {
		t.Fatalf("%d endpoints, want 9", len(eps))
	}
	for _, l := range Languages {
		if eps[l.Endpoint] == nil || !strings.HasPrefix(l.Endpoint, "fal-ai/kokoro/") {
			t.Errorf("no endpoint %s", l.Endpoint)
		}
		if l.Voices[0] != l.Default {
			t.Errorf("%s: default %s is not the first voice", l.Endpoint, l.Default)
		}
		for _, v := range l.Voices {
			if got, ok := LanguageOf(v); !ok || got.Endpoint != l.Endpoint {
				t.Errorf("voice %s is not of %s", v, l.Endpoint)
			}
		}
	}
}

// TestValidation: bad input is a fal-shaped 422 naming the field, before
// any model or espeak-ng is needed; good input without a model is a 503
// that says how to install one.
func TestValidation(t *testing.T) {
	_, eps := pipelinetest.Build(t, New, pipelines.Deps{Store: pipelinetest.Store(t), Ops: engine.CPUOps()})
	us := eps["fal-ai/kokoro/american-english"]
	for _, tc := range []struct {
		name, endpoint, input string
		status                int
		loc, typ              string
	}{
		{"no prompt", "", `{}`, 422, "prompt", "missing"},
		{"empty prompt", "", `{"prompt": ""}`, 422, "prompt", "value_error"},
		{"blank prompt", "", `{"prompt": "  \n "}`, 422, "prompt", "value_error"},
		{"prompt not a string", "", `{"prompt": 5}`, 422, "prompt", "string_type"},
		{"too long", "", `{"prompt": "` + strings.Repeat("a", MaxPromptChars+1) + `"}`, 422, "prompt", "string_too_long"},
		{"unknown voice", "", `{"prompt": "hi", "voice": "xx_nobody"}`, 422, "voice", "literal_error"},
		{"voice of another language", "", `{"prompt": "hi", "voice": "bf_alice"}`, 422, "voice", "literal_error"},
		{"empty voice", "", `{"prompt": "hi", "voice": ""}`, 422, "voice", "literal_error"},
		{"speed too low", "", `{"prompt": "hi", "speed": 0.05}`, 422, "speed", "greater_than_equal"},
		{"speed too high", "", `{"prompt": "hi", "speed": 5.5}`, 422, "speed", "less_than_equal"},
		{"speed not a number", "", `{"prompt": "hi", "speed": "fast"}`, 422, "speed", "float_type"},
		{"not an object", "", `[1]`, 422, "", "model_attributes_type"},
		{"not JSON", "", `{"prompt": `, 422, "", "json_invalid"},
		{"no model", "", `{"prompt": "hi"}`, 503, "", ""},
		{"no model, other language", "fal-ai/kokoro/french", `{"prompt": "salut", "voice": "ff_siwis", "speed": 0.1}`, 503, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ep := us
			if tc.endpoint != "" {
				ep = eps[tc.endpoint]
			}
			res := pipelinetest.Call(context.Background(), ep, tc.input, nil)
			status, body := pipelinetest.Status(res.Err)
			if status != tc.status {
				t.Fatalf("status %d (%v), want %d", status, res.Err, tc.status)
			}
			if status == http.StatusServiceUnavailable {
				if !strings.Contains(res.Err.Error(), "falocal setup") {
					t.Fatalf("503 without install advice: %v", res.Err)
				}
				return
			}
			fe := body["detail"].([]pipelines.FieldError)[0]
			loc := ""
			if len(fe.Loc) > 1 {
				loc = fe.Loc[1].(string)
			}
			if loc != tc.loc || fe.Type != tc.typ {
				t.Fatalf("got %v %s %q, want %s %s", fe.Loc, fe.Type, fe.Msg, tc.loc, tc.typ)
			}
		})
	}
}

func TestSplitPhonemes(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		max      int
		want     []string
	}{
		{"short", "hɛlˈO wˈɜɹld.", 510, []string{"hɛlˈO wˈɜɹld."}},
		{"empty", "  ", 510, nil},
		{"sentences", "ab cd. ef gh. ij", 6, []string{"ab cd.", "ef gh.", "ij"}},
		{"sentences packed and balanced", "a. b. c. d.", 6, []string{"a. b.", "c. d."}},
		{"clauses", "abc, def, ghi", 5, []string{"abc,", "def,", "ghi"}},
		{"words", "abc def ghi jkl", 8, []string{"abc def", "ghi jkl"}},
		{"inside a word", "abcdefghij", 4, []string{"abcd", "efgh", "ij"}},
		{"runes", "ˈaˈbˈcˈd", 4, []string{"ˈaˈb", "ˈcˈd"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := SplitPhonemes(tc.in, tc.max)
			if strings.Join(got, "|") != strings.Join(tc.want, "|") {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
			for _, c := range got {
				if runeLen(c) > tc.max {
					t.Fatalf("chunk %q over %d", c, tc.max)
				}
			}
		})
	}
}

func TestPauseAfter(t *testing.T) {
	for in, want := range map[string]float64{"a.": 0.25, "a?": 0.25, "a!  ": 0.25, "a…": 0.25, "a,": 0.1, "a;": 0.1, "a:": 0.1, "a": 0, "": 0} {
		if got := PauseAfter(in); got != want {
			t.Errorf("PauseAfter(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestTrim(t *testing.T) {
	y := make([]float32, 24000)
	for i := 8000; i < 16000; i++ {
		y[i] = 0.5
	}
	got := Trim(y)
	// librosa keeps whole hops around the sound: frames are centred, 2048 wide, every 512
	if len(got) < 8000 || len(got) > 8000+2*2048 {
		t.Fatalf("trimmed to %d samples", len(got))
	}
	// as librosa: all silence has no quieter part, and is kept
	if len(Trim(make([]float32, 1000))) != 1000 {
		t.Fatal("all-silent chunk trimmed")
	}
	if len(Trim(nil)) != 0 {
		t.Fatal("nil")
	}
}

func TestSplitPunct(t *testing.T) {
	for in, want := range map[string]string{
		"Hello, world.":           "[Hello]<, >[world]<.>",
		"Pi is 3.14, roughly":     "[Pi is 3.14]<, >[roughly]",
		"“Quoted” (aside) end!":   "<“>[Quoted]<” (>[aside]<) >[end]<!>",
		"1,000 people... wow":     "[1,000 people]<... >[wow]",
		"no marks at all":         "[no marks at all]",
		"  ... ":                  "<... >",
		"She said: \"yes\" twice": "[She said]<: \">[yes]<\" >[twice]",
	} {
		var b strings.Builder
		for _, p := range splitPunct(in) {
			if p.punct {
				b.WriteString("<" + p.text + ">")
			} else {
				b.WriteString("[" + p.text + "]")
			}
		}
		if b.String() != want {
			t.Errorf("splitPunct(%q) = %s, want %s", in, b.String(), want)
		}
	}
}

func TestFromEspeak(t *testing.T) {
	for _, tc := range []struct {
		in      string
		british bool
		want    string
	}{
		{"həlˈo^ʊ ðˈɛ^ɹ", false, "həlˈO ðˈɛɹ"},
		{"ðə kwˈɪk bɹˈa^ʊn fˈɑːks d^ʒˈʌmps ˌo^ʊvɚ ðə lˈe^ɪzi dˈɑːɡ", false, "ðə kwˈɪk bɹˈWn fˈɑks ʤˈʌmps ˌOvəɹ ðə lˈAzi dˈɑɡ"},
		{"ɡˈʊd mˈɔːnɪŋ", true, "ɡˈʊd mˈɔːnɪŋ"},
		{"hˈə^ʊm", true, "hˈQm"},
		{"bˈʌɾɚ", false, "bˈʌTəɹ"},
		{"bˈʌʔn\u0329", false, "bˈʌtn"},
		{"t^ʃˈɜːt^ʃ", false, "ʧˈɜɹʧ"},
	} {
		if got := englishFromEspeak(tc.in, tc.british); got != tc.want {
			t.Errorf("englishFromEspeak(%q, %v) = %q, want %q", tc.in, tc.british, got, tc.want)
		}
	}
	for in, want := range map[string]string{
		"bʊond^ʒˈɔrno": "bʊonʤˈɔrno",
		"t^sˈao":       "ʦˈao",
		"a^ɪ-ˈo":       "Iˈo",
	} {
		if got := otherFromEspeak(in); got != want {
			t.Errorf("otherFromEspeak(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCutLine(t *testing.T) {
	for _, tc := range []struct {
		in   string
		max  int
		want string
	}{
		{"", 10, ""},
		{"a b c", 10, "a b c"},
		{"aaa bbb ccc", 7, "aaa bbb|ccc"},
		{"aaaaaaaaaaaa b", 5, "aaaaaaaaaaaa|b"},
		{"ä ö ü", 3, "ä ö|ü"},
	} {
		if got := strings.Join(cutLine(strings.Fields(tc.in), tc.max), "|"); got != tc.want {
			t.Errorf("cutLine(%q, %d) = %q, want %q", tc.in, tc.max, got, tc.want)
		}
	}
}
