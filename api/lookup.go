package api

import (
	"crypto/rand"
	"fmt"
	"net/http"
	"strings"

	"github.com/falocal/falocal/pipelines"
)

func newID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// proprietary lists endpoint-id prefixes of fal's hosted, closed models: they
// get an error that says they cannot run locally, not a bare 404.
var proprietary = []string{
	"fal-ai/kling-video", "fal-ai/kling", "fal-ai/sora", "fal-ai/flux-pro", "fal-ai/flux/pro", "fal-ai/flux-pro/",
	"fal-ai/elevenlabs", "fal-ai/veo", "fal-ai/minimax", "fal-ai/luma", "fal-ai/runway", "fal-ai/ideogram",
	"fal-ai/recraft", "fal-ai/imagen", "fal-ai/gpt-image", "fal-ai/nano-banana", "fal-ai/seedream", "fal-ai/seedance",
	"fal-ai/hailuo", "fal-ai/pixverse", "fal-ai/bytedance", "fal-ai/flux-2-pro",
}

// lookup resolves an endpoint id or answers fal's 404 with a reason.
func (s *Server) lookup(id string) (pipelines.Endpoint, error) {
	id = strings.Trim(id, "/")
	if e, ok := s.cfg.Registry.Lookup(id); ok {
		return e, nil
	}
	for _, p := range proprietary {
		if id == strings.TrimSuffix(p, "/") || strings.HasPrefix(id, strings.TrimSuffix(p, "/")+"/") || strings.HasPrefix(id, p) {
			return nil, &pipelines.HTTPError{Status: http.StatusNotFound, Msg: fmt.Sprintf(
				"'%s' is a proprietary fal model: its weights are not public, so it cannot run on this local server", id)}
		}
	}
	return nil, &pipelines.HTTPError{Status: http.StatusNotFound, Msg: fmt.Sprintf(
		"Endpoint '%s' is not served by this local server (served: %s)", id, strings.Join(s.cfg.Registry.IDs(), ", "))}
}
