package diffusiontest

import (
	"bytes"
	"encoding/json"
	"strings"
)

// The CLIP vocabulary written: CLIP's 256 byte symbols, their "</w>" forms,
// one entry per merge, then <|startoftext|> and <|endoftext|>, the order of
// CLIP's own vocabulary on a few words ("a photo of a cat", "dog").
var clipMerges = [][2]string{
	{"c", "a"}, {"ca", "t</w>"}, {"p", "h"}, {"ph", "o"}, {"t", "o</w>"},
	{"pho", "to</w>"}, {"o", "f</w>"}, {"d", "o"}, {"do", "g</w>"},
}

// byteSymbols maps each byte to the rune CLIP's byte-level BPE writes for
// it: printable Latin-1 bytes stand for themselves, the rest take code
// points from U+0100 on.
func byteSymbols() [256]rune {
	var t [256]rune
	n := 0
	for b := 0; b < 256; b++ {
		if (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF) {
			t[b] = rune(b)
		} else {
			t[b] = rune(256 + n)
			n++
		}
	}
	return t
}

// CLIPVocab is the vocabulary of the tokenizer/ folders Write writes.
func CLIPVocab() map[string]int {
	syms := byteSymbols()
	var order []rune
	for b, r := range syms {
		if r == rune(b) {
			order = append(order, r)
		}
	}
	for b, r := range syms {
		if r != rune(b) {
			order = append(order, r)
		}
	}
	v := map[string]int{}
	for _, r := range order {
		v[string(r)] = len(v)
	}
	for _, r := range order {
		v[string(r)+"</w>"] = len(v)
	}
	for _, m := range clipMerges {
		v[m[0]+m[1]] = len(v)
	}
	v["<|startoftext|>"] = len(v)
	v["<|endoftext|>"] = len(v)
	return v
}

func jsonNoEscape(v any) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		panic(err) // maps of strings and numbers always encode
	}
	return b.Bytes()
}

// clipTokenizer writes a CLIP tokenizer folder padding with pad.
func (w *writer) clipTokenizer(dir, pad string) {
	w.file(dir+"/vocab.json", jsonNoEscape(CLIPVocab()))
	var m strings.Builder
	m.WriteString("#version: 0.2\n")
	for _, x := range clipMerges {
		m.WriteString(x[0] + " " + x[1] + "\n")
	}
	w.file(dir+"/merges.txt", []byte(m.String()))
	w.file(dir+"/tokenizer_config.json", jsonNoEscape(map[string]any{
		"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
		"pad_token": pad, "model_max_length": CLIPLength, "tokenizer_class": "CLIPTokenizer",
	}))
	w.file(dir+"/special_tokens_map.json", jsonNoEscape(map[string]any{
		"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": pad,
	}))
}

// t5Pieces is the Unigram vocabulary of the T5 tokenizer written: <pad>,
// </s>, <unk> (ids 0, 1, 2 as in T5), "▁", the ASCII letters, digits and
// some punctuation, and a few whole words that score better than their
// letters.
func t5Pieces() [][2]any {
	p := [][2]any{{"<pad>", 0.0}, {"</s>", 0.0}, {"<unk>", 0.0}, {"▁", -2.0}}
	for _, w := range []string{"▁a", "▁photo", "▁of", "▁cat", "▁dog", "▁the"} {
		p = append(p, [2]any{w, -3.0})
	}
	for c := 'a'; c <= 'z'; c++ {
		p = append(p, [2]any{string(c), -5.0})
	}
	for c := 'A'; c <= 'Z'; c++ {
		p = append(p, [2]any{string(c), -6.0})
	}
	for _, c := range "0123456789.,!?'-" {
		p = append(p, [2]any{string(c), -6.0})
	}
	return p
}

// t5Tokenizer writes a T5 tokenizer folder: a Unigram tokenizer.json and
// tokenizer_config.json with model_max_length T5MaxLength.
func (w *writer) t5Tokenizer(dir string) {
	added := []map[string]any{}
	for i, s := range []string{"<pad>", "</s>", "<unk>"} {
		added = append(added, map[string]any{"id": i, "content": s, "single_word": false, "lstrip": false,
			"rstrip": false, "normalized": false, "special": true})
	}
	w.file(dir+"/tokenizer.json", jsonNoEscape(orderedMap{
		{"version", "1.0"}, {"truncation", nil}, {"padding", nil}, {"added_tokens", added},
		{"normalizer", nil},
		{"pre_tokenizer", map[string]any{"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true}},
		{"post_processor", nil}, {"decoder", map[string]any{"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true}},
		{"model", orderedMap{{"type", "Unigram"}, {"unk_id", 2}, {"vocab", t5Pieces()}, {"byte_fallback", false}}},
	}))
	w.file(dir+"/tokenizer_config.json", jsonNoEscape(map[string]any{
		"eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>", "extra_ids": 0,
		"model_max_length": T5MaxLength, "tokenizer_class": "T5Tokenizer",
	}))
	w.file(dir+"/special_tokens_map.json", jsonNoEscape(map[string]any{
		"eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>",
	}))
}
