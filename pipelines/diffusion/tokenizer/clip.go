// Package tokenizer turns prompts into the token ids that diffusion text encoders take: CLIP's
// byte-level BPE (SD 1.5/2.1, SDXL, FLUX's CLIP-L, OpenCLIP-G) and T5's SentencePiece unigram
// model (FLUX's text_encoder_2). CLIP ids match the Python CLIPTokenizer of transformers 4 with
// ftfy installed (what diffusers pipelines load: ftfy.fix_text, whitespace clean-up, lowercase,
// then BPE); T5 ids match transformers 5's T5Tokenizer. testdata/ holds the reference vectors.
package tokenizer

import (
	"bufio"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"sync"
	"unicode/utf8"
)

// CLIP's special tokens; both are also recognised verbatim inside a prompt.
const (
	clipBOS = "<|startoftext|>"
	clipEOS = "<|endoftext|>"
)

// clipPattern splits normalised text into words: contractions, letter runs, single digits and
// runs of anything else. After normalisation all whitespace is " ", so RE2's ASCII \s suffices.
var clipPattern = regexp.MustCompile(`<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+`)

// CLIP is a CLIP byte-level BPE tokenizer. It is safe for concurrent use.
type CLIP struct {
	vocab map[string]int
	ranks map[[2]string]int
	// specials are cut out of a prompt verbatim before normalisation: BOS, EOS and, from a
	// diffusers folder, the pad token too (transformers makes "!" special for SDXL's
	// tokenizer_2, so a "!" in a prompt becomes id 0 on its own).
	specials map[string]int
	order    []string
	// BOS, EOS and Pad are the ids EncodePadded uses: 49406, 49407, and 49407 ("<|endoftext|>")
	// or 0 ("!", SDXL's tokenizer_2 and OpenCLIP).
	BOS, EOS, Pad int

	mu    sync.Mutex
	cache map[string][]int
}

// byteSymbols maps each byte to the printable rune that stands for it in CLIP's vocabulary:
// printable Latin-1 bytes stand for themselves, the rest take code points from U+0100 on.
func byteSymbols() [256]rune {
	var t [256]rune
	printable := func(b int) bool {
		return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)
	}
	n := 0
	for b := 0; b < 256; b++ {
		if printable(b) {
			t[b] = rune(b)
		} else {
			t[b] = rune(256 + n)
			n++
		}
	}
	return t
}

var byteSym = byteSymbols()

// vocabByteOrder lists the byte symbols in CLIP's vocabulary order: printable bytes first (their
// ids are their order there), then the remapped ones.
func vocabByteOrder() []rune {
	var first, rest []rune
	for b, r := range byteSym {
		if r == rune(b) {
			first = append(first, r)
		} else {
			rest = append(rest, r)
		}
	}
	return append(first, rest...)
}

// LoadCLIP loads a CLIP tokenizer. files maps file base names to paths; it needs either
// "vocab.json" and "merges.txt" (a diffusers tokenizer/ or tokenizer_2/ folder, whose
// "special_tokens_map.json" or "tokenizer_config.json" names the pad token) or OpenCLIP's
// "bpe_simple_vocab_16e6.txt.gz" (vocabulary rebuilt as Hugging Face's conversion lays it out;
// it pads with 0 as OpenCLIP does).
func LoadCLIP(files map[string]string) (*CLIP, error) {
	var (
		vocab    map[string]int
		merges   [][2]string
		pad      = clipEOS
		openCLIP bool
	)
	if vp, ok := files["vocab.json"]; ok {
		mp, ok := files["merges.txt"]
		if !ok {
			return nil, fmt.Errorf("tokenizer: vocab.json without merges.txt")
		}
		b, err := os.ReadFile(vp)
		if err != nil {
			return nil, err
		}
		if err := json.Unmarshal(b, &vocab); err != nil {
			return nil, fmt.Errorf("tokenizer: %s: %w", vp, err)
		}
		f, err := os.Open(mp)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		if merges, err = readMerges(f, -1, false); err != nil {
			return nil, fmt.Errorf("tokenizer: %s: %w", mp, err)
		}
		for _, name := range []string{"tokenizer_config.json", "special_tokens_map.json"} {
			if p, ok := files[name]; ok {
				t, err := padTokenFrom(p)
				if err != nil {
					return nil, err
				}
				if t != "" {
					pad = t
				}
			}
		}
	} else if gp, ok := files["bpe_simple_vocab_16e6.txt.gz"]; ok {
		f, err := os.Open(gp)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		zr, err := gzip.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("tokenizer: %s: %w", gp, err)
		}
		// OpenCLIP keeps the first 49152-256-2 merges; the vocabulary is the 256 byte symbols,
		// the same with "</w>", one entry per merge, then the two special tokens: 49408 ids.
		if merges, err = readMerges(zr, 49152-256-2, true); err != nil {
			return nil, fmt.Errorf("tokenizer: %s: %w", gp, err)
		}
		vocab = make(map[string]int, 49408)
		for _, r := range vocabByteOrder() {
			vocab[string(r)] = len(vocab)
		}
		for _, r := range vocabByteOrder() {
			vocab[string(r)+"</w>"] = len(vocab)
		}
		for _, m := range merges {
			vocab[m[0]+m[1]] = len(vocab)
		}
		vocab[clipBOS] = len(vocab)
		vocab[clipEOS] = len(vocab)
		// OpenCLIP pads with id 0 ("!") without making "!" special.
		pad, openCLIP = "!", true
	} else {
		return nil, fmt.Errorf("tokenizer: CLIP needs vocab.json and merges.txt, or bpe_simple_vocab_16e6.txt.gz")
	}
	c := &CLIP{vocab: vocab, ranks: make(map[[2]string]int, len(merges)), cache: map[string][]int{}}
	for i, m := range merges {
		if _, dup := c.ranks[m]; !dup {
			c.ranks[m] = i
		}
	}
	var ok1, ok2, ok3 bool
	c.BOS, ok1 = vocab[clipBOS]
	c.EOS, ok2 = vocab[clipEOS]
	c.Pad, ok3 = vocab[pad]
	if !ok1 || !ok2 || !ok3 {
		return nil, fmt.Errorf("tokenizer: CLIP vocabulary lacks %q, %q or pad %q", clipBOS, clipEOS, pad)
	}
	c.specials = map[string]int{clipBOS: c.BOS, clipEOS: c.EOS}
	if !openCLIP {
		c.specials[pad] = c.Pad
	}
	for t := range c.specials {
		c.order = append(c.order, t)
	}
	return c, nil
}

// readMerges reads "a b" lines after a "#version" header (OpenCLIP's first line is always a
// header, and one with a stray prefix, hence skipFirst); limit < 0 reads them all.
func readMerges(r io.Reader, limit int, skipFirst bool) ([][2]string, error) {
	var merges [][2]string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	first := true
	for sc.Scan() {
		line := sc.Text()
		if first {
			first = false
			if skipFirst || strings.HasPrefix(line, "#version") {
				continue
			}
		}
		if limit >= 0 && len(merges) == limit {
			break
		}
		a, b, ok := strings.Cut(line, " ")
		if !ok {
			if line == "" {
				continue
			}
			return nil, fmt.Errorf("bad merge line %q", line)
		}
		merges = append(merges, [2]string{a, b})
	}
	return merges, sc.Err()
}

// padTokenFrom reads "pad_token" (a string or an {"content": ...} object) from a
// tokenizer_config.json or special_tokens_map.json; "" when absent.
func padTokenFrom(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return "", fmt.Errorf("tokenizer: %s: %w", path, err)
	}
	raw, ok := m["pad_token"]
	if !ok {
		return "", nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, nil
	}
	var obj struct {
		Content string `json:"content"`
	}
	if err := json.Unmarshal(raw, &obj); err != nil {
		return "", fmt.Errorf("tokenizer: %s: pad_token: %w", path, err)
	}
	return obj.Content, nil
}

// Encode returns the prompt's ids with BOS and EOS, neither truncated nor padded.
func (c *CLIP) Encode(prompt string) []int {
	ids := []int{c.BOS}
	for _, seg := range splitSpecial(prompt, c.order) {
		switch {
		case seg.special:
			ids = append(ids, c.specials[seg.text])
		default:
			for _, w := range clipPattern.FindAllString(clipNormalize(seg.text), -1) {
				// A special token that only appears once entities are decoded ("&lt;|endoftext|&gt;")
				// is a word of its own, which the Python tokenizer's BPE cache maps to its id.
				if w == clipBOS || w == clipEOS {
					ids = append(ids, c.vocab[w])
					continue
				}
				ids = append(ids, c.bpe(w)...)
			}
		}
	}
	return append(ids, c.EOS)
}

// EncodePadded returns exactly maxLen ids as diffusers asks for them (padding="max_length",
// truncation=True): a long prompt keeps its first maxLen-2 tokens between BOS and EOS.
func (c *CLIP) EncodePadded(prompt string, maxLen int) []int64 {
	return truncPad(c.Encode(prompt), maxLen, c.EOS, c.Pad)
}

// truncPad cuts ids (which end in eos) to maxLen keeping eos last, then pads to maxLen.
func truncPad(ids []int, maxLen, eos, pad int) []int64 {
	if maxLen <= 0 {
		return nil
	}
	if len(ids) > maxLen {
		ids = append(ids[:maxLen-1:maxLen-1], eos)
	}
	out := make([]int64, maxLen)
	for i := range out {
		if i < len(ids) {
			out[i] = int64(ids[i])
		} else {
			out[i] = int64(pad)
		}
	}
	return out
}

// clipNormalize is what the Python CLIPTokenizer does to text between special tokens when ftfy
// is installed: whitespace_clean(ftfy.fix_text(text)).lower().
func clipNormalize(s string) string {
	return whitespaceCleanLower(fixText(s))
}

// bpe maps one word to ids: its UTF-8 bytes as byte symbols, "</w>" on the last, then merges
// applied lowest rank first (leftmost on ties), as the BPE training order implies.
func (c *CLIP) bpe(word string) []int {
	c.mu.Lock()
	ids, ok := c.cache[word]
	c.mu.Unlock()
	if ok {
		return ids
	}
	syms := make([]string, 0, len(word))
	for i := 0; i < len(word); i++ {
		syms = append(syms, string(byteSym[word[i]]))
	}
	if len(syms) == 0 {
		return nil
	}
	syms[len(syms)-1] += "</w>"
	for len(syms) > 1 {
		best, at := -1, -1
		for i := 0; i+1 < len(syms); i++ {
			if r, ok := c.ranks[[2]string{syms[i], syms[i+1]}]; ok && (best < 0 || r < best) {
				best, at = r, i
			}
		}
		if at < 0 {
			break
		}
		syms[at] += syms[at+1]
		syms = append(syms[:at+1], syms[at+2:]...)
	}
	ids = make([]int, 0, len(syms))
	for _, s := range syms {
		if id, ok := c.vocab[s]; ok {
			ids = append(ids, id)
		} else {
			ids = append(ids, c.EOS) // the unknown token; unreachable with a full byte vocabulary
		}
	}
	c.mu.Lock()
	if len(c.cache) > 1<<16 {
		clear(c.cache)
	}
	c.cache[word] = ids
	c.mu.Unlock()
	return ids
}

type segment struct {
	text    string
	special bool
}

// splitSpecial cuts s around verbatim occurrences of the special tokens (longest first at each
// position), as the tokenizers library extracts added tokens before normalising the rest.
func splitSpecial(s string, specials []string) []segment {
	var segs []segment
	start := 0
	var first [256]bool
	for _, t := range specials {
		if t != "" {
			first[t[0]] = true
		}
	}
	for i := 0; i < len(s); {
		match := ""
		if first[s[i]] {
			for _, t := range specials {
				if len(t) > len(match) && strings.HasPrefix(s[i:], t) {
					match = t
				}
			}
		}
		if match == "" {
			_, n := utf8.DecodeRuneInString(s[i:])
			i += n
			continue
		}
		if start < i {
			segs = append(segs, segment{text: s[start:i]})
		}
		segs = append(segs, segment{text: match, special: true})
		i += len(match)
		start = i
	}
	if start < len(s) {
		segs = append(segs, segment{text: s[start:]})
	}
	return segs
}
