package g2p

import (
	"encoding/json"
	"fmt"
	"math/big"
	"os"
	"regexp"
	"strings"
	"unicode"

	"golang.org/x/text/unicode/norm"
)

// The lexicon half of misaki/en.py (class Lexicon): gold and silver
// dictionaries, capitalisation, stress, the -s/-ed/-ing stems and numbers.

const (
	primary   = "ˈ"
	secondary = "ˌ"
	// noStress stands for Python's None where misaki passes a stress.
	noStress = 99.0
)

var (
	vowels     = runeSet("AIOQWYaiuæɑɒɔəɛɜɪʊʌᵻ")
	consonants = runeSet("bdfhjklmnpstvwzðŋɡɹɾʃʒʤʧθ")
	usTaus     = runeSet("AIOWYiuæɑəɛɪɹʊʌ")
	diphthongs = runeSet("AIOQWYʤʧ")
	puncts     = runeSet(";:,.!?—…\"“”")
	nonQuote   = runeSet(";:,.!?—…")
	junks      = runeSet("',-._‘’/")
)

var ordinalSuffixes = map[string]bool{"st": true, "nd": true, "rd": true, "th": true}

var currencyUnits = map[string][2]string{"$": {"dollar", "cent"}, "£": {"pound", "pence"}, "€": {"euro", "cent"}}

var addSymbols = map[string]string{".": "dot", "/": "slash"}
var symbols = map[string]string{"%": "percent", "&": "and", "+": "plus", "@": "at"}

// entry is one lexicon value: phonemes, or phonemes by tag (a nil value
// stands for JSON null).
type entry struct {
	ps    string
	byTag map[string]*string
}

type lexicon struct {
	british bool
	golds   map[string]entry
	silvers map[string]entry
}

func readLexicon(path string) (map[string]entry, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	out := make(map[string]entry, len(raw)+len(raw)/2)
	for k, v := range raw {
		var e entry
		if len(v) > 0 && v[0] == '{' {
			if err := json.Unmarshal(v, &e.byTag); err != nil {
				return nil, fmt.Errorf("%s: %q: %w", path, k, err)
			}
			if _, ok := e.byTag["DEFAULT"]; !ok {
				return nil, fmt.Errorf("%s: %q has no DEFAULT", path, k)
			}
		} else if err := json.Unmarshal(v, &e.ps); err != nil {
			return nil, fmt.Errorf("%s: %q: %w", path, k, err)
		}
		out[k] = e
	}
	return growDictionary(out), nil
}

// growDictionary adds the capitalised form of each lower-case word and the
// lower-case form of each capitalised one, the listed forms winning.
func growDictionary(d map[string]entry) map[string]entry {
	extra := map[string]entry{}
	for k, v := range d {
		if len([]rune(k)) < 2 {
			continue
		}
		lower := strings.ToLower(k)
		if k == lower {
			if c := capitalize(k); k != c {
				extra[c] = v
			}
		} else if k == capitalize(lower) {
			extra[lower] = v
		}
	}
	for k, v := range extra {
		if _, ok := d[k]; !ok {
			d[k] = v
		}
	}
	return d
}

// capitalize is Python's str.capitalize.
func capitalize(s string) string {
	rs := []rune(s)
	if len(rs) == 0 {
		return s
	}
	return string(unicode.ToTitle(rs[0])) + strings.ToLower(string(rs[1:]))
}

func isAlpha(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !unicode.IsLetter(r) {
			return false
		}
	}
	return true
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !isDigit(r) {
			return false
		}
	}
	return true
}

func lexiconOrds(s string) bool {
	for _, r := range s {
		if !(r == '\'' || r == '-' || (r >= 'A' && r <= 'Z') || (r >= 'a' && r <= 'z')) {
			return false
		}
	}
	return true
}

func hasAny(s string, set map[rune]bool) bool {
	for _, r := range s {
		if set[r] {
			return true
		}
	}
	return false
}

// applyStress is misaki's apply_stress.
func applyStress(ps string, stress float64) string {
	if stress == noStress {
		return ps
	}
	hasStress := strings.Contains(ps, primary) || strings.Contains(ps, secondary)
	switch {
	case stress < -1:
		return strings.ReplaceAll(strings.ReplaceAll(ps, primary, ""), secondary, "")
	case stress == -1 || ((stress == 0 || stress == -0.5) && strings.Contains(ps, primary)):
		return strings.ReplaceAll(strings.ReplaceAll(ps, secondary, ""), primary, secondary)
	case (stress == 0 || stress == 0.5 || stress == 1) && !hasStress:
		if !hasAny(ps, vowels) {
			return ps
		}
		return restress(secondary, ps)
	case stress >= 1 && !strings.Contains(ps, primary) && strings.Contains(ps, secondary):
		return strings.ReplaceAll(ps, secondary, primary)
	case stress > 1 && !hasStress:
		if !hasAny(ps, vowels) {
			return ps
		}
		return restress(primary, ps)
	}
	return ps
}

// restress puts mark before the first vowel of ps.
func restress(mark, ps string) string {
	for i, r := range ps {
		if vowels[r] {
			return ps[:i] + mark + ps[i:]
		}
	}
	return ps
}

type tokenContext struct {
	futureVowel int8 // -1: None, 0: False, 1: True
	futureTo    bool
}

func (l *lexicon) getNNP(word string) (string, bool) {
	var b strings.Builder
	for _, r := range word {
		if !unicode.IsLetter(r) {
			continue
		}
		e, ok := l.golds[strings.ToUpper(string(r))]
		if !ok || e.byTag != nil {
			return "", false
		}
		b.WriteString(e.ps)
	}
	ps := applyStress(b.String(), 0)
	if i := strings.LastIndex(ps, secondary); i >= 0 {
		ps = ps[:i] + primary + ps[i+len(secondary):]
	}
	return ps, true
}

var vsRe = regexp.MustCompile(`(?i)^vs\.?$`)

func (l *lexicon) goldDefault(word, tag string) string {
	e := l.golds[word]
	if e.byTag == nil {
		return e.ps
	}
	if p := e.byTag[tag]; p != nil {
		return *p
	}
	return ""
}

func (l *lexicon) getSpecialCase(word, tag string, stress float64, ctx *tokenContext) (string, bool) {
	switch {
	case tag == "ADD" && addSymbols[word] != "":
		return l.lookup(addSymbols[word], "", -0.5, ctx)
	case symbols[word] != "":
		return l.lookup(symbols[word], "", noStress, ctx)
	}
	if strings.Contains(strings.Trim(word, "."), ".") && isAlpha(strings.ReplaceAll(word, ".", "")) {
		longest := 0
		for _, p := range strings.Split(word, ".") {
			if n := len([]rune(p)); n > longest {
				longest = n
			}
		}
		if longest < 3 {
			return l.getNNP(word)
		}
	}
	switch {
	case word == "a" || word == "A":
		if tag == "DT" {
			return "ɐ", true
		}
		return "ˈA", true
	case word == "am" || word == "Am" || word == "AM":
		if strings.HasPrefix(tag, "NN") {
			return l.getNNP(word)
		}
		if ctx.futureVowel == -1 || word != "am" || (stress != noStress && stress != 0 && stress > 0) {
			return l.golds["am"].ps, true
		}
		return "ɐm", true
	case word == "an" || word == "An" || word == "AN":
		if word == "AN" && strings.HasPrefix(tag, "NN") {
			return l.getNNP(word)
		}
		return "ɐn", true
	case word == "I" && tag == "PRP":
		return secondary + "I", true
	case (word == "by" || word == "By" || word == "BY") && parentTag(tag) == "ADV":
		return "bˈI", true
	case word == "to" || word == "To" || (word == "TO" && (tag == "TO" || tag == "IN")):
		switch ctx.futureVowel {
		case -1:
			return l.golds["to"].ps, true
		case 0:
			return "tə", true
		}
		return "tʊ", true
	case word == "in" || word == "In" || (word == "IN" && tag != "NNP"):
		s := primary
		if ctx.futureVowel != -1 && tag == "IN" {
			s = ""
		}
		return s + "ɪn", true
	case word == "the" || word == "The" || (word == "THE" && tag == "DT"):
		if ctx.futureVowel == 1 {
			return "ði", true
		}
		return "ðə", true
	case tag == "IN" && vsRe.MatchString(word):
		return l.lookup("versus", "", noStress, ctx)
	case word == "used" || word == "Used" || word == "USED":
		if (tag == "VBD" || tag == "JJ") && ctx.futureTo {
			return l.goldDefault("used", "VBD"), true
		}
		return l.goldDefault("used", "DEFAULT"), true
	}
	return "", false
}

func parentTag(tag string) string {
	switch {
	case strings.HasPrefix(tag, "VB"):
		return "VERB"
	case strings.HasPrefix(tag, "NN"):
		return "NOUN"
	case strings.HasPrefix(tag, "ADV") || strings.HasPrefix(tag, "RB"):
		return "ADV"
	case strings.HasPrefix(tag, "ADJ") || strings.HasPrefix(tag, "JJ"):
		return "ADJ"
	}
	return tag
}

func (l *lexicon) isKnown(word, tag string) bool {
	if _, ok := l.golds[word]; ok {
		return true
	}
	if _, ok := symbols[word]; ok {
		return true
	}
	if _, ok := l.silvers[word]; ok {
		return true
	}
	if !isAlpha(word) || !lexiconOrds(word) {
		return false
	}
	if len([]rune(word)) == 1 {
		return true
	}
	if word == strings.ToUpper(word) {
		if _, ok := l.golds[strings.ToLower(word)]; ok {
			return true
		}
	}
	rest := string([]rune(word)[1:])
	return rest == strings.ToUpper(rest)
}

// lookup is Lexicon.lookup; ctx nil stands for Python's None.
func (l *lexicon) lookup(word, tag string, stress float64, ctx *tokenContext) (string, bool) {
	isNNP := false
	if word == strings.ToUpper(word) {
		if _, ok := l.golds[word]; !ok {
			word = strings.ToLower(word)
			isNNP = tag == "NNP"
		}
	}
	e, ok := l.golds[word]
	if !ok && !isNNP {
		e, ok = l.silvers[word]
	}
	ps, has := e.ps, ok
	if ok && e.byTag != nil {
		if _, none := e.byTag["None"]; ctx != nil && ctx.futureVowel == -1 && none {
			tag = "None"
		} else if _, in := e.byTag[tag]; !in {
			tag = parentTag(tag)
		}
		p, in := e.byTag[tag]
		if !in {
			p = e.byTag["DEFAULT"]
		}
		has = p != nil
		if has {
			ps = *p
		}
	}
	if !has || (isNNP && !strings.Contains(ps, primary)) {
		if nnp, ok := l.getNNP(word); ok {
			return nnp, true
		}
		if !has {
			return "", false
		}
	}
	return applyStress(ps, stress), true
}

func (l *lexicon) s(stem string) string {
	rs := []rune(stem)
	last := rs[len(rs)-1]
	switch {
	case strings.ContainsRune("ptkfθ", last):
		return stem + "s"
	case strings.ContainsRune("szʃʒʧʤ", last):
		if l.british {
			return stem + "ɪz"
		}
		return stem + "ᵻz"
	}
	return stem + "z"
}

func (l *lexicon) stemS(word, tag string, stress float64, ctx *tokenContext) (string, bool) {
	n, nr := len(word), len([]rune(word))
	if nr < 3 || !strings.HasSuffix(word, "s") {
		return "", false
	}
	var stem string
	switch {
	case !strings.HasSuffix(word, "ss") && l.isKnown(word[:n-1], tag):
		stem = word[:n-1]
	case (strings.HasSuffix(word, "'s") || (nr > 4 && strings.HasSuffix(word, "es") && !strings.HasSuffix(word, "ies"))) && l.isKnown(word[:n-2], tag):
		stem = word[:n-2]
	case nr > 4 && strings.HasSuffix(word, "ies") && l.isKnown(word[:n-3]+"y", tag):
		stem = word[:n-3] + "y"
	default:
		return "", false
	}
	ps, ok := l.lookup(stem, tag, stress, ctx)
	if !ok || ps == "" {
		return "", false
	}
	return l.s(ps), true
}

func (l *lexicon) ed(stem string) string {
	rs := []rune(stem)
	last := rs[len(rs)-1]
	switch {
	case strings.ContainsRune("pkfθʃsʧ", last):
		return stem + "t"
	case last == 'd':
		if l.british {
			return stem + "ɪd"
		}
		return stem + "ᵻd"
	case last != 't':
		return stem + "d"
	case l.british || len(rs) < 2:
		return stem + "ɪd"
	case usTaus[rs[len(rs)-2]]:
		return string(rs[:len(rs)-1]) + "ɾᵻd"
	}
	return stem + "ᵻd"
}

func (l *lexicon) stemEd(word, tag string, stress float64, ctx *tokenContext) (string, bool) {
	n, nr := len(word), len([]rune(word))
	if nr < 4 || !strings.HasSuffix(word, "d") {
		return "", false
	}
	var stem string
	switch {
	case !strings.HasSuffix(word, "dd") && l.isKnown(word[:n-1], tag):
		stem = word[:n-1]
	case nr > 4 && strings.HasSuffix(word, "ed") && !strings.HasSuffix(word, "eed") && l.isKnown(word[:n-2], tag):
		stem = word[:n-2]
	default:
		return "", false
	}
	ps, ok := l.lookup(stem, tag, stress, ctx)
	if !ok || ps == "" {
		return "", false
	}
	return l.ed(ps), true
}

func (l *lexicon) ing(stem string) (string, bool) {
	rs := []rune(stem)
	last := rs[len(rs)-1]
	if l.british {
		if last == 'ə' || last == 'ː' {
			return "", false
		}
	} else if len(rs) > 1 && last == 't' && usTaus[rs[len(rs)-2]] {
		return string(rs[:len(rs)-1]) + "ɾɪŋ", true
	}
	return stem + "ɪŋ", true
}

var doubledIng = regexp.MustCompile(`(bbing|ccing|dding|gging|kking|lling|mming|nning|pping|rring|ssing|tting|vving|xxing|zzing|cking)$`)

func (l *lexicon) stemIng(word, tag string, stress float64, ctx *tokenContext) (string, bool) {
	n, nr := len(word), len([]rune(word))
	if nr < 5 || !strings.HasSuffix(word, "ing") {
		return "", false
	}
	var stem string
	switch {
	case nr > 5 && l.isKnown(word[:n-3], tag):
		stem = word[:n-3]
	case l.isKnown(word[:n-3]+"e", tag):
		stem = word[:n-3] + "e"
	case nr > 5 && doubledIng.MatchString(word) && l.isKnown(word[:n-4], tag):
		stem = word[:n-4]
	default:
		return "", false
	}
	ps, ok := l.lookup(stem, tag, stress, ctx)
	if !ok || ps == "" {
		return "", false
	}
	return l.ing(ps)
}

func (l *lexicon) getWord(word, tag string, stress float64, ctx *tokenContext) (string, bool) {
	if ps, ok := l.getSpecialCase(word, tag, stress, ctx); ok {
		return ps, true
	}
	wl := strings.ToLower(word)
	if len([]rune(word)) > 1 && isAlpha(strings.ReplaceAll(word, "'", "")) && word != wl &&
		(tag != "NNP" || len([]rune(word)) > 7) && !l.has(word) {
		rest := string([]rune(word)[1:])
		if word == strings.ToUpper(word) || rest == strings.ToLower(rest) {
			if l.has(wl) || l.stemOK(wl, tag, stress, ctx) {
				word = wl
			}
		}
	}
	if l.isKnown(word, tag) {
		return l.lookup(word, tag, stress, ctx)
	}
	n := len(word)
	if strings.HasSuffix(word, "s'") && l.isKnown(word[:n-2]+"'s", tag) {
		return l.lookup(word[:n-2]+"'s", tag, stress, ctx)
	}
	if strings.HasSuffix(word, "'") && l.isKnown(word[:n-1], tag) {
		return l.lookup(word[:n-1], tag, stress, ctx)
	}
	if ps, ok := l.stemS(word, tag, stress, ctx); ok {
		return ps, true
	}
	if ps, ok := l.stemEd(word, tag, stress, ctx); ok {
		return ps, true
	}
	s := stress
	if s == noStress {
		s = 0.5
	}
	return l.stemIng(word, tag, s, ctx)
}

func (l *lexicon) has(word string) bool {
	if _, ok := l.golds[word]; ok {
		return true
	}
	_, ok := l.silvers[word]
	return ok
}

func (l *lexicon) stemOK(w, tag string, stress float64, ctx *tokenContext) bool {
	if _, ok := l.stemS(w, tag, stress, ctx); ok {
		return true
	}
	if _, ok := l.stemEd(w, tag, stress, ctx); ok {
		return true
	}
	_, ok := l.stemIng(w, tag, stress, ctx)
	return ok
}

func isCurrencyAmount(word string) bool {
	if !strings.Contains(word, ".") {
		return true
	}
	if strings.Count(word, ".") > 1 {
		return false
	}
	_, cents, _ := strings.Cut(word, ".")
	return len([]rune(cents)) < 3
}

var numSuffix = regexp.MustCompile(`[a-z']+$`)
var notAZ = regexp.MustCompile(`[^a-z]+`)

func (l *lexicon) getNumber(word, currency string, isHead bool, numFlags string) (string, bool) {
	suffix := numSuffix.FindString(word)
	word = word[:len(word)-len(suffix)]
	var result []string
	failed := false
	add := func(ps string, ok bool) {
		if !ok {
			failed = true
		}
		result = append(result, ps)
	}
	if strings.HasPrefix(word, "-") {
		add(l.lookup("minus", "", noStress, nil))
		word = word[1:]
	}
	extend := func(num string, first, escape bool) {
		text := num
		if !escape {
			text = cardinalString(num)
		}
		splits := notAZ.Split(text, -1)
		for i, w := range splits {
			if w != "and" || strings.Contains(numFlags, "&") {
				if first && i == 0 && len(splits) > 1 && w == "one" && strings.Contains(numFlags, "a") {
					result = append(result, "ə")
				} else {
					st := noStress
					if w == "point" {
						st = -2
					}
					add(l.lookup(w, "", st, nil))
				}
			} else if w == "and" && strings.Contains(numFlags, "n") && len(result) > 0 {
				result[len(result)-1] += "ən"
			}
		}
	}
	_, isCur := currencyUnits[currency]
	switch {
	case isDigits(word) && ordinalSuffixes[suffix]:
		extend(ordinalString(word), true, true)
	case len(result) == 0 && len(word) == 4 && !isCur && isDigits(word):
		n, _ := new(big.Int).SetString(word, 10)
		extend(yearString(int(n.Int64())), true, true)
	case !isHead && !strings.Contains(word, "."):
		num := strings.ReplaceAll(word, ",", "")
		if num == "" {
			return "", false
		}
		switch {
		case num[0] == '0' || len(num) > 3:
			for _, d := range num {
				extend(string(d), false, false)
			}
		case len(num) == 3 && !strings.HasSuffix(num, "00"):
			extend(num[:1], true, false)
			if num[1] == '0' {
				add(l.lookup("O", "", -2, nil))
				extend(num[2:], false, false)
			} else {
				extend(num[1:], false, false)
			}
		default:
			extend(num, true, false)
		}
	case strings.Count(word, ".") > 1 || !isHead:
		first := true
		for _, num := range strings.Split(strings.ReplaceAll(word, ",", ""), ".") {
			if num == "" {
				// nothing
			} else if num[0] == '0' || (len(num) != 2 && strings.Trim(num[1:], "0") != "") {
				for _, d := range num {
					extend(string(d), false, false)
				}
			} else {
				extend(num, first, false)
			}
			first = false
		}
	case isCur && isCurrencyAmount(word):
		units := currencyUnits[currency]
		parts := strings.Split(strings.ReplaceAll(word, ",", ""), ".")
		type pair struct {
			num  *big.Int
			unit string
		}
		var pairs []pair
		for i, p := range parts {
			if i >= 2 {
				break
			}
			n := new(big.Int)
			if p != "" {
				if _, ok := n.SetString(p, 10); !ok {
					return "", false
				}
			}
			pairs = append(pairs, pair{n, units[i]})
		}
		if len(pairs) > 1 {
			if pairs[1].num.Sign() == 0 {
				pairs = pairs[:1]
			} else if pairs[0].num.Sign() == 0 {
				pairs = pairs[1:]
			}
		}
		for i, p := range pairs {
			if i > 0 {
				add(l.lookup("and", "", noStress, nil))
			}
			extend(p.num.String(), i == 0, false)
			if p.num.CmpAbs(big.NewInt(1)) != 0 && p.unit != "pence" {
				add(l.stemS(p.unit+"s", "", noStress, nil))
			} else {
				add(l.lookup(p.unit, "", noStress, nil))
			}
		}
	default:
		var text string
		switch {
		case isDigits(word):
			text = cardinalString(word)
		case !strings.Contains(word, "."):
			w := strings.ReplaceAll(word, ",", "")
			if !isDigits(w) {
				return "", false
			}
			if ordinalSuffixes[suffix] {
				text = ordinalString(w)
			} else {
				text = cardinalString(w)
			}
		default:
			w := strings.ReplaceAll(word, ",", "")
			if strings.HasPrefix(w, ".") {
				parts := []string{"point"}
				for _, d := range w[1:] {
					if !isDigit(d) {
						return "", false
					}
					parts = append(parts, cardinalString(string(d)))
				}
				text = strings.Join(parts, " ")
			} else {
				text = floatString(w)
			}
		}
		extend(text, true, true)
	}
	if len(result) == 0 || failed {
		return "", false
	}
	out := strings.Join(result, " ")
	switch suffix {
	case "s", "'s":
		return l.s(out), true
	case "ed", "'d":
		return l.ed(out), true
	case "ing":
		return l.ing(out)
	}
	return out, true
}

func (l *lexicon) appendCurrency(ps, currency string) string {
	u, ok := currencyUnits[currency]
	if !ok {
		return ps
	}
	c, ok := l.stemS(u[0]+"s", "", noStress, nil)
	if !ok {
		return ps
	}
	return ps + " " + c
}

// numericIfNeeded maps a non-ASCII decimal digit to its ASCII digit.
func numericIfNeeded(r rune) string {
	if r < 128 || !unicode.Is(unicode.Nd, r) {
		return string(r)
	}
	zero := r
	for unicode.Is(unicode.Nd, zero-1) && r-zero < 9 {
		zero--
	}
	return string(rune('0' + (r-zero)%10))
}

func isNumber(word string, isHead bool) bool {
	has := false
	for _, r := range word {
		if isDigit(r) {
			has = true
			break
		}
	}
	if !has {
		return false
	}
	for _, s := range []string{"ing", "'d", "ed", "'s", "st", "nd", "rd", "th", "s"} {
		if strings.HasSuffix(word, s) {
			word = word[:len(word)-len(s)]
			break
		}
	}
	for i, r := range word {
		if !(isDigit(r) || r == ',' || r == '.' || (isHead && i == 0 && r == '-')) {
			return false
		}
	}
	return true
}

// call is Lexicon.__call__ for one (possibly merged) token.
func (l *lexicon) call(tk *mtoken, ctx *tokenContext) (string, bool) {
	word := tk.text
	if tk.alias != nil {
		word = *tk.alias
	}
	word = strings.NewReplacer("‘", "'", "’", "'").Replace(word)
	word = norm.NFKC.String(word)
	var b strings.Builder
	for _, r := range word {
		b.WriteString(numericIfNeeded(r))
	}
	word = b.String()
	stress := noStress
	if word != strings.ToLower(word) {
		if word == strings.ToUpper(word) {
			stress = 2
		} else {
			stress = 0.5
		}
	}
	if ps, ok := l.getWord(word, tk.tag, stress, ctx); ok {
		return applyStress(l.appendCurrency(ps, tk.currency), tk.stress), true
	}
	if isNumber(word, tk.isHead) {
		ps, ok := l.getNumber(word, tk.currency, tk.isHead, tk.numFlags)
		if !ok {
			return "", false
		}
		return applyStress(ps, tk.stress), true
	}
	return "", false
}
