package tokenizer

import (
	"bytes"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"unicode/utf8"

	"golang.org/x/text/encoding/charmap"
)

// Mojibake repair as ftfy 6.3.1's fix_encoding does it. Text that only ASCII makes up, or that
// ftfy's badness heuristic (isBad) finds nothing odd in, is left alone. Otherwise, in order:
//
//  1. each single-byte codec that can encode the whole text (Latin-1, the "sloppy"
//     Windows-1252/1251/1250/1253/1254/1257 that pass undefined bytes through and read 0x1A as
//     U+FFFD, ISO-8859-2, MacRoman, CP437) encodes it; where ftfy does, spaces that stand for
//     a lost U+00A0 byte are restored and, for the sloppy codecs, sequences that lost bytes to
//     "?" or U+FFFD become U+FFFD; the first byte string that decodes as UTF-8 (with CESU-8
//     surrogate pairs and C0 80 accepted where 0xED or 0xC0 occur) is the answer;
//  2. else runs that look like UTF-8 read as a single-byte code ("Ã©", "â€™", ...) are fixed
//     on their own where they are bad;
//  3. else Latin-1 text is re-read as strict Windows-1252, or C1 controls alone are.
//
// The step repeats until the text stops changing. Between two single-byte codes (neither
// UTF-8) ftfy does nothing, and neither does this.
func fixEncoding(s string) string {
	for {
		next := fixEncodingStep(s)
		if next == s {
			return s
		}
		s = next
	}
}

func fixEncodingStep(s string) string {
	if isASCII(s) || !isBad(s) {
		return s
	}
	for _, c := range singleByteCodecs {
		b, ok := c.encode(s)
		if !ok {
			continue
		}
		if c.name != "macroman" && alteredUTF8.find(b) >= 0 {
			b = restoreByteA0(b)
		}
		if c.sloppy {
			b = lossyUTF8.replace(b, []byte("\uFFFD"), nil)
		}
		if out, ok := decodeUTF8Variants(b); ok {
			return out
		}
	}
	if fixed := decodeInconsistentUTF8(s); fixed != s {
		return fixed
	}
	// What is left: Latin-1 text read as Windows-1252 (strictly, or C1 controls one by one
	// where an undefined byte is among them; both come to the same).
	return fixC1Controls(s)
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// singleByte is one of the single-byte codes mojibake is undone through.
type singleByte struct {
	name   string
	sloppy bool
	dec    [256]rune
	enc    map[rune]byte
}

// encode returns s in this code, or false when some character has no byte. As in ftfy, 0x1A
// is not a possible byte of sloppy codecs (it decodes as U+FFFD there).
func (c *singleByte) encode(s string) ([]byte, bool) {
	b := make([]byte, 0, len(s))
	for _, r := range s {
		if r < 0x80 && r != 0x1A {
			b = append(b, byte(r))
			continue
		}
		x, ok := c.enc[r]
		if !ok {
			return nil, false
		}
		b = append(b, x)
	}
	return b, true
}

func newSingleByte(name string, cm *charmap.Charmap, sloppy bool) *singleByte {
	c := &singleByte{name: name, sloppy: sloppy, enc: map[rune]byte{}}
	for i := range 256 {
		r := rune(i)
		if i >= 0x80 && cm != nil {
			if r = cm.DecodeByte(byte(i)); r == utf8.RuneError {
				r = rune(i) // undefined in the code page: the sloppy codecs pass it through
			}
		}
		c.dec[i] = r
	}
	if sloppy {
		c.dec[0x1A] = utf8.RuneError
	}
	for i := 0x80; i < 256; i++ {
		c.enc[c.dec[i]] = byte(i)
	}
	c.enc[c.dec[0x1A]] = 0x1A
	return c
}

// singleByteCodecs in the order ftfy tries them.
var singleByteCodecs = []*singleByte{
	newSingleByte("latin-1", nil, false),
	newSingleByte("sloppy-windows-1252", charmap.Windows1252, true),
	newSingleByte("sloppy-windows-1251", charmap.Windows1251, true),
	newSingleByte("sloppy-windows-1250", charmap.Windows1250, true),
	newSingleByte("sloppy-windows-1253", charmap.Windows1253, true),
	newSingleByte("sloppy-windows-1254", charmap.Windows1254, true),
	newSingleByte("sloppy-windows-1257", charmap.Windows1257, true),
	newSingleByte("iso-8859-2", charmap.ISO8859_2, false),
	newSingleByte("macroman", charmap.Macintosh, false),
	newSingleByte("cp437", charmap.CodePage437, false),
}

// sloppy1252 is Windows-1252 with its five undefined bytes read as Latin-1.
func sloppy1252(b byte) rune { return singleByteCodecs[1].dec[b] }

// decodeUTF8Variants decodes b as strict UTF-8, also accepting C0 80 as U+0000 and CESU-8
// surrogate pairs (what ftfy's "utf-8-variants" accepts, and only used when 0xC0 or 0xED
// occur; both are invalid in strict UTF-8 anyway).
func decodeUTF8Variants(b []byte) (string, bool) {
	if utf8.Valid(b) {
		return string(b), true
	}
	if bytes.IndexByte(b, 0xC0) < 0 && bytes.IndexByte(b, 0xED) < 0 {
		return "", false
	}
	var sb strings.Builder
	for i := 0; i < len(b); {
		if b[i] == 0xC0 && i+1 < len(b) && b[i+1] == 0x80 {
			sb.WriteByte(0)
			i += 2
			continue
		}
		if i+6 <= len(b) && b[i] == 0xED && b[i+1] >= 0xA0 && b[i+1] <= 0xAF && b[i+2] >= 0x80 && b[i+2] <= 0xBF &&
			b[i+3] == 0xED && b[i+4] >= 0xB0 && b[i+4] <= 0xBF && b[i+5] >= 0x80 && b[i+5] <= 0xBF {
			cp := rune(b[i+1]&0x0F)<<16 | rune(b[i+2]&0x3F)<<10 | rune(b[i+4]&0x0F)<<6 | rune(b[i+5]&0x3F)
			sb.WriteRune(cp + 0x10000)
			i += 6
			continue
		}
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n <= 1 {
			return "", false
		}
		sb.WriteRune(r)
		i += n
	}
	return sb.String(), true
}

// bytePattern is a list of alternatives, each a fixed sequence of byte sets; at each position
// the first alternative that matches wins, as in a regular expression "a|b|c" over bytes.
type bytePattern [][]*[256]bool

// byteSet builds a set from single bytes and "lo-hi" pairs given as two-byte strings.
func byteSet(items ...string) *[256]bool {
	var s [256]bool
	for _, it := range items {
		switch len(it) {
		case 1:
			s[it[0]] = true
		case 2:
			for b := int(it[0]); b <= int(it[1]); b++ {
				s[b] = true
			}
		default:
			panic(fmt.Sprintf("byteSet %q", it))
		}
	}
	return &s
}

func (p bytePattern) matchAt(b []byte, i int) int {
	for _, alt := range p {
		if i+len(alt) > len(b) {
			continue
		}
		ok := true
		for k, set := range alt {
			if !set[b[i+k]] {
				ok = false
				break
			}
		}
		if ok {
			return len(alt)
		}
	}
	return 0
}

func (p bytePattern) find(b []byte) int {
	for i := range b {
		if p.matchAt(b, i) > 0 {
			return i
		}
	}
	return -1
}

// replace substitutes each non-overlapping match, left to right, by repl, or by f(match).
func (p bytePattern) replace(b, repl []byte, f func([]byte) []byte) []byte {
	var out []byte
	last := 0
	for i := 0; i < len(b); {
		n := p.matchAt(b, i)
		if n == 0 {
			i++
			continue
		}
		out = append(out, b[last:i]...)
		if f != nil {
			out = append(out, f(b[i:i+n])...)
		} else {
			out = append(out, repl...)
		}
		i += n
		last = i
	}
	if out == nil {
		return b
	}
	return append(out, b[last:]...)
}

var (
	bSpace    = byteSet(" ")
	bCont     = byteSet("\x80\xbf")
	bContNoA0 = byteSet("\x80\x84", "\x86\x9f", "\xa1\xbf") // continuation bytes a space is unlikely to have replaced
	// alteredUTF8: UTF-8 sequences in which a space stands where a 0xA0 byte belonged.
	alteredUTF8 = bytePattern{
		{byteSet("\xc2", "\xc3", "\xc5", "\xce", "\xd0", "\xd9"), bSpace},
		{byteSet("\xe2", "\xe3"), bSpace, bContNoA0},
		{byteSet("\xe0\xe3"), bContNoA0, bSpace},
		{byteSet("\xf0"), bSpace, bCont, bCont},
		{byteSet("\xf0"), bCont, bSpace, bCont},
		{byteSet("\xf0"), bCont, bCont, bSpace},
	}
	bSub, bSubQ   = byteSet("\x1a"), byteSet("\x1a", "?")
	bSubC, bSubQC = byteSet("\x1a", "\x80\xbf"), byteSet("\x1a", "?", "\x80\xbf")
	// lossyUTF8: UTF-8 sequences in which bytes were replaced by "?" or by 0x1A (the byte the
	// sloppy codecs give U+FFFD).
	lossyUTF8 = bytePattern{
		{byteSet("\xc2\xdf"), bSub},
		{byteSet("\xc2\xc3"), byteSet("?")},
		{byteSet("\xed"), byteSet("\xa0\xaf"), bSubQ, byteSet("\xed"), byteSet("\xb0\xbf"), bSubQC},
		{byteSet("\xed"), byteSet("\xa0\xaf"), bSubQC, byteSet("\xed"), byteSet("\xb0\xbf"), bSubQ},
		{byteSet("\xe0\xef"), bSubQ, bSubC},
		{byteSet("\xe0\xef"), bSubC, bSubQ},
		{byteSet("\xf0\xf4"), bSubQ, bSubC, bSubC},
		{byteSet("\xf0\xf4"), bSubC, bSubQ, bSubC},
		{byteSet("\xf0\xf4"), bSubC, bSubC, bSubQ},
		{bSub},
	}
)

// restoreByteA0 puts back 0xA0 bytes that became spaces: "Ã " before a word (UTF-8 "à" whose
// second byte was lost, except before the Portuguese words ftfy lists), then every space
// inside an alteredUTF8 sequence.
func restoreByteA0(b []byte) []byte {
	var out []byte
	last := 0
	for i := 0; i+1 < len(b); i++ {
		if b[i] != 0xC3 || b[i+1] != ' ' {
			continue
		}
		rest := b[i+2:]
		skip := false
		for _, w := range []string{" ", "quele", "quela", "quilo", "s "} {
			if bytes.HasPrefix(rest, []byte(w)) {
				skip = true
				break
			}
		}
		if skip {
			continue
		}
		out = append(out, b[last:i]...)
		out = append(out, 0xC3, 0xA0, ' ')
		last = i + 2
		i++
	}
	if out != nil {
		b = append(out, b[last:]...)
	}
	return alteredUTF8.replace(b, nil, func(m []byte) []byte {
		return bytes.ReplaceAll(m, []byte(" "), []byte{0xA0})
	})
}

// runeSet parses a set written as runes and "a-b" ranges.
func runeSet(specs ...string) map[rune]bool {
	set := map[rune]bool{}
	for _, spec := range specs {
		rs := []rune(spec)
		for i := 0; i < len(rs); i++ {
			if i+2 < len(rs) && rs[i+1] == '-' {
				for r := rs[i]; r <= rs[i+2]; r++ {
					set[r] = true
				}
				i += 2
				continue
			}
			set[rs[i]] = true
		}
	}
	return set
}

// The characters that lead or continue a UTF-8 sequence once its bytes are read in one of the
// single-byte codes: first bytes of 2-, 3- and 4-byte sequences, and continuation bytes (a
// space included, for a lost 0xA0; the strict set leaves out space and the common
// punctuation).
var (
	utf8Lead2 = runeSet("\u0102\u00c2\u00c4\u0100\u00c5\u00c3\u00c6\u0106\u010c\u00c7\u010e\u0110\u00c9\u011a\u00ca\u00cb" +
		"\u0116\u00c8\u0112\u0118\u00d0\u011e\u0122\u00cd\u00ce\u00cf\u0130\u00cc\u012a\u0136\u0139\u013b\u0141\u0143" +
		"\u0147\u0145\u00d1\u00d3\u00d4\u00d6\u0150\u00d2\u014c\u00d8\u00d5\u0158\u015a\u0160\u015e\u0162\u00de\u00da" +
		"\u00db\u00dc\u0170\u00d9\u016a\u0172\u016e\u00dd\u0179\u017d\u017b\u00df\u00d7" +
		"\u0392-\u03a1\u03a3-\u03af\u0412-\u042f")
	utf8Lead3 = runeSet("\u00e1\u0103\u00e2\u00e4\u00e0\u0101\u0105\u00e5\u00e3\u00e6\u0107\u010d\u00e7\u010f\u00e9" +
		"\u011b\u00ea\u00eb\u0117\u00e8\u0113\u0119\u0123\u00ed\u00ee\u00ef\u00ec\u012b\u012f\u0137\u013a\u013c\u0155" +
		"\u017a\u03b0-\u03bf\u0430-\u043f")
	utf8Lead4       = runeSet("\u0111\u00f0\u011f\u00f3\u0161\u03c0\u03c3\u0440\u0443")
	utf8ContCommon  = "\u0080-\u00bf"
	utf8ContLetters = "\u0104\u00c6\u013d\u0141\u00d8\u0156\u015a\u0160\u015e\u0164\u0178\u0179\u017d\u017b\u0152" +
		"\u0105\u00e6\u0192\u013e\u0142\u00f8\u0157\u015b\u0161\u015f\u0165\u017a\u017e\u017c\u0153\u02c6\u02c7" +
		"\u02d8\u02db\u02dc\u02dd\u0384-\u0386\u0388-\u038a\u038c\u038e\u038f\u0401-\u040c\u040e\u040f" +
		"\u0451-\u045c\u045e\u045f\u0490\u0491\u2020\u2021\u2030\u2039\u203a\u20ac\u2116\u2122"
	utf8ContStrict = runeSet(utf8ContCommon, utf8ContLetters)
	utf8Cont       = runeSet(utf8ContCommon, utf8ContLetters, " \u2013\u2014\u2015\u2018\u2019\u201a\u201c\u201d\u201e\u2022\u2026")
)

// decodeInconsistentUTF8 finds maximal runs of would-be UTF-8 sequences (not right after a
// strict continuation character) and, where such a run is shorter than the text and bad on
// its own, fixes its encoding alone.
func decodeInconsistentUTF8(s string) string {
	rs := []rune(s)
	seqLen := func(i int) int {
		if i >= len(rs) {
			return 0
		}
		var n int
		switch {
		case utf8Lead2[rs[i]]:
			n = 2
		case utf8Lead3[rs[i]]:
			n = 3
		case utf8Lead4[rs[i]]:
			n = 4
		default:
			return 0
		}
		if i+n > len(rs) {
			return 0
		}
		for k := 1; k < n; k++ {
			if !utf8Cont[rs[i+k]] {
				return 0
			}
		}
		return n
	}
	var out strings.Builder
	last, changed := 0, false
	for i := 0; i < len(rs); {
		if i > 0 && utf8ContStrict[rs[i-1]] {
			i++
			continue
		}
		j := i
		for {
			n := seqLen(j)
			if n == 0 {
				break
			}
			j += n
		}
		if j == i {
			i++
			continue
		}
		run := string(rs[i:j])
		if j-i < len(rs) && isBad(run) {
			if fixed := fixEncoding(run); fixed != run {
				out.WriteString(string(rs[last:i]))
				out.WriteString(fixed)
				last, changed = j, true
			}
		}
		i = j
	}
	if !changed {
		return s
	}
	out.WriteString(string(rs[last:]))
	return out.String()
}

// The character classes of ftfy's badness heuristic: the ~400 characters UTF-8 mojibake is
// made of, grouped by how they look in real text.
const (
	mbCommon   = "\u00a0\u00ad\u00b7\u00b4\u2013\u2014\u2015\u2026\u2019"
	mbC1       = "\u0080-\u009f"
	mbBad      = "\u00a6\u00a4\u00a8\u00ac\u00af\u00b8\u0192\u02c6\u02c7\u02d8\u02db\u02dc\u2020\u2021\u2030\u2310\u25ca\ufffd\u00aa\u00ba"
	mbLaw      = "\u00b6\u00a7"
	mbCurrency = "\u00a2\u00a3\u00a5\u20a7\u20ac"
	mbStart    = "\u00a1\u00ab\u00bf\u00a9\u0384\u0385\u2018\u201a\u201c\u201e\u2022\u2039\uf8ff"
	mbEnd      = "\u00ae\u00bb\u02dd\u201d\u203a\u2122"
	mbNumeric  = "\u00b2\u00b3\u00b9\u00b1\u00bc\u00bd\u00be\u00d7\u00b5\u00f7\u2044\u2202\u2206\u220f\u2211\u221a" +
		"\u221e\u2229\u222b\u2248\u2260\u2261\u2264\u2265\u2116"
	mbKaomoji = "\u00d2-\u00d6\u00d9-\u00dc\u00f2-\u00f6\u00f8-\u00fc\u0150\u014c\u016a\u0172\u00b0"
	mbUpperAc = "\u00c0-\u00d1\u00d8\u00dc\u00dd\u0102\u0100\u0104\u0106\u010c\u010e\u0110\u0118\u011a\u0112\u0116\u011e" +
		"\u0122\u0130\u012a\u0136\u0139\u013d\u0141\u013b\u0143\u0147\u0145\u0152\u0158\u015a\u015e\u0160\u0162\u0164" +
		"\u016e\u0170\u0178\u0179\u017b\u017d\u0490"
	mbLowerAc = "\u00df\u00e0-\u00f1\u0103\u0105\u0101\u0107\u010d\u010f\u0111\u0119\u011b\u0113\u0117\u011f\u0123\u012f" +
		"\u012b\u0137\u013a\u013e\u0142\u013c\u0153\u0155\u015b\u015f\u0161\u0165\u00fc\u017a\u017c\u017e\u0491\ufb01\ufb02"
	mbUpperCommon = "\u00de\u0391-\u03a9\u0386\u0388\u0389\u038a\u038c\u038e\u038f\u03aa\u03ab\u0401-\u042f"
	mbLowerCommon = "\u03b1-\u03c9\u03ac\u03ad\u03ae\u03af\u03b0\u0430-\u045f"
	mbBox         = "\u2502\u250c\u2510\u2518\u251c\u2524\u252c\u253c\u2550-\u256c\u2580\u2584\u2588\u258c\u2590\u2591\u2592\u2593"
)

// cls writes a regexp character class from parts made of runes and "a-b" ranges.
func cls(parts ...string) string {
	var b strings.Builder
	b.WriteByte('[')
	for _, p := range parts {
		for _, r := range p {
			if r == '-' {
				b.WriteByte('-')
			} else {
				fmt.Fprintf(&b, `\x{%x}`, r)
			}
		}
	}
	b.WriteByte(']')
	return b.String()
}

// lit quotes literal text for a regexp.
func lit(s string) string { return regexp.QuoteMeta(s) }

// badness is ftfy's mojibake detector (compiled on first use): any one of these short sequences marks the text as
// likely mojibake. pySpace and pyWord are what Python's "\s" and "\w" match.
var badness = sync.OnceValue(func() *regexp.Regexp {
	const pySpace = `[\t\n\v\f\r\x{1c}-\x{1f}\x{85}\p{Z}]`
	const pyWord = `[\p{L}\p{N}_]`
	var (
		bad, la, ua, box, st, end = mbBad, mbLowerAc, mbUpperAc, mbBox, mbStart, mbEnd
		cur, num, law, lc, uc     = mbCurrency, mbNumeric, mbLaw, mbLowerCommon, mbUpperCommon
		kao, common, c1           = mbKaomoji, mbCommon, mbC1
	)
	rules := []string{
		cls(c1),
		cls(bad, la, ua, box, st, end, cur, num, law) + cls(bad),
		cls("A-Za-z") + cls(lc, uc) + cls(bad),
		cls(bad) + cls(la, ua, box, st, end, cur, num, law),
		cls(la, lc, box, end, cur, num) + cls(ua),
		cls(box, end, cur, num) + cls(la),
		cls(la, box, end) + cls(cur),
		pySpace + cls(ua) + cls(cur),
		cls(ua, box) + cls(num, law),
		cls(la, ua, box, cur, end) + cls(st) + cls(num),
		cls(la, ua, cur, num, box, law) + cls(end) + cls(st),
		cls(cur, num, box) + cls(st),
		cls("a-z") + cls(ua) + cls(st, cur),
		cls(box) + cls(kao),
		cls(la, ua, cur, num, st, end, law) + cls(box),
		cls(box) + cls(end),
		cls(la, ua) + cls(st, end) + pyWord,
		cls("Œœ") + `[^A-Za-z]`,
		cls(ua) + lit("°"),
		cls("ÂÃÎÐ") + cls("€œŠš¢£Ÿž\u00a0\u00ad®©°·»", st, end, "–—´"),
		lit("×") + cls("²³"),
		strings.Repeat(cls("ØÙ")+cls(common, cur, bad, num, st, "ŸŠ®°µ»"), 2),
		lit("à") + cls("²µ¹¼½¾"),
		lit("√") + cls("±∂†≠®™´≤≥¥µø"),
		lit("≈") + cls("°¢"),
		lit("‚Ä") + cls("ìîïòôúùû†°¢π"),
		lit("‚") + cls("âó") + cls("àä°ê"),
		lit("вЂ"),
		cls("ВГРС") + cls(c1, bad, st, end, cur, "°µ") + cls("ВГРС"),
		lit("ГўВЂВ") + `.` + cls("A-Za-z "),
		lit("Ã") + cls("\u00a0¡"),
		cls("a-z") + pySpace + `?` + cls("ÃÂ") + cls(" "),
		`^` + cls("ÃÂ") + cls(" "),
		cls("a-z.,?!", end) + lit("Â") + cls(" ", st, end),
		lit("β€") + cls("™\u00a0Ά\u00ad®°"),
		cls("ΒΓΞΟ") + cls(c1, bad, st, end, cur, "°") + cls("ΒΓΞΟ"),
		lit("ā€"),
	}
	return regexp.MustCompile(strings.Join(rules, "|"))
})

func isBad(s string) bool { return badness().MatchString(s) }
