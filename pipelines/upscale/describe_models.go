package upscale

import "github.com/falocal/falocal/pipelines"

// DescribeModels names the model of the default input (RealESRGAN_x4plus
// at scale 4), as Warm resolves it.
func (p *Pipeline) DescribeModels(string) (pipelines.EndpointModels, error) {
	return p.deps.DescribeWant(pipelines.Want{Pipeline: "upscale", Key: "esrgan:RealESRGAN_x4plus", What: "model 'RealESRGAN_x4plus'",
		Install: "run 'falocal setup' for the default models, or add one with 'falocal weights import'"})
}
