// Log-mel spectrogram stages after the FFT (kernels.CPU PowerSpectrum /
// MelFilterbank in mel.go). Calling convention: see image.cu.

// power_spectrum(float* dst, const float* spec, int n)            (n)
// spec holds n interleaved complex values (re, im), as Go's []complex64;
// dst = re*re + im*im.
extern "C" __global__ void power_spectrum(float *dst, const float *spec, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float re = spec[2LL * i], im = spec[2LL * i + 1];
    dst[i] = re * re + im * im;
}

// mel_filterbank(float* dst, const float* filters, int nMels, int nBins,
//   const float* power, int nFrames, float floor)          (nMels*nFrames)
// dst[m*nFrames+f] = log10(max(sum_k filters[m*nBins+k]*power[f*nBins+k],
// floor)): filters is nMels x nBins, power is nFrames x nBins (one FFT frame
// per row), dst is mel-major as Whisper's encoder input. The sum runs over
// k in order and skips zero taps, which are most of a mel matrix; a NaN
// sum clamps to floor. Consecutive threads share a mel row, so the filter
// reads are broadcasts and the power frames come from cache.
extern "C" __global__ void mel_filterbank(float *dst, const float *filters, int nMels, int nBins, const float *power,
                                          int nFrames, float floor) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= nMels * nFrames) return;
    int m = i / nFrames, f = i % nFrames;
    const float *w = filters + (long long)m * nBins;
    const float *p = power + (long long)f * nBins;
    float s = 0.0f;
    for (int k = 0; k < nBins; k++) {
        float wk = w[k];
        if (wk != 0.0f) s += wk * p[k];
    }
    if (!(s > floor)) s = floor;
    dst[i] = log10f(s);
}
