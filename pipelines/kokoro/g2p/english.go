// Package g2p turns English text into the phoneme strings Kokoro-82M reads,
// as Kokoro's own front end, misaki 0.9.4 (misaki/en.py, Apache-2.0), does
// with G2P(trf=False): spaCy's English tokenizer, misaki's lexicons (gold,
// then silver), its capitalisation, stress, suffix and number rules, and
// espeak-ng, run as a separate program, for words the lexicons lack.
//
// misaki tags words with spaCy's en_core_web_sm, a statistical model that
// is not available here; in its place a rule tagger gives the tags such a
// tagger gets right (punctuation, currency symbols, quotes, numbers, the
// articles, demonstrative "that", "I", "in", "vs", "used to", e-mail
// addresses), and every other word is left untagged, so homographs ("read",
// "live", "use") take their lexicon default. tools/g2p-ref runs misaki the
// same way to write the reference the tests compare against.
package g2p

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"unicode"
)

// Options configure the English front end.
type Options struct {
	// Espeak is the espeak-ng program that reads words the lexicons lack.
	// Empty looks "espeak-ng" up in PATH; "none" turns it off. Without it
	// such words are spelled by simple letter-to-sound rules.
	Espeak string
	// Spelled, if set, is called after a Phonemize call that spelled words
	// by the letter-to-sound rules because espeak-ng was not available.
	Spelled func(words []string)
}

// English is a loaded front end for American or British English. It is safe
// for concurrent use.
type English struct {
	lex    *lexicon
	espeak *espeak // nil without espeak-ng
	opts   Options
}

// Lexicon file names, as the misaki-en model stores them.
const (
	USGold   = "us_gold.json"
	USSilver = "us_silver.json"
	GBGold   = "gb_gold.json"
	GBSilver = "gb_silver.json"
)

// LoadEnglish reads misaki's lexicons (files maps each file name, e.g.
// "us_gold.json", to its path) for American English, or British if british.
func LoadEnglish(files map[string]string, british bool, opts Options) (*English, error) {
	gold, silver := USGold, USSilver
	if british {
		gold, silver = GBGold, GBSilver
	}
	l := &lexicon{british: british}
	var err error
	if files[gold] == "" || files[silver] == "" {
		return nil, fmt.Errorf("g2p: need %s and %s", gold, silver)
	}
	if l.golds, err = readLexicon(files[gold]); err != nil {
		return nil, fmt.Errorf("g2p: %w", err)
	}
	if l.silvers, err = readLexicon(files[silver]); err != nil {
		return nil, fmt.Errorf("g2p: %w", err)
	}
	for _, w := range []string{"am", "to", "used"} {
		if _, ok := l.golds[w]; !ok {
			return nil, fmt.Errorf("g2p: %s lacks %q", files[gold], w)
		}
	}
	e := &English{lex: l, opts: opts}
	if e.espeak, err = findEspeak(opts.Espeak, british); err != nil {
		return nil, err
	}
	return e, nil
}

// Espeak returns the espeak-ng program in use, or "" if there is none.
func (e *English) Espeak() string {
	if e.espeak == nil {
		return ""
	}
	return e.espeak.path
}

// mtoken is misaki's MToken.
type mtoken struct {
	text, tag, whitespace string
	ps                    string
	hasPS                 bool
	isHead                bool
	alias                 *string
	stress                float64
	currency              string
	numFlags              string
	prespace              bool
}

func (t *mtoken) setPS(ps string) { t.ps, t.hasPS = ps, true }

// ruleTag is the tagger that stands in for en_core_web_sm (the same rules
// as rule_tags in tools/g2p-ref/generate.py): the tags that model gives
// reliably, by rule.
func ruleTag(toks []sToken) []string {
	tags := make([]string, len(toks))
	openSingle := false // a single quote opened and not closed yet
	for i, tk := range toks {
		t, low := tk.text, strings.ToLower(tk.text)
		prev, prevSpace := "", true
		if i > 0 {
			prev, prevSpace = toks[i-1].text, toks[i-1].space
		}
		next, hasNext := "", i+1 < len(toks)
		if hasNext {
			next = toks[i+1].text
		}
		nextPunct := !hasNext || isPunct(next)
		var tag string
		switch {
		case ruleCurrency[t]:
			tag = "$"
		case (t == "-" || t == "–") && !prevSpace && !tk.space && hasNext:
			tag = "HYPH" // inside a word: well-known, 3-4
		case t == "#":
			if hasNext && !tk.space && startsWithDigit(next) {
				tag = "#"
			}
		case rulePunct[t] != "":
			tag = rulePunct[t]
		case allOf(t, ".!?"):
			tag = "."
			if len(t) > 1 && strings.Trim(t, ".") == "" {
				tag = ":"
			}
		case t == `"`:
			tag = "''"
			if prevSpace || strings.Contains("([{", prev) {
				tag = "``"
			}
		case t == "'" || t == "‘" || t == "’":
			switch {
			case !tk.space && hasNext && startsWithDigit(next):
				tag = "" // the '90s
			case prevSpace || strings.Contains("([{", prev):
				tag = "``"
			case tk.space || nextPunct:
				tag = "''"
				if (strings.HasSuffix(prev, "s") || strings.HasSuffix(prev, "S")) && !openSingle {
					tag = "POS" // the boys'
				}
			default:
				tag = "``"
			}
			openSingle = tag == "``"
		case cdRe.MatchString(t) || numberWords[low]:
			tag = "CD"
		case low == "a" || low == "an" || low == "the":
			tag = "DT"
		case low == "that" && (nextPunct || next == "'s" || next == "’s" ||
			(!pronouns[strings.ToLower(next)] && (i == 0 || isPunct(prev) || prepositions[strings.ToLower(prev)]))):
			tag = "DT" // demonstrative: "that's", "that.", "of that man"
		case t == "I":
			tag = "PRP"
		case t == "in" || t == "In":
			tag = "IN"
			if nextPunct {
				tag = "RP" // "come in."
			}
		case t == "vs" || t == "vs." || t == "Vs" || t == "Vs.":
			tag = "IN"
		case low == "used" && hasNext && strings.ToLower(next) == "to" && (i == 0 || !beForms[strings.ToLower(prev)]):
			tag = "VBD" // "used to" (habit), not "was used to"
		case strings.Contains(t, "@") && emailRe.MatchString(t):
			tag = "ADD"
		}
		tags[i] = tag
	}
	return tags
}

func isPunct(s string) bool {
	for _, r := range s {
		if unicode.IsLetter(r) || unicode.IsNumber(r) {
			return false
		}
	}
	return true
}

// startsWithDigit is Python's s[:1].isdigit(): decimal digits and the other
// digits (superscript, subscript, circled).
func startsWithDigit(s string) bool {
	for _, r := range s {
		return unicode.IsDigit(r) || unicode.Is(otherDigits, r)
	}
	return false
}

var otherDigits = &unicode.RangeTable{R16: []unicode.Range16{
	{0x00b2, 0x00b3, 1}, {0x00b9, 0x00b9, 1}, {0x1369, 0x1371, 1}, {0x19da, 0x19da, 1},
	{0x2070, 0x2070, 1}, {0x2074, 0x2079, 1},
	{0x2080, 0x2089, 1}, {0x2460, 0x2468, 1}, {0x2474, 0x247c, 1}, {0x2488, 0x2490, 1},
	{0x24ea, 0x24ea, 1}, {0x24f5, 0x24fd, 1}, {0x24ff, 0x24ff, 1}, {0x2776, 0x277e, 1},
	{0x2780, 0x2788, 1}, {0x278a, 0x2792, 1},
}}

func wordSet(words string) map[string]bool {
	m := map[string]bool{}
	for _, w := range strings.Fields(words) {
		m[w] = true
	}
	return m
}

var (
	ruleCurrency = map[string]bool{"$": true, "£": true, "€": true, "¥": true, "฿": true, "₹": true, "₩": true, "₽": true}
	rulePunct    = map[string]string{
		".": ".", "!": ".", "?": ".", ",": ",", ":": ":", ";": ":",
		"-": ":", "–": ":", "—": ":", "--": ":", "…": ":",
		"(": "-LRB-", "{": "-LRB-", ")": "-RRB-", "}": "-RRB-",
		"“": "``", "”": "''",
	}
	cdRe         = regexp.MustCompile(`^[0-9]+(?:[.,][0-9]+)*$`)
	emailRe      = regexp.MustCompile(`^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$`)
	numberWords  = wordSet("hundred thousand million billion trillion")
	pronouns     = wordSet("i you he she it we they me him her us them my your his its our their there this these those")
	prepositions = wordSet("about above across after against along among around at before behind below beneath beside between beyond by despite during except for from in inside into like near of off on onto outside over past through throughout to toward towards under underneath until unto upon with within without")
	beForms      = wordSet("was were is are be been being 's 're am 'm get gets got getting become became")
)

func allOf(s, set string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !strings.ContainsRune(set, r) {
			return false
		}
	}
	return true
}

var punctTags = map[string]bool{".": true, ",": true, "-LRB-": true, "-RRB-": true, "``": true, `""`: true, "''": true, ":": true, "$": true, "#": true, "NFP": true}
var punctTagPhonemes = map[string]string{"-LRB-": "(", "-RRB-": ")", "``": "\u201c", `""`: "\u201d", "''": "\u201d"}

// subtokenize is misaki's SUBTOKEN_REGEX findall:
//
//	^['‘’]+|\p{Lu}(?=\p{Lu}\p{Ll})|(?:^-)?(?:\d?[,.]?\d)+|[-_]+|['‘’]{2,}|
//	\p{L}*?(?:['‘’]\p{L})*?\p{Ll}(?=\p{Lu})|\p{L}+(?:['‘’]\p{L})*|
//	[^-_\p{L}'‘’\d]|['‘’]+$
func subtokenize(word string) []string {
	rs := []rune(word)
	n := len(rs)
	isQ := func(i int) bool { return i < n && (rs[i] == '\'' || rs[i] == '‘' || rs[i] == '’') }
	isL := func(i int) bool { return i < n && unicode.IsLetter(rs[i]) }
	isLu := func(i int) bool { return i < n && unicode.IsUpper(rs[i]) }
	isLl := func(i int) bool { return i < n && unicode.IsLower(rs[i]) }
	isD := func(i int) bool { return i < n && unicode.IsDigit(rs[i]) }
	isSep := func(i int) bool { return i < n && (rs[i] == ',' || rs[i] == '.') }
	number := func(i int) int { // (?:\d?[,.]?\d)+ from i, or -1
		j := i
		switch {
		case isSep(j) && isD(j+1):
			j += 2
		case isD(j):
			j++
		default:
			return -1
		}
		for {
			switch {
			case isD(j):
				j++
			case isSep(j) && isD(j+1):
				j += 2
			default:
				return j
			}
		}
	}
	match := func(i int) int {
		if i == 0 && isQ(0) {
			j := 0
			for isQ(j) {
				j++
			}
			return j
		}
		if isLu(i) && isLu(i+1) && isLl(i+2) {
			return i + 1
		}
		if i == 0 && n > 1 && rs[0] == '-' {
			if j := number(1); j > 0 {
				return j
			}
		}
		if j := number(i); j > 0 {
			return j
		}
		if rs[i] == '-' || rs[i] == '_' {
			j := i
			for j < n && (rs[j] == '-' || rs[j] == '_') {
				j++
			}
			return j
		}
		if isQ(i) && isQ(i+1) {
			j := i
			for isQ(j) {
				j++
			}
			return j
		}
		// \p{L}*?(?:['‘’]\p{L})*?\p{Ll}(?=\p{Lu})
		for k := i; k == i || isL(k-1); k++ {
			p := k
			for {
				if isLl(p) && isLu(p+1) {
					return p + 1
				}
				if isQ(p) && isL(p+1) {
					p += 2
					continue
				}
				break
			}
		}
		if isL(i) {
			j := i
			for isL(j) {
				j++
			}
			for isQ(j) && isL(j+1) {
				j += 2
			}
			return j
		}
		if !(rs[i] == '-' || rs[i] == '_' || isL(i) || isQ(i) || isD(i)) {
			return i + 1
		}
		if isQ(i) {
			j := i
			for isQ(j) {
				j++
			}
			if j == n {
				return j
			}
		}
		return -1
	}
	var out []string
	for i := 0; i < n; {
		if j := match(i); j > i {
			out = append(out, string(rs[i:j]))
			i = j
			continue
		}
		i++
	}
	return out
}

// word is one entry of misaki's retokenized list: a single token or a
// group of tokens written without spaces between them.
type word struct {
	tk    *mtoken
	group []*mtoken
}

// feature is misaki's markup for a word, [word](feature): a stress
// ("-1", "2", "0.5"), phonemes ("/kˈOkəɹO/") or number flags ("#a#").
type feature struct {
	kind   byte // 's' stress, '/' phonemes, '#' number flags
	stress float64
	text   string
}

var linkRe = regexp.MustCompile(`\[([^\]]+)\]\(([^\)]*)\)`)

// preprocess is misaki's G2P.preprocess: the text without the markup, its
// whitespace-separated pieces (a marked word is one piece) and the
// features by piece.
func preprocess(text string) (string, []string, map[int]feature) {
	var result strings.Builder
	var pieces []string
	features := map[int]feature{}
	last := 0
	for _, m := range linkRe.FindAllStringSubmatchIndex(text, -1) {
		result.WriteString(text[last:m[0]])
		pieces = append(pieces, strings.Fields(text[last:m[0]])...)
		f := text[m[4]:m[5]]
		num := f
		if strings.HasPrefix(num, "-") || strings.HasPrefix(num, "+") {
			num = num[1:]
		}
		var ft feature
		ok := true
		switch {
		case isDigits(num):
			n, _ := strconv.Atoi(num)
			if f[0] == '-' {
				n = -n
			}
			ft = feature{kind: 's', stress: float64(n)}
		case f == "0.5" || f == "+0.5":
			ft = feature{kind: 's', stress: 0.5}
		case f == "-0.5":
			ft = feature{kind: 's', stress: -0.5}
		case len(f) > 1 && f[0] == '/' && f[len(f)-1] == '/':
			ft = feature{kind: '/', text: strings.TrimLeft(strings.TrimRight(f[1:], "/"), "/")}
		case len(f) > 1 && f[0] == '#' && f[len(f)-1] == '#':
			ft = feature{kind: '#', text: strings.TrimLeft(strings.TrimRight(f[1:], "#"), "#")}
		default:
			ok = false
		}
		if ok {
			features[len(pieces)] = ft
		}
		result.WriteString(text[m[2]:m[3]])
		pieces = append(pieces, text[m[2]:m[3]])
		last = m[1]
	}
	if last < len(text) {
		result.WriteString(text[last:])
		pieces = append(pieces, strings.Fields(text[last:])...)
	}
	return result.String(), pieces, features
}

// alignY2X is spaCy's get_alignments(A, B)'s second result, flattened as
// Alignment.y2x.data: for each token of B, the tokens of A it overlaps.
func alignY2X(a, b []string) []int {
	charTok := func(toks []string) ([]int, []rune) {
		var m []int
		var all []rune
		for i, t := range toks {
			l := []rune(strings.ToLower(t))
			for range l {
				m = append(m, i)
			}
			all = append(all, l...)
		}
		return m, all
	}
	ctA, strA := charTok(a)
	ctB, strB := charTok(b)
	var b2a [][]int
	add := func(set []int, v int) []int {
		for _, x := range set {
			if x == v {
				return set
			}
		}
		return append(set, v)
	}
	ca, cb, prevA, prevB := 0, 0, -1, -1
	for ca < len(strA) && cb < len(strB) {
		ta, tb := ctA[ca], ctB[cb]
		if prevB != tb {
			b2a = append(b2a, nil)
		}
		last := len(b2a) - 1
		switch {
		case a[ta] == b[tb] && (ca == 0 || ctA[ca-1] < ta) && (cb == 0 || ctB[cb-1] < tb):
			b2a[last] = add(b2a[last], ta)
			ca += len([]rune(a[ta]))
			cb += len([]rune(b[tb]))
		case strA[ca] == strB[cb]:
			b2a[last] = add(b2a[last], ta)
			ca++
			cb++
		case unicode.IsSpace(strA[ca]):
			ca++
		case unicode.IsSpace(strB[cb]):
			cb++
		default:
			return nil // the texts differ: cannot happen here
		}
		prevA, prevB = ta, tb
	}
	_ = prevA
	var data []int
	for _, set := range b2a {
		for i := 1; i < len(set); i++ {
			for j := i; j > 0 && set[j] < set[j-1]; j-- {
				set[j], set[j-1] = set[j-1], set[j]
			}
		}
		data = append(data, set...)
	}
	return data
}

func (e *English) tokenize(text string, pieces []string, features map[int]feature) []*mtoken {
	st := spacyTokenize(text)
	tags := ruleTag(st)
	out := make([]*mtoken, len(st))
	texts := make([]string, len(st))
	for i, t := range st {
		ws := ""
		if t.space {
			ws = " "
		}
		out[i] = &mtoken{text: t.text, tag: tags[i], whitespace: ws, isHead: true, stress: noStress}
		texts[i] = t.text
	}
	if len(features) == 0 {
		return out
	}
	data := alignY2X(pieces, texts)
	for k, f := range features {
		i := 0
		for j, x := range data {
			if x != k {
				continue
			}
			if j < len(out) {
				tk := out[j]
				switch f.kind {
				case 's':
					tk.stress = f.stress
				case '/':
					tk.isHead = i == 0
					if i == 0 {
						tk.setPS(f.text)
					} else {
						tk.setPS("")
					}
				case '#':
					tk.numFlags = f.text
				}
			}
			i++
		}
	}
	return out
}

// foldLeft merges each token that is not a head into the one before it.
func foldLeft(tokens []*mtoken) []*mtoken {
	var out []*mtoken
	unk := unknown
	for _, tk := range tokens {
		if len(out) > 0 && !tk.isHead {
			tk = mergeTokens([]*mtoken{out[len(out)-1], tk}, &unk)
			out = out[:len(out)-1]
		}
		out = append(out, tk)
	}
	return out
}

func retokenize(tokens []*mtoken) []word {
	var words []word
	currency := ""
	for i, token := range tokens {
		var tks []*mtoken
		if token.alias == nil && !token.hasPS {
			for _, t := range subtokenize(token.text) {
				tks = append(tks, &mtoken{text: t, tag: token.tag, isHead: true, numFlags: token.numFlags, stress: token.stress})
			}
			if len(tks) == 0 {
				continue
			}
		} else {
			tks = []*mtoken{token}
		}
		tks[len(tks)-1].whitespace = token.whitespace
		for j, tk := range tks {
			switch {
			case tk.alias != nil || tk.hasPS:
			case tk.tag == "$" && currencyUnits[tk.text] != [2]string{}:
				currency = tk.text
				tk.setPS("")
			case tk.tag == ":" && (tk.text == "-" || tk.text == "–"):
				tk.setPS("—")
			case punctTags[tk.tag] && !allASCIILetters(tk.text):
				if p, ok := punctTagPhonemes[tk.tag]; ok {
					tk.setPS(p)
				} else {
					var b strings.Builder
					for _, r := range tk.text {
						if puncts[r] {
							b.WriteRune(r)
						}
					}
					tk.setPS(b.String())
				}
			case currency != "":
				if tk.tag != "CD" {
					currency = ""
				} else if j+1 == len(tks) && (i+1 == len(tokens) || tokens[i+1].tag != "CD") {
					tk.currency = currency
				}
			case 0 < j && j < len(tks)-1 && tk.text == "2":
				a, b := []rune(tks[j-1].text), []rune(tks[j+1].text)
				if isAlpha(string(a[len(a)-1]) + string(b[0])) {
					to := "to"
					tk.alias = &to
				}
			}
			switch {
			case tk.alias != nil || tk.hasPS:
				words = append(words, word{tk: tk})
			case len(words) > 0 && words[len(words)-1].group != nil && words[len(words)-1].group[len(words[len(words)-1].group)-1].whitespace == "":
				tk.isHead = false
				words[len(words)-1].group = append(words[len(words)-1].group, tk)
			case tk.whitespace != "":
				words = append(words, word{tk: tk})
			default:
				words = append(words, word{group: []*mtoken{tk}})
			}
		}
	}
	for i, w := range words {
		if len(w.group) == 1 {
			words[i] = word{tk: w.group[0]}
		}
	}
	return words
}

func allASCIILetters(s string) bool {
	for _, r := range strings.ToLower(s) {
		if r < 'a' || r > 'z' {
			return false
		}
	}
	return true
}

// mergeTokens is misaki's merge_tokens; unk nil leaves the phonemes unset.
func mergeTokens(tokens []*mtoken, unk *string) *mtoken {
	var text strings.Builder
	for i, tk := range tokens {
		text.WriteString(tk.text)
		if i < len(tokens)-1 {
			text.WriteString(tk.whitespace)
		}
	}
	best, bestScore := tokens[0], -1
	stresses := map[float64]bool{}
	currency := ""
	flags := map[rune]bool{}
	for _, tk := range tokens {
		score := 0
		for _, r := range tk.text {
			if string(r) == strings.ToLower(string(r)) {
				score++
			} else {
				score += 2
			}
		}
		if score > bestScore {
			best, bestScore = tk, score
		}
		if tk.stress != noStress {
			stresses[tk.stress] = true
		}
		if tk.currency > currency {
			currency = tk.currency
		}
		for _, r := range tk.numFlags {
			flags[r] = true
		}
	}
	m := &mtoken{
		text: text.String(), tag: best.tag, whitespace: tokens[len(tokens)-1].whitespace,
		isHead: tokens[0].isHead, stress: noStress, currency: currency, prespace: tokens[0].prespace,
	}
	if len(stresses) == 1 {
		for s := range stresses {
			m.stress = s
		}
	}
	var fl []rune
	for r := range flags {
		fl = append(fl, r)
	}
	sortRunes(fl)
	m.numFlags = string(fl)
	if unk != nil {
		var ps strings.Builder
		for _, tk := range tokens {
			cur := ps.String()
			if tk.prespace && cur != "" && !unicode.IsSpace(lastRune(cur)) && tk.hasPS && tk.ps != "" {
				ps.WriteString(" ")
			}
			if tk.hasPS {
				ps.WriteString(tk.ps)
			} else {
				ps.WriteString(*unk)
			}
		}
		m.setPS(ps.String())
	}
	return m
}

func sortRunes(rs []rune) {
	for i := 1; i < len(rs); i++ {
		for j := i; j > 0 && rs[j] < rs[j-1]; j-- {
			rs[j], rs[j-1] = rs[j-1], rs[j]
		}
	}
}

func lastRune(s string) rune {
	rs := []rune(s)
	return rs[len(rs)-1]
}

func stressWeight(ps string) int {
	n := 0
	for _, r := range ps {
		if diphthongs[r] {
			n += 2
		} else {
			n++
		}
	}
	return n
}

func nextContext(ctx tokenContext, ps string, hasPS bool, tk *mtoken) tokenContext {
	vowel := ctx.futureVowel
	if hasPS && ps != "" {
		for _, r := range ps {
			if vowels[r] || consonants[r] || nonQuote[r] {
				switch {
				case nonQuote[r]:
					vowel = -1
				case vowels[r]:
					vowel = 1
				default:
					vowel = 0
				}
				return tokenContext{futureVowel: vowel, futureTo: isTo(tk)}
			}
		}
	}
	return tokenContext{futureVowel: vowel, futureTo: isTo(tk)}
}

func isTo(tk *mtoken) bool {
	return tk.text == "to" || tk.text == "To" || (tk.text == "TO" && (tk.tag == "TO" || tk.tag == "IN"))
}

func resolveTokens(tokens []*mtoken) {
	var text strings.Builder
	for i, tk := range tokens {
		text.WriteString(tk.text)
		if i < len(tokens)-1 {
			text.WriteString(tk.whitespace)
		}
	}
	t := text.String()
	kinds := map[int]bool{}
	for _, r := range t {
		if junks[r] {
			continue
		}
		switch {
		case unicode.IsLetter(r):
			kinds[0] = true
		case isDigit(r):
			kinds[1] = true
		default:
			kinds[2] = true
		}
	}
	prespace := strings.Contains(t, " ") || strings.Contains(t, "/") || len(kinds) > 1
	for i, tk := range tokens {
		if !tk.hasPS {
			if i == len(tokens)-1 && len([]rune(tk.text)) == 1 && nonQuote[[]rune(tk.text)[0]] {
				tk.setPS(tk.text)
			} else if allOf(tk.text, "',-._‘’/") {
				tk.setPS("")
			}
		} else if i > 0 {
			tk.prespace = prespace
		}
	}
	if prespace {
		return
	}
	type idx struct {
		primary bool
		weight  int
		i       int
	}
	var indices []idx
	for i, tk := range tokens {
		if tk.hasPS && tk.ps != "" {
			indices = append(indices, idx{strings.Contains(tk.ps, primary), stressWeight(tk.ps), i})
		}
	}
	if len(indices) == 2 && len([]rune(tokens[indices[0].i].text)) == 1 {
		i := indices[1].i
		tokens[i].ps = applyStress(tokens[i].ps, -0.5)
		return
	}
	np := 0
	for _, x := range indices {
		if x.primary {
			np++
		}
	}
	if len(indices) < 2 || np <= (len(indices)+1)/2 {
		return
	}
	// sorted(indices)[:len//2]: by (primary, weight, position).
	for a := 1; a < len(indices); a++ {
		for b := a; b > 0; b-- {
			x, y := indices[b-1], indices[b]
			less := func(p, q idx) bool {
				if p.primary != q.primary {
					return !p.primary
				}
				if p.weight != q.weight {
					return p.weight < q.weight
				}
				return p.i < q.i
			}
			if less(y, x) {
				indices[b-1], indices[b] = y, x
			} else {
				break
			}
		}
	}
	for _, x := range indices[:len(indices)/2] {
		tokens[x.i].ps = applyStress(tokens[x.i].ps, -0.5)
	}
}

const unknown = "❓"

// Phonemize returns the phonemes of text as misaki's G2P returns them.
func (e *English) Phonemize(ctx context.Context, text string) (string, error) {
	ps, spelled, err := e.phonemize(ctx, text)
	if err != nil {
		return "", err
	}
	if len(spelled) > 0 && e.opts.Spelled != nil {
		e.opts.Spelled(spelled)
	}
	return ps, nil
}

func (e *English) phonemize(ctx context.Context, text string) (string, []string, error) {
	text, pieces, features := preprocess(strings.TrimLeftFunc(text, unicode.IsSpace))
	tokens := foldLeft(e.tokenize(text, pieces, features))
	words := retokenize(tokens)
	var spelled []string
	fallback := func(tk *mtoken) (string, bool, error) {
		if e.espeak != nil {
			ps, err := e.espeak.phonemize(ctx, tk.text)
			if err != nil {
				return "", false, err
			}
			return ps, true, nil
		}
		ps, ok := e.lex.readByRules(tk.text)
		if ok {
			spelled = append(spelled, tk.text)
		}
		return ps, ok, nil
	}
	tctx := tokenContext{futureVowel: -1}
	for wi := len(words) - 1; wi >= 0; wi-- {
		if err := ctx.Err(); err != nil {
			return "", nil, err
		}
		w := words[wi]
		if w.tk != nil {
			tk := w.tk
			if !tk.hasPS {
				if ps, ok := e.lex.call(tk, &tctx); ok {
					tk.setPS(ps)
				}
			}
			if !tk.hasPS {
				ps, ok, err := fallback(tk)
				if err != nil {
					return "", nil, err
				}
				if ok {
					tk.setPS(ps)
				}
			}
			tctx = nextContext(tctx, tk.ps, tk.hasPS, tk)
			continue
		}
		g := w.group
		left, right := 0, len(g)
		shouldFallback := false
		for left < right {
			var merged *mtoken
			blocked := false
			for _, t := range g[left:right] {
				if t.alias != nil || t.hasPS {
					blocked = true
					break
				}
			}
			ok := false
			var ps string
			if !blocked {
				merged = mergeTokens(g[left:right], nil)
				ps, ok = e.lex.call(merged, &tctx)
			}
			switch {
			case ok:
				g[left].setPS(ps)
				for _, x := range g[left+1 : right] {
					x.setPS("")
				}
				tctx = nextContext(tctx, ps, true, merged)
				right = left
				left = 0
			case left+1 < right:
				left++
			default:
				right--
				t := g[right]
				if !t.hasPS {
					if allOf(t.text, "',-._‘’/") {
						t.setPS("")
					} else {
						shouldFallback = true
					}
				}
				left = 0
			}
			if shouldFallback {
				break
			}
		}
		if shouldFallback {
			merged := mergeTokens(g, nil)
			ps, ok, err := fallback(merged)
			if err != nil {
				return "", nil, err
			}
			g[0].ps, g[0].hasPS = ps, ok
			for _, x := range g[1:] {
				x.setPS("")
			}
		} else {
			resolveTokens(g)
		}
	}
	var out strings.Builder
	unk := unknown
	for _, w := range words {
		tk := w.tk
		if tk == nil {
			tk = mergeTokens(w.group, &unk)
		}
		if tk.hasPS {
			out.WriteString(strings.NewReplacer("ɾ", "T", "ʔ", "t").Replace(tk.ps))
		} else {
			out.WriteString(unknown)
		}
		out.WriteString(tk.whitespace)
	}
	return out.String(), spelled, nil
}
