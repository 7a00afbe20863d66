package rembg

import "github.com/falocal/falocal/pipelines"

// DescribeModels names the model Warm would load for endpoint.
func (p *Pipeline) DescribeModels(endpoint string) (pipelines.EndpointModels, error) {
	key, what := "rembg", "the background-removal model"
	if endpoint != idRembg {
		key, what = "birefnet:General Use (Light)", "BiRefNet model 'General Use (Light)'"
	}
	return p.deps.DescribeWant(pipelines.Want{Pipeline: "rembg", Key: key, What: what, Install: install})
}
