// Sampler arithmetic between denoiser calls (kernels.CPU Guidance / Axpby
// in step.go). Calling convention: see image.cu. All element-wise, so dst
// may be the same buffer as any input.

// cfg_guidance(float* dst, const float* uncond, const float* cond,
//   float g, int n)                                               (n)
// Classifier-free guidance: dst = u + g*(c - u).
extern "C" __global__ void cfg_guidance(float *dst, const float *uncond, const float *cond, float g, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float u = uncond[i];
    dst[i] = u + g * (cond[i] - u);
}

// axpby(float* dst, const float* x, float a, const float* y, float b,
//   const float* z, float c, int n)                               (n)
// dst = x*a + y*b, plus z*c when z is not null (pass a 0 pointer for the
// two-term form). One fused pass covers the Euler, DDIM and flow-matching
// updates, which are all such linear combinations of the latent, the model
// output and (for some) a noise sample.
extern "C" __global__ void axpby(float *dst, const float *x, float a, const float *y, float b, const float *z, float c,
                                 int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float v = x[i] * a + y[i] * b;
    if (z) v += z[i] * c;
    dst[i] = v;
}
