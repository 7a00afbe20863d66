package tokenizer

import (
	"math"
	"unicode"
	"unicode/utf8"
)

// Encode tokenizes ordinary text. Text that looks like a special token
// ("<|endoftext|>") is encoded as plain text, like tiktoken's
// encode_ordinary: user text must never inject control tokens. Bytes that are
// not valid UTF-8 are kept (as punctuation-like pieces), so DecodeBytes
// returns them unchanged.
func (t *Tokenizer) Encode(text string) []int {
	out := make([]int, 0, len(text)/3+1)
	for len(text) > 0 {
		n := nextPiece(text)
		out = t.encodePiece(text[:n], out)
		text = text[n:]
	}
	return out
}

// Character classes of the GPT-2 pre-tokenisation pattern.
const (
	classOther = iota // [^\s\p{L}\p{N}]
	classLetter
	classNumber
	classSpace
)

// asciiClass avoids the Unicode tables for the common case.
var asciiClass = func() (c [utf8.RuneSelf]uint8) {
	for r := range c {
		c[r] = uint8(classOf(rune(r)))
	}
	return c
}()

func classOf(r rune) int {
	if c, ok := overrideClass(r); ok {
		return c
	}
	switch {
	case unicode.IsLetter(r):
		return classLetter
	case unicode.IsNumber(r):
		return classNumber
	case unicode.Is(unicode.White_Space, r):
		// \s of the Rust regex engine tiktoken uses: Unicode White_Space.
		return classSpace
	}
	return classOther
}

// runeAt decodes one rune; an invalid byte counts as one rune of class
// other (U+FFFD, which is a symbol, would be classed the same).
func runeAt(s string) (rune, int, int) {
	if c := s[0]; c < utf8.RuneSelf {
		return rune(c), 1, int(asciiClass[c])
	}
	r, n := utf8.DecodeRuneInString(s)
	return r, n, classOf(r)
}

// span returns the length of the run of class cls at the start of s.
func span(s string, cls int) int {
	i := 0
	for i < len(s) {
		_, n, c := runeAt(s[i:])
		if c != cls {
			break
		}
		i += n
	}
	return i
}

// nextPiece returns the length of the next match of Whisper's (GPT-2's)
// pattern
//
//	's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//
// at the start of s (non-empty). Every character is matched by some
// alternative, so pieces tile the text. Written by hand because Go's regexp
// has no lookahead.
func nextPiece(s string) int {
	if s[0] == '\'' && len(s) > 1 {
		for _, c := range [...]string{"s", "t", "re", "ve", "m", "ll", "d"} {
			if len(s) > len(c) && s[1:1+len(c)] == c {
				return 1 + len(c)
			}
		}
	}
	_, n, cls := runeAt(s)
	if s[0] == ' ' && len(s) > 1 {
		// The optional leading space binds to a following letter, number
		// or symbol run.
		if _, _, next := runeAt(s[1:]); next != classSpace {
			return 1 + span(s[1:], next)
		}
	}
	if cls != classSpace {
		return span(s, cls)
	}
	// \s+(?!\S): the whole run at the end of the text, else the run less its
	// last character (which then prefixes the next word) — unless the run is
	// a single character, which \s+ then takes alone.
	end := span(s, classSpace)
	if end == len(s) {
		return end
	}
	_, last := utf8.DecodeLastRuneInString(s[:end])
	if end-last > 0 {
		return end - last
	}
	return n
}

// heapThreshold is the piece length from which BPE keeps its candidate pairs
// in a heap: the plain scan is quadratic, which a long unbroken string (a
// hostile prompt) would turn into a stall.
const heapThreshold = 64

const noRank = math.MaxInt

// encodePiece appends the tokens of one pre-tokenised piece.
func (t *Tokenizer) encodePiece(piece string, out []int) []int {
	// A piece that is itself a token is taken whole, as tiktoken does, even
	// where merging byte pairs would not reach it.
	if id, ok := t.ranks[piece]; ok {
		return append(out, id)
	}
	if len(piece) >= heapThreshold {
		return t.bpeHeap(piece, out)
	}
	return t.bpeScan(piece, out)
}

// rank of piece[a:b], or noRank where it is not a token.
func (t *Tokenizer) rank(piece string, a, b int) int {
	if r, ok := t.ranks[piece[a:b]]; ok {
		return r
	}
	return noRank
}

// bpeScan is tiktoken's merge: repeatedly join the adjacent pair of parts
// whose concatenation has the lowest rank (the leftmost on a tie).
func (t *Tokenizer) bpeScan(piece string, out []int) []int {
	type part struct{ start, rank int } // rank: of this part joined with the next
	var buf [heapThreshold + 1]part
	parts := buf[:0]
	for i := 0; i < len(piece); i++ {
		r := noRank
		if i+2 <= len(piece) {
			r = t.rank(piece, i, i+2)
		}
		parts = append(parts, part{i, r})
	}
	parts = append(parts, part{len(piece), noRank})
	pairRank := func(i int) int { // parts i and i+1 joined
		if i+2 < len(parts) {
			return t.rank(piece, parts[i].start, parts[i+2].start)
		}
		return noRank
	}
	for {
		best, min := -1, noRank
		for i := 0; i < len(parts)-1; i++ {
			if parts[i].rank < min {
				best, min = i, parts[i].rank
			}
		}
		if best < 0 {
			break
		}
		parts = append(parts[:best+1], parts[best+2:]...)
		parts[best].rank = pairRank(best)
		if best > 0 {
			parts[best-1].rank = pairRank(best - 1)
		}
	}
	for i := 0; i+1 < len(parts); i++ {
		out = append(out, t.ranks[piece[parts[i].start:parts[i+1].start]])
	}
	return out
}

// pairEntry is a candidate merge of node with its current right neighbour.
type pairEntry struct{ rank, start, node, version int }

// before orders the heap: lowest rank, then leftmost, as the scan picks.
func (a pairEntry) before(b pairEntry) bool {
	if a.rank != b.rank {
		return a.rank < b.rank
	}
	return a.start < b.start
}

// pairHeap is a binary min-heap; typed rather than container/heap so that
// pushes do not allocate.
type pairHeap []pairEntry

func (h *pairHeap) push(e pairEntry) {
	*h = append(*h, e)
	s := *h
	for i := len(s) - 1; i > 0; {
		p := (i - 1) / 2
		if !s[i].before(s[p]) {
			break
		}
		s[i], s[p] = s[p], s[i]
		i = p
	}
}

func (h *pairHeap) pop() pairEntry {
	s := *h
	top := s[0]
	last := len(s) - 1
	s[0] = s[last]
	s = s[:last]
	for i := 0; ; {
		l, m := 2*i+1, i
		if l < len(s) && s[l].before(s[m]) {
			m = l
		}
		if r := l + 1; r < len(s) && s[r].before(s[m]) {
			m = r
		}
		if m == i {
			break
		}
		s[i], s[m] = s[m], s[i]
		i = m
	}
	*h = s
	return top
}

// bpeHeap makes the same merges as bpeScan, in the same order (lowest rank,
// then leftmost), in O(n log n): parts form a linked list and stale heap
// entries are recognised by a per-node version.
func (t *Tokenizer) bpeHeap(piece string, out []int) []int {
	n := len(piece)
	// Node i starts at byte i for good; nodes merged away are skipped by next.
	type node struct{ next, prev, version int }
	nodes := make([]node, n+1)
	for i := range nodes {
		nodes[i] = node{i + 1, i - 1, 0}
	}
	h := make(pairHeap, 0, n)
	push := func(i int) {
		if i < 0 || nodes[i].next >= n {
			return
		}
		nodes[i].version++
		if r := t.rank(piece, i, nodes[nodes[i].next].next); r != noRank {
			h.push(pairEntry{r, i, i, nodes[i].version})
		}
	}
	for i := 0; i+1 < n; i++ {
		if r := t.rank(piece, i, i+2); r != noRank {
			h.push(pairEntry{r, i, i, 0})
		}
	}
	for len(h) > 0 {
		e := h.pop()
		if e.version != nodes[e.node].version {
			continue
		}
		i := e.node
		j := nodes[i].next
		nodes[i].next = nodes[j].next
		nodes[nodes[j].next].prev = i
		nodes[j].version = -1 // gone
		push(i)
		push(nodes[i].prev)
	}
	for i := 0; i < n; i = nodes[i].next {
		out = append(out, t.ranks[piece[i:nodes[i].next]])
	}
	return out
}
