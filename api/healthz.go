package api

import (
	"strings"

	"github.com/labstack/echo/v4"
)

// healthDetails reports whether a /healthz caller may see the details
// (served endpoints, runtime library path, version). /healthz stays open
// for probes, but with keys configured only a caller with a valid key gets
// more than the status. Without keys the caller is local: the server then
// listens on loopback only and, with LocalOnly, answers only requests
// addressed to loopback or fal's names from local pages.
func (s *Server) healthDetails(c echo.Context) bool {
	if len(s.keys) == 0 {
		return true
	}
	scheme, cred, _ := strings.Cut(c.Request().Header.Get("Authorization"), " ")
	return strings.EqualFold(scheme, "Key") && cred != "" && s.validKey(strings.TrimSpace(cred))
}
