package kokoro

import (
	"slices"

	"github.com/falocal/falocal/pipelines"
	"github.com/falocal/falocal/weights"
)

// DescribeModels names the model that Model() picks, its fallback to any
// Kokoro export included.
func (p *Pipeline) DescribeModels(string) (pipelines.EndpointModels, error) {
	w := pipelines.Want{Pipeline: "kokoro", Key: "kokoro", What: "a Kokoro text-to-speech model",
		Match:   func(m weights.Manifest) bool { return isModel(m) && slices.Contains(m.Serves, "kokoro") },
		Install: "run 'falocal setup' (or 'falocal weights install kokoro-v1.0')"}
	wants := []pipelines.Want{w}
	if p.deps.Config.Models["kokoro"] == "" {
		fallback := w
		fallback.Match = isModel
		wants = append(wants, fallback)
	}
	return p.deps.DescribeWant(wants...)
}
