package g2p

import (
	_ "embed"
	"encoding/json"
	"regexp"
	"strings"
	"sync"
	"unicode"
)

// spaCy's English tokenizer (spacy/tokenizer.pyx with the rules of
// spacy/lang/en and spacy/lang/punctuation.py, MIT), which misaki runs
// before anything else: whitespace splits the text, special cases (the
// tokenizer exceptions: contractions, abbreviations, emoticons) are kept or
// split as listed, and prefixes, suffixes and infixes are cut off each
// remaining piece. spacy_en_exceptions.json is the exception table as spaCy
// 3.8 builds it (tools/g2p-ref/generate.py writes it).

//go:embed spacy_en_exceptions.json
var spacyExceptionsJSON []byte

var (
	spacyExceptionsOnce sync.Once
	spacyExceptions     map[string][]string
)

func specials() map[string][]string {
	spacyExceptionsOnce.Do(func() {
		if err := json.Unmarshal(spacyExceptionsJSON, &spacyExceptions); err != nil {
			panic("g2p: spacy_en_exceptions.json: " + err.Error())
		}
	})
	return spacyExceptions
}

// sToken is one spaCy token: its text and whether one space follows it.
type sToken struct {
	text  string
	space bool
}

func runeSet(s string) map[rune]bool {
	m := map[rune]bool{}
	for _, r := range s {
		m[r] = true
	}
	return m
}

var (
	// LIST_PUNCT's single characters ("……" is handled apart).
	punctChars = runeSet("…,:;!?¿؟¡()[]{}<>_#*&。？！，、；：～·।،۔؛٪")
	// LIST_QUOTES.
	quoteChars = runeSet("'\"”“`‘´’‚,„»«「」『』（）〔〕【】《》〈〉〈〉⟦⟧")
	// LIST_CURRENCY's single characters (US$, C$ and A$ apart).
	currencyChars = runeSet("$£€¥฿₽﷼₴₠₡₢₣₤₥₦₧₨₩₪₫₭₮₯₰₱₲₳₵₶₷₸₹₺₻₼₾₿")
	// The characters of the suffix rule for a final period
	// (?<=[0-9{al}{e}{p}(?:{q})])\. besides digits and lower-case letters:
	// %²-+, PUNCT's text (its "|" and "\" included) and "(?:)" with the quotes.
	periodAfter = runeSet("%²-+…,:;!?¿؟¡()[]{}<>_#*&。？！，、；：～·।،۔؛٪|\\'\"”“`‘´’‚„»«「」『』（）〔〕【】《》〈〉〈〉⟦⟧")
	concatQuote = runeSet("'\"”“`‘´’‚,„»«「」『』（）〔〕【】《》〈〉〈〉⟦⟧")
	units       = map[string]bool{}
	currencies  = map[string]bool{"US$": true, "C$": true, "A$": true}
)

func init() {
	for _, u := range strings.Split("km|km²|km³|m|m²|m³|dm|dm²|dm³|cm|cm²|cm³|mm|mm²|mm³|ha|µm|nm|yd|in|ft|kg|g|mg|µg|t|lb|oz|m/s|km/h|kmh|mph|hPa|Pa|mbar|mb|MB|kb|KB|gb|GB|tb|TB|T|G|M|K|%|км|км²|км³|м|м²|м³|дм|дм²|дм³|см|см²|см³|мм|мм²|мм³|нм|кг|г|мг|м/с|км/ч|кПа|Па|мбар|Кб|КБ|кб|Мб|МБ|мб|Гб|ГБ|гб|Тб|ТБ|тбكم|كم²|كم³|م|م²|م³|سم|سم²|سم³|مم|مم²|مم³|كم|غرام|جرام|جم|كغ|ملغ|كوب|اكواب", "|") {
		units[u] = true
	}
	for r := range currencyChars {
		currencies[string(r)] = true
	}
}

// isIcon is LIST_ICONS: other symbols (So), the degree sign included.
func isIcon(r rune) bool { return unicode.Is(unicode.So, r) }

func isDigit(r rune) bool { return r >= '0' && r <= '9' }

// findPrefix is the length in runes of the prefix spaCy cuts off s.
func findPrefix(s []rune) int {
	if len(s) == 0 {
		return 0
	}
	r := s[0]
	switch {
	case strings.ContainsRune("§%=—–", r):
		return 1
	case r == '+':
		if len(s) > 1 && isDigit(s[1]) {
			return 0
		}
		return 1
	case punctChars[r]:
		return 1
	case r == '.':
		n := 0
		for n < len(s) && s[n] == '.' {
			n++
		}
		if n >= 2 {
			return n
		}
		return 0
	case quoteChars[r], currencyChars[r]:
		return 1
	case len(s) >= 3 && string(s[:3]) == "US$":
		return 3
	case len(s) >= 2 && (string(s[:2]) == "C$" || string(s[:2]) == "A$"):
		return 2
	case isIcon(r):
		return 1
	}
	return 0
}

// suffixAt reports whether one of the suffix rules matches s[i:] to the end.
func suffixAt(s []rune, i int) bool {
	rest := s[i:]
	str := string(rest)
	var prev rune = -1
	if i > 0 {
		prev = s[i-1]
	}
	if len(rest) == 1 {
		r := rest[0]
		if punctChars[r] || quoteChars[r] || isIcon(r) || r == '—' || r == '–' {
			return true
		}
	}
	if str == "……" {
		return true
	}
	if len(rest) >= 2 {
		dots := true
		for _, r := range rest {
			if r != '.' {
				dots = false
				break
			}
		}
		if dots {
			return true
		}
	}
	switch str {
	case "'s", "'S", "’s", "’S":
		return true
	}
	if prev >= 0 && isDigit(prev) && (str == "+" || currencies[str] || units[str]) {
		return true
	}
	if str == "." && prev >= 0 {
		if i >= 2 && s[i-2] == '°' && strings.ContainsRune("FfCcKk", prev) {
			return true
		}
		if isDigit(prev) || unicode.IsLower(prev) || periodAfter[prev] {
			return true
		}
		if i >= 2 && unicode.IsUpper(prev) && unicode.IsUpper(s[i-2]) {
			return true
		}
	}
	return false
}

// findSuffix is the length of the longest suffix spaCy cuts off s (Python's
// re.search finds the leftmost start).
func findSuffix(s []rune) int {
	for i := 0; i < len(s); i++ {
		if suffixAt(s, i) {
			return len(s) - i
		}
	}
	return 0
}

var hyphenAlts = []string{"-", "–", "—", "--", "---", "——", "~"}

// infixAt returns the end of an infix match starting at s[i], or -1.
func infixAt(s []rune, i int) int {
	r := s[i]
	if r == '.' && i+1 < len(s) && s[i+1] == '.' {
		j := i
		for j < len(s) && s[j] == '.' {
			j++
		}
		return j
	}
	if r == '…' || isIcon(r) {
		return i + 1
	}
	var prev rune = -1
	if i > 0 {
		prev = s[i-1]
	}
	var next rune = -1
	if i+1 < len(s) {
		next = s[i+1]
	}
	if prev >= 0 && isDigit(prev) && strings.ContainsRune("+-*^", r) && next >= 0 && (isDigit(next) || next == '-') {
		return i + 1
	}
	if r == '.' && prev >= 0 && (unicode.IsLower(prev) || concatQuote[prev]) && next >= 0 && (unicode.IsUpper(next) || concatQuote[next]) {
		return i + 1
	}
	if r == ',' && prev >= 0 && unicode.IsLetter(prev) && next >= 0 && unicode.IsLetter(next) {
		return i + 1
	}
	if prev >= 0 && (unicode.IsLetter(prev) || isDigit(prev)) {
		for _, h := range hyphenAlts {
			hr := []rune(h)
			if i+len(hr) <= len(s) && string(s[i:i+len(hr)]) == h && i+len(hr) < len(s) && unicode.IsLetter(s[i+len(hr)]) {
				return i + len(hr)
			}
		}
		if strings.ContainsRune(":<>=/", r) && next >= 0 && unicode.IsLetter(next) {
			return i + 1
		}
	}
	return -1
}

// findInfixes lists the infix matches of s, left to right, as Python's
// re.finditer does.
func findInfixes(s []rune) [][2]int {
	var out [][2]int
	for i := 0; i < len(s); {
		if e := infixAt(s, i); e > i {
			out = append(out, [2]int{i, e})
			i = e
			continue
		}
		i++
	}
	return out
}

// spaCy's URL_MATCH (spacy/lang/tokenizer_exceptions.py) without its
// lookaheads, which keep private IPv4 addresses out (urlMatch checks them
// apart); the TLD's lower-case letters stand for spaCy's ALPHA_LOWER.
var (
	urlAuth = `^(?:(?:[\pL\pN_+\-.]{2,})://)?(?:\S+(?::\S*)?@)?`
	urlTail = `(?::\d{2,5})?(?:[/?#]\S*)?$`
	urlHost = regexp.MustCompile(urlAuth + `(?:(?:[A-Za-z0-9\x{a1}-\x{ffff}][A-Za-z0-9\x{a1}-\x{ffff}_-]{0,62})?[A-Za-z0-9\x{a1}-\x{ffff}]\.)+(?:[\p{Ll}\p{Lo}]{2,63})` + urlTail)
	urlIP   = regexp.MustCompile(urlAuth + `((?:[1-9]\d?|1\d\d|2[01]\d|22[0-3])(?:\.(?:1?\d{1,2}|2[0-4]\d|25[0-5])){2}(?:\.(?:[1-9]\d?|1\d\d|2[0-4]\d|25[0-4])))` + urlTail)
	private = regexp.MustCompile(`^(?:(?:10|127)(?:\.\d{1,3}){3}|(?:169\.254|192\.168)(?:\.\d{1,3}){2}|172\.(?:1[6-9]|2\d|3[0-1])(?:\.\d{1,3}){2})`)
)

func urlMatch(s string) bool {
	if urlHost.MatchString(s) {
		return true
	}
	m := urlIP.FindStringSubmatch(s)
	return m != nil && !private.MatchString(m[1])
}

// spacyTokenize splits text as spaCy's English tokenizer does.
func spacyTokenize(text string) []sToken {
	return applySpecialMatches(tokenizeAffixes(text, true))
}

// tokenizeAffixes is spaCy's Tokenizer._tokenize_affixes.
func tokenizeAffixes(text string, withSpecials bool) []sToken {
	var toks []sToken
	rs := []rune(text)
	if len(rs) == 0 {
		return nil
	}
	start := 0
	inWS := unicode.IsSpace(rs[0])
	for i, r := range rs {
		if unicode.IsSpace(r) != inWS {
			if start < i {
				toks = tokenizeSpan(toks, rs[start:i], withSpecials)
			}
			if r == ' ' {
				if len(toks) > 0 {
					toks[len(toks)-1].space = true
				}
				start = i + 1
			} else {
				start = i
			}
			inWS = !inWS
		}
	}
	if start < len(rs) {
		toks = tokenizeSpan(toks, rs[start:], withSpecials)
		toks[len(toks)-1].space = rs[len(rs)-1] == ' ' && !inWS
	}
	return toks
}

func push(toks []sToken, s ...string) []sToken {
	for _, t := range s {
		toks = append(toks, sToken{text: t})
	}
	return toks
}

func tokenizeSpan(toks []sToken, span []rune, withSpecials bool) []sToken {
	sp := specials()
	if !withSpecials {
		sp = nil
	}
	if sc, ok := sp[string(span)]; ok {
		return push(toks, sc...)
	}
	var prefixes, suffixes []string
	s := span
	lastSize := -1
	for len(s) > 0 && len(s) != lastSize {
		if _, ok := sp[string(s)]; ok {
			break
		}
		lastSize = len(s)
		pre := findPrefix(s)
		if pre != 0 {
			minusPre := s[pre:]
			if _, ok := sp[string(minusPre)]; ok && len(minusPre) > 0 {
				prefixes = append(prefixes, string(s[:pre]))
				s = minusPre
				break
			}
		}
		suf := findSuffix(s[pre:])
		if suf != 0 {
			minusSuf := s[:len(s)-suf]
			if _, ok := sp[string(minusSuf)]; ok && len(minusSuf) > 0 {
				suffixes = append(suffixes, string(s[len(s)-suf:]))
				s = minusSuf
				break
			}
		}
		switch {
		case pre != 0 && suf != 0 && pre+suf <= len(s):
			prefixes = append(prefixes, string(s[:pre]))
			suffixes = append(suffixes, string(s[len(s)-suf:]))
			s = s[pre : len(s)-suf]
		case pre != 0:
			prefixes = append(prefixes, string(s[:pre]))
			s = s[pre:]
		case suf != 0:
			suffixes = append(suffixes, string(s[len(s)-suf:]))
			s = s[:len(s)-suf]
		}
		if _, ok := sp[string(s)]; ok && len(s) > 0 {
			break
		}
	}
	toks = push(toks, prefixes...)
	if len(s) > 0 {
		if sc, ok := sp[string(s)]; ok {
			toks = push(toks, sc...)
		} else if urlMatch(string(s)) {
			toks = push(toks, string(s))
		} else if m := findInfixes(s); len(m) == 0 {
			toks = push(toks, string(s))
		} else {
			start := 0
			for _, x := range m {
				if x[0] == 0 {
					continue
				}
				if x[0] != start {
					toks = push(toks, string(s[start:x[0]]))
				}
				if x[0] != x[1] {
					toks = push(toks, string(s[x[0]:x[1]]))
				}
				start = x[1]
			}
			if start < len(s) {
				toks = push(toks, string(s[start:]))
			}
		}
	}
	for i := len(suffixes) - 1; i >= 0; i-- {
		toks = push(toks, suffixes[i])
	}
	return toks
}

// specialPattern is a special case that the affix rules would split: spaCy
// finds its pieces in the tokenized text and puts the special case back.
type specialPattern struct {
	key    string
	pieces []string
}

var (
	specialPatternsOnce sync.Once
	specialPatterns     map[string][]specialPattern // by first piece
)

func patterns() map[string][]specialPattern {
	specialPatternsOnce.Do(func() {
		specialPatterns = map[string][]specialPattern{}
		for key := range specials() {
			rs := []rune(key)
			if findPrefix(rs) == 0 && findSuffix(rs) == 0 && len(findInfixes(rs)) == 0 && !strings.Contains(key, " ") {
				continue
			}
			var pieces []string
			for _, t := range tokenizeAffixes(key, false) {
				pieces = append(pieces, t.text)
			}
			if len(pieces) == 0 {
				continue
			}
			specialPatterns[pieces[0]] = append(specialPatterns[pieces[0]], specialPattern{key, pieces})
		}
	})
	return specialPatterns
}

// applySpecialMatches is spaCy's Tokenizer._apply_special_cases: the
// longest, then earliest, non-overlapping matches are replaced by their
// special case when their text (spaces included) is one.
func applySpecialMatches(toks []sToken) []sToken {
	type span struct{ start, end int }
	var matches []span
	pats := patterns()
	for i, t := range toks {
		for _, p := range pats[t.text] {
			if i+len(p.pieces) > len(toks) {
				continue
			}
			ok := true
			for j, piece := range p.pieces {
				if toks[i+j].text != piece {
					ok = false
					break
				}
			}
			if ok {
				matches = append(matches, span{i, i + len(p.pieces)})
			}
		}
	}
	if len(matches) == 0 {
		return toks
	}
	// Longest first, then earliest; a span is kept unless its first or last
	// token is taken already; every span marks its tokens taken.
	for a := 1; a < len(matches); a++ {
		for b := a; b > 0; b-- {
			x, y := matches[b-1], matches[b]
			lx, ly := x.end-x.start, y.end-y.start
			if ly > lx || (ly == lx && y.start < x.start) {
				matches[b-1], matches[b] = y, x
			} else {
				break
			}
		}
	}
	seen := map[int]bool{}
	keep := map[int]span{}
	for _, m := range matches {
		if !seen[m.start] && !seen[m.end-1] {
			keep[m.start] = m
		}
		for i := m.start; i < m.end; i++ {
			seen[i] = true
		}
	}
	sp := specials()
	var out []sToken
	for i := 0; i < len(toks); {
		m, ok := keep[i]
		if !ok {
			out = append(out, toks[i])
			i++
			continue
		}
		var text strings.Builder
		for j := m.start; j < m.end; j++ {
			text.WriteString(toks[j].text)
			if j < m.end-1 && toks[j].space {
				text.WriteString(" ")
			}
		}
		rule, ok := sp[text.String()]
		if !ok {
			out = append(out, toks[m.start:m.end]...)
		} else {
			for _, r := range rule {
				out = append(out, sToken{text: r})
			}
			out[len(out)-1].space = toks[m.end-1].space
		}
		i = m.end
	}
	return out
}
