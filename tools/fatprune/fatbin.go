package main

import (
	"encoding/binary"
	"fmt"
	"sort"
	"strings"
)

// The fatbin container layout, as the CUDA runtime embeds it in an ELF
// section (.nv_fatbin; __nv_relfatbin for relocatable device code), all
// little-endian:
//
//	container header, 16 bytes
//	  0  u32 magic        0xBA55ED50
//	  4  u16 version      1
//	  6  u16 header size  16: where the first entry starts
//	  8  u64 fat size     bytes of entries after the header
//	then entries back to back until header size + fat size, each
//	  0  u16 kind         1 PTX, 2 ELF cubin
//	  2  u16 (0x0101)
//	  4  u32 header size  64, or more (112 for sm_100+ cubins): payload starts here
//	  8  u64 payload size padded to 8; the next entry starts after it
//	 16  u32 compressed size (of the payload proper, before that padding)
//	 20  u32 (0, or 0x40 with the longer headers)
//	 24  u16 code version minor, 26 u16 major
//	 28  u32 arch         75, 80, 86, 89, 90, 120, ... (sm_90a shares 90)
//	 32  u32 name offset, 36 u32 name length
//	 40  u64 flags        1 64-bit, 0x10 Linux, 0x2000 compressed (the
//	                      older scheme), 0x8000 compressed (zstd)
//	 48  u64 (0)
//	 56  u64 uncompressed size
//
// Containers follow each other in the section, possibly with zero bytes
// between them (alignment).
const (
	fatbinMagic       = 0xBA55ED50
	fatbinVersion     = 1
	containerHdrSize  = 16
	entryMinHdrSize   = 64
	kindPTX           = 1
	kindELF           = 2
	flagCompressedOld = 0x2000
	flagCompressedZst = 0x8000
)

// entry is one fatbin entry; offsets are relative to the buffer parsed.
type entry struct {
	Section     string
	Container   int    // index among all containers, across sections
	Offset      int64  // entry header
	Kind        uint16 // kindPTX or kindELF
	HeaderSize  uint32
	PayloadOff  int64
	PayloadSize uint64 // the padded size: everything up to the next entry
	Arch        uint32
	Flags       uint64
	Compressed  uint32 // compressed size field
	Raw         uint64 // uncompressed size field
}

func (e entry) compressed() bool { return e.Flags&(flagCompressedOld|flagCompressedZst) != 0 }

func (e entry) kindName() string {
	switch e.Kind {
	case kindPTX:
		return "ptx"
	case kindELF:
		return "elf"
	}
	return fmt.Sprintf("kind%#x", e.Kind)
}

// archName is how nvcc names the entry's target: sm_NN for a cubin,
// compute_NN for PTX.
func (e entry) archName() string {
	if e.Kind == kindPTX {
		return fmt.Sprintf("compute_%d", e.Arch)
	}
	return fmt.Sprintf("sm_%d", e.Arch)
}

// parseSection walks every container in sec, which starts at file offset
// base, and returns its entries with file offsets. It fails on anything it
// does not fully understand: the caller then writes nothing.
// firstContainer numbers the containers across sections.
func parseSection(name string, sec []byte, base int64, firstContainer int) (entries []entry, containers int, padding int64, err error) {
	le := binary.LittleEndian
	n := int64(len(sec))
	p := int64(0)
	for p < n {
		if sec[p] == 0 { // padding between containers
			padding++
			p++
			continue
		}
		at := func(off int64) string { return fmt.Sprintf("%s+%#x (file offset %#x)", name, off, base+off) }
		if n-p < containerHdrSize {
			return nil, 0, 0, fmt.Errorf("%s: %d stray bytes, too few for a container header", at(p), n-p)
		}
		if m := le.Uint32(sec[p:]); m != fatbinMagic {
			return nil, 0, 0, fmt.Errorf("%s: magic %#08x, not a fatbin container (%#08x)", at(p), m, uint32(fatbinMagic))
		}
		if v := le.Uint16(sec[p+4:]); v != fatbinVersion {
			return nil, 0, 0, fmt.Errorf("%s: container version %d, want %d", at(p), v, fatbinVersion)
		}
		hs := int64(le.Uint16(sec[p+6:]))
		if hs < containerHdrSize {
			return nil, 0, 0, fmt.Errorf("%s: container header size %d < %d", at(p), hs, containerHdrSize)
		}
		fat := le.Uint64(sec[p+8:])
		if fat > uint64(n-p) || hs > n-p-int64(fat) {
			return nil, 0, 0, fmt.Errorf("%s: container of %d+%d bytes runs past the section's end (%d bytes left)", at(p), hs, fat, n-p)
		}
		c := firstContainer + containers
		containers++
		end := p + hs + int64(fat)
		e := p + hs
		for e < end {
			if end-e < entryMinHdrSize {
				return nil, 0, 0, fmt.Errorf("%s: container %d: %d bytes left, too few for an entry header", at(e), c, end-e)
			}
			ehs := le.Uint32(sec[e+4:])
			psz := le.Uint64(sec[e+8:])
			if ehs < entryMinHdrSize {
				return nil, 0, 0, fmt.Errorf("%s: container %d: entry header size %d < %d", at(e), c, ehs, entryMinHdrSize)
			}
			if int64(ehs) > end-e || psz > uint64(end-e-int64(ehs)) {
				return nil, 0, 0, fmt.Errorf("%s: container %d: entry of %d+%d bytes runs past its container (%d bytes left)", at(e), c, ehs, psz, end-e)
			}
			en := entry{
				Section:     name,
				Container:   c,
				Offset:      base + e,
				Kind:        le.Uint16(sec[e:]),
				HeaderSize:  ehs,
				PayloadOff:  base + e + int64(ehs),
				PayloadSize: psz,
				Compressed:  le.Uint32(sec[e+16:]),
				Arch:        le.Uint32(sec[e+28:]),
				Flags:       le.Uint64(sec[e+40:]),
				Raw:         le.Uint64(sec[e+56:]),
			}
			if en.Kind != kindPTX && en.Kind != kindELF {
				return nil, 0, 0, fmt.Errorf("%s: container %d: entry kind %#x is neither PTX (1) nor ELF (2)", at(e), c, en.Kind)
			}
			entries = append(entries, en)
			e += int64(ehs) + int64(psz)
		}
		p = end
	}
	return entries, containers, padding, nil
}

// keepSet says which entries survive.
type keepSet struct {
	SM      map[uint32]bool // the cards to run on: sm_NN
	Compute map[uint32]bool // PTX: compute_NN
	// PTXJIT keeps every PTX entry whose arch is at most the highest kept
	// sm_NN: the driver can JIT it for a card of that arch.
	PTXJIT bool
}

func (k keepSet) maxSM() uint32 {
	var m uint32
	for a := range k.SM {
		if a > m {
			m = a
		}
	}
	return m
}

// cubinRuns says whether an ELF cubin built for sm_cubin loads on a card
// of sm_card: the same major version and a minor no higher (an sm_80 cubin
// runs on sm_86, not on sm_90 or sm_75). Arch numbers are major*10+minor:
// 75, 86, 90, 120.
func cubinRuns(cubin, card uint32) bool {
	return cubin/10 == card/10 && cubin%10 <= card%10
}

// runsOn says whether the driver could load e on an sm_card card: a cubin
// of a compatible arch (cubinRuns), or PTX of an arch no higher, which it
// JITs.
func runsOn(e entry, card uint32) bool {
	if e.Kind == kindPTX {
		return e.Arch <= card
	}
	return cubinRuns(e.Arch, card)
}

// keeps says whether e's payload survives. A cubin survives when it runs
// on a kept sm_NN (cubinRuns: -keep sm_86 keeps sm_80 and sm_86 cubins,
// since a container may hold only the sm_80 one and the driver picks it on
// an sm_86 card); PTX when -keep names its compute_NN or -ptx-jit covers it.
func (k keepSet) keeps(e entry) bool {
	if e.Kind == kindPTX {
		return k.Compute[e.Arch] || (k.PTXJIT && len(k.SM) > 0 && e.Arch <= k.maxSM())
	}
	for card := range k.SM {
		if cubinRuns(e.Arch, card) {
			return true
		}
	}
	return false
}

// parseKeep reads -keep: a comma-separated list of sm_NN (cards to run on) and
// compute_NN (PTX). An arch-specific suffix (sm_90a) names the same arch
// number as sm_90: the entry header does not tell them apart.
func parseKeep(s string, ptxJIT bool) (keepSet, error) {
	k := keepSet{SM: map[uint32]bool{}, Compute: map[uint32]bool{}, PTXJIT: ptxJIT}
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		var prefix string
		var m map[uint32]bool
		switch {
		case strings.HasPrefix(f, "sm_"):
			prefix, m = "sm_", k.SM
		case strings.HasPrefix(f, "compute_"):
			prefix, m = "compute_", k.Compute
		default:
			return k, fmt.Errorf("-keep %q: want sm_NN or compute_NN", f)
		}
		num := f[len(prefix):]
		for len(num) > 0 && num[len(num)-1] >= 'a' && num[len(num)-1] <= 'z' {
			num = num[:len(num)-1]
		}
		var a uint32
		if num == "" {
			return k, fmt.Errorf("-keep %q: no arch number", f)
		}
		for _, c := range num {
			if c < '0' || c > '9' || a > 1e6 {
				return k, fmt.Errorf("-keep %q: bad arch number", f)
			}
			a = a*10 + uint32(c-'0')
		}
		m[a] = true
	}
	if len(k.SM) == 0 && len(k.Compute) == 0 {
		return k, fmt.Errorf("-keep names no arch")
	}
	return k, nil
}

// summary row: one per (kind, arch).
type row struct {
	Kind, Arch          string
	Entries, Compressed int
	Bytes               uint64
	Kept                bool
}

type report struct {
	Rows           []row
	Containers     int
	Padding        int64
	KeptBytes      uint64
	ZeroedBytes    uint64
	KeptEntries    int
	ZeroedEntries  int
	EmptyContainer int // containers left with no entry kept
	// LostContainer counts the containers that, for some kept sm_NN card,
	// had an entry it could load (runsOn) and keep none: code that loaded on
	// a kept card before pruning and would not after.
	LostContainer int
}

func summarize(entries []entry, containers int, padding int64, k keepSet) report {
	r := report{Containers: containers, Padding: padding}
	byKey := map[string]*row{}
	keptIn := map[int]bool{}
	seen := map[int]bool{}
	type onCard struct {
		c    int
		card uint32
	}
	ranBefore, runsAfter := map[onCard]bool{}, map[onCard]bool{}
	for _, e := range entries {
		key := e.kindName() + "/" + e.archName()
		rw := byKey[key]
		if rw == nil {
			rw = &row{Kind: e.kindName(), Arch: e.archName(), Kept: k.keeps(e)}
			byKey[key] = rw
		}
		rw.Entries++
		if e.compressed() {
			rw.Compressed++
		}
		rw.Bytes += e.PayloadSize
		seen[e.Container] = true
		for card := range k.SM {
			if runsOn(e, card) {
				ranBefore[onCard{e.Container, card}] = true
				if k.keeps(e) {
					runsAfter[onCard{e.Container, card}] = true
				}
			}
		}
		if k.keeps(e) {
			r.KeptBytes += e.PayloadSize
			r.KeptEntries++
			keptIn[e.Container] = true
		} else {
			r.ZeroedBytes += e.PayloadSize
			r.ZeroedEntries++
		}
	}
	lost := map[int]bool{}
	for oc := range ranBefore {
		if !runsAfter[oc] {
			lost[oc.c] = true
		}
	}
	r.LostContainer = len(lost)
	for c := range seen {
		if !keptIn[c] {
			r.EmptyContainer++
		}
	}
	for _, rw := range byKey {
		r.Rows = append(r.Rows, *rw)
	}
	sort.Slice(r.Rows, func(i, j int) bool {
		if r.Rows[i].Kind != r.Rows[j].Kind {
			return r.Rows[i].Kind < r.Rows[j].Kind // elf before ptx
		}
		return archNum(r.Rows[i].Arch) < archNum(r.Rows[j].Arch)
	})
	return r
}

func archNum(s string) int {
	n := 0
	for _, c := range s {
		if c >= '0' && c <= '9' {
			n = n*10 + int(c-'0')
		}
	}
	return n
}
