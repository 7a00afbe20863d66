// Tile blending for tiled upscaling (kernels.CPU BlendTile /
// NormalizeBlend in blend.go). Calling convention: see image.cu. Tiles of
// one canvas must be launched one after another on a stream: a launch
// updates each covered canvas pixel from exactly one thread, so there are
// no atomics and the sums keep the CPU reference's order.

// ramp is blend.go's rampWeights for index i of a tile of length n at
// offset pos in a canvas of length total.
static __device__ __forceinline__ float ramp(int i, int n, int pos, int total, int overlap) {
    float v = 1.0f;
    if (overlap > 0) {
        if (pos > 0 && i < overlap) v = fminf(v, ((float)i + 0.5f) / (float)overlap);
        if (pos + n < total && n - 1 - i < overlap) v = fminf(v, ((float)(n - 1 - i) + 0.5f) / (float)overlap);
    }
    return v;
}

// blend_tile(float* acc, float* wsum, int c, int H, int W,
//   const float* tile, int th, int tw, int x0, int y0, int overlap) (th*tw)
// acc (c planes of H*W) += tile*weight, wsum (H*W) += weight.
extern "C" __global__ void blend_tile(float *acc, float *wsum, int c, int H, int W, const float *tile, int th, int tw,
                                      int x0, int y0, int overlap) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= th * tw) return;
    int x = i % tw, y = i / tw;
    float wt = ramp(x, tw, x0, W, overlap) * ramp(y, th, y0, H, overlap);
    long long plane = (long long)H * W;
    long long p = (long long)(y0 + y) * W + x0 + x;
    wsum[p] += wt;
    for (int k = 0; k < c; k++) acc[k * plane + p] += tile[(long long)k * th * tw + i] * wt;
}

// normalize_blend(float* acc, const float* wsum, int c, int plane) (plane)
// acc /= wsum per plane; uncovered pixels (wsum == 0) become 0.
extern "C" __global__ void normalize_blend(float *acc, const float *wsum, int c, int plane) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= plane) return;
    float s = wsum[i];
    for (int k = 0; k < c; k++) {
        long long j = (long long)k * plane + i;
        acc[j] = s != 0.0f ? acc[j] / s : 0.0f;
    }
}
