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

// imageField is the image input of every background-removal endpoint.
var imageField = pipelines.Field{Name: "image_url", Type: pipelines.String, Title: "Image", Required: true, Media: "image",
	Description: "The image to remove the background from: an http(s) URL this server may read (its own file URLs, allow-listed hosts) or a data: URI.",
	Examples:    []any{"https://storage.googleapis.com/falserverless/model_tests/remove_background/elephant.jpg"}}

// syncField is fal's sync_mode: here outputs are always files on this
// server, so it only changes whether they are returned as data URIs.
var syncField = pipelines.Field{Name: "sync_mode", Type: pipelines.Boolean, Default: false, Advanced: true,
	Description: "Return the output images as data URIs in the response instead of file URLs on this server."}

func (e *birefnet) Describe() pipelines.Description {
	fs := []pipelines.Field{
		imageField,
		{Name: "model", Type: pipelines.String, Enum: e.models, Default: "General Use (Light)",
			Description: "Which BiRefNet variant; each needs its model installed on this server ('General Use (Light)' is served by ISNet by default)."},
		{Name: "operating_resolution", Type: pipelines.String, Enum: e.resolutions, Default: "1024x1024",
			Description: "The resolution the model runs at; an installed model runs at its own resolution only."},
		{Name: "output_format", Type: pipelines.String, Enum: formats, Default: "png", Description: "The format of the output image."},
		{Name: "output_mask", Type: pipelines.Boolean, Default: false, Description: "Also return the mask."},
		{Name: "refine_foreground", Type: pipelines.Boolean, Default: true, Advanced: true,
			Description: "Refine the foreground's colours near the edges, using the mask."},
		syncField,
	}
	if e.v2 {
		fs = append(fs, pipelines.Field{Name: "mask_only", Type: pipelines.Boolean, Default: false, Advanced: true,
			Description: "Return the mask only, as the image."})
	}
	title := "Background removal (BiRefNet)"
	if e.v2 {
		title = "Background removal (BiRefNet v2)"
	}
	return pipelines.Description{Title: title, Category: "image-to-image",
		Summary: "Removes the background of an image, with BiRefNet's options: model variant, resolution, format, mask.",
		Input:   pipelines.Schema{Fields: fs}, Output: result{}}
}

func (e *birefnet) Run(ctx context.Context, req *pipelines.Request) (any, error) {
	var in birefnetInput
	given, err := e.Describe().Input.Decode(req.Input, &in)
	if err != nil {
		return nil, err
	}
	v := &pipelines.ValidationError{}
	url, variant, res := *in.ImageURL, *in.Model, *in.OperatingResolution
	j := job{outputFormat: *in.OutputFormat, outputMask: *in.OutputMask, refine: *in.RefineForeground, syncMode: *in.SyncMode}
	if e.v2 {
		j.maskOnly = *in.MaskOnly
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
	if want := fmt.Sprintf("%dx%d", md.size, md.size); given["operating_resolution"] && res != want {
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

func (e *rembgEndpoint) Describe() pipelines.Description {
	return pipelines.Description{Title: "Background removal", Category: "image-to-image",
		Summary: "Removes the background of an image and returns a PNG with transparency.",
		Input: pipelines.Schema{Fields: []pipelines.Field{imageField, syncField,
			{Name: "crop_to_bbox", Type: pipelines.Boolean, Default: false,
				Description: "Crop the result to the bounding box of the foreground."}}},
		Output: rembgOutput{}}
}

// rembgOutput is fal's imageutils/rembg output.
type rembgOutput struct {
	Image pipelines.ImageFile `json:"image"`
}

func (e *rembgEndpoint) Run(ctx context.Context, req *pipelines.Request) (any, error) {
	var in rembgInput
	if _, err := e.Describe().Input.Decode(req.Input, &in); err != nil {
		return nil, err
	}
	url := *in.ImageURL
	md, err := e.p.resolve("rembg", "the background-removal model")
	if err != nil {
		return nil, err
	}
	res, err := e.p.run(ctx, req, job{
		model: md, outputFormat: "png", syncMode: *in.SyncMode, cropToBBox: *in.CropToBBox,
	}, url)
	if err != nil {
		return nil, err
	}
	return rembgOutput{res.Image}, nil
}
