package kokoro

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/falocal/falocal/pipelines"
)

// Phonemizer turns text into the phoneme string Kokoro reads (misaki's
// symbols: IPA plus A I O Q W Y ʤ ʧ ᵊ … and the punctuation ;:,.!?—…"()“”).
// Symbols outside the model's vocabulary are dropped later, so a front end
// may pass them through. Errors that are the text's fault should be
// *pipelines.ValidationError (field "prompt"); others are answered 503.
type Phonemizer interface {
	Phonemize(ctx context.Context, text string) (string, error)
}

// EspeakBinary is the espeak-ng program the default front end runs.
var EspeakBinary = "espeak-ng"

// Espeak reads text with espeak-ng, run as a separate program (it is
// GPL-3.0: never linked), and maps its IPA to Kokoro's symbols as misaki's
// espeak fallbacks do (misaki 0.9.4, misaki/espeak.py: EspeakFallback for
// English, EspeakG2P for the other languages). Punctuation is kept, as
// phonemizer's preserve_punctuation does.
type Espeak struct {
	Voice string // espeak-ng voice: en-us, en-gb, es, fr-fr, it, pt-br, hi, ja, cmn
	Name  string // the language, for messages
}

// ErrNoEspeak is returned (wrapped in a 503) when espeak-ng is not installed.
var ErrNoEspeak = errors.New("espeak-ng is not installed")

// punctuation is phonemizer's default set of preserved marks.
const punctuation = `;:,.!?¡¿—…"«»“”(){}[]`

// langFlag is espeak-ng's mark of a switch to another language: "(en)",
// with the tie character between its letters.
var langFlag = regexp.MustCompile(`\((?:\^?[a-z]{1,3})(?:\^?-?\^?[a-z]{1,3})*\^?\)`)

// Phonemize implements Phonemizer.
func (e Espeak) Phonemize(ctx context.Context, text string) (string, error) {
	// control characters (NUL ends espeak-ng's reading of a line) are spaces
	text = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, text)
	pieces := splitPunct(text)
	var words []string
	for _, p := range pieces {
		if !p.punct {
			words = append(words, p.text)
		}
	}
	ipa, err := e.run(ctx, words)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	k := 0
	for _, p := range pieces {
		if p.punct {
			b.WriteString(p.text)
			continue
		}
		ps := ipa[k]
		k++
		if flags := langFlag.FindAllString(ps, -1); len(flags) > 0 {
			if e.Voice == "ja" || e.Voice == "cmn" {
				return "", pipelines.Invalid("prompt", fmt.Sprintf("espeak-ng cannot read %q as %s (it switches to another language, %s): "+
					"this server reads %s with espeak-ng, which knows only part of the script (Japanese: kana, no kanji; Mandarin: the "+
					"characters its dictionary has, most of them from espeak-ng 1.52 on); no dedicated %s front end is installed",
					strings.TrimSpace(p.text), e.Name, strings.ReplaceAll(flags[0], "^", ""), e.Name, e.Name))
			}
			ps = langFlag.ReplaceAllString(ps, "") // misaki: language_switch='remove-flags'
		}
		if e.Voice == "en-us" || e.Voice == "en-gb" {
			ps = englishFromEspeak(ps, e.Voice == "en-gb")
		} else {
			ps = otherFromEspeak(ps)
		}
		if lead := strings.TrimLeftFunc(p.text, unicode.IsSpace); len(lead) < len(p.text) && b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(ps)
		if trail := strings.TrimRightFunc(p.text, unicode.IsSpace); len(trail) < len(p.text) {
			b.WriteByte(' ')
		}
	}
	out := strings.Join(strings.Fields(b.String()), " ")
	return out, nil
}

// piece is a run of text to read, or of punctuation (with the spaces
// around it) to keep.
type piece struct {
	text  string
	punct bool
}

// splitPunct cuts text into runs of words and runs of marks. A '.' or ','
// between digits (3.14, 1,000) belongs to the number.
func splitPunct(text string) []piece {
	rs := []rune(text)
	isMark := func(i int) bool {
		r := rs[i]
		if !strings.ContainsRune(punctuation, r) {
			return false
		}
		if (r == '.' || r == ',') && i > 0 && i+1 < len(rs) && unicode.IsDigit(rs[i-1]) && unicode.IsDigit(rs[i+1]) {
			return false
		}
		return true
	}
	var out []piece
	start := 0
	for start < len(rs) {
		mark := isMark(start)
		end := start + 1
		for end < len(rs) && (isMark(end) == mark || unicode.IsSpace(rs[end])) {
			if !mark && unicode.IsSpace(rs[end]) {
				// spaces before a mark go with the mark
				j := end
				for j < len(rs) && unicode.IsSpace(rs[j]) {
					j++
				}
				if j < len(rs) && isMark(j) {
					break
				}
			}
			end++
		}
		s := string(rs[start:end])
		if mark {
			// keep the marks, with one space where the text had any
			m := strings.TrimSpace(s)
			if strings.TrimLeftFunc(s, unicode.IsSpace) != s {
				m = " " + m
			}
			if strings.TrimRightFunc(s, unicode.IsSpace) != s {
				m += " "
			}
			out = append(out, piece{m, true})
		} else if strings.TrimSpace(s) != "" {
			out = append(out, piece{s, false})
		} else if len(out) > 0 {
			out[len(out)-1].text += " "
		}
		start = end
	}
	return out
}

// maxLine is the longest line (in runes) handed to espeak-ng: it cuts a
// longer clause itself, and reads a very long one slowly.
const maxLine = 300

// run reads every piece with one espeak-ng process, a line at a time (a
// piece longer than maxLine as several lines, cut at spaces); should the
// lines not come back one for one, each line is read by a process of its own.
func (e Espeak) run(ctx context.Context, pieces []string) ([]string, error) {
	if len(pieces) == 0 {
		return nil, nil
	}
	var lines []string
	owner := []int{} // line → piece
	for i, p := range pieces {
		for _, l := range cutLine(strings.Fields(p), maxLine) {
			lines = append(lines, l)
			owner = append(owner, i)
		}
	}
	out, err := e.exec(ctx, strings.Join(lines, "\n")+"\n")
	if err != nil {
		return nil, err
	}
	got := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(got) != len(lines) {
		got = make([]string, len(lines))
		for i, l := range lines {
			o, err := e.exec(ctx, l+"\n")
			if err != nil {
				return nil, err
			}
			got[i] = strings.Join(strings.Fields(o), " ")
		}
	}
	res := make([]string, len(pieces))
	for i, g := range got {
		if g = strings.TrimSpace(g); g != "" {
			if res[owner[i]] != "" {
				res[owner[i]] += " "
			}
			res[owner[i]] += g
		}
	}
	return res, nil
}

// cutLine joins words into lines of at most max runes (a longer word is a
// line of its own); no words give one empty line.
func cutLine(words []string, max int) []string {
	var out []string
	cur := ""
	for _, w := range words {
		if cur != "" && utf8.RuneCountInString(cur)+1+utf8.RuneCountInString(w) > max {
			out = append(out, cur)
			cur = ""
		}
		if cur != "" {
			cur += " "
		}
		cur += w
	}
	return append(out, cur)
}

func (e Espeak) exec(ctx context.Context, input string) (string, error) {
	bin, err := exec.LookPath(EspeakBinary)
	if err != nil {
		return "", &pipelines.HTTPError{Status: http.StatusServiceUnavailable, Type: "runner_scheduling_failure",
			Msg: "text to speech in " + e.Name + " needs espeak-ng, an external program (GPL-3.0, run as a separate process, never linked), " +
				"to turn text into phonemes; install it (Debian/Ubuntu: apt-get install espeak-ng)", Err: ErrNoEspeak}
	}
	cmd := exec.CommandContext(ctx, bin, "-q", "--ipa", "--tie=^", "-v", e.Voice)
	cmd.Stdin = strings.NewReader(input)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		return "", pipelines.MapError("espeak-ng failed: "+strings.TrimSpace(stderr.String()), err)
	}
	return stdout.String(), nil
}

// replacer applies misaki's (old → new) pairs longest first, as its sorted
// list does.
type replacer [][2]string

func (r replacer) apply(s string) string {
	for _, p := range r {
		s = strings.ReplaceAll(s, p[0], p[1])
	}
	return s
}

// englishE2M is misaki's EspeakFallback.E2M, longest first.
var englishE2M = replacer{
	{"ʔˌn\u0329", "ʔn"}, {"ʔn\u0329", "ʔn"},
	{"a^ɪ", "I"}, {"a^ʊ", "W"}, {"d^ʒ", "ʤ"}, {"e^ɪ", "A"}, {"t^ʃ", "ʧ"}, {"ɔ^ɪ", "Y"}, {"ə^l", "ᵊl"},
	{"ʲo", "jo"}, {"ʲə", "jə"},
	{"e", "A"}, {"ʲ", ""}, {"ɚ", "əɹ"}, {"r", "ɹ"}, {"x", "k"}, {"ç", "k"}, {"ɐ", "ə"}, {"ɬ", "l"}, {"\u0303", ""},
}

var syllabic = regexp.MustCompile(`(\S)\x{0329}`)

// englishFromEspeak is misaki's EspeakFallback.__call__ on espeak-ng's IPA
// (tie '^'), for Kokoro v1.0 (not misaki's version 2.0).
func englishFromEspeak(ps string, british bool) string {
	ps = englishE2M.apply(strings.TrimSpace(ps))
	ps = syllabic.ReplaceAllString(ps, "ᵊ$1")
	ps = strings.ReplaceAll(ps, "\u0329", "")
	if british {
		ps = strings.ReplaceAll(ps, "e^ə", "ɛː")
		ps = strings.ReplaceAll(ps, "iə", "ɪə")
		ps = strings.ReplaceAll(ps, "ə^ʊ", "Q")
	} else {
		ps = strings.ReplaceAll(ps, "o^ʊ", "O")
		ps = strings.ReplaceAll(ps, "ɜːɹ", "ɜɹ")
		ps = strings.ReplaceAll(ps, "ɜː", "ɜɹ")
		ps = strings.ReplaceAll(ps, "ɪə", "iə")
		ps = strings.ReplaceAll(ps, "ː", "")
	}
	ps = strings.ReplaceAll(ps, "o", "ɔ") // for espeak < 1.52
	ps = strings.ReplaceAll(ps, "ɾ", "T")
	ps = strings.ReplaceAll(ps, "ʔ", "t")
	return strings.ReplaceAll(ps, "^", "")
}

// otherE2M is misaki's EspeakG2P.e2m, sorted as misaki sorts it.
var otherE2M = replacer{
	{"a^ɪ", "I"}, {"a^ʊ", "W"}, {"d^z", "ʣ"}, {"d^ʒ", "ʤ"}, {"e^ɪ", "A"}, {"o^ʊ", "O"},
	{"s^s", "S"}, {"t^s", "ʦ"}, {"t^ʃ", "ʧ"}, {"ɔ^ɪ", "Y"}, {"ə^ʊ", "Q"},
}

// otherFromEspeak is misaki's EspeakG2P.__call__ on espeak-ng's IPA, for
// Kokoro v1.0 (not misaki's version 2.0).
func otherFromEspeak(ps string) string {
	ps = otherE2M.apply(strings.TrimSpace(ps))
	ps = strings.ReplaceAll(ps, "^", "")
	return strings.ReplaceAll(ps, "-", "")
}
