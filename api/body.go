package api

import (
	"github.com/falocal/falocal/pipelines"
)

// checkJSONBody refuses a request body that is not JSON (empty included)
// at submit, with the 422 the endpoints answer for it (fal's json_invalid),
// so that it never takes a place in the queue only to fail there. Whether
// the JSON is an object with the right fields stays the endpoint's call.
func checkJSONBody(body []byte) error {
	if validJSON(body) {
		return nil
	}
	v := &pipelines.ValidationError{}
	v.Add("", "json_invalid", "JSON decode error")
	return v
}

// maxJSONDepth is encoding/json's nesting limit.
const maxJSONDepth = 10000

// validJSON reports what json.Valid reports, several times faster on the
// bodies this server gets (an object around megabytes of data: URIs):
// string contents are skipped eight bytes at a time.
func validJSON(b []byte) bool {
	p := jsonScan{b: b}
	p.space()
	if !p.value(0) {
		return false
	}
	p.space()
	return p.i == len(b)
}

type jsonScan struct {
	b []byte
	i int
}

func (p *jsonScan) space() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *jsonScan) value(depth int) bool {
	if p.i >= len(p.b) {
		return false
	}
	switch c := p.b[p.i]; {
	case c == '{':
		return depth < maxJSONDepth && p.object(depth+1)
	case c == '[':
		return depth < maxJSONDepth && p.array(depth+1)
	case c == '"':
		return p.str()
	case c == 't':
		return p.lit("true")
	case c == 'f':
		return p.lit("false")
	case c == 'n':
		return p.lit("null")
	case c == '-' || ('0' <= c && c <= '9'):
		return p.number()
	}
	return false
}

func (p *jsonScan) lit(s string) bool {
	if len(p.b)-p.i < len(s) || string(p.b[p.i:p.i+len(s)]) != s {
		return false
	}
	p.i += len(s)
	return true
}

func (p *jsonScan) object(depth int) bool {
	p.i++ // {
	p.space()
	if p.i < len(p.b) && p.b[p.i] == '}' {
		p.i++
		return true
	}
	for {
		if p.i >= len(p.b) || p.b[p.i] != '"' || !p.str() {
			return false
		}
		p.space()
		if p.i >= len(p.b) || p.b[p.i] != ':' {
			return false
		}
		p.i++
		p.space()
		if !p.value(depth) {
			return false
		}
		p.space()
		if p.i >= len(p.b) {
			return false
		}
		switch p.b[p.i] {
		case ',':
			p.i++
			p.space()
		case '}':
			p.i++
			return true
		default:
			return false
		}
	}
}

func (p *jsonScan) array(depth int) bool {
	p.i++ // [
	p.space()
	if p.i < len(p.b) && p.b[p.i] == ']' {
		p.i++
		return true
	}
	for {
		if !p.value(depth) {
			return false
		}
		p.space()
		if p.i >= len(p.b) {
			return false
		}
		switch p.b[p.i] {
		case ',':
			p.i++
			p.space()
		case ']':
			p.i++
			return true
		default:
			return false
		}
	}
}

// str reads a string: no control characters, valid escapes. Bytes of
// 0x80 and above pass, as encoding/json lets them.
func (p *jsonScan) str() bool {
	b := p.b
	i := p.i + 1
	for {
		// Eight bytes at a time while none is a quote, a backslash or a
		// control character.
		for i+8 <= len(b) {
			x := uint64(b[i]) | uint64(b[i+1])<<8 | uint64(b[i+2])<<16 | uint64(b[i+3])<<24 |
				uint64(b[i+4])<<32 | uint64(b[i+5])<<40 | uint64(b[i+6])<<48 | uint64(b[i+7])<<56
			if hasLess(x, 0x20) || hasZero(x^0x2222222222222222) || hasZero(x^0x5c5c5c5c5c5c5c5c) {
				break
			}
			i += 8
		}
		if i >= len(b) {
			return false
		}
		switch c := b[i]; {
		case c == '"':
			p.i = i + 1
			return true
		case c < 0x20:
			return false
		case c == '\\':
			if i+1 >= len(b) {
				return false
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(b) {
					return false
				}
				for _, h := range b[i+2 : i+6] {
					if !('0' <= h && h <= '9' || 'a' <= h && h <= 'f' || 'A' <= h && h <= 'F') {
						return false
					}
				}
				i += 6
			default:
				return false
			}
		default:
			i++
		}
	}
}

const lo8, hi8 = 0x0101010101010101, 0x8080808080808080

// hasZero reports whether a byte of x is zero.
func hasZero(x uint64) bool { return (x-lo8) & ^x & hi8 != 0 }

// hasLess reports whether a byte of x is below n (n ≤ 128).
func hasLess(x uint64, n uint64) bool { return (x-lo8*n) & ^x & hi8 != 0 }

func (p *jsonScan) number() bool {
	b := p.b
	i := p.i
	if b[i] == '-' {
		i++
	}
	digits := func() int {
		n := 0
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
			n++
		}
		return n
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case digits() == 0:
		return false
	}
	if i < len(b) && b[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false
		}
	}
	p.i = i
	return true
}
