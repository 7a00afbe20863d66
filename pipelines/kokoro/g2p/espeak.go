package g2p

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"sync"
)

// espeak reads words the lexicons lack with espeak-ng (GPL-3.0), run as a
// separate program, never linked, the way misaki's EspeakFallback
// (misaki/espeak.py) reads them through phonemizer: IPA with stress marks
// and "^" ties, punctuation kept, then mapped to Kokoro's symbols.
type espeak struct {
	path    string
	voice   string
	british bool

	mu       sync.Mutex
	cache    map[string]string
	anchorPS string // the anchor's phonemes
}

// findEspeak resolves Options.Espeak: a path or name, "" for espeak-ng in
// PATH (nil if absent), "none" for no espeak-ng.
func findEspeak(name string, british bool) (*espeak, error) {
	voice := "en-us"
	if british {
		voice = "en-gb"
	}
	if name == "none" {
		return nil, nil
	}
	explicit := name != ""
	if !explicit {
		name = "espeak-ng"
	}
	p, err := exec.LookPath(name)
	if err != nil {
		if explicit {
			return nil, fmt.Errorf("g2p: espeak-ng: %w", err)
		}
		return nil, nil
	}
	return &espeak{path: p, voice: voice, british: british, cache: map[string]string{}}, nil
}

// phonemizerMarks are phonemizer's default punctuation marks, which it cuts
// out before espeak-ng reads the text and puts back after.
var phonemizerMarks = regexp.MustCompile(`(?:\s*[;:,.!?¡¿—…"«»“”(){}\[\]]+\s*)+`)

func (e *espeak) phonemize(ctx context.Context, text string) (string, error) {
	e.mu.Lock()
	ps, ok := e.cache[text]
	e.mu.Unlock()
	if ok {
		return ps, nil
	}
	var out strings.Builder
	last := 0
	for _, m := range phonemizerMarks.FindAllStringIndex(text, -1) {
		if err := e.chunk(ctx, &out, text[last:m[0]]); err != nil {
			return "", err
		}
		out.WriteString(text[m[0]:m[1]])
		last = m[1]
	}
	if err := e.chunk(ctx, &out, text[last:]); err != nil {
		return "", err
	}
	ps = e.toKokoro(strings.TrimSpace(out.String()))
	e.mu.Lock()
	e.cache[text] = ps
	e.mu.Unlock()
	return ps, nil
}

// espeak-ng's program gives a clause without a primary stress one of its
// own ("the" alone reads "ðˈə", "Gujrat" "ɡˈʊdʒɹæt"), which the library
// call phonemizer makes does not ("ðə", "ɡˌʊdʒɹæt"). Read after a stressed
// anchor word, in the same clause, the text keeps the stress it has alone;
// that reading is taken where the text has no primary stress either after
// the anchor or before it, and reads the same but for stress marks (after a
// word, a leading minus reads as a dash).
const anchor = "Bob"

var stressMarks = strings.NewReplacer("ˈ", "", "ˌ", "")

func (e *espeak) chunk(ctx context.Context, out *strings.Builder, text string) error {
	// Each line is a clause of its own; the anchor goes before each.
	first := true
	for _, line := range strings.FieldsFunc(text, func(r rune) bool { return r == '\n' || r == '\r' }) {
		if strings.TrimSpace(line) == "" {
			continue
		}
		if !first {
			out.WriteString(" ")
		}
		first = false
		if err := e.clause(ctx, out, line); err != nil {
			return err
		}
	}
	return nil
}

func (e *espeak) clause(ctx context.Context, out *strings.Builder, text string) error {
	e.mu.Lock()
	anchorPS := e.anchorPS
	e.mu.Unlock()
	if anchorPS == "" {
		p, err := e.run(ctx, anchor)
		if err != nil {
			return err
		}
		anchorPS = p
		e.mu.Lock()
		e.anchorPS = anchorPS
		e.mu.Unlock()
	}
	plain, err := e.run(ctx, text)
	if err != nil {
		return err
	}
	after, err := e.run(ctx, anchor+" "+text)
	if err != nil {
		return err
	}
	rest, ok := strings.CutPrefix(after, anchorPS+" ")
	if ok && !strings.Contains(rest, primary) && stressMarks.Replace(rest) == stressMarks.Replace(plain) {
		before, err := e.run(ctx, text+" "+anchor)
		if err != nil {
			return err
		}
		if head, ok := strings.CutSuffix(before, " "+anchorPS); ok && !strings.Contains(head, primary) {
			plain = rest
		}
	}
	out.WriteString(plain)
	return nil
}

// run reads text with espeak-ng: IPA, stress marks, "^" ties, one line.
func (e *espeak) run(ctx context.Context, text string) (string, error) {
	cmd := exec.CommandContext(ctx, e.path, "-q", "--ipa", "--tie=^", "-v", e.voice)
	cmd.Stdin = strings.NewReader(text)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("g2p: %s: %w: %s", e.path, err, strings.TrimSpace(stderr.String()))
	}
	line := strings.TrimSpace(stdout.String())
	line = strings.ReplaceAll(line, "\n", " ")
	return strings.ReplaceAll(line, "  ", " "), nil
}

// e2m are misaki's espeak → Kokoro replacements, longest first.
var e2m = []struct{ from, to string }{
	{"ʔˌn\u0329", "ʔn"},
	{"ʔn\u0329", "ʔn"}, {"a^ɪ", "I"}, {"a^ʊ", "W"}, {"d^ʒ", "ʤ"}, {"e^ɪ", "A"}, {"t^ʃ", "ʧ"}, {"ɔ^ɪ", "Y"}, {"ə^l", "ᵊl"},
	{"ʲo", "jo"}, {"ʲə", "jə"},
	{"e", "A"}, {"ʲ", ""}, {"ɚ", "əɹ"}, {"r", "ɹ"}, {"x", "k"}, {"ç", "k"}, {"ɐ", "ə"}, {"ɬ", "l"}, {"\u0303", ""},
}

var syllabic = regexp.MustCompile(`(\S)\x{0329}`)

func (e *espeak) toKokoro(ps string) string {
	for _, r := range e2m {
		ps = strings.ReplaceAll(ps, r.from, r.to)
	}
	ps = syllabic.ReplaceAllString(ps, "ᵊ$1")
	ps = strings.ReplaceAll(ps, "\u0329", "")
	if e.british {
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
	ps = strings.ReplaceAll(ps, "o", "ɔ") // espeak-ng before 1.52
	ps = strings.ReplaceAll(ps, "ɾ", "T")
	ps = strings.ReplaceAll(ps, "ʔ", "t")
	return strings.ReplaceAll(ps, "^", "")
}
