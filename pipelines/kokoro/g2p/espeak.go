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
	anchorPS string // the anchor's phonemes and a space
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

// anchor is read before each chunk, in the same clause. espeak-ng's program
// gives a clause without a stressed word a stress of its own ("the" alone
// reads "ðˈə"), which the library call phonemizer makes does not; after a
// stressed word a chunk keeps the stress it has in the library's reading.
// The anchored reading is taken only where it differs from the plain one in
// stress alone: after a word, "-5" reads as a dash and five.
const anchor = "Bob"

var stressMarks = strings.NewReplacer("ˈ", "", "ˌ", "")

func (e *espeak) chunk(ctx context.Context, out *strings.Builder, text string) error {
	if strings.TrimSpace(text) == "" {
		return nil
	}
	e.mu.Lock()
	prefix := e.anchorPS
	e.mu.Unlock()
	if prefix == "" {
		p, err := e.run(ctx, anchor)
		if err != nil {
			return err
		}
		prefix = p + " "
		e.mu.Lock()
		e.anchorPS = prefix
		e.mu.Unlock()
	}
	plain, err := e.run(ctx, text)
	if err != nil {
		return err
	}
	line, err := e.run(ctx, anchor+" "+text)
	if err != nil {
		return err
	}
	if rest, ok := strings.CutPrefix(line, prefix); ok && stressMarks.Replace(rest) == stressMarks.Replace(plain) {
		plain = rest
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
