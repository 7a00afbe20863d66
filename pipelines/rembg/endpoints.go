package rembg

import (
	"context"
	"fmt"

	"github.com/falocal/falocal/pipelines"
)

var (
	v1Models = []string{"General Use (Light)", "General Use (Heavy)", "Portrait"}
	v2Models = []string{"General Use (Light)", "General Use (Light 2K)", "General Use (Heavy)", "Matting", "Portrait", "General Use (Dynamic)"}
	v1Res    = []string{"1024x1024", "2048x2048"}
	v2Res    = []string{"1024x1024", "2048x2048", "2304x2304"}
	formats  = []string{"webp", "png", "gif"}
)

// birefnetInput is fal's BiRefNet input; pointer fields tell absent from zero.
type birefnetInput struct {
	ImageURL            *string `json:"image_url"`
	Model               *string `json:"model"`
	OperatingResolution *string `json:"operating_resolution"`
	OutputFormat        *string `json:"output_format"`
	OutputMask          *bool   `json:"output_mask"`
	RefineForeground    *bool   `json:"refine_foreground"`
	SyncMode            *bool   `json:"sync_mode"`
	MaskOnly            *bool   `json:"mask_only"`
}

type birefnet struct {
	p           *Pipeline
	id          string
	models      []string
	resolutions []string
	v2          bool
}

// idRembg is fal's rembg endpoint.
const idRembg = "fal-ai/imageutils/rembg"

func (e *birefnet) ID() string { return e.id }

func (e *birefnet) Run(ctx context.Context, req *pipelines.Request) (any, error) {
	var in birefnetInput
	if err := pipelines.DecodeInput(req.Input, &in); err != nil {
		return nil, err
	}
	v := &pipelines.ValidationError{}
	url := pipelines.Required(v, "image_url", in.ImageURL)
	variant := pipelines.Literal(v, "model", in.Model, "General Use (Light)", e.models...)
	res := pipelines.Literal(v, "operating_resolution", in.OperatingResolution, "1024x1024", e.resolutions...)
	j := job{
		outputFormat: pipelines.Literal(v, "output_format", in.OutputFormat, "png", formats...),
		outputMask:   pipelines.Bool(in.OutputMask, false),
		refine:       pipelines.Bool(in.RefineForeground, true),
		syncMode:     pipelines.Bool(in.SyncMode, false),
	}
	if e.v2 {
		j.maskOnly = pipelines.Bool(in.MaskOnly, false)
		if res == "2304x2304" && variant != "General Use (Dynamic)" {
			v.Add("operating_resolution", "value_error", "2304x2304 is only available with model 'General Use (Dynamic)'")
		}
	}
	if err := v.Err(); err != nil {
		return nil, err
	}
	md, err := e.p.resolve("birefnet:"+variant, fmt.Sprintf("BiRefNet model '%s'", variant))
	if err != nil {
		return nil, err
	}
	// Without an explicit operating_resolution the model runs at its native
	// size; only an explicit request for another size is refused.
	if want := fmt.Sprintf("%dx%d", md.size, md.size); in.OperatingResolution != nil && res != want {
		return nil, pipelines.Invalid("operating_resolution", fmt.Sprintf(
			"operating_resolution '%s' is not available on this server: the installed model for '%s' (%s) runs at %s only",
			res, variant, md.m.Name, want))
	}
	j.model = md
	return e.p.run(ctx, req, j, url)
}

// rembgInput is fal's imageutils/rembg input.
type rembgInput struct {
	ImageURL   *string `json:"image_url"`
	SyncMode   *bool   `json:"sync_mode"`
	CropToBBox *bool   `json:"crop_to_bbox"`
}

type rembgEndpoint struct{ p *Pipeline }

func (e *rembgEndpoint) ID() string { return idRembg }

func (e *rembgEndpoint) Run(ctx context.Context, req *pipelines.Request) (any, error) {
	var in rembgInput
	if err := pipelines.DecodeInput(req.Input, &in); err != nil {
		return nil, err
	}
	v := &pipelines.ValidationError{}
	url := pipelines.Required(v, "image_url", in.ImageURL)
	if err := v.Err(); err != nil {
		return nil, err
	}
	md, err := e.p.resolve("rembg", "the background-removal model")
	if err != nil {
		return nil, err
	}
	res, err := e.p.run(ctx, req, job{
		model: md, outputFormat: "png", syncMode: pipelines.Bool(in.SyncMode, false),
		cropToBBox: pipelines.Bool(in.CropToBBox, false),
	}, url)
	if err != nil {
		return nil, err
	}
	return struct {
		Image pipelines.ImageFile `json:"image"`
	}{res.Image}, nil
}
