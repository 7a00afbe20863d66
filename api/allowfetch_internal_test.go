package api

import (
	"net/url"
	"testing"
)

// An -allow-fetch entry names a host and a port: a host alone stands for
// its scheme's default port only.
func TestAllowedURLPorts(t *testing.T) {
	s := &Server{cfg: Config{AllowFetch: []string{"img.example", "*.wild.example", "ports.example:8443",
		"[2001:db8::1]:9000", "2001:db8::2", "[2001:db8::3]", " Mixed.Example:0080 ", "bad.example:x", "bad2.example:70000"}}}
	for raw, want := range map[string]bool{
		"http://img.example/a":          true,
		"https://img.example/a":         true,
		"http://img.example:80/a":       true,
		"https://img.example:443/a":     true,
		"http://IMG.example:080/a":      true,
		"http://img.example:8080/a":     false,
		"http://img.example:443/a":      false, // 443 is https's port, not http's
		"https://img.example:80/a":      false,
		"http://img.example:22/a":       false,
		"http://a.wild.example/a":       true,
		"http://a.b.wild.example:81/a":  false,
		"http://ports.example:8443/a":   true,
		"https://ports.example:8443/a":  true,
		"http://ports.example/a":        false,
		"https://ports.example/a":       false,
		"http://ports.example:8444/a":   false,
		"http://[2001:db8::1]:9000/a":   true,
		"http://[2001:db8::1]/a":        false,
		"http://[2001:db8::2]/a":        true,
		"http://[2001:db8::2]:9000/a":   false,
		"https://[2001:db8::3]/a":       true,
		"http://mixed.example:80/a":     true,
		"http://mixed.example/a":        true,
		"https://mixed.example/a":       false,
		"http://bad.example/a":          false,
		"http://bad2.example/a":         false,
		"http://bad2.example:70000/a":   false,
		"http://img.example:99999/a":    false,
		"ftp://img.example/a":           false,
		"http://other.example/a":        false,
		"http://img.example.evil.test/": false,
	} {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.allowedURL(u); got != want {
			t.Errorf("allowedURL(%s) = %v, want %v", raw, got, want)
		}
	}
}
