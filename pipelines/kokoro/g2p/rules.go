package g2p

import (
	"strings"
	"unicode"
)

// Letter-to-sound rules for words neither lexicon has, used only when
// espeak-ng is not installed: a greedy longest-match of common English
// spellings to Kokoro's symbols, primary stress on the first vowel. They
// read made-up words plausibly; they are no match for espeak-ng.

type lts struct {
	spelling string
	us, gb   string // phonemes; gb empty means the same as us
}

// ltsRules, tried longest first at each position.
var ltsRules = []lts{
	{"tion", "ʃən", "ʃᵊn"}, {"sion", "ʒən", "ʒᵊn"}, {"ture", "ʧəɹ", "ʧə"},
	{"eigh", "A", ""}, {"augh", "ɔ", "ɔː"}, {"ough", "O", "Q"},
	{"igh", "I", ""}, {"tch", "ʧ", ""}, {"dge", "ʤ", ""}, {"sch", "sk", ""},
	{"qu", "kw", ""}, {"ch", "ʧ", ""}, {"sh", "ʃ", ""}, {"th", "θ", ""}, {"ph", "f", ""},
	{"wh", "w", ""}, {"ck", "k", ""}, {"ng", "ŋ", ""}, {"gh", "ɡ", ""}, {"kn", "n", ""},
	{"wr", "ɹ", ""}, {"ee", "i", "iː"}, {"ea", "i", "iː"}, {"oo", "u", "uː"}, {"ou", "W", ""},
	{"ow", "W", ""}, {"ai", "A", ""}, {"ay", "A", ""}, {"oa", "O", "Q"}, {"oi", "Y", ""},
	{"oy", "Y", ""}, {"au", "ɔ", "ɔː"}, {"aw", "ɔ", "ɔː"}, {"ew", "ju", "juː"}, {"ie", "i", "iː"},
	{"ar", "ɑɹ", "ɑː"}, {"er", "əɹ", "ə"}, {"ir", "ɜɹ", "ɜː"}, {"ur", "ɜɹ", "ɜː"}, {"or", "ɔɹ", "ɔː"},
	{"a", "æ", "a"}, {"e", "ɛ", ""}, {"i", "ɪ", ""}, {"o", "ɑ", "ɒ"}, {"u", "ʌ", ""}, {"y", "i", ""},
	{"b", "b", ""}, {"c", "k", ""}, {"d", "d", ""}, {"f", "f", ""}, {"g", "ɡ", ""}, {"h", "h", ""},
	{"j", "ʤ", ""}, {"k", "k", ""}, {"l", "l", ""}, {"m", "m", ""}, {"n", "n", ""}, {"p", "p", ""},
	{"r", "ɹ", ""}, {"s", "s", ""}, {"t", "t", ""}, {"v", "v", ""}, {"w", "w", ""}, {"x", "ks", ""},
	{"z", "z", ""},
}

// readByRules stands in for espeak-ng: punctuation is kept as espeak-ng's
// caller keeps it, runs of digits are read as numbers and runs of letters
// are spelled by the rules. ok is false if nothing could be read.
func (l *lexicon) readByRules(text string) (string, bool) {
	var out strings.Builder
	last := 0
	read := false
	chunk := func(c string) {
		var parts []string
		rs := []rune(c)
		for i := 0; i < len(rs); {
			j := i
			switch {
			case unicode.IsLetter(rs[i]):
				for j < len(rs) && (unicode.IsLetter(rs[j]) || rs[j] == '\'') {
					j++
				}
				if ps, ok := spellByRules(string(rs[i:j]), l.british); ok {
					parts = append(parts, ps)
				}
			case isDigit(rs[i]):
				for j < len(rs) && isDigit(rs[j]) {
					j++
				}
				if ps, ok := l.getNumber(string(rs[i:j]), "", true, ""); ok {
					parts = append(parts, ps)
				}
			default:
				j++
			}
			i = j
		}
		if len(parts) > 0 {
			read = true
		}
		out.WriteString(strings.Join(parts, " "))
	}
	for _, m := range phonemizerMarks.FindAllStringIndex(text, -1) {
		chunk(text[last:m[0]])
		out.WriteString(text[m[0]:m[1]])
		last = m[1]
	}
	chunk(text[last:])
	ps := strings.TrimSpace(out.String())
	return ps, read || ps != ""
}

// spellByRules reads word by the rules; ok is false if it has no letters.
func spellByRules(word string, british bool) (string, bool) {
	w := strings.ToLower(word)
	var out strings.Builder
	letters := false
	for i := 0; i < len(w); {
		if strings.HasPrefix(w[i:], "e") && i+1 == len(w) && i > 1 {
			i++ // a silent final e
			continue
		}
		if i > 0 && w[i] == w[i-1] && strings.IndexByte("bcdfgklmnprstvz", w[i]) >= 0 {
			i++ // a doubled consonant
			continue
		}
		if w[i:] == "ed" && i > 1 {
			switch w[i-1] {
			case 't', 'd':
				if british {
					out.WriteString("ɪd")
				} else {
					out.WriteString("ᵻd")
				}
			case 'p', 'k', 'f', 's', 'x', 'h':
				out.WriteString("t")
			default:
				out.WriteString("d")
			}
			break
		}
		matched := false
		for _, r := range ltsRules {
			if strings.HasPrefix(w[i:], r.spelling) {
				ps := r.us
				if british && r.gb != "" {
					ps = r.gb
				}
				out.WriteString(ps)
				i += len(r.spelling)
				matched, letters = true, true
				break
			}
		}
		if !matched {
			r := []rune(w[i:])[0]
			if !unicode.IsLetter(r) && !unicode.IsDigit(r) && puncts[r] {
				out.WriteRune(r)
			}
			i += len(string(r))
		}
	}
	if !letters {
		return "", false
	}
	return restress(primary, out.String()), true
}
