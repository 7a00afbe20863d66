package whisper

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/falocal/falocal/pipelines/pipelinetest"
	"github.com/falocal/falocal/pipelines/whisper/tokenizer"
)

// medianFilter: width 3 and 7 against medians worked out by hand, with
// torch's reflect padding at the ends ([a b c …] pads to [… c b | a b c …]).
func TestMedianFilter(t *testing.T) {
	cases := []struct {
		in    []float32
		width int
		want  []float32
	}{
		// windows: [2 1 2] [1 2 9] [2 9 3] [9 3 4] [3 4 3]
		{[]float32{1, 2, 9, 3, 4}, 3, []float32{2, 2, 3, 4, 3}},
		// reflect by 3: [4 3 2 | 1 2 3 4 5 6 | 5 4 3]; a spike is removed
		{[]float32{1, 2, 3, 4, 5, 6}, 7, []float32{3, 3, 3, 4, 4, 4}},
		{[]float32{0, 0, 0, 100, 0, 0, 0, 0}, 7, []float32{0, 0, 0, 0, 0, 0, 0, 0}},
		// a row no longer than width/2 passes through
		{[]float32{5, 1, 3}, 7, []float32{5, 1, 3}},
	}
	for _, c := range cases {
		got := make([]float32, len(c.in))
		medianFilter(got, c.in, c.width)
		if !slices.Equal(got, c.want) {
			t.Errorf("medianFilter(%v, %d) = %v, want %v", c.in, c.width, got, c.want)
		}
	}
}

// dtw follows the path of greatest total weight, and breaks ties as
// openai-whisper's dtw_cpu and CTranslate2's negative_dtw do: the diagonal
// only when strictly cheapest, then up (next token, same frame), else left
// (next frame).
func TestDTW(t *testing.T) {
	cases := []struct {
		name       string
		x          [][]float32
		rows, cols []int
	}{
		// by hand (cost C = -x + min of the three, j outer, i inner):
		// C11 = -1 (diagonal from C00 = 0); C21 = C31 = -1 (up);
		// C12 = -1 (left); C22: C11 = C12 = C21 = -1 tie → left, -2;
		// C32: up (C22 = -2 strictly least), -2; C13 = -1 (left);
		// C23: left (C22 = -2), -2; C33: C22 = C23 = C32 = -2 tie → left, -3.
		// Back from (3,3): left, up, left, up, diagonal.
		{"identity", [][]float32{{1, 0, 0}, {0, 1, 0}, {0, 0, 1}},
			[]int{0, 1, 1, 2, 2}, []int{0, 0, 1, 1, 2}},
		// one row: all left moves
		{"one token", [][]float32{{3, 1, 2}}, []int{0, 0, 0}, []int{0, 1, 2}},
		// one frame: all up moves
		{"one frame", [][]float32{{1}, {2}, {3}}, []int{0, 1, 2}, []int{0, 0, 0}},
		// token 1 weighs only on the last frame; by hand, C23 = -15 (up
		// from C13 = -15) and C24 ties C13 = C14 = C23 = -15 → left, so
		// the path drops to row 1 at column 2, one frame early
		{"late", [][]float32{{5, 5, 5, 0}, {0, 0, 0, 5}},
			[]int{0, 0, 0, 1, 1}, []int{0, 1, 2, 2, 3}},
	}
	for _, c := range cases {
		n, m := len(c.x), len(c.x[0])
		var flat []float32
		for _, r := range c.x {
			flat = append(flat, r...)
		}
		rows, cols := dtw(flat, n, m)
		if !slices.Equal(rows, c.rows) || !slices.Equal(cols, c.cols) {
			t.Errorf("%s: path rows %v cols %v, want %v %v", c.name, rows, cols, c.rows, c.cols)
		}
	}
}

func timings(words ...string) []wordTiming {
	var out []wordTiming
	for i, w := range words {
		out = append(out, wordTiming{word: w, tokens: []int{i}})
	}
	return out
}

// mergePunctuations attaches openai-whisper's prepended punctuation to the
// next word and its appended punctuation to the previous one, leaving empty
// words (with no tokens) behind.
func TestMergePunctuations(t *testing.T) {
	cases := []struct {
		in   []string
		want []string
		toks string
	}{
		{[]string{" Hello", ",", " world", "."}, []string{" Hello,", "", " world.", ""}, "[[0 1] [] [2 3] []]"},
		{[]string{" He", " said", " \"", "hi", "\"", "."}, []string{" He", " said", "", " \"hi\".", "", ""}, "[[0] [1] [] [2 3 4 5] [] []]"},
		{[]string{" (", "see", ")", " it"}, []string{"", " (see)", "", " it"}, "[[] [0 1 2] [] [3]]"},
		// a word ending in a space takes nothing after it
		{[]string{" a ", "."}, []string{" a ", "."}, "[[0] [1]]"},
		// "-" is prepended only after a space
		{[]string{" well", "-", "known"}, []string{" well", "-", "known"}, "[[0] [1] [2]]"},
		{[]string{" 8", " of", " spades", ",", " 4"}, []string{" 8", " of", " spades,", "", " 4"}, "[[0] [1] [2 3] [] [4]]"},
	}
	for _, c := range cases {
		a := timings(c.in...)
		mergePunctuations(a, prependPunctuations, appendPunctuations)
		var got []string
		var toks [][]int
		for _, w := range a {
			got = append(got, w.word)
			toks = append(toks, w.tokens)
		}
		if !slices.Equal(got, c.want) || fmt.Sprint(toks) != c.toks {
			t.Errorf("mergePunctuations(%q) = %q %v, want %q %s", c.in, got, toks, c.want, c.toks)
		}
	}
}

// addWordTimestamps' long-form rules, worked by hand: durations 0.4, 0.4,
// 2.2, 2.0 have the median 1.2, capped at 0.7, so the longest word is 1.4;
// " Three" (2.0 s) after "." starts 1.4 s before its end, at 3.6; the "."
// merges into " two" (keeping " two"'s times); the segment starts at its
// first word, and its last word, ending more than 0.5 s after the segment,
// ends at max(start + median, segment end) = 14.3.
func TestAddWordTimestampsRules(t *testing.T) {
	al := []wordTiming{
		{word: " One", tokens: []int{1}, start: 0.0, end: 0.4},
		{word: " two", tokens: []int{2}, start: 0.4, end: 0.8},
		{word: ".", tokens: []int{3}, start: 0.8, end: 3.0},
		{word: " Three", tokens: []int{4}, start: 3.0, end: 5.0},
	}
	tok := testTokenizer(t)
	seg := &Segment{Start: 10.0, End: 14.0}
	seg.Tokens = []int{tok.TimestampBegin(), 1, 2, 3, 4, tok.TimestampBegin() + 250}
	addWordTimestamps(tok, [][]*Segment{{seg}}, [][]wordTiming{al}, []float64{10}, 0)
	want := []Word{{Start: 10, End: 10.4, Text: " One"}, {Start: 10.4, End: 10.8, Text: " two."}, {Start: 13.6, End: 14.3, Text: " Three"}}
	show := func(ws []Word) string {
		var b strings.Builder
		for _, w := range ws {
			fmt.Fprintf(&b, "%q %.2f-%.2f; ", w.Text, w.Start, w.End)
		}
		return b.String()
	}
	if show(seg.Words) != show(want) {
		t.Errorf("words %v, want %v", seg.Words, want)
	}
	if seg.Start != 10 || seg.End != 14 {
		t.Errorf("segment %.2f-%.2f, want 10.00-14.00", seg.Start, seg.End)
	}
}

// testTokenizer is the English-only tokenizer of the committed tiny-en export.
func testTokenizer(t *testing.T) *tokenizer.Tokenizer {
	t.Helper()
	dir := pipelinetest.ExpandDir(t, filepath.Join("testdata", "tiny-en"))
	files := map[string]string{}
	for _, f := range []string{"vocab.json", "merges.txt", "added_tokens.json", "special_tokens_map.json", "tokenizer_config.json", "config.json"} {
		files[f] = filepath.Join(dir, f)
	}
	tok, err := tokenizer.FromHF(files)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// splitToWordTokens: words start at a space or punctuation, and the
// remaining subwords join the word before them.
func TestSplitToWordTokens(t *testing.T) {
	tok := testTokenizer(t)
	ids := append(tok.Encode(" Hello, cold-hearted world."), tok.EOT())
	words, wt := splitToWordTokens(tok, "en", ids)
	want := []string{" Hello", ",", " cold", "-hearted", " world", ".", "<|endoftext|>"}
	if !slices.Equal(words, want) {
		t.Fatalf("words %q, want %q", words, want)
	}
	var all []int
	for _, w := range wt {
		all = append(all, w...)
	}
	if !slices.Equal(all, ids) {
		t.Errorf("word tokens %v do not cover %v", wt, ids)
	}
	// unicode splitting cuts between characters, never inside one
	ids = tok.Encode("日本語")
	words, wt = splitToWordTokens(tok, "ja", ids)
	if strings.Join(words, "") != "日本語" || len(wt) != 3 {
		t.Errorf("ja: words %q (%v), want the 3 characters", words, wt)
	}
}
