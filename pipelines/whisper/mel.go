package whisper

import (
	"math"

	"gonum.org/v1/gonum/dsp/fourier"
)

// Whisper's front end: 16 kHz audio, 25 ms Hann windows every 10 ms, 30 s
// windows of 3000 frames.
const (
	SampleRate = 16000
	nFFT       = 400
	hopLength  = 160
	chunkSecs  = 30
	nSamples   = chunkSecs * SampleRate // samples in a 30 s window
	nFrames    = nSamples / hopLength   // mel frames in a 30 s window
	// frames per second of mel; the encoder halves it (conv stride 2).
	framesPerSec = SampleRate / hopLength
)

// Mel is a log-mel spectrogram stored band-major: Data[band*Frames+frame].
type Mel struct {
	Bands, Frames int
	Data          []float32
}

// melFilters is librosa's Slaney-style mel filter bank for n_fft 400 at
// 16 kHz (what Whisper ships as mel_filters.npz), computed in float64 and
// rounded to float32 as librosa stores it.
func melFilters(nMels int) [][]float32 {
	const sr = SampleRate
	nBins := nFFT/2 + 1
	hzToMel := func(f float64) float64 {
		const fSp = 200.0 / 3
		if f >= 1000 {
			return 1000/fSp + math.Log(f/1000)/(math.Log(6.4)/27)
		}
		return f / fSp
	}
	melToHz := func(m float64) float64 {
		const fSp = 200.0 / 3
		if m >= 1000/fSp {
			return 1000 * math.Exp(math.Log(6.4)/27*(m-1000/fSp))
		}
		return fSp * m
	}
	lo, hi := hzToMel(0), hzToMel(sr/2)
	melF := make([]float64, nMels+2)
	for i := range melF {
		melF[i] = melToHz(lo + (hi-lo)*float64(i)/float64(nMels+1))
	}
	w := make([][]float32, nMels)
	for i := 0; i < nMels; i++ {
		w[i] = make([]float32, nBins)
		enorm := 2 / (melF[i+2] - melF[i])
		for k := 0; k < nBins; k++ {
			f := float64(k) * sr / nFFT
			lower := (f - melF[i]) / (melF[i+1] - melF[i])
			upper := (melF[i+2] - f) / (melF[i+2] - melF[i+1])
			v := math.Max(0, math.Min(lower, upper))
			w[i][k] = float32(v * enorm)
		}
	}
	return w
}

// LogMel computes Whisper's log-mel spectrogram of 16 kHz mono audio after
// appending padding zero samples: a centred STFT with reflect padding, the
// last frame dropped, power through the mel bank, log10 clamped at 1e-10,
// floored at max−8 and mapped by (x+4)/4. Frames = (len+padding)/160.
func LogMel(audio []float32, nMels, padding int) *Mel {
	n := len(audio) + padding
	x := make([]float64, n+nFFT)
	for i, v := range audio {
		x[nFFT/2+i] = float64(v)
	}
	// reflect padding around the (zero-padded) signal, without the edge sample
	for i := 1; i <= nFFT/2; i++ {
		x[nFFT/2-i] = sampleAt(audio, n, i)
		x[nFFT/2+n-1+i] = sampleAt(audio, n, n-1-i)
	}
	frames := n / hopLength
	filters := melFilters(nMels)
	// each triangle covers a few FFT bins; skip the zeros
	lo, hi := make([]int, nMels), make([]int, nMels)
	for b, f := range filters {
		lo[b], hi[b] = len(f), 0
		for k, w := range f {
			if w != 0 {
				lo[b], hi[b] = min(lo[b], k), k+1
			}
		}
	}
	window := make([]float64, nFFT)
	for i := range window {
		window[i] = 0.5 - 0.5*math.Cos(2*math.Pi*float64(i)/nFFT)
	}
	fft := fourier.NewFFT(nFFT)
	seq := make([]float64, nFFT)
	coef := make([]complex128, nFFT/2+1)
	power := make([]float64, nFFT/2+1)
	out := make([]float64, nMels*frames)
	maxV := math.Inf(-1)
	for t := 0; t < frames; t++ {
		for i := range seq {
			seq[i] = x[t*hopLength+i] * window[i]
		}
		fft.Coefficients(coef, seq)
		for k, c := range coef {
			power[k] = real(c)*real(c) + imag(c)*imag(c)
		}
		for b, f := range filters {
			var s float64
			for k := lo[b]; k < hi[b]; k++ {
				s += float64(f[k]) * power[k]
			}
			if s < 1e-10 {
				s = 1e-10
			}
			v := math.Log10(s)
			out[b*frames+t] = v
			if v > maxV {
				maxV = v
			}
		}
	}
	m := &Mel{Bands: nMels, Frames: frames, Data: make([]float32, len(out))}
	floor := maxV - 8
	for i, v := range out {
		if v < floor {
			v = floor
		}
		m.Data[i] = float32((v + 4) / 4)
	}
	return m
}

// sampleAt reads the zero-padded signal of length n.
func sampleAt(audio []float32, n, i int) float64 {
	if i < 0 || i >= n || i >= len(audio) {
		return 0
	}
	return float64(audio[i])
}

// Window copies frames [start, start+nFrames) into a 30 s encoder input,
// zero-filled past the end, as Whisper's pad_or_trim does.
func (m *Mel) Window(start int, dst []float32) {
	for b := 0; b < m.Bands; b++ {
		row := dst[b*nFrames : (b+1)*nFrames]
		clear(row)
		if start < m.Frames {
			copy(row, m.Data[b*m.Frames+start:b*m.Frames+min(m.Frames, start+nFrames)])
		}
	}
}
