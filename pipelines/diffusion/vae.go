package diffusion

import (
	"context"
	"fmt"
	"math"
)

// vaeFactor is the VAE's spatial downscale (8 in every supported family).
const vaeFactor = 8

// decode turns latents [n, C, h, w] into NHWC images in [0, 1]: unscale
// (and unshift, FLUX), the VAE decoder, then (x/2 + 0.5) clamped, as
// diffusers' image processor does. Large images decode in overlapping
// tiles so the decoder's memory stays bounded.
func (m *Model) decode(ctx context.Context, latents []float32, n, h, w int) ([][]float32, error) {
	c := m.LatentChannels
	z := make([]float32, len(latents))
	for i, v := range latents {
		z[i] = float32(float64(v)/m.VAEScale + m.VAEShift)
	}
	out := make([][]float32, n)
	per := c * h * w
	for k := 0; k < n; k++ {
		img, err := m.decodeOne(ctx, z[k*per:(k+1)*per], h, w)
		if err != nil {
			return nil, err
		}
		H, W := h*vaeFactor, w*vaeFactor
		nhwc := make([]float32, H*W*3)
		for ch := 0; ch < 3; ch++ {
			for p := 0; p < H*W; p++ {
				v := img[ch*H*W+p]/2 + 0.5
				nhwc[p*3+ch] = min(max(v, 0), 1)
			}
		}
		out[k] = nhwc
	}
	return out, nil
}

// tileLatent is the largest latent side decoded in one piece (1024 px);
// tileOverlap the latent pixels neighbouring tiles share. Variables so
// that tests can tile small images.
var tileLatent, tileOverlap = 128, 16

// decodeOne decodes one latent [C, h, w] to CHW pixels in [-1, 1]. Above
// tileLatent it decodes overlapping tiles and blends them linearly across
// the overlap, so no seam shows.
func (m *Model) decodeOne(ctx context.Context, z []float32, h, w int) ([]float32, error) {
	c := m.LatentChannels
	if h <= tileLatent && w <= tileLatent {
		res, err := m.run(ctx, "vae_decoder", map[string]*tensorT{"latent_sample": tensor(z, 1, int64(c), int64(h), int64(w))})
		if err != nil {
			return nil, err
		}
		px, err := f32(res["sample"])
		if err != nil {
			return nil, err
		}
		if len(px) != 3*h*w*vaeFactor*vaeFactor {
			return nil, fmt.Errorf("vae decoder gave %d values for a %d×%d latent", len(px), h, w)
		}
		return px, nil
	}
	overlap := tileOverlap
	H, W := h*vaeFactor, w*vaeFactor
	acc := make([]float64, 3*H*W)
	wsum := make([]float64, H*W)
	for _, y0 := range tileStarts(h, tileLatent, overlap) {
		for _, x0 := range tileStarts(w, tileLatent, overlap) {
			th, tw := min(tileLatent, h-y0), min(tileLatent, w-x0)
			tile := make([]float32, c*th*tw)
			for ch := 0; ch < c; ch++ {
				for y := 0; y < th; y++ {
					copy(tile[(ch*th+y)*tw:(ch*th+y+1)*tw], z[(ch*h+y0+y)*w+x0:(ch*h+y0+y)*w+x0+tw])
				}
			}
			px, err := m.decodeOne(ctx, tile, th, tw)
			if err != nil {
				return nil, err
			}
			TH, TW := th*vaeFactor, tw*vaeFactor
			for y := 0; y < TH; y++ {
				wy := ramp(y, TH, y0 > 0, y0+th < h, overlap*vaeFactor)
				for x := 0; x < TW; x++ {
					wt := wy * ramp(x, TW, x0 > 0, x0+tw < w, overlap*vaeFactor)
					p := (y0*vaeFactor+y)*W + x0*vaeFactor + x
					wsum[p] += wt
					for ch := 0; ch < 3; ch++ {
						acc[ch*H*W+p] += wt * float64(px[(ch*TH+y)*TW+x])
					}
				}
			}
		}
	}
	out := make([]float32, 3*H*W)
	for ch := 0; ch < 3; ch++ {
		for p := 0; p < H*W; p++ {
			out[ch*H*W+p] = float32(acc[ch*H*W+p] / wsum[p])
		}
	}
	return out, nil
}

// tileStarts covers n with tiles of size t overlapping by ov.
func tileStarts(n, t, ov int) []int {
	if n <= t {
		return []int{0}
	}
	step := t - ov
	k := int(math.Ceil(float64(n-t)/float64(step))) + 1
	starts := make([]int, k)
	for i := range starts {
		starts[i] = min(i*step, n-t)
	}
	return starts
}

// ramp weighs a tile's pixel by its distance into the overlap on the sides
// that have a neighbour (a linear cross-fade).
func ramp(i, n int, before, after bool, ov int) float64 {
	w := 1.0
	if before && i < ov {
		w = math.Min(w, (float64(i)+0.5)/float64(ov))
	}
	if after && i >= n-ov {
		w = math.Min(w, (float64(n-i)-0.5)/float64(ov))
	}
	return w
}

// encode turns NCHW images in [-1, 1] into scaled latents, sampling the
// latent distribution with noise drawn from j.Noise as diffusers'
// latent_dist.sample does (mean + exp(logvar/2)·ε, logvar clamped to
// [-30, 20]).
func (m *Model) encode(ctx context.Context, img []float32, n, H, W int, noise Noise) ([]float32, error) {
	res, err := m.run(ctx, "vae_encoder", map[string]*tensorT{"sample": tensor(img, int64(n), 3, int64(H), int64(W))})
	if err != nil {
		return nil, err
	}
	c, h, w := m.LatentChannels, H/vaeFactor, W/vaeFactor
	if res["latent_parameters"] == nil && res["latent_sample"] != nil {
		// older optimum exports sample inside the graph (RandomNormalLike):
		// the draw is the runtime's, not the request seed's
		s, err := f32(res["latent_sample"])
		if err != nil || len(s) != n*c*h*w {
			return nil, fmt.Errorf("vae_encoder: latent_sample: %d values, want %d (%v)", len(s), n*c*h*w, err)
		}
		out := make([]float32, len(s))
		for i, v := range s {
			out[i] = float32((float64(v) - m.VAEShift) * m.VAEScale)
		}
		return out, nil
	}
	params, err := f32(res["latent_parameters"])
	if err != nil {
		return nil, fmt.Errorf("vae_encoder: latent_parameters: %w", err)
	}
	if len(params) != n*2*c*h*w {
		return nil, fmt.Errorf("vae_encoder gave %d parameters, want %d", len(params), n*2*c*h*w)
	}
	eps := noise.Normal(n * c * h * w)
	out := make([]float32, n*c*h*w)
	for k := 0; k < n; k++ {
		for i := 0; i < c*h*w; i++ {
			mean := params[k*2*c*h*w+i]
			logvar := min(max(params[k*2*c*h*w+c*h*w+i], -30), 20)
			std := float32(math.Exp(0.5 * float64(logvar)))
			v := mean + std*eps[k*c*h*w+i]
			out[k*c*h*w+i] = float32((float64(v) - m.VAEShift) * m.VAEScale)
		}
	}
	return out, nil
}
