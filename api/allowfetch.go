package api

import (
	"net"
	"net/url"
	"strings"
)

// allowedURL reports whether u may be fetched: its host and port must match
// an -allow-fetch entry. An entry is a host ("example.com", "*.example.com",
// an IP) or a host with a port ("example.com:8443", "[::1]:8080"). A host
// alone allows the default port of the URL's scheme only (80 for http, 443
// for https), so allowing a host does not open its other services; an entry
// with a port allows that port alone, whatever the scheme. Redirects are
// checked the same way.
func (s *Server) allowedURL(u *url.URL) bool {
	host := strings.ToLower(u.Hostname())
	port, ok := effectivePort(u)
	if host == "" || !ok {
		return false
	}
	for _, a := range s.cfg.AllowFetch {
		ah, ap, ok := splitAllowEntry(a)
		if !ok || !hostMatches(ah, host) {
			continue
		}
		if ap == "" {
			if port == defaultPort(u.Scheme) {
				return true
			}
			continue
		}
		if ap == port {
			return true
		}
	}
	return false
}

// splitAllowEntry reads an -allow-fetch entry as host and port ("" when
// the entry names none). IPv6 addresses are written bare ("::1") or in
// brackets, with a port only in brackets ("[::1]:8080").
func splitAllowEntry(a string) (host, port string, ok bool) {
	a = strings.ToLower(strings.TrimSpace(a))
	switch {
	case a == "":
		return "", "", false
	case strings.HasPrefix(a, "[") && strings.HasSuffix(a, "]"):
		return a[1 : len(a)-1], "", true
	case strings.HasPrefix(a, "[") || strings.Count(a, ":") == 1:
		h, p, err := net.SplitHostPort(a)
		if err != nil || h == "" || !validPort(p) {
			return "", "", false
		}
		return h, canonPort(p), true
	}
	return a, "", true // a name, an IPv4 address or a bare IPv6 address
}

// hostMatches compares a URL's host with an entry's: equal, or under the
// domain of a "*.domain" entry.
func hostMatches(entry, host string) bool {
	if entry == host {
		return true
	}
	return strings.HasPrefix(entry, "*.") && strings.HasSuffix(host, entry[1:])
}

// effectivePort is the port a URL reaches: its own, or its scheme's default.
func effectivePort(u *url.URL) (string, bool) {
	if p := u.Port(); p != "" {
		if !validPort(p) {
			return "", false
		}
		return canonPort(p), true
	}
	p := defaultPort(u.Scheme)
	return p, p != ""
}

func defaultPort(scheme string) string {
	switch strings.ToLower(scheme) {
	case "http":
		return "80"
	case "https":
		return "443"
	}
	return ""
}

func validPort(p string) bool {
	if p == "" || len(p) > 5 {
		return false
	}
	n := 0
	for _, c := range p {
		if c < '0' || c > '9' {
			return false
		}
		n = n*10 + int(c-'0')
	}
	return n > 0 && n <= 65535
}

// canonPort drops leading zeros, so that ":0443" is ":443".
func canonPort(p string) string {
	p = strings.TrimLeft(p, "0")
	if p == "" {
		return "0"
	}
	return p
}
