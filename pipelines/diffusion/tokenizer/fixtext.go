package tokenizer

import (
	"html"
	"regexp"
	"strconv"
	"strings"
	"unicode"

	"golang.org/x/text/cases"
	"golang.org/x/text/language"
	"golang.org/x/text/unicode/norm"
)

// fixText is ftfy.fix_text (ftfy 6.3.1, default configuration) as transformers' Python
// CLIPTokenizer calls it before whitespace clean-up and lowercasing. The text is fixed line by
// line (each piece ends after a "\n"); once a line contains "<", HTML entities are left alone
// from that line on (ftfy takes the text for HTML then). Each line goes through the fixers
// until nothing changes:
//
//   - HTML entities: named HTML5 entities written with ";" (and their all-capitals spellings,
//     "&EACUTE;" → "É", when those are not entities of their own), decimal and hex references
//     decoded as Python's html.unescape decodes them;
//   - mojibake (fixEncoding): UTF-8 read as Latin-1, Windows-125x, ISO-8859-2, MacRoman or
//     CP437, found by ftfy's badness heuristic and undone by re-encoding; see mojibake.go;
//   - C1 controls as Windows-1252, Latin ligatures (ﬁ → fi, Ĳ → IJ, ...), fullwidth and
//     halfwidth forms (U+FF01–U+FFEF to their NFKC form, U+3000 to " "), curly quotes to
//     straight ones, CR LF / CR / U+2028 / U+2029 / U+0085 to "\n", ANSI terminal escapes and
//     invisible control characters removed, then NFC.
//
// Not reproduced: ftfy cuts lines longer than a million code points into pieces, and fixes
// UTF-16 surrogates, which a Go string cannot hold.
func fixText(s string) string {
	unescape := true
	var out strings.Builder
	out.Grow(len(s))
	for len(s) > 0 {
		end := strings.IndexByte(s, '\n') + 1
		if end == 0 {
			end = len(s)
		}
		line := s[:end]
		s = s[end:]
		if unescape && strings.Contains(line, "<") {
			unescape = false
		}
		out.WriteString(fixLine(line, unescape))
	}
	return out.String()
}

// fixLine applies the fixers in ftfy's order until the text stops changing.
func fixLine(s string, unescape bool) string {
	for {
		orig := s
		if unescape {
			s = unescapeHTML(s)
		}
		s = fixEncoding(s)
		s = fixC1Controls(s)
		s = fixLigatures(s)
		s = fixWidth(s)
		s = uncurlQuotes(s)
		s = fixLineBreaks(s)
		s = terminalEscape.ReplaceAllString(s, "")
		s = removeControlChars(s)
		s = norm.NFC.String(s)
		if s == orig {
			return s
		}
	}
}

var (
	entityRef = regexp.MustCompile(`&#?[0-9A-Za-z]{1,24};`)
	// terminalEscape is an ANSI CSI sequence: ESC "[", digits (any script's) and ";", a letter.
	terminalEscape = regexp.MustCompile(`\x1b\[[\p{Nd};]*[a-zA-Z]`)
	upperCaser     = cases.Upper(language.Und)
)

// unescapeHTML replaces entity references; those it does not know stay as written.
func unescapeHTML(s string) string {
	if !strings.Contains(s, "&") {
		return s
	}
	return entityRef.ReplaceAllStringFunc(s, func(ref string) string {
		if strings.HasPrefix(ref, "&#") {
			if v, ok := numericEntity(ref[2 : len(ref)-1]); ok && !strings.Contains(v, ";") {
				return v
			}
			return ref
		}
		if v, ok := namedEntity(ref); ok {
			return v
		}
		name := ref[1 : len(ref)-1]
		lower := strings.ToLower(name)
		if lower == name || strings.ToUpper(lower) != name {
			return ref
		}
		// An all-capitals spelling of a lower-case entity that is no entity itself (nor starts
		// with a legacy one, which html.unescape would decode) stands for the capitalised value.
		if v, ok := namedEntity("&" + lower + ";"); ok && html.UnescapeString(ref) == ref {
			return upperCaser.String(v)
		}
		return ref
	})
}

// namedEntity decodes ref ("&name;") when name; is an HTML5 entity. html.UnescapeString also
// decodes a legacy entity at the start of a longer name (leaving the rest and the ";"), which
// the check on the trailing ";" tells apart; "&semi;" is the one entity whose value is ";".
func namedEntity(ref string) (string, bool) {
	// Go's table leaves out the two entities whose value is longer than their name.
	switch ref {
	case "&nLt;":
		return "\u226a\u20d2", true
	case "&nGt;":
		return "\u226b\u20d2", true
	}
	v := html.UnescapeString(ref)
	if v == ref || (strings.HasSuffix(v, ";") && ref != "&semi;") {
		return "", false
	}
	return v, true
}

// numericEntity decodes the body of "&#...;" as Python's html.unescape does: only all-digit
// decimal or "x"-prefixed hex bodies; NUL, surrogates and numbers past U+10FFFF give U+FFFD,
// 0x80–0x9F are read as Windows-1252, CR stays, other control characters and non-characters
// vanish.
func numericEntity(body string) (string, bool) {
	base, digits := 10, body
	if len(body) > 0 && (body[0] == 'x' || body[0] == 'X') {
		base, digits = 16, body[1:]
	}
	if digits == "" {
		return "", false
	}
	for _, c := range digits {
		if !(c >= '0' && c <= '9' || base == 16 && (c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F')) {
			return "", false
		}
	}
	n, err := strconv.ParseUint(digits, base, 64)
	if err != nil || n > 0x10FFFF {
		return "\uFFFD", true
	}
	switch {
	case n == 0:
		return "\uFFFD", true
	case n == 0x0D:
		return "\r", true
	case n >= 0x80 && n <= 0x9F:
		return string(sloppy1252(byte(n))), true
	case n >= 0xD800 && n <= 0xDFFF:
		return "\uFFFD", true
	case n >= 0x01 && n <= 0x08, n == 0x0B, n >= 0x0E && n <= 0x1F, n == 0x7F,
		n >= 0xFDD0 && n <= 0xFDEF, n&0xFFFE == 0xFFFE:
		return "", true
	}
	return string(rune(n)), true
}

// fixC1Controls reads each C1 control character (U+0080–U+009F) as the Windows-1252 byte it
// would be; the five bytes Windows-1252 leaves undefined stay.
func fixC1Controls(s string) string {
	return mapRunes(s, func(r rune) (string, bool) {
		if r >= 0x80 && r <= 0x9F {
			return string(sloppy1252(byte(r))), true
		}
		return "", false
	})
}

var ligatures = map[rune]string{
	'Ĳ': "IJ", 'ĳ': "ij", 'ŉ': "\u02bcn",
	'Ǳ': "DZ", 'ǲ': "Dz", 'ǳ': "dz", 'Ǆ': "D\u017d", 'ǅ': "D\u017e", 'ǆ': "d\u017e",
	'Ǉ': "LJ", 'ǈ': "Lj", 'ǉ': "lj", 'Ǌ': "NJ", 'ǋ': "Nj", 'ǌ': "nj",
	'ﬀ': "ff", 'ﬁ': "fi", 'ﬂ': "fl", 'ﬃ': "ffi", 'ﬄ': "ffl", 'ﬅ': "\u017ft", 'ﬆ': "st",
}

func fixLigatures(s string) string {
	return mapRunes(s, func(r rune) (string, bool) {
		v, ok := ligatures[r]
		return v, ok
	})
}

// fixWidth maps the ideographic space to " " and every halfwidth or fullwidth form
// (U+FF01–U+FFEF) that NFKC changes to that NFKC form.
func fixWidth(s string) string {
	return mapRunes(s, func(r rune) (string, bool) {
		if r == 0x3000 {
			return " ", true
		}
		if r >= 0xFF01 && r < 0xFFF0 {
			c := string(r)
			if v := norm.NFKC.String(c); v != c {
				return v, true
			}
		}
		return "", false
	})
}

func uncurlQuotes(s string) string {
	return mapRunes(s, func(r rune) (string, bool) {
		switch {
		case r == 0x02BC || r >= 0x2018 && r <= 0x201B:
			return "'", true
		case r >= 0x201C && r <= 0x201F:
			return `"`, true
		}
		return "", false
	})
}

func fixLineBreaks(s string) string {
	if !strings.ContainsAny(s, "\r\u2028\u2029\u0085") {
		return s
	}
	s = strings.ReplaceAll(s, "\r\n", "\n")
	return strings.NewReplacer("\r", "\n", "\u2028", "\n", "\u2029", "\n", "\u0085", "\n").Replace(s)
}

// removeControlChars drops C0 controls other than tab, LF, FF and CR, DEL, the deprecated
// format characters U+206A–U+206F, U+FEFF and the interlinear annotation characters
// U+FFF9–U+FFFC.
func removeControlChars(s string) string {
	return mapRunes(s, func(r rune) (string, bool) {
		if r <= 0x08 || r == 0x0B || r >= 0x0E && r <= 0x1F || r == 0x7F ||
			r >= 0x206A && r <= 0x206F || r == 0xFEFF || r >= 0xFFF9 && r <= 0xFFFC {
			return "", true
		}
		return "", false
	})
}

// mapRunes replaces the runes for which f says so, copying only when something changes.
func mapRunes(s string, f func(rune) (string, bool)) string {
	var b *strings.Builder
	for i, r := range s {
		v, ok := f(r)
		if !ok {
			if b != nil {
				b.WriteRune(r)
			}
			continue
		}
		if b == nil {
			b = &strings.Builder{}
			b.Grow(len(s))
			b.WriteString(s[:i])
		}
		b.WriteString(v)
	}
	if b == nil {
		return s
	}
	return b.String()
}

// isPySpace is Python's str.isspace: what "\s" matches in transformers' whitespace_clean.
func isPySpace(r rune) bool {
	switch r {
	case '\t', '\n', '\v', '\f', '\r', 0x1C, 0x1D, 0x1E, 0x1F, 0x85:
		return true
	}
	return unicode.Is(unicode.Z, r)
}

// whitespaceCleanLower is transformers' whitespace_clean followed by Python's str.lower():
// whitespace runs become one space, the ends are trimmed, and letters take their full lowercase
// (İ → "i̇"; Σ → ς at the end of a word, by Python's Final_Sigma rule).
func whitespaceCleanLower(s string) string {
	rs := make([]rune, 0, len(s))
	inSpace := false
	for _, r := range s {
		if isPySpace(r) {
			if !inSpace && len(rs) > 0 {
				rs = append(rs, ' ')
			}
			inSpace = true
			continue
		}
		inSpace = false
		rs = append(rs, r)
	}
	if len(rs) > 0 && rs[len(rs)-1] == ' ' {
		rs = rs[:len(rs)-1]
	}
	var b strings.Builder
	b.Grow(len(s))
	for i, r := range rs {
		switch {
		case r == 'İ':
			b.WriteString("i\u0307")
		case r == 'Σ' && finalSigma(rs, i):
			b.WriteRune('ς')
		default:
			b.WriteRune(unicode.ToLower(r))
		}
	}
	return b.String()
}

// finalSigma: a cased letter before rs[i] and none after it, skipping case-ignorable runes.
func finalSigma(rs []rune, i int) bool {
	j := i - 1
	for j >= 0 && caseIgnorable(rs[j]) {
		j--
	}
	if j < 0 || !cased(rs[j]) {
		return false
	}
	j = i + 1
	for j < len(rs) && caseIgnorable(rs[j]) {
		j++
	}
	return j == len(rs) || !cased(rs[j])
}

func cased(r rune) bool {
	return unicode.IsUpper(r) || unicode.IsLower(r) || unicode.IsTitle(r) ||
		unicode.Is(unicode.Other_Lowercase, r) || unicode.Is(unicode.Other_Uppercase, r)
}

// caseIgnorable is Unicode's Case_Ignorable: marks, format characters, modifier letters and
// symbols, and the word-internal punctuation of Word_Break MidLetter, MidNumLet, Single_Quote.
func caseIgnorable(r rune) bool {
	switch r {
	case '\'', '.', ':', 0xB7, 0x387, 0x55F, 0x5F4, 0x2018, 0x2019, 0x2024, 0x2027,
		0xFE13, 0xFE52, 0xFE55, 0xFF07, 0xFF0E, 0xFF1A:
		return true
	}
	return unicode.In(r, unicode.Mn, unicode.Me, unicode.Cf, unicode.Lm, unicode.Sk)
}
