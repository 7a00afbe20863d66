// binary16 <-> float32 conversion (kernels.CPU F32ToF16 / F16ToF32 in
// f16.go). Calling convention: see image.cu. u16 holds binary16 bits.
// NaN: the PTX cvt returns the canonical NaN 0x7fff where the CPU
// reference keeps the top payload bits; every other input, subnormals and
// overflow to Inf included, gives the same bits.
//
// Each thread converts CONVERT_PER_THREAD (8) consecutive elements with
// 16-byte accesses, so it keeps 16 (f16 in) or 32 (f32 in) bytes of loads
// in flight instead of 2 or 4: thread t owns elements [8t, 8t+8), and the
// thread whose group runs past n converts the remaining n % 8 one by one.
// The launch has ceil(n/8) threads.
//
// Alignment assumption: dst and src are 16-byte aligned. kernels/cuda only
// passes whole buffers from the start (cuMemAlloc, 256-byte aligned; the
// engine/vram pool keeps that alignment), and thread t's vector accesses are
// at byte offsets 32t (float) and 16t (u16) from them. A caller passing an
// offset pointer must keep it 16-byte aligned.

typedef unsigned short u16;

// Host emulation (tools/cuda/emu) supplies both helpers itself.
#ifndef FALOCAL_EMU
static __device__ __forceinline__ u16 f32_to_f16_bits(float f) {
    u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); // round to nearest even
    return h;
}

static __device__ __forceinline__ float f16_bits_to_f32(u16 h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); // exact
    return f;
}
#endif

// A multiple of 8; kernels/cuda's convertPerThread must match.
#define CONVERT_PER_THREAD 8

// 16-byte vectors: 4 floats, or 8 binary16 as 4 words (element 2k in the
// low half of word k: the GPU, like the emulating host, is little-endian).
// Also in image.cu; the host emulation compiles both files as one unit.
#ifndef FALOCAL_VEC16
#define FALOCAL_VEC16
struct alignas(16) f32x4 {
    float x, y, z, w;
};
struct alignas(16) u32x4 {
    unsigned x, y, z, w;
};
#endif

static __device__ __forceinline__ unsigned pack_f16x2(float lo, float hi) {
    return (unsigned)f32_to_f16_bits(lo) | ((unsigned)f32_to_f16_bits(hi) << 16);
}

// f32_to_f16(u16* dst, const float* src, int n)                  (ceil(n/8))
extern "C" __global__ void f32_to_f16(u16 *__restrict__ dst, const float *__restrict__ src, int n) {
    long long e = (long long)CONVERT_PER_THREAD * (blockIdx.x * blockDim.x + threadIdx.x);
    if (e >= n) return;
    if (e + CONVERT_PER_THREAD <= n) {
        // Every load first, then every store (constant bounds: unrolled,
        // the arrays stay in registers).
        f32x4 a[CONVERT_PER_THREAD / 4];
        for (int j = 0; j < CONVERT_PER_THREAD / 4; j++) a[j] = *(const f32x4 *)(src + e + 4 * j);
        for (int j = 0; j < CONVERT_PER_THREAD / 8; j++) {
            u32x4 o;
            o.x = pack_f16x2(a[2 * j].x, a[2 * j].y);
            o.y = pack_f16x2(a[2 * j].z, a[2 * j].w);
            o.z = pack_f16x2(a[2 * j + 1].x, a[2 * j + 1].y);
            o.w = pack_f16x2(a[2 * j + 1].z, a[2 * j + 1].w);
            *(u32x4 *)(dst + e + 8 * j) = o;
        }
        return;
    }
    for (; e < n; e++) dst[e] = f32_to_f16_bits(src[e]);
}

// f16_to_f32(float* dst, const u16* src, int n)                  (ceil(n/8))
extern "C" __global__ void f16_to_f32(float *__restrict__ dst, const u16 *__restrict__ src, int n) {
    long long e = (long long)CONVERT_PER_THREAD * (blockIdx.x * blockDim.x + threadIdx.x);
    if (e >= n) return;
    if (e + CONVERT_PER_THREAD <= n) {
        u32x4 v[CONVERT_PER_THREAD / 8];
        for (int j = 0; j < CONVERT_PER_THREAD / 8; j++) v[j] = *(const u32x4 *)(src + e + 8 * j);
        for (int j = 0; j < CONVERT_PER_THREAD / 8; j++) {
            f32x4 a, b;
            a.x = f16_bits_to_f32((u16)(v[j].x & 0xffffu));
            a.y = f16_bits_to_f32((u16)(v[j].x >> 16));
            a.z = f16_bits_to_f32((u16)(v[j].y & 0xffffu));
            a.w = f16_bits_to_f32((u16)(v[j].y >> 16));
            b.x = f16_bits_to_f32((u16)(v[j].z & 0xffffu));
            b.y = f16_bits_to_f32((u16)(v[j].z >> 16));
            b.z = f16_bits_to_f32((u16)(v[j].w & 0xffffu));
            b.w = f16_bits_to_f32((u16)(v[j].w >> 16));
            *(f32x4 *)(dst + e + 8 * j) = a;
            *(f32x4 *)(dst + e + 8 * j + 4) = b;
        }
        return;
    }
    for (; e < n; e++) dst[e] = f16_bits_to_f32(src[e]);
}
