// Image kernels: uint8 HWC image -> normalised NCHW tensor (fp32 / fp16)
// with bilinear resize, float plane resize, mask resize with
// normalise-and-clamp, and alpha compositing. Each mirrors the kernels.CPU
// method of the same name (resize.go, mask.go, compose.go).
//
// Calling convention shared by every kernels/*.cu file (kernels/ptx.go
// lists the entries and the test checks it against the PTX):
//   - extern "C", so the PTX entry names are the plain C names;
//   - 1-D grid of 256-thread blocks; the launch's thread count is noted per
//     kernel (in parentheses after its signature). Most kernels take one
//     thread per output element: i = blockIdx.x*blockDim.x + threadIdx.x,
//     return when i >= that count. convert.cu's take one thread per 8
//     elements and compose_alpha one per 4 pixels, and the "grid-stride"
//     kernels loop over their elements with a stride of
//     gridDim.x*blockDim.x, so any thread count is correct and the
//     launcher picks it (kernels/cuda);
//   - pointers are whole cuMemAlloc buffers (256-byte aligned), which the
//     8- and 16-byte vector accesses rely on;
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

// px_walk is the grid-stride loop of the image kernels: the thread with
// global index t visits pixels t, t+T, t+2T, ... below n (T = gridDim.x *
// blockDim.x, the launch's thread count, which may be smaller than n) of a
// raster w pixels wide, keeping x = i % w and y = i / w up to date with one
// add and compare instead of an integer division per pixel. What is uniform
// over the launch (the axis ratios, the normalisation constants) is computed
// once per thread before the loop.
struct px_walk {
    int i, x, y, n, w, step, dx, dy;
    __device__ px_walk(int n_, int w_) : n(n_), w(w_) {
        i = blockIdx.x * blockDim.x + threadIdx.x;
        step = gridDim.x * blockDim.x;
        x = i % w;
        y = i / w;
        dx = step % w;
        dy = step / w;
    }
    __device__ bool valid() const { return i < n; }
    // next moves to the thread's next pixel; false when it is past n. The
    // test is i >= n - step, not i + step >= n, so it cannot overflow.
    __device__ bool next() {
        if (i >= n - step) return false;
        i += step;
        x += dx;
        y += dy;
        if (x >= w) {
            x -= w;
            y++;
        }
        return true;
    }
};

// axis_ratio and axis_map give, for output coordinate x, the two source
// indices and the weight of the second, exactly as resize.go's newAxisMap
// (scale = src/dst once, then f = (x+0.5)*scale - 0.5 per coordinate):
// half-pixel centres, clamped to the edge, computed in double so the weight
// is bit-identical with the CPU reference.
static __device__ __forceinline__ double axis_ratio(int src, int dst) { return (double)src / (double)dst; }

static __device__ __forceinline__ void axis_map(int x, int src, double ratio, int *i0, int *i1, float *t) {
    double f = ((double)x + 0.5) * ratio - 0.5;
    double fl = floor(f);
    int i = (int)fl;
    *t = (float)(f - fl);
    *i0 = min(max(i, 0), src - 1);
    *i1 = min(max(i + 1, 0), src - 1);
}

// tensor_norm holds what every pixel of image_to_tensor shares: the axis
// ratios and out = v*a[k] + b[k], a and b folded in double exactly as
// resize.go's imageToTensor does.
struct tensor_norm {
    double rx, ry;
    float a[3], b[3];
};

static __device__ __forceinline__ tensor_norm make_norm(int w, int h, int outW, int outH, float scale, float m0,
                                                        float m1, float m2, float s0, float s1, float s2) {
    tensor_norm p;
    p.rx = axis_ratio(w, outW);
    p.ry = axis_ratio(h, outH);
    float mean[3] = {m0, m1, m2}, sd[3] = {s0, s1, s2};
    for (int k = 0; k < 3; k++) {
        p.a[k] = (float)(1.0 / ((double)scale * (double)sd[k]));
        p.b[k] = (float)(-(double)mean[k] / (double)sd[k]);
    }
    return p;
}

// x_samples is axis_map for one output column, with the source indices
// already multiplied by c; the grid-stride loop keeps it while its column
// does not change (always, when the thread count is a multiple of the
// output width, as kernels/cuda launches them).
struct x_samples {
    int x, o0, o1;
    float t;
};

static __device__ __forceinline__ void x_samples_at(x_samples &xs, int x, int src, int c, double ratio) {
    int x0, x1;
    axis_map(x, src, ratio, &x0, &x1, &xs.t);
    xs.x = x;
    xs.o0 = x0 * c;
    xs.o1 = x1 * c;
}

// to_tensor_px computes the three normalised values of output pixel
// (xs.x, y) from its source rows r0 = y0 and r1 = y1 and vertical weight
// ty; the rounding sequence is the one of resize.go's imageToTensor
// (horizontal interpolation per row, vertical blend, then v*a + b).
static __device__ __forceinline__ void to_tensor_px(float out[3], const u8 *r0, const u8 *r1, float ty, int c,
                                                    const tensor_norm &p, const x_samples &xs) {
    float tx = xs.t;
    float ux = 1.0f - tx, uy = 1.0f - ty;
    float v[3];
    int nc = c == 1 ? 1 : 3; // gray is interpolated once, written three times
    for (int k = 0; k < nc; k++) {
        float p0 = (float)r0[xs.o0 + k] * ux + (float)r0[xs.o1 + k] * tx;
        float p1 = (float)r1[xs.o0 + k] * ux + (float)r1[xs.o1 + k] * tx;
        v[k] = p0 * uy + p1 * ty;
    }
    for (int k = 0; k < 3; k++) out[k] = v[nc == 1 ? 0 : k] * p.a[k] + p.b[k];
}

static __device__ __forceinline__ void store_px(float *d, float v) { *d = v; }
static __device__ __forceinline__ void store_px(u16 *d, float v) { *d = f32_to_f16_bits(v); }

// store_pair writes two adjacent elements with one 8-byte (float) or
// 4-byte (binary16, the first in the low half) store; d must be aligned
// to it.
struct alignas(8) f32x2 {
    float x, y;
};
static __device__ __forceinline__ void store_pair(float *d, float a, float b) {
    f32x2 v;
    v.x = a;
    v.y = b;
    *(f32x2 *)d = v;
}
static __device__ __forceinline__ void store_pair(u16 *d, float a, float b) {
    *(unsigned *)d = (unsigned)f32_to_f16_bits(a) | ((unsigned)f32_to_f16_bits(b) << 16);
}

// to_tensor walks pairs of horizontally adjacent output pixels (columns
// 2*px and 2*px+1 of a row; the second is missing at the end of a row when
// outW is odd): the pair shares the vertical map and the row pointers, and
// when outW is even (so every pair starts at an even index of every plane)
// each plane gets one store of both values instead of two. xa and xb cache
// the two columns' maps (with a stride of whole rows, as kernels/cuda
// launches it, they never change).
template <class T>
static __device__ __forceinline__ void to_tensor(T *dst, const u8 *src, int w, int h, int stride, int c, int outW,
                                                 int outH, float scale, float m0, float m1, float m2, float s0,
                                                 float s1, float s2) {
    int plane = outW * outH;
    int pw = (outW + 1) / 2; // pairs per row
    px_walk q(pw * outH, pw);
    if (!q.valid()) return;
    tensor_norm p = make_norm(w, h, outW, outH, scale, m0, m1, m2, s0, s1, s2);
    bool even = (outW & 1) == 0;
    x_samples xa, xb;
    xa.x = -1;
    do {
        int x = 2 * q.x;
        if (x != xa.x) {
            x_samples_at(xa, x, w, c, p.rx);
            x_samples_at(xb, x + 1, w, c, p.rx); // x + 1 == outW: mapped, never used
        }
        int y0, y1;
        float ty;
        axis_map(q.y, h, p.ry, &y0, &y1, &ty);
        if (y1 == y0) ty = 0.0f; // both samples are the same row
        const u8 *r0 = src + (long long)y0 * stride;
        const u8 *r1 = src + (long long)y1 * stride;
        int i = q.y * outW + x;
        float oa[3], ob[3];
        to_tensor_px(oa, r0, r1, ty, c, p, xa);
        if (even) {
            to_tensor_px(ob, r0, r1, ty, c, p, xb);
            store_pair(dst + i, oa[0], ob[0]);
            store_pair(dst + plane + i, oa[1], ob[1]);
            store_pair(dst + 2LL * plane + i, oa[2], ob[2]);
            continue;
        }
        store_px(dst + i, oa[0]);
        store_px(dst + plane + i, oa[1]);
        store_px(dst + 2LL * plane + i, oa[2]);
        if (x + 1 < outW) {
            to_tensor_px(ob, r0, r1, ty, c, p, xb);
            store_px(dst + i + 1, ob[0]);
            store_px(dst + plane + i + 1, ob[1]);
            store_px(dst + 2LL * plane + i + 1, ob[2]);
        }
    } while (q.next());
}

// image_to_tensor(float* dst, const u8* src, int w, int h, int stride,
//   int c, int outW, int outH, float scale, float m0, float m1, float m2,
//   float s0, float s1, float s2)      (grid-stride over pairs, any count)
// dst is 3 planes of outH*outW: (v/scale - mean[k]) / std[k]. Grid-stride
// over the ceil(outW/2)*outH pixel pairs (px_walk over a raster
// ceil(outW/2) wide): kernels/cuda launches one thread per pair up to 2^18
// pairs and beyond that fewer, down to one per 16 pairs, rounded up to
// whole rows so each thread keeps its columns.
extern "C" __global__ void image_to_tensor(float *dst, const u8 *src, int w, int h, int stride, int c, int outW,
                                           int outH, float scale, float m0, float m1, float m2, float s0, float s1,
                                           float s2) {
    to_tensor(dst, src, w, h, stride, c, outW, outH, scale, m0, m1, m2, s0, s1, s2);
}

// image_to_tensor_f16: image_to_tensor writing binary16 bits (u16* dst),
// rounded to nearest even.             (grid-stride over pairs, any count)
extern "C" __global__ void image_to_tensor_f16(u16 *dst, const u8 *src, int w, int h, int stride, int c, int outW,
                                               int outH, float scale, float m0, float m1, float m2, float s0,
                                               float s1, float s2) {
    to_tensor(dst, src, w, h, stride, c, outW, outH, scale, m0, m1, m2, s0, s1, s2);
}

// resize_px is resize.go's ResizePlane for one output pixel (xs.x, oy)
// (xs with c = 1). A zero weight takes the sample as is instead of
// multiplying the other one by 0, so an Inf next to an exact copy cannot
// turn it into NaN.
static __device__ __forceinline__ float resize_px(const float *src, int sw, int sh, double ry, const x_samples &xs,
                                                  int oy) {
    int x0 = xs.o0, x1 = xs.o1, y0, y1;
    float tx = xs.t, ty;
    axis_map(oy, sh, ry, &y0, &y1, &ty);
    const float *r0 = src + (long long)y0 * sw;
    float p0 = tx == 0.0f ? r0[x0] : r0[x0] * (1.0f - tx) + r0[x1] * tx;
    if (y1 == y0 || ty == 0.0f) return p0;
    const float *r1 = src + (long long)y1 * sw;
    float p1 = tx == 0.0f ? r1[x0] : r1[x0] * (1.0f - tx) + r1[x1] * tx;
    return p0 * (1.0f - ty) + p1 * ty;
}

// resize_plane(float* dst, int dw, int dh, const float* src, int sw,
//   int sh)                                      (grid-stride, any count)
// Grid-stride over the dw*dh pixels, launched as image_to_tensor.
extern "C" __global__ void resize_plane(float *dst, int dw, int dh, const float *src, int sw, int sh) {
    px_walk q(dw * dh, dw);
    if (!q.valid()) return;
    double rx = axis_ratio(sw, dw), ry = axis_ratio(sh, dh);
    x_samples xs;
    x_samples_at(xs, q.x, sw, 1, rx);
    do {
        if (q.x != xs.x) x_samples_at(xs, q.x, sw, 1, rx);
        dst[q.i] = resize_px(src, sw, sh, ry, xs, q.y);
    } while (q.next());
}

// resize_mask(float* dst, int dw, int dh, const float* src, int sw,
//   int sh, float lo, float hi)                  (grid-stride, any count)
// resize_plane followed by (v-lo)/(hi-lo) clamped to [0,1], NaN -> 0: a
// model's raw mask to an alpha matte at the image size in one pass.
extern "C" __global__ void resize_mask(float *dst, int dw, int dh, const float *src, int sw, int sh, float lo,
                                       float hi) {
    px_walk q(dw * dh, dw);
    if (!q.valid()) return;
    double rx = axis_ratio(sw, dw), ry = axis_ratio(sh, dh);
    x_samples xs;
    x_samples_at(xs, q.x, sw, 1, rx);
    do {
        if (q.x != xs.x) x_samples_at(xs, q.x, sw, 1, rx);
        float v = (resize_px(src, sw, sh, ry, xs, q.y) - lo) / (hi - lo);
        if (!(v > 0.0f)) v = 0.0f; // negated so NaN goes to 0
        else if (v > 1.0f) v = 1.0f;
        dst[q.i] = v;
    } while (q.next());
}

// 16-byte vectors (also in convert.cu; the host emulation compiles both
// files as one unit, hence the guard).
#ifndef FALOCAL_VEC16
#define FALOCAL_VEC16
struct alignas(16) f32x4 {
    float x, y, z, w;
};
struct alignas(16) u32x4 {
    unsigned x, y, z, w;
};
#endif

// compose_px is one RGBA pixel of compose_alpha as a 32-bit word, R in
// the low byte (the GPU, like the emulating host, is little-endian).
static __device__ __forceinline__ unsigned compose_px(const u8 *__restrict__ src, int stride, int c, int x, int y,
                                                      float m) {
    if (!(m > 0.0f)) m = 0.0f;
    else if (m > 1.0f) m = 1.0f;
    const u8 *p = src + (long long)y * stride + x * c;
    unsigned rgb;
    float a;
    if (c == 1) {
        rgb = (unsigned)p[0] * 0x010101u;
        a = m * 255.0f;
    } else {
        rgb = (unsigned)p[0] | ((unsigned)p[1] << 8) | ((unsigned)p[2] << 16);
        a = c == 4 ? m * (float)p[3] : m * 255.0f;
    }
    // a in [0,255]; truncation after +0.5 rounds half up
    return rgb | ((unsigned)(u8)(a + 0.5f) << 24);
}

// compose_alpha(u8* dst, const u8* src, int w, int h, int stride, int c,
//   const float* mask)                                     (ceil(w*h/4))
// dst is packed non-premultiplied RGBA; alpha = round(clamp(mask)*255),
// times source alpha/255 when c == 4. Each thread does 4 consecutive
// pixels (possibly across a row end): one 16-byte mask load and one
// 16-byte store of the four RGBA words; the thread whose group runs past
// w*h does the remaining pixels one 4-byte store at a time. Like
// convert.cu it assumes dst and mask 16-byte aligned: kernels/cuda passes
// whole cuMemAlloc buffers (256-byte aligned).
extern "C" __global__ void compose_alpha(u8 *__restrict__ dst, const u8 *__restrict__ src, int w, int h, int stride,
                                         int c, const float *__restrict__ mask) {
    int n = w * h;
    long long e = 4LL * (blockIdx.x * blockDim.x + threadIdx.x);
    if (e >= n) return;
    int i = (int)e, x = i % w, y = i / w;
    if (i <= n - 4) { // a whole group
        f32x4 m = *(const f32x4 *)(mask + i);
        float mv[4] = {m.x, m.y, m.z, m.w};
        unsigned o[4];
        for (int k = 0; k < 4; k++) {
            o[k] = compose_px(src, stride, c, x, y, mv[k]);
            if (++x == w) {
                x = 0;
                y++;
            }
        }
        u32x4 v;
        v.x = o[0];
        v.y = o[1];
        v.z = o[2];
        v.w = o[3];
        *(u32x4 *)(dst + 4LL * i) = v;
        return;
    }
    for (; i < n; i++) {
        *(unsigned *)(dst + 4LL * i) = compose_px(src, stride, c, x, y, mask[i]);
        if (++x == w) {
            x = 0;
            y++;
        }
    }
}
