package g2p

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"github.com/falocal/falocal/internal/testenv"
	"github.com/falocal/falocal/weights"
)

// installedLexicons returns the files of the misaki-en model that setup
// installs into the test data directory.
func installedLexicons(t testing.TB) map[string]string {
	t.Helper()
	st, err := weights.Open(testenv.DataDir(t))
	if err != nil {
		t.Fatal(err)
	}
	man, err := st.Get("misaki-en")
	if err != nil {
		if os.Getenv("FALOCAL_REQUIRE_ASSETS") == "1" {
			t.Fatalf("misaki-en: %v (run 'make test', whose setup installs it)", err)
		}
		t.Skipf("misaki-en not installed (%v); 'falocal setup' installs it", err)
	}
	files := map[string]string{}
	for _, f := range man.Files {
		p, err := st.Path(man, f.Role)
		if err != nil {
			t.Fatal(err)
		}
		files[f.Name] = p
	}
	return files
}

// requireEspeak returns the espeak-ng program, which the reference was
// written with; a missing one fails under FALOCAL_REQUIRE_ASSETS=1.
func requireEspeak(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("espeak-ng")
	if err != nil {
		if os.Getenv("FALOCAL_REQUIRE_ASSETS") == "1" {
			t.Fatal("espeak-ng is not installed (apt-get install -y espeak-ng)")
		}
		t.Skip("espeak-ng is not installed; apt-get install -y espeak-ng")
	}
	return p
}

var (
	loadOnce sync.Once
	loaded   [2]*English
	loadErr  error
)

func english(t testing.TB, british bool) *English {
	t.Helper()
	files := installedLexicons(t)
	es := requireEspeak(t)
	loadOnce.Do(func() {
		for i, b := range []bool{false, true} {
			if loaded[i], loadErr = LoadEnglish(files, b, Options{Espeak: es}); loadErr != nil {
				return
			}
		}
	})
	if loadErr != nil {
		t.Fatal(loadErr)
	}
	if british {
		return loaded[1]
	}
	return loaded[0]
}

type reference struct {
	Misaki    string `json:"misaki"`
	Espeak    string `json:"espeak_ng"`
	Sentences []struct {
		Text   string     `json:"text"`
		Tokens [][]string `json:"tokens"`
		US     string     `json:"us"`
		GB     string     `json:"gb"`
		// What misaki gives with spaCy's en_core_web_sm tagger, which is not
		// installed here (tools/g2p-ref/generate.py --sm).
		USSM string `json:"us_sm"`
		GBSM string `json:"gb_sm"`
	} `json:"sentences"`
}

func readReference(t *testing.T) reference {
	t.Helper()
	b, err := os.ReadFile("testdata/misaki_ref.json")
	if err != nil {
		t.Fatal(err)
	}
	var ref reference
	if err := json.Unmarshal(b, &ref); err != nil {
		t.Fatal(err)
	}
	if len(ref.Sentences) < 200 {
		t.Fatalf("%d reference sentences", len(ref.Sentences))
	}
	return ref
}

// knownDifferences lists the sentences whose phonemes differ from misaki's,
// by accent, with the reason. The test fails if one of them starts to match.
var knownDifferences = map[string]map[string]string{
	"us": {},
	"gb": {},
}

// taggerDifferences lists the sentences where misaki with en_core_web_sm's
// part-of-speech tags reads differently from the rule tags (both accents),
// with the reason. TestTaggerDifferences fails if one starts to match or
// another one differs.
var taggerDifferences = map[string]string{
	"He lived in the 1980s and the '90s.":          `"lived" VBD: live's VERB reading lˈɪv (untagged: lˈIv)`,
	"I read the book yesterday.":                   `"read" VBP: ɹˈɛd (untagged: ɹˈid)`,
	"They live in a live music venue.":             `"live" VBP: lˈɪv`,
	"I use a pen; the use of pens is common.":      `"use" NN: jˈus`,
	"The wind is strong; wind the clock.":          `"wind" VB: wˈInd`,
	"Close the door; stay close.":                  `"Close" VB: klˈOz`,
	"The dove dove into the bushes.":               `"dove" VBD: dˈOv`,
	"I object to that object.":                     `"object" VBP: əbʤˈɛkt`,
	"Present the present to the class.":            `"Present" VB: pɹizˈɛnt`,
	"The bandage was wound around the wound.":      `"wound" VBN: wˈWnd`,
	"He will record a new record.":                 `"record" VB: ɹəkˈɔɹd`,
	"Tear the paper without a tear.":               `"Tear" VB: tˈɛɹ`,
	"He goes in and out.":                          `"in" RB, stressed`,
	"It's -3 outside.":                             `en_core_web_sm tags "-3" "." (punctuation) and misaki drops it`,
	"The book, which I read last week, was great.": `"read" VBD: ɹˈɛd`,
	"I said [read](/ɹˈɛd/) not read.":              `the second "read" VBN: ɹˈɛd`,
	"Stress [this](2) word, not [that](-1) one.":   `"that" DT: ðˈæt, then destressed to ðˌæt`,
	"Emoticons :) and ;) and <3 are fun.":          `en_core_web_sm tags ":)" ":" (punctuation): misaki keeps ":" alone`,
	"Mix 2-3 cups; bake 20-25 min.":                `en_core_web_sm tags the final "." NNP ("min."): no period`,
}

// TestTaggerDifferences: the reference sentences read as misaki with
// en_core_web_sm reads them, but for taggerDifferences.
func TestTaggerDifferences(t *testing.T) {
	ref := readReference(t)
	same := 0
	for _, s := range ref.Sentences {
		if s.USSM == "" || s.GBSM == "" {
			t.Fatalf("%q: the reference lacks en_core_web_sm's reading", s.Text)
		}
		differs := s.US != s.USSM || s.GB != s.GBSM
		reason, listed := taggerDifferences[s.Text]
		switch {
		case differs && !listed:
			t.Errorf("%q reads differently from misaki with en_core_web_sm:\n rules %s\n    sm %s", s.Text, s.US, s.USSM)
		case !differs && listed:
			t.Errorf("%q matches misaki with en_core_web_sm but is listed (%s)", s.Text, reason)
		case !differs:
			same++
		}
	}
	t.Logf("%d of %d sentences as misaki with en_core_web_sm reads them", same, len(ref.Sentences))
}

// TestTokenizer: the spaCy tokenizer and the rule tagger split and tag every
// reference sentence as spaCy does.
func TestTokenizer(t *testing.T) {
	ref := readReference(t)
	for _, s := range ref.Sentences {
		toks := spacyTokenize(s.Text)
		tags := ruleTag(toks)
		var got, want []string
		for i, tk := range toks {
			ws := ""
			if tk.space {
				ws = " "
			}
			got = append(got, tk.text+"|"+ws+"|"+tags[i])
		}
		for _, tk := range s.Tokens {
			want = append(want, strings.Join(tk, "|"))
		}
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("%q:\n got %q\nwant %q", s.Text, got, want)
		}
	}
}

// TestMatchesMisaki: every reference sentence phonemizes as misaki does, or
// is listed in knownDifferences.
func TestMatchesMisaki(t *testing.T) {
	ref := readReference(t)
	for _, accent := range []string{"us", "gb"} {
		e := english(t, accent == "gb")
		same := 0
		for _, s := range ref.Sentences {
			want := s.US
			if accent == "gb" {
				want = s.GB
			}
			got, err := e.Phonemize(context.Background(), s.Text)
			if err != nil {
				t.Fatal(err)
			}
			reason, listed := knownDifferences[accent][s.Text]
			switch {
			case got == want && listed:
				t.Errorf("%s %q matches misaki now but is listed as a known difference (%s)", accent, s.Text, reason)
			case got != want && !listed:
				t.Errorf("%s %q:\n got %s\nwant %s", accent, s.Text, got, want)
			}
			if got == want {
				same++
			}
		}
		t.Logf("%s: %d of %d sentences exactly as misaki (espeak-ng %s)", accent, same, len(ref.Sentences), ref.Espeak)
	}
}

// TestWithoutEspeak: without espeak-ng the words misaki would hand it are
// spelled by the letter-to-sound rules and reported; every sentence that
// needs no such word still phonemizes exactly as misaki.
func TestWithoutEspeak(t *testing.T) {
	ref := readReference(t)
	files := installedLexicons(t)
	for _, accent := range []string{"us", "gb"} {
		var spelled []string
		e, err := LoadEnglish(files, accent == "gb", Options{Espeak: "none", Spelled: func(w []string) { spelled = append(spelled, w...) }})
		if err != nil {
			t.Fatal(err)
		}
		if e.Espeak() != "" {
			t.Fatalf("espeak-ng %q in use", e.Espeak())
		}
		needing := 0
		for _, s := range ref.Sentences {
			want := s.US
			if accent == "gb" {
				want = s.GB
			}
			spelled = nil
			got, err := e.Phonemize(context.Background(), s.Text)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(got, unknown) {
				t.Errorf("%s %q: unknown words left: %s", accent, s.Text, got)
			}
			if len(spelled) > 0 {
				needing++
				continue
			}
			if got != want {
				t.Errorf("%s %q needs no espeak-ng but:\n got %s\nwant %s", accent, s.Text, got, want)
			}
		}
		t.Logf("%s: %d of %d sentences have words for espeak-ng", accent, needing, len(ref.Sentences))
		if needing == 0 {
			t.Errorf("%s: no sentence needed espeak-ng", accent)
		}
	}
	if _, err := LoadEnglish(files, false, Options{Espeak: "/nonexistent/espeak-ng"}); err == nil {
		t.Error("a missing espeak-ng program named in Options loaded")
	}
}

func TestSpellByRules(t *testing.T) {
	for _, c := range []struct{ word, us, gb string }{
		{"Zorblax", "zˈɔɹblæks", "zˈɔːblaks"},
		{"snarfblat", "snˈɑɹfblæt", "snˈɑːfblat"},
		{"quiche", "kwˈɪʧ", "kwˈɪʧ"},
	} {
		if got, _ := spellByRules(c.word, false); got != c.us {
			t.Errorf("%s: US %q, want %q", c.word, got, c.us)
		}
		if got, _ := spellByRules(c.word, true); got != c.gb {
			t.Errorf("%s: GB %q, want %q", c.word, got, c.gb)
		}
	}
	if _, ok := spellByRules("!!", false); ok {
		t.Error("punctuation spelled")
	}
}

// TestConcurrent: one English serves several callers at once.
func TestConcurrent(t *testing.T) {
	ref := readReference(t)
	e := english(t, false)
	var wg sync.WaitGroup
	errs := make(chan string, 8*len(ref.Sentences))
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := g; i < len(ref.Sentences); i += 3 {
				s := ref.Sentences[i]
				got, err := e.Phonemize(context.Background(), s.Text)
				if err != nil || got != s.US {
					errs <- s.Text
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for s := range errs {
		t.Errorf("%q differs when phonemized concurrently", s)
	}
}

func TestEmptyAndCancelled(t *testing.T) {
	e := english(t, false)
	for _, s := range []string{"", "   ", "\n"} {
		if got, err := e.Phonemize(context.Background(), s); err != nil || strings.TrimSpace(got) != "" {
			t.Errorf("%q: %q, %v", s, got, err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := e.Phonemize(ctx, "Hello world."); err == nil {
		t.Error("a cancelled context phonemized")
	}
}
