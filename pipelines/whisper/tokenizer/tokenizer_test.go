package tokenizer

import (
	"encoding/hex"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/falocal/falocal/internal/testenv"
	"github.com/falocal/falocal/pipelines/pipelinetest"
)

// vectors is testdata/vectors.json, written by
// tools/whisper-ref/tokenizer_vectors.py from openai-whisper itself.
type vectors struct {
	WhisperVersion  string            `json:"whisper_version"`
	TiktokenVersion string            `json:"tiktoken_version"`
	Languages       [][2]string       `json:"languages"`
	ToLanguageCode  map[string]string `json:"to_language_code"`
	Tokenizers      []refTokenizer    `json:"tokenizers"`
}

type refTokenizer struct {
	Name              string         `json:"name"`
	File              string         `json:"file"`
	Multilingual      bool           `json:"multilingual"`
	NumLanguages      int            `json:"num_languages"`
	VocabSize         int            `json:"vocab_size"`
	IDs               map[string]int `json:"ids"`
	SpecialTokens     map[string]int `json:"special_tokens"`
	AllLanguageTokens []int          `json:"all_language_tokens"`
	AllLanguageCodes  []string       `json:"all_language_codes"`
	NonSpeechTokens   []int          `json:"non_speech_tokens"`
	Encode            []struct {
		Text string `json:"text"`
		IDs  []int  `json:"ids"`
	} `json:"encode"`
	Decode []struct {
		IDs                  []int  `json:"ids"`
		Decode               string `json:"decode"`
		DecodeWithTimestamps string `json:"decode_with_timestamps"`
		BytesHex             string `json:"bytes_hex"`
	} `json:"decode"`
	SOTSequence []struct {
		Language string `json:"language"`
		Task     string `json:"task"`
		IDs      []int  `json:"ids"`
	} `json:"sot_sequence"`
}

var loadVectors = sync.OnceValues(func() (*vectors, error) {
	data, err := pipelinetest.Read("testdata/vectors.json")
	if err != nil {
		return nil, err
	}
	var v vectors
	return &v, json.Unmarshal(data, &v)
})

func refVectors(t testing.TB) *vectors {
	t.Helper()
	v, err := loadVectors()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// fromAsset builds from the pinned .tiktoken test asset.
func fromAsset(t testing.TB, file string, multilingual bool, numLanguages int) *Tokenizer {
	t.Helper()
	f, err := os.Open(testenv.Asset(t, "whisper/"+file))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tk, err := FromTiktoken(f, multilingual, numLanguages)
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

// checkAgainst compares every behaviour the reference recorded.
func checkAgainst(t *testing.T, tk *Tokenizer, ref *refTokenizer) {
	t.Helper()
	if tk.Multilingual() != ref.Multilingual {
		t.Errorf("Multilingual = %v", tk.Multilingual())
	}
	if tk.VocabSize() != ref.VocabSize {
		t.Errorf("VocabSize = %d, want %d", tk.VocabSize(), ref.VocabSize)
	}
	got := map[string]int{
		"eot": tk.EOT(), "sot": tk.SOT(), "sot_prev": tk.SOTPrev(), "sot_lm": tk.SOTLM(),
		"no_speech": tk.NoSpeech(), "no_timestamps": tk.NoTimestamps(),
		"timestamp_begin": tk.TimestampBegin(), "translate": tk.Translate(), "transcribe": tk.Transcribe(),
	}
	if !reflect.DeepEqual(got, ref.IDs) {
		t.Errorf("ids = %v, want %v", got, ref.IDs)
	}
	if !reflect.DeepEqual(tk.specials, ref.SpecialTokens) {
		t.Errorf("special tokens differ (%d here, %d in the reference)", len(tk.specials), len(ref.SpecialTokens))
	}
	if !slices.Equal(tk.LanguageTokens(), ref.AllLanguageTokens) {
		t.Errorf("LanguageTokens = %v, want %v", tk.LanguageTokens(), ref.AllLanguageTokens)
	}
	if !slices.Equal(tk.Languages(), ref.AllLanguageCodes) {
		t.Errorf("Languages = %v, want %v", tk.Languages(), ref.AllLanguageCodes)
	}
	for i, code := range ref.AllLanguageCodes {
		id, ok := tk.LanguageToken(code)
		if !ok || id != ref.AllLanguageTokens[i] {
			t.Errorf("LanguageToken(%q) = %d, %v", code, id, ok)
		}
		if c, ok := tk.LanguageOf(ref.AllLanguageTokens[i]); !ok || c != code {
			t.Errorf("LanguageOf(%d) = %q, %v", ref.AllLanguageTokens[i], c, ok)
		}
	}
	if !slices.Equal(tk.NonSpeechTokens(), ref.NonSpeechTokens) {
		t.Errorf("NonSpeechTokens = %v\nwant %v", tk.NonSpeechTokens(), ref.NonSpeechTokens)
	}
	for _, c := range ref.Encode {
		if got := tk.Encode(c.Text); !slices.Equal(got, c.IDs) && !(len(got) == 0 && len(c.IDs) == 0) {
			t.Errorf("Encode(%q) = %v, want %v", c.Text, got, c.IDs)
		}
	}
	for _, c := range ref.Decode {
		if got := tk.Decode(c.IDs); got != c.Decode {
			t.Errorf("Decode(%v) = %q, want %q", c.IDs, got, c.Decode)
		}
		if got := tk.DecodeWithTimestamps(c.IDs); got != c.DecodeWithTimestamps {
			t.Errorf("DecodeWithTimestamps(%v) = %q, want %q", c.IDs, got, c.DecodeWithTimestamps)
		}
		if got := hex.EncodeToString(tk.DecodeBytes(c.IDs)); got != c.BytesHex {
			t.Errorf("DecodeBytes(%v) = %s, want %s", c.IDs, got, c.BytesHex)
		}
	}
	for _, c := range ref.SOTSequence {
		if got := tk.SOTSequence(c.Language, c.Task); !slices.Equal(got, c.IDs) {
			t.Errorf("SOTSequence(%q, %q) = %v, want %v", c.Language, c.Task, got, c.IDs)
		}
	}
}

func TestReferenceVectors(t *testing.T) {
	v := refVectors(t)
	for i := range v.Tokenizers {
		ref := &v.Tokenizers[i]
		t.Run(ref.Name, func(t *testing.T) {
			checkAgainst(t, fromAsset(t, ref.File, ref.Multilingual, ref.NumLanguages), ref)
		})
	}
}

func TestLanguages(t *testing.T) {
	v := refVectors(t)
	if len(v.Languages) != MaxLanguages {
		t.Fatalf("%d languages, reference has %d", MaxLanguages, len(v.Languages))
	}
	for i, l := range v.Languages {
		if languages[i].code != l[0] || languages[i].name != l[1] {
			t.Errorf("language %d = %v, want %v", i, languages[i], l)
		}
	}
	if !reflect.DeepEqual(LanguageCodes, v.ToLanguageCode) {
		t.Errorf("LanguageCodes differ from TO_LANGUAGE_CODE")
	}
	for in, want := range map[string]string{"en": "en", "EN": "en", "English": "en", "burmese": "my", "Haitian Creole": "ht", "yue": "yue", "klingon": ""} {
		got, ok := LanguageCode(in)
		if got != want || ok != (want != "") {
			t.Errorf("LanguageCode(%q) = %q, %v", in, got, ok)
		}
	}
}

// TestReplaceInvalid needs no assets: the recorded bytes and Python's
// decoding of them pin errors="replace" down.
func TestReplaceInvalid(t *testing.T) {
	for _, ref := range refVectors(t).Tokenizers {
		for _, c := range ref.Decode {
			b, err := hex.DecodeString(c.BytesHex)
			if err != nil {
				t.Fatal(err)
			}
			if got := replaceInvalid(b); got != c.Decode {
				t.Errorf("replaceInvalid(%x) = %q, want %q", b, got, c.Decode)
			}
		}
	}
	for in, want := range map[string]string{
		"\xe6\x97":             "\ufffd",
		"\xe0\x80\xaf":         "\ufffd\ufffd\ufffd",
		"\xed\xa0\x80":         "\ufffd\ufffd\ufffd",
		"\xf0\x9f\x98A":        "\ufffdA",
		"\xf4\x90\x80\x80":     "\ufffd\ufffd\ufffd\ufffd",
		"\xe2\x82\xe2\x82\xac": "\ufffd€",
		"ok\xef\xbf\xbd":       "ok\ufffd",
	} {
		if got := replaceInvalid([]byte(in)); got != want {
			t.Errorf("replaceInvalid(%q) = %q, want %q", in, got, want)
		}
	}
}

// writeJSON writes v as dir/name and returns the path.
func writeJSON(t *testing.T, dir, name string, v any) string {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func toByteLevel(b []byte) string {
	var sb strings.Builder
	for _, c := range b {
		sb.WriteRune(byteLevel[c])
	}
	return sb.String()
}

// tokenizerJSON writes a tokenizer.json (vocabulary and added tokens, as the
// fast tokenizers store them) for tk.
func tokenizerJSON(t *testing.T, tk *Tokenizer) map[string]string {
	t.Helper()
	vocab := make(map[string]int, tk.nOrdinary)
	for id, b := range tk.tokens[:tk.nOrdinary] {
		vocab[toByteLevel(b)] = id
	}
	type addedToken struct {
		ID      int    `json:"id"`
		Content string `json:"content"`
		Special bool   `json:"special"`
	}
	var added []addedToken
	for id := tk.nOrdinary; id < len(tk.tokens); id++ {
		added = append(added, addedToken{id, string(tk.tokens[id]), true})
	}
	doc := map[string]any{
		"added_tokens": added,
		"model":        map[string]any{"type": "BPE", "vocab": vocab, "merges": []string{}},
	}
	return map[string]string{"tokenizer.json": writeJSON(t, t.TempDir(), "tokenizer.json", doc)}
}

func sameTokenizer(t *testing.T, got, want *Tokenizer) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("tokenizers differ: multilingual %v/%v, languages %d/%d, vocab %d/%d",
			got.multilingual, want.multilingual, got.numLanguages, want.numLanguages, len(got.tokens), len(want.tokens))
	}
}

func TestFromHF(t *testing.T) {
	v := refVectors(t)
	byName := map[string]*refTokenizer{}
	for i := range v.Tokenizers {
		byName[v.Tokenizers[i].Name] = &v.Tokenizers[i]
	}

	t.Run("committed export", func(t *testing.T) {
		// Written by the Python generator, independently of this package.
		dir := pipelinetest.ExpandDir(t, "testdata/hf-multilingual")
		files := map[string]string{}
		for _, name := range []string{"vocab.json", "added_tokens.json", "special_tokens_map.json"} {
			files[name] = filepath.Join(dir, name)
		}
		tk, err := FromHF(files)
		if err != nil {
			t.Fatal(err)
		}
		checkAgainst(t, tk, byName["multilingual-99"])
		sameTokenizer(t, tk, fromAsset(t, "multilingual.tiktoken", true, 99))
	})

	for _, ref := range v.Tokenizers {
		t.Run("tokenizer.json "+ref.Name, func(t *testing.T) {
			want := fromAsset(t, ref.File, ref.Multilingual, ref.NumLanguages)
			tk, err := FromHF(tokenizerJSON(t, want))
			if err != nil {
				t.Fatal(err)
			}
			sameTokenizer(t, tk, want)
		})
	}

	t.Run("old export", func(t *testing.T) {
		// Early exports named <|nospeech|> <|nocaptions|> and listed no
		// timestamps; their directory keys may carry a folder.
		want := fromAsset(t, "multilingual.tiktoken", true, 99)
		dir := t.TempDir()
		vocab := map[string]int{"<|endoftext|>": want.eot}
		for id, b := range want.tokens[:want.nOrdinary] {
			vocab[toByteLevel(b)] = id
		}
		added := map[string]int{}
		for text, id := range want.specials {
			if id == want.eot || id >= want.timestampBegin {
				continue
			}
			if text == "<|nospeech|>" {
				text = "<|nocaptions|>"
			}
			added[text] = id
		}
		tk, err := FromHF(map[string]string{
			"tokenizer/vocab.json":        writeJSON(t, dir, "vocab.json", vocab),
			"tokenizer/added_tokens.json": writeJSON(t, dir, "added_tokens.json", added),
		})
		if err != nil {
			t.Fatal(err)
		}
		sameTokenizer(t, tk, want)
	})

	t.Run("original assets", func(t *testing.T) {
		// openai-whisper's pre-tiktoken assets list only <|endoftext|>; the
		// model's config.json sizes the vocabulary.
		want := fromAsset(t, "multilingual.tiktoken", true, 99)
		dir := t.TempDir()
		files := map[string]string{
			"vocab.json":        filepath.Join(pipelinetest.ExpandDir(t, "testdata/hf-multilingual"), "vocab.json"),
			"added_tokens.json": writeJSON(t, dir, "added_tokens.json", map[string]int{"<|endoftext|>": want.eot}),
		}
		if _, err := FromHF(files); err == nil {
			t.Error("accepted without <|startoftranscript|> or config.json")
		}
		files["config.json"] = writeJSON(t, dir, "config.json", map[string]any{"vocab_size": want.VocabSize()})
		tk, err := FromHF(files)
		if err != nil {
			t.Fatal(err)
		}
		sameTokenizer(t, tk, want)
	})

	t.Run("bad layout", func(t *testing.T) {
		want := fromAsset(t, "multilingual.tiktoken", true, 99)
		files := tokenizerJSON(t, want)
		var doc map[string]any
		data, _ := os.ReadFile(files["tokenizer.json"])
		if err := json.Unmarshal(data, &doc); err != nil {
			t.Fatal(err)
		}
		added := doc["added_tokens"].([]any)
		added[len(added)-1].(map[string]any)["content"] = "<|29.98|>" // duplicate name, other id
		files["tokenizer.json"] = writeJSON(t, t.TempDir(), "tokenizer.json", doc)
		if _, err := FromHF(files); err == nil {
			t.Fatal("a misplaced timestamp token was accepted")
		}
	})
}

// randomText draws from scripts, whitespace and symbols that stress the
// splitter's classes.
func randomText(r *rand.Rand) string {
	alphabet := []rune("aZ'sé\u0301 \t\n\r\u00a0\u3000\u2028日本語한\u0627\u0928\u094d0١²Ⅷ!?.,-♪\U0001f600\u200d\ufffd")
	var sb strings.Builder
	for n := r.IntN(40); n > 0; n-- {
		sb.WriteRune(alphabet[r.IntN(len(alphabet))])
	}
	return sb.String()
}

func TestRoundTrip(t *testing.T) {
	tk := fromAsset(t, "multilingual.tiktoken", true, 100)
	en := fromAsset(t, "gpt2.tiktoken", false, 99)
	var texts []string
	for _, c := range refVectors(t).Tokenizers[0].Encode {
		texts = append(texts, c.Text)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		texts = append(texts, randomText(r))
	}
	for _, s := range texts {
		for _, k := range []*Tokenizer{tk, en} {
			ids := k.Encode(s)
			if got := k.Decode(ids); got != s {
				t.Errorf("Decode(Encode(%q)) = %q", s, got)
			}
		}
	}
	// Invalid UTF-8 survives as bytes.
	bad := "a\xff\xe6\x97 b\x80"
	if got := string(tk.DecodeBytes(tk.Encode(bad))); got != bad {
		t.Errorf("DecodeBytes(Encode(%q)) = %q", bad, got)
	}
}

// TestPiecesTile checks the splitter's pieces cover the text exactly.
func TestPiecesTile(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 2000 {
		s := randomText(r)
		var b strings.Builder
		for rest := s; len(rest) > 0; {
			n := nextPiece(rest)
			if n <= 0 || n > len(rest) || !utf8.ValidString(rest[:n]) {
				t.Fatalf("nextPiece(%q) = %d", rest, n)
			}
			b.WriteString(rest[:n])
			rest = rest[n:]
		}
		if b.String() != s {
			t.Fatalf("pieces of %q joined = %q", s, b.String())
		}
	}
}

// TestHeapMatchesScan: the heap BPE for long pieces must make exactly the
// merges of tiktoken's scan.
func TestHeapMatchesScan(t *testing.T) {
	tk := fromAsset(t, "multilingual.tiktoken", true, 99)
	r := rand.New(rand.NewPCG(5, 6))
	words := []string{"the", "super", "cal", "ifrag", "ilistic", "an", "a", "aa", "ab", "日本", "é", "zz", "qx", "ing", "tion"}
	for range 300 {
		var b strings.Builder
		for n := 1 + r.IntN(120); n > 0; n-- {
			b.WriteString(words[r.IntN(len(words))])
		}
		s := b.String()
		scan := tk.bpeScan(s, nil)
		hp := tk.bpeHeap(s, nil)
		if !slices.Equal(scan, hp) {
			t.Fatalf("%q: scan %v, heap %v", s, scan, hp)
		}
	}
}

func TestLongInput(t *testing.T) {
	tk := fromAsset(t, "multilingual.tiktoken", true, 99)
	s := strings.Repeat("abcdefghij", 20000) // one 200 kB piece
	if got := tk.Decode(tk.Encode(s)); got != s {
		t.Fatal("long piece does not round-trip")
	}
}

func TestSOTSequenceErrors(t *testing.T) {
	tk := fromAsset(t, "multilingual.tiktoken", true, 99)
	for _, c := range [][2]string{{"klingon", ""}, {"yue", "transcribe"}, {"en", "summarise"}} {
		if got := tk.SOTSequence(c[0], c[1]); got != nil {
			t.Errorf("SOTSequence(%q, %q) = %v, want nil", c[0], c[1], got)
		}
	}
	if _, ok := tk.LanguageOf(tk.Translate()); ok {
		t.Error("LanguageOf(translate) is a language")
	}
	if id, ok := tk.SpecialToken("<|30.00|>"); !ok || id != tk.TimestampBegin()+1500 {
		t.Errorf("<|30.00|> = %d, %v", id, ok)
	}
}

// benchProse is transcript-like English, the common case.
const benchProse = `So, I think the main thing we learned this quarter is that people don't ` +
	`read the manual. They open the box, they plug it in, and if it doesn't work in the first ` +
	`two minutes they call support. We had 1,245 calls in March alone -- that's up 38% from ` +
	`last year -- and most of them were about the same three problems. The fix isn't more ` +
	`documentation; it's a better first-run experience. "Make the easy thing obvious," as ` +
	`Maria put it. I'll send the numbers around after the meeting, and we'll pick it up on ` +
	`Thursday at 10:30.`

func benchEncode(b *testing.B, text string) {
	tk := fromAsset(b, "multilingual.tiktoken", true, 99)
	b.SetBytes(int64(len(text)))
	b.ReportAllocs()
	for b.Loop() {
		tk.Encode(text)
	}
}

func BenchmarkEncode(b *testing.B) {
	b.Run("prose", func(b *testing.B) { benchEncode(b, strings.Repeat(benchProse+" ", 8)) })
	b.Run("vectors", func(b *testing.B) {
		// Every reference text: scripts, emoji, long runs (heap BPE).
		var sb strings.Builder
		for _, c := range refVectors(b).Tokenizers[1].Encode {
			sb.WriteString(c.Text)
			sb.WriteByte(' ')
		}
		benchEncode(b, sb.String())
	})
}

// TestCharClasses checks the splitter's \p{L}, \p{N} and \s against
// testdata/classes.json, which records for every code point what tiktoken's
// regex engine decides.
func TestCharClasses(t *testing.T) {
	data := pipelinetest.ReadFile(t, "testdata/classes.json")
	var m map[string][][2]rune
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	want := make([]int8, utf8.MaxRune+1) // classOther = 0
	for name, cls := range map[string]int{"letter": classLetter, "number": classNumber, "space": classSpace} {
		if len(m[name]) == 0 {
			t.Fatalf("classes.json has no %s ranges", name)
		}
		for _, rg := range m[name] {
			for r := rg[0]; r <= rg[1]; r++ {
				want[r] = int8(cls)
			}
		}
	}
	bad := 0
	for r := rune(0); r <= utf8.MaxRune; r++ {
		if r >= 0xD800 && r < 0xE000 {
			continue // not encodable; tiktoken never sees them
		}
		if got := classOf(r); got != int(want[r]) {
			if bad++; bad <= 20 {
				t.Errorf("class of U+%04X = %d, tiktoken has %d", r, got, want[r])
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d code points classed differently", bad)
	}
}

// faster-whisper's tokenizer.json names Hebrew <|iw|>: read as <|he|>.
func TestHebrewIW(t *testing.T) {
	tk, err := FromHF(map[string]string{"tokenizer.json": testenv.Asset(t, "whisper/tiny.en-ct2/tokenizer.json")})
	if err != nil {
		t.Fatal(err)
	}
	id, ok := tk.LanguageToken("he")
	if !ok || len(tk.Languages()) != 99 || tk.Languages()[id-tk.LanguageTokens()[0]] != "he" {
		t.Fatalf("he: %d %v, %d languages", id, ok, len(tk.Languages()))
	}
}
