package g2p

import (
	"math/big"
	"strings"
)

// English number words as num2words 0.5.6 (LGPL-2.1, reimplemented here)
// writes them for misaki: cardinals ("one thousand, two hundred and
// thirty-four"), ordinals, years ("nineteen hundred and five") and decimals
// ("three point one four"). misaki splits the result on anything but a-z and
// drops "and", so only the words and their order matter.

var lowWords = []string{"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
	"ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"}

var tensWords = []string{"", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"}

// scaleWords are 10^3, 10^6, … as num2words' English names them.
var scaleWords = []string{"thousand", "million", "billion", "trillion", "quadrillion", "quintillion",
	"sextillion", "septillion", "octillion", "nonillion", "decillion", "undecillion", "duodecillion",
	"tredecillion", "quattuordecillion", "quindecillion", "sexdecillion", "septendecillion",
	"octodecillion", "novemdecillion", "vigintillion"}

// cardinalWords writes a non-negative integer.
func cardinalWords(n *big.Int) string {
	if n.IsInt64() && n.Int64() < 1000 {
		return smallCardinal(int(n.Int64()))
	}
	// The largest scale not above n.
	k := 0
	scale := big.NewInt(1000)
	next := new(big.Int)
	for k+1 < len(scaleWords) {
		next.Mul(scale, big.NewInt(1000))
		if next.Cmp(n) > 0 {
			break
		}
		scale.Set(next)
		k++
	}
	div, mod := new(big.Int).DivMod(n, scale, new(big.Int))
	out := cardinalWords(div) + " " + scaleWords[k]
	if mod.Sign() != 0 {
		if mod.IsInt64() && mod.Int64() < 100 {
			out += " and " + cardinalWords(mod)
		} else {
			out += ", " + cardinalWords(mod)
		}
	}
	return out
}

func smallCardinal(n int) string {
	switch {
	case n < 20:
		return lowWords[n]
	case n < 100:
		if n%10 == 0 {
			return tensWords[n/10]
		}
		return tensWords[n/10] + "-" + lowWords[n%10]
	}
	out := lowWords[n/100] + " hundred"
	if n%100 != 0 {
		out += " and " + smallCardinal(n%100)
	}
	return out
}

func cardinalString(digits string) string {
	n, ok := new(big.Int).SetString(digits, 10)
	if !ok {
		return ""
	}
	if n.Sign() < 0 {
		return "minus " + cardinalWords(n.Neg(n))
	}
	return cardinalWords(n)
}

var ordinalWords = map[string]string{"one": "first", "two": "second", "three": "third", "five": "fifth",
	"eight": "eighth", "nine": "ninth", "twelve": "twelfth"}

// ordinalString is num2words(n, to='ordinal').
func ordinalString(digits string) string {
	c := cardinalString(digits)
	words := strings.Split(c, " ")
	last := strings.Split(words[len(words)-1], "-")
	w := strings.ToLower(last[len(last)-1])
	if o, ok := ordinalWords[w]; ok {
		w = o
	} else {
		if strings.HasSuffix(w, "y") {
			w = w[:len(w)-1] + "ie"
		}
		w += "th"
	}
	last[len(last)-1] = w
	words[len(words)-1] = strings.Join(last, "-")
	return strings.Join(words, " ")
}

// yearString is num2words(n, to='year') for 0 ≤ n < 10000.
func yearString(n int) string {
	if (n/100)%10 == 0 {
		return smallOrBig(n)
	}
	high, low := n/100, n%100
	out := smallOrBig(high)
	if low != 0 {
		return out + " hundred and " + smallOrBig(low)
	}
	return out + " hundred"
}

func smallOrBig(n int) string {
	return cardinalWords(big.NewInt(int64(n)))
}

// floatString is num2words(float(s)) for a plain decimal s ("3.14", "15.990").
func floatString(s string) string {
	intPart, frac, _ := strings.Cut(s, ".")
	frac = strings.TrimRight(frac, "0")
	if intPart == "" {
		intPart = "0"
	}
	if frac == "" {
		return cardinalString(intPart)
	}
	out := []string{cardinalString(intPart), "point"}
	for _, d := range frac {
		out = append(out, lowWords[d-'0'])
	}
	return strings.Join(out, " ")
}
