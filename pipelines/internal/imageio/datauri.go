package imageio

import (
	"encoding/base64"
	"errors"
	"fmt"
	"mime"
	"net/url"
	"strings"
)

// ErrDataURI is wrapped by ParseDataURI errors.
var ErrDataURI = errors.New("imageio: malformed data URI")

// defaultDataURIType is RFC 2397's content type when none is given.
const defaultDataURIType = "text/plain;charset=US-ASCII"

// DataURI returns data as a base64 data URI: data:<contentType>;base64,<b64>.
func DataURI(data []byte, contentType string) string {
	return "data:" + contentType + ";base64," + base64.StdEncoding.EncodeToString(data)
}

// ParseDataURI decodes an RFC 2397 data URI, base64 or percent-encoded. The
// content type defaults to text/plain;charset=US-ASCII, or text/plain plus
// the given parameters when only parameters are present. Errors wrap
// ErrDataURI.
func ParseDataURI(s string) (data []byte, contentType string, err error) {
	s = strings.TrimSpace(s)
	if len(s) < 5 || !strings.EqualFold(s[:5], "data:") {
		return nil, "", fmt.Errorf("%w: missing data: scheme", ErrDataURI)
	}
	meta, payload, ok := strings.Cut(s[5:], ",")
	if !ok {
		return nil, "", fmt.Errorf("%w: missing comma", ErrDataURI)
	}

	isBase64 := false
	if i := strings.LastIndexByte(meta, ';'); i >= 0 && strings.EqualFold(meta[i+1:], "base64") {
		isBase64 = true
		meta = meta[:i]
	}
	switch {
	case meta == "":
		contentType = defaultDataURIType
	case strings.HasPrefix(meta, ";"):
		contentType = "text/plain" + meta
	default:
		contentType = meta
	}
	if mt, _, err := mime.ParseMediaType(contentType); err != nil || !strings.Contains(mt, "/") {
		return nil, "", fmt.Errorf("%w: bad content type %q", ErrDataURI, contentType)
	}

	// The payload may be percent-encoded in either form (e.g. %2B for '+').
	text, err := url.PathUnescape(payload)
	if err != nil {
		return nil, "", fmt.Errorf("%w: %w", ErrDataURI, err)
	}
	if !isBase64 {
		return []byte(text), contentType, nil
	}
	// Be forgiving like browsers: ignore whitespace (wrapped lines) and
	// missing padding.
	text = strings.Map(func(r rune) rune {
		if r == ' ' || r == '\t' || r == '\n' || r == '\r' || r == '\f' {
			return -1
		}
		return r
	}, text)
	if strings.HasSuffix(text, "==") {
		text = text[:len(text)-2]
	} else if strings.HasSuffix(text, "=") {
		text = text[:len(text)-1]
	}
	data, err = base64.RawStdEncoding.DecodeString(text)
	if err != nil {
		return nil, "", fmt.Errorf("%w: base64: %w", ErrDataURI, err)
	}
	return data, contentType, nil
}
