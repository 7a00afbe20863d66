package api

import (
	"net/http"
	"net/url"

	"github.com/labstack/echo/v4"

	"github.com/falocal/falocal/pipelines"
)

// proxy serves the JS client's proxy convention (proxyUrl): any method at
// /fal/proxy with the real fal URL in x-fal-target-url. The target must be
// one of fal's own host names; it is served here, never fetched. URLs in
// the replies keep pointing at this server, since the client reaches files
// and upload URLs directly.
func (s *Server) proxy(c echo.Context) error {
	r := c.Request()
	raw := r.Header.Get("x-fal-target-url")
	if raw == "" {
		return &pipelines.HTTPError{Status: http.StatusBadRequest, Msg: "missing the x-fal-target-url header"}
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "https" {
		return &pipelines.HTTPError{Status: http.StatusBadRequest, Msg: "x-fal-target-url must be an https URL of a fal host"}
	}
	prefix, ok := hostPrefix(u.Host)
	if !ok {
		return &pipelines.HTTPError{Status: http.StatusForbidden, Msg: "x-fal-target-url must name one of fal's hosts (fal.run, queue.fal.run, rest.fal.ai, rest.alpha.fal.ai, v3.fal.media); this server fetches nothing else"}
	}
	r2 := r.Clone(r.Context())
	r2.Header.Del("x-fal-target-url")
	r2.URL.Path = prefix + u.Path
	r2.URL.RawPath = ""
	r2.URL.RawQuery = u.RawQuery
	r2.RequestURI = r2.URL.RequestURI()
	// Dispatch again through the full stack, on a fresh echo context.
	s.echo.ServeHTTP(c.Response().Writer, r2)
	c.Response().Committed = true
	return nil
}
