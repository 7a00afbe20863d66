package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/falocal/falocal/pipelines"
)

// keyDigests are the SHA-256 digests of the configured "key_id:key_secret"
// strings; comparing digests keeps the comparison constant-time whatever the
// lengths.
func keyDigests(keys []string) [][32]byte {
	var out [][32]byte
	for _, k := range keys {
		if k = strings.TrimSpace(k); k != "" {
			out = append(out, sha256.Sum256([]byte(k)))
		}
	}
	return out
}

// validKey reports whether key is one of the configured keys. Every key is
// compared, so timing says nothing about which one matched or how far.
func (s *Server) validKey(key string) bool {
	d := sha256.Sum256([]byte(key))
	ok := 0
	for _, k := range s.keys {
		ok |= subtle.ConstantTimeCompare(d[:], k[:])
	}
	return ok == 1
}

// requireKey checks fal's `Authorization: Key <key_id>:<key_secret>` when
// keys are configured; without keys (loopback only) everything passes.
func (s *Server) requireKey(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if len(s.keys) == 0 {
			return next(c)
		}
		h := c.Request().Header.Get("Authorization")
		scheme, cred, _ := strings.Cut(h, " ")
		if h == "" || !strings.EqualFold(scheme, "Key") || cred == "" {
			return &pipelines.HTTPError{Status: http.StatusUnauthorized,
				Msg: "Missing credentials: send 'Authorization: Key <key_id>:<key_secret>' (FAL_KEY)"}
		}
		cred = strings.TrimSpace(cred)
		if !s.validKey(cred) {
			return &pipelines.HTTPError{Status: http.StatusForbidden, Msg: "Invalid credentials: the key is not known to this server"}
		}
		// Requests submitted with this key belong to it (owner.go).
		c.Set(callerKeyCtx, sha256.Sum256([]byte(cred)))
		return next(c)
	}
}
