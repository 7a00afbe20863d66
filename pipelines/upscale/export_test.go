package upscale

import "github.com/falocal/falocal/weights"

// AutoTile is the automatic tile side for a w×h image on a network of
// architecture arch (the manifests' tile_pad of 10).
func AutoTile(arch string, w, h int) int {
	md, err := parseModel(weights.Manifest{Name: "m", Params: map[string]string{"input": "i", "output": "o", "scale": "4", "arch": arch}})
	if err != nil {
		panic(err)
	}
	return tileSize(0, md, w, h)
}
