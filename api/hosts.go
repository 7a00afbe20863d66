package api

import (
	"net"
	"strings"

	"github.com/labstack/echo/v4"
)

// Which service a fal host name stands for, as a path prefix on our single
// origin (queue at the root, sync under /run, REST under /rest, files under /cdn).
func hostPrefix(host string) (string, bool) {
	h := strings.ToLower(host)
	if hh, _, err := net.SplitHostPort(h); err == nil {
		h = hh
	}
	switch {
	case h == "queue.fal.run":
		return "", true
	case h == "rest.fal.ai", h == "rest.alpha.fal.ai":
		return "/rest", true
	case h == "v3.fal.media", h == "v3b.fal.media", h == "fal.media":
		return "/cdn", true
	case h == "fal.run", strings.HasSuffix(h, ".fal.run"):
		return "/run", true
	}
	return "", false
}

// hostOnly drops the port from a Host value.
func hostOnly(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		return h
	}
	return host
}

// IsFalHost reports whether host (port allowed) is one of fal's own host
// names: the names the TLS proxy may terminate.
func IsFalHost(host string) bool { return isFalHost(host) }

// isFalHost reports whether host is one of fal's own host names.
func isFalHost(host string) bool {
	_, ok := hostPrefix(host)
	return ok
}

// hostRouting maps requests addressed to fal's host names (through the TLS
// proxy or a hosts-file entry) onto the single-origin layout.
func hostRouting(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		if prefix, ok := hostPrefix(r.Host); ok && prefix != "" && !strings.HasPrefix(r.URL.Path, prefix+"/") {
			r.URL.Path = prefix + r.URL.Path
			r.URL.RawPath = ""
		}
		return next(c)
	}
}
