package api

import (
	"testing"

	"github.com/falocal/falocal/pipelines"
)

func TestSchemaName(t *testing.T) {
	for id, want := range map[string]string{
		"fal-ai/flux/dev":                "FluxDev",
		"fal-ai/imageutils/rembg":        "ImageutilsRembg",
		"fal-ai/kokoro/american-english": "KokoroAmericanEnglish",
		"fal-ai/stable-diffusion-v15":    "StableDiffusionV15",
		"fal-ai/birefnet/v2":             "BirefnetV2",
	} {
		if got := schemaName(id); got != want {
			t.Errorf("schemaName(%q) = %q, want %q", id, got, want)
		}
	}
}

func TestJSVarAndTitle(t *testing.T) {
	if got := jsVar("image_url"); got != "imageUrl" {
		t.Errorf("jsVar = %q", got)
	}
	if got := fieldTitle(pipelines.Field{Name: "num_inference_steps"}); got != "Num Inference Steps" {
		t.Errorf("fieldTitle = %q", got)
	}
	if got := fieldTitle(pipelines.Field{Name: "image_url", Title: "Image"}); got != "Image" {
		t.Errorf("fieldTitle = %q", got)
	}
}
