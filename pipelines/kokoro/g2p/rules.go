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
