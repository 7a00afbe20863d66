package whisper

import (
	"github.com/falocal/falocal/pipelines"
	"github.com/falocal/falocal/weights"
)

// DescribeModels names the model that model() picks for endpoint, its
// fallback to any installed Whisper model included.
func (p *Pipeline) DescribeModels(endpoint string) (pipelines.EndpointModels, error) {
	wizper := endpoint == "fal-ai/wizper"
	w := pipelines.Want{Pipeline: "whisper", Key: "whisper", What: "a Whisper model", Install: "run 'falocal setup'"}
	if wizper {
		w.Key, w.Keys = "wizper", []string{"whisper"}
	}
	wants := []pipelines.Want{w}
	if p.deps.Config.Models[w.Key] == "" && (!wizper || p.deps.Config.Models["whisper"] == "") {
		fallback := w
		fallback.Match = func(weights.Manifest) bool { return true }
		wants = append(wants, fallback)
	}
	return p.deps.DescribeWant(wants...)
}
