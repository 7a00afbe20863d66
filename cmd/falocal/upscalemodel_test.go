package main

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/falocal/falocal/weights"
)

func TestPinUpscalers(t *testing.T) {
	installed := []weights.Manifest{
		{Name: "realesrgan-x4plus", Pipeline: "upscale", Serves: []string{"esrgan:RealESRGAN_x4plus"}},
		{Name: "realesrgan-x4plus-fp16", Pipeline: "upscale", Serves: []string{"esrgan:RealESRGAN_x4plus"}},
		{Name: "realesrgan-x4fast-fp16", Pipeline: "upscale", Serves: []string{"esrgan:RealESRGAN_x4_v3"}},
		{Name: "isnet-general-use", Pipeline: "rembg", Serves: []string{"rembg"}},
	}
	cases := []struct {
		names   string
		want    string // pins, or the error's text
		wantErr bool
	}{
		{"", "map[]", false},
		{"realesrgan-x4plus-fp16", "map[esrgan:RealESRGAN_x4plus:realesrgan-x4plus-fp16]", false},
		{"realesrgan-x4plus-fp16, realesrgan-x4fast-fp16",
			"map[esrgan:RealESRGAN_x4_v3:realesrgan-x4fast-fp16 esrgan:RealESRGAN_x4plus:realesrgan-x4plus-fp16]", false},
		{"realesrgan-x4plus-anime-fp16", "map[]", false}, // not installed: a warning
		{"isnet-general-use", "not an upscaler", true},
		{"realesrgan-x4plus,realesrgan-x4plus-fp16", "both serve RealESRGAN_x4plus", true},
		{"realesrgan-x4plus-fp16,realesrgan-x4plus-fp16", "map[esrgan:RealESRGAN_x4plus:realesrgan-x4plus-fp16]", false},
	}
	for _, tc := range cases {
		t.Run(tc.names, func(t *testing.T) {
			pins := map[string]string{}
			err := pinUpscalers(pins, list(tc.names), installed, slog.New(slog.DiscardHandler))
			if tc.wantErr {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("err %v, want %q", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := fmt.Sprint(pins); got != tc.want {
				t.Errorf("pins %s, want %s", got, tc.want)
			}
		})
	}
}
