package api

import (
	"errors"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/falocal/falocal/api/files"
)

// inlineSafe reports media types a browser shows without running code.
func inlineSafe(ct string) bool {
	ct = strings.ToLower(strings.TrimSpace(strings.Split(ct, ";")[0]))
	if ct == "image/svg+xml" {
		return false
	}
	return strings.HasPrefix(ct, "image/") || strings.HasPrefix(ct, "audio/") || strings.HasPrefix(ct, "video/")
}

// serveFile serves stored files (with Range support via http.ServeContent).
func (s *Server) serveFile(c echo.Context) error {
	m, f, err := s.cfg.Files.Open(c.Param("id"))
	if errors.Is(err, files.ErrNotFound) {
		return echo.ErrNotFound
	}
	if err != nil {
		return err
	}
	defer f.Close()
	// The name must match exactly: a different name that cleans to the
	// stored one (e.g. ".." for "file") is another URL and not ours.
	if c.Param("name") != m.Name {
		return echo.ErrNotFound
	}
	h := c.Response().Header()
	h.Set("Content-Type", m.ContentType)
	h.Set("Cache-Control", "private, max-age=86400")
	// Uploads carry the uploader's content type: never let a browser run
	// one (text/html, svg) as a page of this origin.
	h.Set("X-Content-Type-Options", "nosniff")
	if !inlineSafe(m.ContentType) {
		h.Set("Content-Disposition", "attachment")
	}
	http.ServeContent(c.Response(), c.Request(), m.Name, m.Created, f)
	return nil
}
