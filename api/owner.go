package api

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/labstack/echo/v4"
)

// A request belongs to the API key that submitted it: with keys configured,
// its id carries a tag derived from that key, and another key asking for its
// status, result, status stream or cancel gets the 404 of an unknown id.
// The tag lives in the id itself, so ownership needs no storage and holds
// across restarts; it is an HMAC keyed by the key's digest, so an id says
// nothing about the key. Without keys (loopback only) ids are plain random
// UUIDs and anyone who has one may use it, as on a single-user machine.

// callerKeyCtx holds the SHA-256 digest of the caller's valid key.
const callerKeyCtx = "fal_key_digest"

// ownerTagLen bytes of a request id (its last ones) are the owner's tag;
// the other 74 bits (less the version and variant bits) are random.
const ownerTagLen = 6

// ownerTag is the tag of the id's random part b for the key digest d.
func ownerTag(d [32]byte, b []byte) []byte {
	m := hmac.New(sha256.New, d[:])
	m.Write([]byte("falocal request owner\x00"))
	m.Write(b)
	return m.Sum(nil)[:ownerTagLen]
}

// callerDigest is the digest of the key this request was authorised with.
func callerDigest(c echo.Context) ([32]byte, bool) {
	d, ok := c.Get(callerKeyCtx).([32]byte)
	return d, ok
}

// ownedID returns the id for a request this caller submits: the request
// id the server already gave it, or, with keys configured, a new one
// bound to the caller's key (which then replaces it in the reply's
// x-fal-request-id and the logs).
func (s *Server) ownedID(c echo.Context) string {
	id, _ := c.Get(requestIDKey).(string)
	d, ok := callerDigest(c)
	if len(s.keys) == 0 || !ok {
		return id
	}
	var b [16]byte
	rand.Read(b[:16-ownerTagLen])
	b[6] = b[6]&0x0f | 0x40 // UUID version 4
	b[8] = b[8]&0x3f | 0x80 // RFC 4122 variant
	copy(b[16-ownerTagLen:], ownerTag(d, b[:16-ownerTagLen]))
	id = fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
	c.Set(requestIDKey, id)
	c.Response().Header().Set("x-fal-request-id", id)
	return id
}

// owns reports whether the caller may see request id: always without keys,
// else only with the key that submitted it.
func (s *Server) owns(c echo.Context, id string) bool {
	if len(s.keys) == 0 {
		return true
	}
	d, ok := callerDigest(c)
	if !ok {
		return false
	}
	b, err := hex.DecodeString(strings.ReplaceAll(id, "-", ""))
	if err != nil || len(b) != 16 || len(id) != 36 {
		return false
	}
	return hmac.Equal(b[16-ownerTagLen:], ownerTag(d, b[:16-ownerTagLen]))
}
