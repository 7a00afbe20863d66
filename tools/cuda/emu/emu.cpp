// Host emulation of the kernels in kernels/*.cu: the files are compiled as
// plain C++ with the CUDA built-ins defined below and launched thread by
// thread, so their index math and rounding can be checked against the Go
// reference (tools/cuda/emucheck) on a machine without a GPU. Built with
// -ffp-contract=off to mirror NVRTC's --fmad=false, and with
// AddressSanitizer so a thread writing outside its buffer aborts.
//
// stdin: one launch, as lines
//   kernel <name> <n>   n = thread count, as kernels/cuda's launch gets
//                       it (the element count for one-thread-per-element
//                       kernels, not for convert.cu's or the grid-stride
//                       ones); threads run up to the next multiple of 256
//                       in ceil(n/256) blocks (gridDim.x), like a real 1-D
//                       launch, so the bound checks and grid-stride loops
//                       are exercised
//   p <file> | p -      device pointer: the file's bytes (written back
//                       after the launch), or a null pointer
//   i <int>             C int
//   f <hex>             C float given as its IEEE bits
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#define FALOCAL_EMU 1
#define __global__
#define __device__
#define __forceinline__ inline

struct Dim {
    unsigned x, y, z;
};
static Dim blockIdx, threadIdx, blockDim, gridDim;
using std::max;
using std::min;

// IEEE round-to-nearest-even conversions through GCC's _Float16, an
// implementation independent of both the PTX cvt and the Go reference.
static inline unsigned short f32_to_f16_bits(float f) {
    _Float16 h = (_Float16)f;
    unsigned short b;
    std::memcpy(&b, &h, 2);
    return b;
}
static inline float f16_bits_to_f32(unsigned short b) {
    _Float16 h;
    std::memcpy(&h, &b, 2);
    return (float)h;
}

#include "../../../kernels/blend.cu"
#include "../../../kernels/convert.cu"
#include "../../../kernels/image.cu"
#include "../../../kernels/mel.cu"
#include "../../../kernels/step.cu"

struct Arg {
    char kind;
    void *p;
    int i;
    float f;
    template <class T> operator T *() const { return static_cast<T *>(p); }
    operator int() const { return i; }
    operator float() const { return f; }
};

template <class... Ps, size_t... I>
static void call(void (*k)(Ps...), const std::vector<Arg> &a, std::index_sequence<I...>) {
    k(a[I]...);
}

// launch runs k for every thread of ceil(n/256) blocks of 256, one after
// the other (the kernels use no shared memory or barriers), after checking
// the argument kinds against the kernel's C signature.
template <class... Ps> static bool launch(void (*k)(Ps...), const std::vector<Arg> &a, int n) {
    const char kinds[] = {(std::is_pointer<Ps>::value ? 'p' : std::is_same<Ps, int>::value ? 'i' : 'f')..., 0};
    if (a.size() != sizeof...(Ps)) return false;
    for (size_t j = 0; j < a.size(); j++)
        if (a[j].kind != kinds[j]) return false;
    blockDim = {256, 1, 1};
    int blocks = (n + 255) / 256;
    gridDim = {(unsigned)blocks, 1, 1};
    for (int b = 0; b < blocks; b++)
        for (unsigned t = 0; t < 256; t++) {
            blockIdx = {(unsigned)b, 0, 0};
            threadIdx = {t, 0, 0};
            call(k, a, std::index_sequence_for<Ps...>{});
        }
    return true;
}

#define KERNEL(name) {#name, [](const std::vector<Arg> &a, int n) { return launch(name, a, n); }}

int main() {
    std::string word, name;
    int n;
    if (!(std::cin >> word >> name >> n) || word != "kernel") {
        std::cerr << "emu: expected: kernel <name> <n>\n";
        return 2;
    }
    std::vector<Arg> args;
    std::vector<std::pair<std::string, std::vector<char>>> bufs;
    bufs.reserve(64); // stable addresses
    while (std::cin >> word) {
        Arg a{word[0], nullptr, 0, 0};
        if (word == "p") {
            std::string file;
            std::cin >> file;
            if (file != "-") {
                std::ifstream in(file, std::ios::binary | std::ios::ate);
                if (!in) {
                    std::cerr << "emu: cannot read " << file << "\n";
                    return 2;
                }
                // Exact-size heap block, so ASan flags any overrun.
                std::vector<char> b((size_t)in.tellg());
                in.seekg(0);
                in.read(b.data(), (std::streamsize)b.size());
                bufs.emplace_back(file, std::move(b));
                a.p = bufs.back().second.data();
            }
        } else if (word == "i") {
            std::cin >> a.i;
        } else if (word == "f") {
            std::string hex;
            std::cin >> hex;
            uint32_t bits = (uint32_t)std::stoul(hex, nullptr, 16);
            std::memcpy(&a.f, &bits, 4);
        } else {
            std::cerr << "emu: bad argument kind " << word << "\n";
            return 2;
        }
        args.push_back(a);
    }
    using Fn = bool (*)(const std::vector<Arg> &, int);
    static const std::pair<const char *, Fn> table[] = {
        KERNEL(blend_tile),  KERNEL(normalize_blend), KERNEL(f16_to_f32),      KERNEL(f32_to_f16),
        KERNEL(compose_alpha), KERNEL(image_to_tensor), KERNEL(image_to_tensor_f16), KERNEL(resize_mask),
        KERNEL(resize_plane), KERNEL(mel_filterbank),  KERNEL(power_spectrum),  KERNEL(axpby),
        KERNEL(cfg_guidance),
    };
    for (auto &e : table) {
        if (name != e.first) continue;
        if (!e.second(args, n)) {
            std::cerr << "emu: " << name << ": argument kinds do not match the kernel's signature\n";
            return 2;
        }
        for (auto &b : bufs) {
            std::ofstream out(b.first, std::ios::binary | std::ios::trunc);
            out.write(b.second.data(), (std::streamsize)b.second.size());
        }
        return 0;
    }
    std::cerr << "emu: unknown kernel " << name << "\n";
    return 2;
}
