package diffusion

import (
	"fmt"
	"slices"
	"strings"

	"github.com/falocal/falocal/pipelines"
	"github.com/falocal/falocal/weights"
)

// DescribeModels names an installed model whose manifest serves the
// endpoint, else an untagged diffusion model, which model() may pick once
// it has loaded it and checked its family.
func (p *Pipeline) DescribeModels(endpoint string) (pipelines.EndpointModels, error) {
	for _, s := range specs {
		if s.id != endpoint {
			continue
		}
		install := "import a diffusers ONNX export with 'falocal weights import -pipeline diffusion -name NAME -dir DIR -serves " + s.key + "'"
		return p.deps.DescribeWant(
			pipelines.Want{Pipeline: "diffusion", Key: s.key, What: "a diffusion model for " + s.key, Install: install,
				Match: func(m weights.Manifest) bool {
					return slices.ContainsFunc(m.Serves, func(sv string) bool { return sv == s.key || strings.HasPrefix(sv, s.key+":") })
				}},
			pipelines.Want{Pipeline: "diffusion", Key: s.key, What: "a diffusion model for " + s.key, Install: install,
				Match: func(m weights.Manifest) bool { return len(m.Serves) == 0 }})
	}
	return pipelines.EndpointModels{}, fmt.Errorf("diffusion: no endpoint %s", endpoint)
}
