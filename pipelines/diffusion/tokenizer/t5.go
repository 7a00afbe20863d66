package tokenizer

import (
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"unicode"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// SentencePiece piece types (sentencepiece_model.proto).
const (
	pieceNormal      = 1
	pieceUnknown     = 2
	pieceControl     = 3
	pieceUserDefined = 4
	pieceUnused      = 5
	pieceByte        = 6
)

// unkPenalty is how much worse than the worst piece an unknown character scores, as both
// SentencePiece and the tokenizers library set it.
const unkPenalty = 10.0

// T5 is a SentencePiece unigram tokenizer as FLUX's T5 text encoder uses it. It is safe for
// concurrent use.
//
// It follows transformers 5's T5Tokenizer: special tokens (<pad>, </s>, <unk>, <extra_id_N>)
// are cut out verbatim; the rest goes through the precompiled charsmap, is split at whitespace,
// each word gets the "▁" prefix and is segmented by Viterbi over the piece scores; consecutive
// unknown characters fuse into one <unk>; </s> ends the sequence. (transformers 4 ran a
// tokenizer.json's own pipeline instead, which keeps a "▁" for trailing whitespace.)
type T5 struct {
	pieces       map[string]int
	bytes        map[byte]int // <0xXX> pieces, used only for byte fallback
	scores       []float64
	maxPieceLen  int
	unkScore     float64
	byteFallback bool
	norm         *charsmap
	specials     map[string]int
	order        []string
	// EOS, Pad and Unk are </s> (1), <pad> (0) and <unk> (2) in T5's vocabulary.
	EOS, Pad, Unk int
}

// LoadT5 loads a T5 tokenizer. files maps base names to paths: "spiece.model" (SentencePiece's
// protobuf; T5's 100 <extra_id_N> tokens are added after its pieces as transformers does) or
// "tokenizer.json" (a tokenizers file with a Unigram model); either may also be given gzipped
// under the same name plus ".gz".
func LoadT5(files map[string]string) (*T5, error) {
	for _, name := range []string{"tokenizer.json", "spiece.model"} {
		for _, suffix := range []string{"", ".gz"} {
			p, ok := files[name+suffix]
			if !ok {
				continue
			}
			b, err := readMaybeGzip(p, suffix == ".gz")
			if err != nil {
				return nil, err
			}
			if name == "spiece.model" {
				return parseSpiece(b)
			}
			return parseUnigramJSON(b)
		}
	}
	return nil, fmt.Errorf("tokenizer: T5 needs spiece.model or tokenizer.json")
}

func readMaybeGzip(path string, gz bool) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var r io.Reader = f
	if gz {
		zr, err := gzip.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("tokenizer: %s: %w", path, err)
		}
		r = zr
	}
	return io.ReadAll(r)
}

type t5Piece struct {
	text  string
	score float64
	typ   int
}

// parseSpiece reads the parts of a SentencePiece ModelProto that encoding needs.
func parseSpiece(b []byte) (*T5, error) {
	var (
		pieces   []t5Piece
		charsmap []byte
		unkID    = 0 // TrainerSpec defaults
		eosID    = 2
		padID    = -1
		byteFB   bool
		unigram  = true
	)
	err := protoFields(b, func(num protowire.Number, typ protowire.Type, v uint64, msg []byte) error {
		switch num {
		case 1: // pieces
			p := t5Piece{typ: pieceNormal}
			err := protoFields(msg, func(num protowire.Number, typ protowire.Type, v uint64, s []byte) error {
				switch num {
				case 1:
					p.text = string(s)
				case 2:
					p.score = float64(math.Float32frombits(uint32(v)))
				case 3:
					p.typ = int(v)
				}
				return nil
			})
			pieces = append(pieces, p)
			return err
		case 2: // trainer_spec
			return protoFields(msg, func(num protowire.Number, typ protowire.Type, v uint64, _ []byte) error {
				switch num {
				case 3:
					unigram = v == 1
				case 35:
					byteFB = v != 0
				case 40:
					unkID = int(int32(v))
				case 42:
					eosID = int(int32(v))
				case 43:
					padID = int(int32(v))
				}
				return nil
			})
		case 3: // normalizer_spec
			return protoFields(msg, func(num protowire.Number, typ protowire.Type, v uint64, s []byte) error {
				if num == 2 {
					charsmap = s
				}
				return nil
			})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("tokenizer: spiece.model: %w", err)
	}
	if !unigram {
		return nil, fmt.Errorf("tokenizer: spiece.model is not a unigram model")
	}
	var specials []string
	for _, p := range pieces {
		if p.typ == pieceControl || p.typ == pieceUnknown {
			specials = append(specials, p.text)
		}
	}
	// transformers' T5Tokenizer appends <extra_id_99> ... <extra_id_0> after the pieces.
	if len(pieces) > 0 && !strings.HasPrefix(pieces[len(pieces)-1].text, "<extra_id_") {
		for i := 99; i >= 0; i-- {
			t := fmt.Sprintf("<extra_id_%d>", i)
			pieces = append(pieces, t5Piece{text: t, typ: pieceControl})
			specials = append(specials, t)
		}
	}
	return newT5(pieces, charsmap, unkID, eosID, padID, byteFB, specials)
}

// protoFields calls fn for each field of a protobuf message: varint and fixed values in v,
// length-delimited ones in b.
func protoFields(b []byte, fn func(protowire.Number, protowire.Type, uint64, []byte) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		var (
			v   uint64
			msg []byte
		)
		switch typ {
		case protowire.VarintType:
			v, n = protowire.ConsumeVarint(b)
		case protowire.Fixed32Type:
			var x uint32
			x, n = protowire.ConsumeFixed32(b)
			v = uint64(x)
		case protowire.Fixed64Type:
			v, n = protowire.ConsumeFixed64(b)
		case protowire.BytesType:
			msg, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if err := fn(num, typ, v, msg); err != nil {
			return err
		}
	}
	return nil
}

// parseUnigramJSON reads a tokenizers tokenizer.json with a Unigram model. Of its pipeline only
// the precompiled charsmap is used (as transformers 5 does); added special tokens are honoured.
func parseUnigramJSON(b []byte) (*T5, error) {
	var tj struct {
		AddedTokens []struct {
			ID      int    `json:"id"`
			Content string `json:"content"`
			Special bool   `json:"special"`
		} `json:"added_tokens"`
		Normalizer json.RawMessage `json:"normalizer"`
		Model      struct {
			Type         string               `json:"type"`
			UnkID        *int                 `json:"unk_id"`
			Vocab        [][2]json.RawMessage `json:"vocab"`
			ByteFallback bool                 `json:"byte_fallback"`
		} `json:"model"`
	}
	if err := json.Unmarshal(b, &tj); err != nil {
		return nil, fmt.Errorf("tokenizer: tokenizer.json: %w", err)
	}
	if tj.Model.Type != "Unigram" {
		return nil, fmt.Errorf("tokenizer: tokenizer.json model is %q, not Unigram", tj.Model.Type)
	}
	pieces := make([]t5Piece, len(tj.Model.Vocab))
	for i, e := range tj.Model.Vocab {
		if err := json.Unmarshal(e[0], &pieces[i].text); err != nil {
			return nil, fmt.Errorf("tokenizer: tokenizer.json vocab %d: %w", i, err)
		}
		if err := json.Unmarshal(e[1], &pieces[i].score); err != nil {
			return nil, fmt.Errorf("tokenizer: tokenizer.json vocab %d: %w", i, err)
		}
		pieces[i].typ = pieceNormal
	}
	var specials []string
	for _, t := range tj.AddedTokens {
		if t.ID >= 0 && t.ID < len(pieces) && pieces[t.ID].text == t.Content {
			pieces[t.ID].typ = pieceControl
		}
		specials = append(specials, t.Content)
	}
	unk := 2
	if tj.Model.UnkID != nil {
		unk = *tj.Model.UnkID
	}
	charsmap, err := findCharsmap(tj.Normalizer)
	if err != nil {
		return nil, err
	}
	eos, pad := -1, -1
	for i, p := range pieces {
		switch p.text {
		case "</s>":
			eos = i
		case "<pad>":
			pad = i
		}
	}
	return newT5(pieces, charsmap, unk, eos, pad, tj.Model.ByteFallback, specials)
}

// findCharsmap digs the Precompiled normaliser's charsmap out of a normaliser (or a Sequence).
func findCharsmap(raw json.RawMessage) ([]byte, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var n struct {
		Type        string            `json:"type"`
		Charsmap    string            `json:"precompiled_charsmap"`
		Normalizers []json.RawMessage `json:"normalizers"`
	}
	if err := json.Unmarshal(raw, &n); err != nil {
		return nil, fmt.Errorf("tokenizer: tokenizer.json normalizer: %w", err)
	}
	if n.Type == "Precompiled" {
		return base64.StdEncoding.DecodeString(n.Charsmap)
	}
	for _, sub := range n.Normalizers {
		if b, err := findCharsmap(sub); err != nil || b != nil {
			return b, err
		}
	}
	return nil, nil
}

func newT5(pieces []t5Piece, charsmap []byte, unk, eos, pad int, byteFB bool, specials []string) (*T5, error) {
	if unk < 0 || unk >= len(pieces) || eos < 0 || eos >= len(pieces) {
		return nil, fmt.Errorf("tokenizer: T5 vocabulary (%d pieces) lacks <unk> %d or </s> %d", len(pieces), unk, eos)
	}
	t := &T5{
		pieces:       make(map[string]int, len(pieces)),
		scores:       make([]float64, len(pieces)),
		byteFallback: byteFB,
		specials:     map[string]int{},
		bytes:        map[byte]int{},
		EOS:          eos,
		Pad:          max(pad, 0),
		Unk:          unk,
	}
	minScore := math.Inf(1)
	for i, p := range pieces {
		t.scores[i] = p.score
		minScore = min(minScore, p.score)
		// Control and unknown pieces never come out of segmentation; they are specials.
		if p.typ == pieceControl || p.typ == pieceUnknown || p.typ == pieceUnused {
			continue
		}
		var x byte
		if n, _ := fmt.Sscanf(p.text, "<0x%02X>", &x); n == 1 && len(p.text) == 6 && (p.typ == pieceByte || byteFB) {
			t.bytes[x] = i
			if p.typ == pieceByte {
				continue
			}
		}
		if _, dup := t.pieces[p.text]; !dup {
			t.pieces[p.text] = i
		}
		t.maxPieceLen = max(t.maxPieceLen, len(p.text))
	}
	t.unkScore = minScore - unkPenalty
	byText := make(map[string]int, len(pieces))
	for i := len(pieces) - 1; i >= 0; i-- {
		byText[pieces[i].text] = i // the first id wins, as in the vocabulary map
	}
	for _, s := range specials {
		if id, ok := byText[s]; ok {
			if _, dup := t.specials[s]; !dup {
				t.order = append(t.order, s)
			}
			t.specials[s] = id
		}
	}
	if charsmap != nil {
		m, err := parseCharsmap(charsmap)
		if err != nil {
			return nil, err
		}
		t.norm = m
	}
	return t, nil
}

// Encode returns the prompt's ids followed by </s>, neither truncated nor padded.
func (t *T5) Encode(prompt string) []int {
	var ids []int
	for _, seg := range splitSpecial(prompt, t.order) {
		if seg.special {
			ids = append(ids, t.specials[seg.text])
			continue
		}
		text := seg.text
		if t.norm != nil {
			text = t.norm.normalize(text)
		}
		for _, w := range strings.FieldsFunc(text, unicode.IsSpace) {
			// Metaspace: "▁" before each word, and a "▁" inside a word starts a new piece.
			w = "▁" + w
			for len(w) > 0 {
				end := len(w)
				if i := strings.Index(w[len("▁"):], "▁"); i >= 0 {
					end = i + len("▁")
				}
				ids = t.viterbi(w[:end], ids)
				w = w[end:]
			}
		}
	}
	return append(ids, t.EOS)
}

// EncodePadded returns exactly maxLen ids as diffusers asks for them (padding="max_length",
// truncation=True): a long prompt keeps its first maxLen-1 ids and </s>; <pad> fills the rest.
func (t *T5) EncodePadded(prompt string, maxLen int) []int64 {
	return truncPad(t.Encode(prompt), maxLen, t.EOS, t.Pad)
}

// viterbi appends the best-scoring segmentation of word to ids. Candidates at each character
// are the pieces starting there, shortest first; a later candidate replaces an earlier one
// only when strictly better, and a character no piece covers alone is an unknown.
func (t *T5) viterbi(word string, ids []int) []int {
	type node struct {
		score float64
		start int
		id    int
		set   bool
	}
	best := make([]node, len(word)+1)
	best[0].set = true
	for pos := 0; pos < len(word); {
		_, charLen := utf8.DecodeRuneInString(word[pos:])
		if best[pos].set {
			single := false
			for end := pos + charLen; end <= len(word) && end-pos <= t.maxPieceLen; {
				if id, ok := t.pieces[word[pos:end]]; ok {
					s := best[pos].score + t.scores[id]
					if !best[end].set || s > best[end].score {
						best[end] = node{score: s, start: pos, id: id, set: true}
					}
					if end == pos+charLen {
						single = true
					}
				}
				if end == len(word) {
					break
				}
				_, k := utf8.DecodeRuneInString(word[end:])
				end += k
			}
			if !single {
				end := pos + charLen
				s := best[pos].score + t.unkScore
				if !best[end].set || s > best[end].score {
					best[end] = node{score: s, start: pos, id: t.Unk, set: true}
				}
			}
		}
		pos += charLen
	}
	// Walk back from the end, then emit in order, fusing runs of unknowns.
	type span struct{ start, end, id int }
	var rev []span
	for end := len(word); end > 0; {
		n := best[end]
		rev = append(rev, span{n.start, end, n.id})
		end = n.start
	}
	for i := len(rev) - 1; i >= 0; i-- {
		sp := rev[i]
		if sp.id == t.Unk {
			if t.byteFallback {
				if bs, ok := t.bytePieces(word[sp.start:sp.end]); ok {
					ids = append(ids, bs...)
					continue
				}
			}
			if i < len(rev)-1 && rev[i+1].id == t.Unk && len(ids) > 0 && ids[len(ids)-1] == t.Unk {
				continue
			}
		}
		ids = append(ids, sp.id)
	}
	return ids
}

// bytePieces maps s to its <0xXX> byte pieces, for models trained with byte fallback.
func (t *T5) bytePieces(s string) ([]int, bool) {
	ids := make([]int, 0, len(s))
	for i := 0; i < len(s); i++ {
		id, ok := t.bytes[s[i]]
		if !ok {
			return nil, false
		}
		ids = append(ids, id)
	}
	return ids, true
}
