// binary16 <-> float32 conversion (kernels.CPU F32ToF16 / F16ToF32 in
// f16.go). Calling convention: see image.cu. u16 holds binary16 bits.
// NaN: the PTX cvt returns the canonical NaN 0x7fff where the CPU
// reference keeps the top payload bits; every other input, subnormals and
// overflow to Inf included, gives the same bits.

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

// f32_to_f16(u16* dst, const float* src, int n)                  (n)
extern "C" __global__ void f32_to_f16(u16 *dst, const float *src, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    dst[i] = f32_to_f16_bits(src[i]);
}

// f16_to_f32(float* dst, const u16* src, int n)                  (n)
extern "C" __global__ void f16_to_f32(float *dst, const u16 *src, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    dst[i] = f16_bits_to_f32(src[i]);
}
