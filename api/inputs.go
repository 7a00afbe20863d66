package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path"
	"strings"

	"github.com/falocal/falocal/api/files"
	"github.com/falocal/falocal/pipelines"
)

// requestFiles implements pipelines.Files for one request: outputs get URLs
// on the origin the client used, inputs may be this server's own files or
// allow-listed URLs — nothing else is fetched.
type requestFiles struct {
	s       *Server
	cdnBase string          // e.g. http://127.0.0.1:8080/cdn/files
	host    string          // the Host the client used
	saved   func(id string) // told of each output file, so it can share the request's life
}

func (s *Server) requestFiles(r *http.Request) *requestFiles {
	base := origin(r) + "/cdn/files"
	if isFalHost(r.Host) {
		// Reached through fal's names (TLS proxy): answer with fal's CDN name,
		// which reaches us the same way.
		base = "https://v3.fal.media/files"
	}
	return &requestFiles{s: s, cdnBase: base, host: r.Host}
}

func (f *requestFiles) Save(ctx context.Context, data []byte, contentType, name string) (string, error) {
	m, err := f.s.cfg.Files.Put(data, contentType, name)
	if err != nil {
		return "", err
	}
	if f.saved != nil {
		f.saved(m.ID)
	}
	return f.cdnBase + "/" + m.ID + "/" + m.Name, nil
}

func (f *requestFiles) Open(ctx context.Context, raw string, limit int64) (pipelines.Blob, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return pipelines.Blob{}, fmt.Errorf("value must be a valid URL (http, https or data:)")
	}
	if m := f.s.cfg.MaxInputBytes; m > 0 && (limit <= 0 || m < limit) {
		limit = m
	}
	if id, ok := f.ownFile(u); ok {
		m, data, err := f.s.cfg.Files.Read(id, limit)
		if errors.Is(err, files.ErrNotFound) {
			if isFalHost(u.Host) && f.s.allowedURL(u) {
				// Not one of ours: a real fal CDN file the user allow-listed.
				return f.s.fetch(ctx, u, limit)
			}
			return pipelines.Blob{}, fmt.Errorf("file %s not found on this server (it may have expired)", u.Path)
		}
		if errors.Is(err, files.ErrTooLarge) {
			return pipelines.Blob{}, &pipelines.HTTPError{Status: http.StatusRequestEntityTooLarge, Msg: fmt.Sprintf("input file is larger than %d bytes", limit)}
		}
		if err != nil {
			return pipelines.Blob{}, err
		}
		return pipelines.Blob{Data: data, ContentType: m.ContentType}, nil
	}
	if !f.s.allowedURL(u) {
		return pipelines.Blob{}, fmt.Errorf("this server does not fetch URLs from %s; send the file as a data URI, upload it to this server, or allow the host with --allow-fetch (host for ports 80/443, host:port for another port)", u.Host)
	}
	return f.s.fetch(ctx, u, limit)
}

// ownFile recognises URLs of this server's file store, under any of the
// names a client can reach it by.
func (f *requestFiles) ownFile(u *url.URL) (string, bool) {
	p := path.Clean(u.Path)
	var rest string
	var ok bool
	switch {
	case strings.EqualFold(u.Host, f.host) || isLoopback(u.Hostname()):
		rest, ok = strings.CutPrefix(p, "/cdn/files/")
	case isFalHost(u.Host):
		if prefix, _ := hostPrefix(u.Host); prefix == "/cdn" {
			rest, ok = strings.CutPrefix(p, "/files/")
		}
	}
	if !ok {
		return "", false
	}
	id, _, _ := strings.Cut(rest, "/")
	return id, true
}

func isLoopbackName(h string) bool { return isLoopback(h) }

func isLoopback(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

func (s *Server) fetch(ctx context.Context, u *url.URL, limit int64) (pipelines.Blob, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return pipelines.Blob{}, err
	}
	client := *s.cfg.HTTPClient
	client.CheckRedirect = func(r *http.Request, via []*http.Request) error {
		// Replacing CheckRedirect drops the client's default limit of 10.
		if len(via) >= 10 {
			return errors.New("stopped after 10 redirects")
		}
		if !s.allowedURL(r.URL) {
			return fmt.Errorf("redirect to %s is not allowed", r.URL.Host)
		}
		return nil
	}
	resp, err := client.Do(req)
	if err != nil {
		return pipelines.Blob{}, fmt.Errorf("fetch %s: %w", u.Redacted(), err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return pipelines.Blob{}, fmt.Errorf("fetch %s: HTTP %s", u.Redacted(), resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return pipelines.Blob{}, fmt.Errorf("fetch %s: %w", u.Redacted(), err)
	}
	if int64(len(data)) > limit {
		return pipelines.Blob{}, &pipelines.HTTPError{Status: http.StatusRequestEntityTooLarge, Msg: fmt.Sprintf("input file is larger than %d bytes", limit)}
	}
	return pipelines.Blob{Data: data, ContentType: resp.Header.Get("Content-Type")}, nil
}
