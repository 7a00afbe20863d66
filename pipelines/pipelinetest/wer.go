package pipelinetest

import (
	"strings"
	"unicode"
)

// Words splits a transcript into words for scoring: lowercased, without
// punctuation (hyphens split words), "Mr." spelled out.
func Words(s string) []string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsLetter(r) || unicode.IsDigit(r) || r == '\'' {
			return unicode.ToLower(r)
		}
		return ' '
	}, strings.ReplaceAll(s, "-", " "))
	w := strings.Fields(s)
	for i := range w {
		if w[i] == "mr" {
			w[i] = "mister"
		}
	}
	return w
}

// WordErrorRate is the edit distance from ref to hyp, in words, over the
// length of ref.
func WordErrorRate(ref, hyp []string) float64 {
	d := make([]int, len(hyp)+1)
	for j := range d {
		d[j] = j
	}
	for i := 1; i <= len(ref); i++ {
		prev := d[0]
		d[0] = i
		for j := 1; j <= len(hyp); j++ {
			cur := d[j]
			sub := prev
			if ref[i-1] != hyp[j-1] {
				sub++
			}
			d[j] = min(sub, d[j]+1, d[j-1]+1)
			prev = cur
		}
	}
	return float64(d[len(hyp)]) / float64(max(1, len(ref)))
}
