// Image kernels: uint8 HWC image -> normalised NCHW tensor (fp32 / fp16)
// with bilinear resize, float plane resize, mask resize with
// normalise-and-clamp, and alpha compositing. Each mirrors the kernels.CPU
// method of the same name (resize.go, mask.go, compose.go).
//
// Calling convention shared by every kernels/*.cu file (kernels/ptx.go
// lists the entries and the test checks it against the PTX):
//   - extern "C", so the PTX entry names are the plain C names;
//   - 1-D grid, one thread per output element: i = blockIdx.x*blockDim.x +
//     threadIdx.x, return when i >= the element count noted per kernel;
//   - parameters are only 64-bit device pointers, C int (32-bit) and C
//     float (32-bit). gorgonia.org/cu copies 8 bytes from every parameter
//     pointer (style.md §5), so Go must give each argument its own 8-byte
//     slot holding a value of exactly the C type: int32 bits for int,
//     float32 bits for float (never float64 or a Go int reinterpreted),
//     a DevicePtr for pointers. Struct parameters are not used.
//   - compiled with --fmad=false so products and sums round separately,
//     as in the Go reference, and results can match it bit for bit
//     (these kernels are memory-bound, FMA would not make them faster).
// No headers are included so that both nvcc and NVRTC compile the file
// unchanged.

typedef unsigned char u8;
typedef unsigned short u16;

// tools/cuda/emu compiles these files as host C++ to check them against
// the Go reference without a GPU; it supplies its own f32_to_f16_bits.
#ifndef FALOCAL_EMU
static __device__ __forceinline__ u16 f32_to_f16_bits(float f) {
    u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); // round to nearest even
    return h;
}
#endif

// axis_map gives, for output coordinate x, the two source indices and the
// weight of the second, exactly as resize.go's newAxisMap: half-pixel
// centres, clamped to the edge, computed in double so the weight is
// bit-identical with the CPU reference.
static __device__ __forceinline__ void axis_map(int x, int src, int dst, int *i0, int *i1, float *t) {
    double f = ((double)x + 0.5) * ((double)src / (double)dst) - 0.5;
    double fl = floor(f);
    int i = (int)fl;
    *t = (float)(f - fl);
    *i0 = min(max(i, 0), src - 1);
    *i1 = min(max(i + 1, 0), src - 1);
}

// to_tensor_px computes the three normalised values of output pixel
// (ox, oy); the rounding sequence is the one of resize.go's imageToTensor
// (horizontal interpolation per row, vertical blend, then v*a + b with a
// and b folded in double).
static __device__ __forceinline__ void to_tensor_px(float out[3], const u8 *src, int w, int h, int stride, int c,
                                                    int outW, int outH, int ox, int oy, float scale,
                                                    float m0, float m1, float m2, float s0, float s1, float s2) {
    int x0, x1, y0, y1;
    float tx, ty;
    axis_map(ox, w, outW, &x0, &x1, &tx);
    axis_map(oy, h, outH, &y0, &y1, &ty);
    if (y1 == y0) ty = 0.0f; // both samples are the same row
    float ux = 1.0f - tx, uy = 1.0f - ty;
    const u8 *r0 = src + (long long)y0 * stride;
    const u8 *r1 = src + (long long)y1 * stride;
    float mean[3] = {m0, m1, m2}, sd[3] = {s0, s1, s2};
    float v[3];
    int nc = c == 1 ? 1 : 3; // gray is interpolated once, written three times
    for (int k = 0; k < nc; k++) {
        float p0 = (float)r0[x0 * c + k] * ux + (float)r0[x1 * c + k] * tx;
        float p1 = (float)r1[x0 * c + k] * ux + (float)r1[x1 * c + k] * tx;
        v[k] = p0 * uy + p1 * ty;
    }
    for (int k = 0; k < 3; k++) {
        float a = (float)(1.0 / ((double)scale * (double)sd[k]));
        float b = (float)(-(double)mean[k] / (double)sd[k]);
        out[k] = v[nc == 1 ? 0 : k] * a + b;
    }
}

// image_to_tensor(float* dst, const u8* src, int w, int h, int stride,
//   int c, int outW, int outH, float scale, float m0, float m1, float m2,
//   float s0, float s1, float s2)                              (outW*outH)
// dst is 3 planes of outH*outW: (v/scale - mean[k]) / std[k].
extern "C" __global__ void image_to_tensor(float *dst, const u8 *src, int w, int h, int stride, int c, int outW,
                                           int outH, float scale, float m0, float m1, float m2, float s0, float s1,
                                           float s2) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    int plane = outW * outH;
    if (i >= plane) return;
    float o[3];
    to_tensor_px(o, src, w, h, stride, c, outW, outH, i % outW, i / outW, scale, m0, m1, m2, s0, s1, s2);
    dst[i] = o[0];
    dst[plane + i] = o[1];
    dst[2LL * plane + i] = o[2];
}

// image_to_tensor_f16: image_to_tensor writing binary16 bits (u16* dst),
// rounded to nearest even.                                     (outW*outH)
extern "C" __global__ void image_to_tensor_f16(u16 *dst, const u8 *src, int w, int h, int stride, int c, int outW,
                                               int outH, float scale, float m0, float m1, float m2, float s0,
                                               float s1, float s2) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    int plane = outW * outH;
    if (i >= plane) return;
    float o[3];
    to_tensor_px(o, src, w, h, stride, c, outW, outH, i % outW, i / outW, scale, m0, m1, m2, s0, s1, s2);
    dst[i] = f32_to_f16_bits(o[0]);
    dst[plane + i] = f32_to_f16_bits(o[1]);
    dst[2LL * plane + i] = f32_to_f16_bits(o[2]);
}

// resize_px is resize.go's ResizePlane for one output pixel. A zero weight
// takes the sample as is instead of multiplying the other one by 0, so an
// Inf next to an exact copy cannot turn it into NaN.
static __device__ __forceinline__ float resize_px(const float *src, int sw, int sh, int dw, int dh, int ox, int oy) {
    int x0, x1, y0, y1;
    float tx, ty;
    axis_map(ox, sw, dw, &x0, &x1, &tx);
    axis_map(oy, sh, dh, &y0, &y1, &ty);
    const float *r0 = src + (long long)y0 * sw;
    float p0 = tx == 0.0f ? r0[x0] : r0[x0] * (1.0f - tx) + r0[x1] * tx;
    if (y1 == y0 || ty == 0.0f) return p0;
    const float *r1 = src + (long long)y1 * sw;
    float p1 = tx == 0.0f ? r1[x0] : r1[x0] * (1.0f - tx) + r1[x1] * tx;
    return p0 * (1.0f - ty) + p1 * ty;
}

// resize_plane(float* dst, int dw, int dh, const float* src, int sw,
//   int sh)                                                    (dw*dh)
extern "C" __global__ void resize_plane(float *dst, int dw, int dh, const float *src, int sw, int sh) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= dw * dh) return;
    dst[i] = resize_px(src, sw, sh, dw, dh, i % dw, i / dw);
}

// resize_mask(float* dst, int dw, int dh, const float* src, int sw,
//   int sh, float lo, float hi)                                (dw*dh)
// resize_plane followed by (v-lo)/(hi-lo) clamped to [0,1], NaN -> 0: a
// model's raw mask to an alpha matte at the image size in one pass.
extern "C" __global__ void resize_mask(float *dst, int dw, int dh, const float *src, int sw, int sh, float lo,
                                       float hi) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= dw * dh) return;
    float v = (resize_px(src, sw, sh, dw, dh, i % dw, i / dw) - lo) / (hi - lo);
    if (!(v > 0.0f)) v = 0.0f; // negated so NaN goes to 0
    else if (v > 1.0f) v = 1.0f;
    dst[i] = v;
}

// compose_alpha(u8* dst, const u8* src, int w, int h, int stride, int c,
//   const float* mask)                                         (w*h)
// dst is packed non-premultiplied RGBA; alpha = round(clamp(mask)*255),
// times source alpha/255 when c == 4.
extern "C" __global__ void compose_alpha(u8 *dst, const u8 *src, int w, int h, int stride, int c, const float *mask) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= w * h) return;
    int x = i % w, y = i / w;
    float m = mask[i];
    if (!(m > 0.0f)) m = 0.0f;
    else if (m > 1.0f) m = 1.0f;
    const u8 *p = src + (long long)y * stride + x * c;
    u8 *o = dst + 4LL * i;
    float a;
    if (c == 1) {
        o[0] = o[1] = o[2] = p[0];
        a = m * 255.0f;
    } else {
        o[0] = p[0];
        o[1] = p[1];
        o[2] = p[2];
        a = c == 4 ? m * (float)p[3] : m * 255.0f;
    }
    o[3] = (u8)(a + 0.5f); // a in [0,255]; truncation after +0.5 rounds half up
}
