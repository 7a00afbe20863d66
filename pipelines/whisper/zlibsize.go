package whisper

import "sync"

// zlibSize returns len(zlib.compress(b)) as CPython computes it (C zlib, level 6).
//
// Whisper's temperature fallback compares len(text)/len(zlib.compress(text))
// against 2.4, and Go's compress/zlib produces different lengths (a trailing
// empty stored block, a different matcher), so the ratio drifts near the
// threshold. This is a port of zlib 1.2.13's deflate_slow (level 6,
// windowBits 15, memLevel 8, Z_DEFAULT_STRATEGY) and of the block-type
// decision in trees.c. It counts bits instead of emitting them: a dynamic or
// fixed block costs exactly 3+opt_len or 3+static_len bits in zlib, and a
// stored block is byte aligned, so the size follows without writing codes.
// Only the 2-byte header and the 4-byte Adler-32 trailer are added on top.
func zlibSize(b []byte) int {
	d := zDeflaterPool.Get().(*zDeflater)
	d.reset(b)
	d.deflateSlow()
	n := 2 + int(d.bits/8) + 4 // d.bits is byte aligned after the last block
	d.scrub(b)
	zDeflaterPool.Put(d)
	return n
}

// Parameters of zlib's level 6 with the deflateInit defaults.
const (
	zWSize        = 1 << 15 // windowBits 15
	zWMask        = zWSize - 1
	zWindowSize   = 2 * zWSize
	zHashBits     = 8 + 7 // memLevel + 7
	zHashSize     = 1 << zHashBits
	zHashMask     = zHashSize - 1
	zHashShift    = (zHashBits + zMinMatch - 1) / zMinMatch
	zMinMatch     = 3
	zMaxMatch     = 258
	zMinLookahead = zMaxMatch + zMinMatch + 1
	zMaxDist      = zWSize - zMinLookahead
	zTooFar       = 4096
	zGoodLength   = 8
	zMaxLazy      = 16
	zNiceLength   = 128
	zMaxChain     = 128
	zLitBufSize   = 1 << (8 + 6) // memLevel + 6
	// zlib >= 1.2.12 flushes when sym_next == (lit_bufsize-1)*3, i.e. after
	// lit_bufsize-1 symbols (same count as the older last_lit check).
	zSymEnd = zLitBufSize - 1

	zLiterals    = 256
	zLengthCodes = 29
	zLCodes      = zLiterals + 1 + zLengthCodes
	zDCodes      = 30
	zBLCodes     = 19
	zHeapSize    = 2*zLCodes + 1
	zMaxBits     = 15
	zMaxBLBits   = 7
	zEndBlock    = 256
	zRep3_6      = 16
	zRepz3_10    = 17
	zRepz11_138  = 18
)

var (
	zExtraLBits  = [zLengthCodes]int{0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0}
	zExtraDBits  = [zDCodes]int{0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13}
	zExtraBLBits = [zBLCodes]int{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 3, 7}
	zBLOrder     = [zBLCodes]int{16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15}

	zLengthCode [zMaxMatch - zMinMatch + 1]uint8
	zDistCode   [512]uint8
	zStaticL    [zLCodes + 2]int // fixed literal/length code lengths
	zStaticD    [zDCodes]int     // fixed distance code lengths
)

// init builds the same tables as trees.c's tr_static_init.
func init() {
	length := 0
	code := 0
	for ; code < zLengthCodes-1; code++ {
		for n := 0; n < 1<<zExtraLBits[code]; n++ {
			zLengthCode[length] = uint8(code)
			length++
		}
	}
	// Length 258 uses code 285 rather than 284 + 5 extra bits.
	zLengthCode[length-1] = uint8(code)

	dist := 0
	for code = 0; code < 16; code++ {
		for n := 0; n < 1<<zExtraDBits[code]; n++ {
			zDistCode[dist] = uint8(code)
			dist++
		}
	}
	dist >>= 7
	for ; code < zDCodes; code++ {
		for n := 0; n < 1<<(zExtraDBits[code]-7); n++ {
			zDistCode[256+dist] = uint8(code)
			dist++
		}
	}

	for n := range zStaticL {
		switch {
		case n <= 143:
			zStaticL[n] = 8
		case n <= 255:
			zStaticL[n] = 9
		case n <= 279:
			zStaticL[n] = 7
		default:
			zStaticL[n] = 8
		}
	}
	for n := range zStaticD {
		zStaticD[n] = 5
	}
}

func zDCode(dist int) int {
	if dist < 256 {
		return int(zDistCode[dist])
	}
	return int(zDistCode[256+(dist>>7)])
}

// zTree mirrors trees.c's ct_data array plus its tree_desc. zlib overlays
// Freq/Code and Dad/Len; no value is read after being overwritten, so
// separate fields behave the same.
type zTree struct {
	freq    []int
	dad     []int
	len     []int
	maxCode int
	stree   []int // fixed code lengths, nil for the bit-length tree
	extra   []int
	base    int
	elems   int
	maxLen  int
}

func newZTree(elems int, stree, extra []int, base, maxLen int) zTree {
	n := 2*elems + 1
	return zTree{
		freq: make([]int, n), dad: make([]int, n), len: make([]int, n),
		stree: stree, extra: extra, base: base, elems: elems, maxLen: maxLen,
	}
}

type zDeflater struct {
	window [zWindowSize]byte
	prev   [zWSize]uint16
	head   [zHashSize]uint16
	in     []byte

	strstart, blockStart, lookahead, insert int
	matchStart, matchLength                 int
	prevLength, prevMatch                   int
	matchAvailable                          bool
	insH                                    int

	ltree, dtree, bltree zTree
	nsym                 int
	optLen, staticLen    int64
	heap                 [zHeapSize]int
	heapLen, heapMax     int
	depth                [zHeapSize]int
	blCount              [zMaxBits + 1]int

	bits int64 // deflate bits written so far (header and trailer excluded)
}

var zDeflaterPool = sync.Pool{New: func() any {
	d := &zDeflater{}
	d.ltree = newZTree(zLCodes, zStaticL[:], zExtraLBits[:], zLiterals+1, zMaxBits)
	d.dtree = newZTree(zDCodes, zStaticD[:], zExtraDBits[:], 0, zMaxBits)
	d.bltree = newZTree(zBLCodes, nil, zExtraBLBits[:], 0, zMaxBLBits)
	return d
}}

// reset is deflateInit + lm_init + _tr_init. It expects window, prev and
// head to be all zero (a new deflater, or one cleaned by scrub): head must be
// empty (CLEAR_HASH), and zlib never reads window or prev bytes it has not
// written in this stream (high_water), so zero gives its result.
func (d *zDeflater) reset(b []byte) {
	d.in = b
	d.strstart, d.blockStart, d.lookahead, d.insert = 0, 0, 0, 0
	d.matchStart = 0
	d.matchLength, d.prevLength = zMinMatch-1, zMinMatch-1
	d.prevMatch = 0
	d.matchAvailable = false
	d.insH = 0
	d.bits = 0
	d.initBlock()
}

// scrub zeroes window, prev and head again after compressing b. For inputs
// that never slid the window only the touched entries are cleared, which
// keeps short texts from paying for 192 KiB of memclr per call.
func (d *zDeflater) scrub(b []byte) {
	d.in = nil
	n := len(b)
	if n > zWSize {
		clear(d.window[:])
		clear(d.prev[:])
		clear(d.head[:])
		return
	}
	// Every head entry set was the hash of 3 input bytes at some position;
	// the rolling UPDATE_HASH reduces to this closed form since older bytes
	// shift past hash_bits.
	w := d.window[:n]
	for i := 0; i+zMinMatch <= n; i++ {
		h := (int(w[i])<<(2*zHashShift) ^ int(w[i+1])<<zHashShift ^ int(w[i+2])) & zHashMask
		d.head[h] = 0
	}
	clear(w)
	clear(d.prev[:n])
}

func (d *zDeflater) initBlock() {
	clear(d.ltree.freq[:zLCodes])
	clear(d.dtree.freq[:zDCodes])
	clear(d.bltree.freq[:zBLCodes])
	d.ltree.freq[zEndBlock] = 1
	d.optLen, d.staticLen = 0, 0
	d.nsym = 0
}

func (d *zDeflater) updateHash(c byte) {
	d.insH = ((d.insH << zHashShift) ^ int(c)) & zHashMask
}

// insertString is INSERT_STRING: returns the previous chain head.
func (d *zDeflater) insertString(str int) int {
	d.updateHash(d.window[str+zMinMatch-1])
	h := d.head[d.insH]
	d.prev[str&zWMask] = h
	d.head[d.insH] = uint16(str)
	return int(h)
}

func (d *zDeflater) slideHash() {
	for i, m := range d.head {
		if m >= zWSize {
			d.head[i] = m - zWSize
		} else {
			d.head[i] = 0
		}
	}
	for i, m := range d.prev {
		if m >= zWSize {
			d.prev[i] = m - zWSize
		} else {
			d.prev[i] = 0
		}
	}
}

// fillWindow is deflate.c's fill_window with all input available at once
// (CPython hands zlib the whole buffer and Z_FINISH in one call).
func (d *zDeflater) fillWindow() {
	for {
		more := zWindowSize - d.lookahead - d.strstart
		if d.strstart >= zWSize+zMaxDist {
			// Copy only the live bytes, as zlib does; stale bytes past the
			// data stay and can influence which equal-length match wins.
			copy(d.window[:zWSize-more], d.window[zWSize:zWindowSize-more])
			d.matchStart -= zWSize
			d.strstart -= zWSize
			d.blockStart -= zWSize
			if d.insert > d.strstart {
				d.insert = d.strstart
			}
			d.slideHash()
			more += zWSize
		}
		if len(d.in) == 0 {
			break
		}
		at := d.strstart + d.lookahead
		n := copy(d.window[at:at+more], d.in)
		d.in = d.in[n:]
		d.lookahead += n

		if d.lookahead+d.insert >= zMinMatch {
			str := d.strstart - d.insert
			d.insH = int(d.window[str])
			d.updateHash(d.window[str+1])
			for d.insert > 0 {
				d.updateHash(d.window[str+zMinMatch-1])
				d.prev[str&zWMask] = d.head[d.insH]
				d.head[d.insH] = uint16(str)
				str++
				d.insert--
				if d.lookahead+d.insert < zMinMatch {
					break
				}
			}
		}
		if d.lookahead >= zMinLookahead || len(d.in) == 0 {
			break
		}
	}
}

// longestMatch is the portable (non-UNALIGNED_OK) longest_match. Byte 2 is
// not compared (equal hashes imply it), and bytes past the lookahead take
// part in comparisons; the result is clamped afterwards, as in zlib.
func (d *zDeflater) longestMatch(curMatch int) int {
	w := &d.window
	chainLength := zMaxChain
	scan := d.strstart
	bestLen := d.prevLength
	niceMatch := zNiceLength
	limit := 0
	if d.strstart > zMaxDist {
		limit = d.strstart - zMaxDist
	}
	scanEnd1 := w[scan+bestLen-1]
	scanEnd := w[scan+bestLen]
	if d.prevLength >= zGoodLength {
		chainLength >>= 2
	}
	if niceMatch > d.lookahead {
		niceMatch = d.lookahead
	}
	for {
		m := curMatch
		if w[m+bestLen] == scanEnd && w[m+bestLen-1] == scanEnd1 &&
			w[m] == w[scan] && w[m+1] == w[scan+1] {
			l := 3
			for l < zMaxMatch && w[scan+l] == w[m+l] {
				l++
			}
			if l > bestLen {
				d.matchStart = curMatch
				bestLen = l
				if l >= niceMatch {
					break
				}
				scanEnd1 = w[scan+bestLen-1]
				scanEnd = w[scan+bestLen]
			}
		}
		curMatch = int(d.prev[curMatch&zWMask])
		if curMatch <= limit {
			break
		}
		chainLength--
		if chainLength == 0 {
			break
		}
	}
	if bestLen <= d.lookahead {
		return bestLen
	}
	return d.lookahead
}

func (d *zDeflater) tallyLit(c byte) bool {
	d.ltree.freq[c]++
	d.nsym++
	return d.nsym == zSymEnd
}

func (d *zDeflater) tallyDist(dist, lc int) bool {
	d.ltree.freq[int(zLengthCode[lc])+zLiterals+1]++
	d.dtree.freq[zDCode(dist-1)]++
	d.nsym++
	return d.nsym == zSymEnd
}

// deflateSlow is deflate_slow called with Z_FINISH.
func (d *zDeflater) deflateSlow() {
	for {
		if d.lookahead < zMinLookahead {
			d.fillWindow()
			if d.lookahead == 0 {
				break
			}
		}
		hashHead := 0
		if d.lookahead >= zMinMatch {
			hashHead = d.insertString(d.strstart)
		}
		d.prevLength, d.prevMatch = d.matchLength, d.matchStart
		d.matchLength = zMinMatch - 1

		if hashHead != 0 && d.prevLength < zMaxLazy && d.strstart-hashHead <= zMaxDist {
			d.matchLength = d.longestMatch(hashHead)
			// A 3-byte match far away costs more than three literals. The
			// subtraction is unsigned in zlib (match_start may be stale).
			if d.matchLength == zMinMatch && uint32(d.strstart-d.matchStart) > zTooFar {
				d.matchLength = zMinMatch - 1
			}
		}
		if d.prevLength >= zMinMatch && d.matchLength <= d.prevLength {
			maxInsert := d.strstart + d.lookahead - zMinMatch
			flush := d.tallyDist(d.strstart-1-d.prevMatch, d.prevLength-zMinMatch)
			d.lookahead -= d.prevLength - 1
			d.prevLength -= 2
			for {
				d.strstart++
				if d.strstart <= maxInsert {
					d.insertString(d.strstart)
				}
				d.prevLength--
				if d.prevLength == 0 {
					break
				}
			}
			d.matchAvailable = false
			d.matchLength = zMinMatch - 1
			d.strstart++
			if flush {
				d.flushBlock(false)
			}
		} else if d.matchAvailable {
			if d.tallyLit(d.window[d.strstart-1]) {
				d.flushBlock(false)
			}
			d.strstart++
			d.lookahead--
		} else {
			d.matchAvailable = true
			d.strstart++
			d.lookahead--
		}
	}
	if d.matchAvailable {
		d.tallyLit(d.window[d.strstart-1])
		d.matchAvailable = false
	}
	d.flushBlock(true)
}

// flushBlock is FLUSH_BLOCK_ONLY + _tr_flush_block, counting bits only.
func (d *zDeflater) flushBlock(last bool) {
	storedLen := int64(d.strstart - d.blockStart)
	haveBuf := d.blockStart >= 0 // zlib cannot store a block that slid out

	d.buildTree(&d.ltree)
	d.buildTree(&d.dtree)
	d.buildBLTree()
	optLenb := (d.optLen + 3 + 7) >> 3
	staticLenb := (d.staticLen + 3 + 7) >> 3
	if staticLenb <= optLenb {
		optLenb = staticLenb
	}
	switch {
	case storedLen+4 <= optLenb && haveBuf:
		// 3 header bits, pad to a byte, LEN and NLEN, then the raw bytes.
		d.bits = (d.bits+3+7)&^7 + 8*(4+storedLen)
	case staticLenb == optLenb:
		d.bits += 3 + d.staticLen
	default:
		d.bits += 3 + d.optLen
	}
	d.initBlock()
	if last {
		d.bits = (d.bits + 7) &^ 7 // bi_windup
	}
	d.blockStart = d.strstart
}

func (d *zDeflater) smaller(t *zTree, n, m int) bool {
	return t.freq[n] < t.freq[m] || (t.freq[n] == t.freq[m] && d.depth[n] <= d.depth[m])
}

func (d *zDeflater) pqDownHeap(t *zTree, k int) {
	v := d.heap[k]
	j := k << 1
	for j <= d.heapLen {
		if j < d.heapLen && d.smaller(t, d.heap[j+1], d.heap[j]) {
			j++
		}
		if d.smaller(t, v, d.heap[j]) {
			break
		}
		d.heap[k] = d.heap[j]
		k = j
		j <<= 1
	}
	d.heap[k] = v
}

// buildTree is trees.c's build_tree without gen_codes: the heap order and
// tie-breaking decide the code lengths, so they are kept exactly.
func (d *zDeflater) buildTree(t *zTree) {
	maxCode := -1
	d.heapLen, d.heapMax = 0, zHeapSize
	for n := 0; n < t.elems; n++ {
		if t.freq[n] != 0 {
			d.heapLen++
			d.heap[d.heapLen] = n
			maxCode = n
			d.depth[n] = 0
		} else {
			t.len[n] = 0
		}
	}
	// Force at least two codes, as zlib does.
	for d.heapLen < 2 {
		node := 0
		if maxCode < 2 {
			maxCode++
			node = maxCode
		}
		d.heapLen++
		d.heap[d.heapLen] = node
		t.freq[node] = 1
		d.depth[node] = 0
		d.optLen--
		if t.stree != nil {
			d.staticLen -= int64(t.stree[node])
		}
	}
	t.maxCode = maxCode

	for n := d.heapLen / 2; n >= 1; n-- {
		d.pqDownHeap(t, n)
	}
	node := t.elems
	for {
		n := d.heap[1]
		d.heap[1] = d.heap[d.heapLen]
		d.heapLen--
		d.pqDownHeap(t, 1)
		m := d.heap[1]

		d.heapMax--
		d.heap[d.heapMax] = n
		d.heapMax--
		d.heap[d.heapMax] = m

		t.freq[node] = t.freq[n] + t.freq[m]
		dn, dm := d.depth[n], d.depth[m]
		if dm > dn {
			dn = dm
		}
		d.depth[node] = (dn + 1) & 0xff // uch in zlib
		t.dad[n], t.dad[m] = node, node
		d.heap[1] = node
		node++
		d.pqDownHeap(t, 1)
		if d.heapLen < 2 {
			break
		}
	}
	d.heapMax--
	d.heap[d.heapMax] = d.heap[1]
	d.genBitLen(t)
}

// genBitLen is gen_bitlen, including the overflow repair whose lengths (and
// hence opt_len) differ from a plain length-limited Huffman construction.
func (d *zDeflater) genBitLen(t *zTree) {
	clear(d.blCount[:])
	overflow := 0
	t.len[d.heap[d.heapMax]] = 0
	h := d.heapMax + 1
	for ; h < zHeapSize; h++ {
		n := d.heap[h]
		bits := t.len[t.dad[n]] + 1
		if bits > t.maxLen {
			bits = t.maxLen
			overflow++
		}
		t.len[n] = bits
		if n > t.maxCode {
			continue // internal node
		}
		d.blCount[bits]++
		xbits := 0
		if n >= t.base {
			xbits = t.extra[n-t.base]
		}
		f := int64(t.freq[n])
		d.optLen += f * int64(bits+xbits)
		if t.stree != nil {
			d.staticLen += f * int64(t.stree[n]+xbits)
		}
	}
	if overflow == 0 {
		return
	}
	for overflow > 0 {
		bits := t.maxLen - 1
		for d.blCount[bits] == 0 {
			bits--
		}
		d.blCount[bits]--
		d.blCount[bits+1] += 2
		d.blCount[t.maxLen]--
		overflow -= 2
	}
	for bits := t.maxLen; bits != 0; bits-- {
		n := d.blCount[bits]
		for n != 0 {
			h--
			m := d.heap[h]
			if m > t.maxCode {
				continue
			}
			if t.len[m] != bits {
				d.optLen += int64(bits-t.len[m]) * int64(t.freq[m])
				t.len[m] = bits
			}
			n--
		}
	}
}

// scanTree is scan_tree: bit-length-code frequencies for one tree.
func (d *zDeflater) scanTree(t *zTree) {
	bl := d.bltree.freq
	prevLen := -1
	nextLen := t.len[0]
	count := 0
	maxCount, minCount := 7, 4
	if nextLen == 0 {
		maxCount, minCount = 138, 3
	}
	for n := 0; n <= t.maxCode; n++ {
		curLen := nextLen
		if n+1 <= t.maxCode {
			nextLen = t.len[n+1]
		} else {
			nextLen = 0xffff // zlib's guard
		}
		count++
		if count < maxCount && curLen == nextLen {
			continue
		} else if count < minCount {
			bl[curLen] += count
		} else if curLen != 0 {
			if curLen != prevLen {
				bl[curLen]++
			}
			bl[zRep3_6]++
		} else if count <= 10 {
			bl[zRepz3_10]++
		} else {
			bl[zRepz11_138]++
		}
		count = 0
		prevLen = curLen
		switch {
		case nextLen == 0:
			maxCount, minCount = 138, 3
		case curLen == nextLen:
			maxCount, minCount = 6, 3
		default:
			maxCount, minCount = 7, 4
		}
	}
}

// buildBLTree is build_bl_tree: adds the dynamic header cost to opt_len.
func (d *zDeflater) buildBLTree() {
	d.scanTree(&d.ltree)
	d.scanTree(&d.dtree)
	d.buildTree(&d.bltree)
	maxBLIndex := zBLCodes - 1
	for ; maxBLIndex >= 3; maxBLIndex-- {
		if d.bltree.len[zBLOrder[maxBLIndex]] != 0 {
			break
		}
	}
	d.optLen += 3*int64(maxBLIndex+1) + 5 + 5 + 4
}
