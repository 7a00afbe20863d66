package audio

import "math"

// Band-limited resampling by a Kaiser-windowed sinc, evaluated polyphase.
// The parameters follow the spirit of ffmpeg's swresample defaults (a
// 32-tap filter at the lower rate, cutoff at 97% of its Nyquist, Kaiser
// β=9 for about 90 dB of stopband), so features computed from our audio
// match what Whisper sees after `ffmpeg -ar 16000`.
const (
	zeroCrossings = 16   // filter half-length, in periods of the lower rate
	cutoff        = 0.97 // passband edge as a fraction of the lower Nyquist
	kaiserBeta    = 9.0
	// maxPhases bounds the filter table. Rate pairs whose reduced ratio
	// needs more phases (odd rates such as 44056 Hz) interpolate linearly
	// between neighbouring phases instead.
	maxPhases = 2048
)

// resample converts mono x from inRate to outRate. Output sample n sits at
// input time n·inRate/outRate, so the first samples line up; samples beyond
// either end count as silence.
func resample(x []float32, inRate, outRate int) []float32 {
	if len(x) == 0 || inRate <= 0 || outRate <= 0 {
		return []float32{}
	}
	g := gcd(inRate, outRate)
	up, down := int64(outRate/g), int64(inRate/g) // output n ↔ input n·down/up
	nOut := int((int64(len(x))*up + down - 1) / down)

	scale := math.Min(1, float64(outRate)/float64(inRate))
	half := zeroCrossings / scale // half-length in input samples
	k := int(math.Ceil(half))
	taps := 2 * k
	fc := cutoff * 0.5 * scale // cycles per input sample

	exact := up <= maxPhases
	phases := int(up)
	if !exact {
		phases = maxPhases
	}
	// Row p holds the taps for a fractional delay of p/phases; the extra row
	// (delay 1) lets the interpolating path read row p+1 without a wrap.
	rows := make([]float32, (phases+1)*taps)
	i0b := besselI0(kaiserBeta)
	vals := make([]float64, taps)
	for p := 0; p <= phases; p++ {
		mu := float64(p) / float64(phases)
		row := rows[p*taps : (p+1)*taps]
		var sum float64
		clear(vals)
		for j := range vals {
			d := float64(j-k+1) - mu // distance from the output instant
			t := d / half
			if t <= -1 || t >= 1 {
				continue
			}
			v := 2 * fc * sinc(2*fc*d) * besselI0(kaiserBeta*math.Sqrt(1-t*t)) / i0b
			vals[j] = v
			sum += v
		}
		// Unit gain at DC in every phase: otherwise the tiny per-phase gain
		// differences turn a constant signal into a ripple at the phase rate.
		for j, v := range vals {
			row[j] = float32(v / sum)
		}
	}

	out := make([]float32, nOut)
	for n := range out {
		num := int64(n) * down
		base := int(num / up)
		rem := num % up
		start := base - k + 1
		if exact {
			out[n] = dot(x, start, rows[int(rem)*taps:int(rem+1)*taps])
			continue
		}
		pos := float64(rem) / float64(up) * float64(phases)
		j := int(pos)
		w := float32(pos - float64(j))
		a := dot(x, start, rows[j*taps:(j+1)*taps])
		b := dot(x, start, rows[(j+1)*taps:(j+2)*taps])
		out[n] = a + w*(b-a)
	}
	return out
}

// dot is Σ x[start+j]·h[j], with x zero outside its bounds.
func dot(x []float32, start int, h []float32) float32 {
	var s float32
	if start >= 0 && start+len(h) <= len(x) {
		xs := x[start : start+len(h)]
		for j, v := range h {
			s += xs[j] * v
		}
		return s
	}
	for j, v := range h {
		if i := start + j; i >= 0 && i < len(x) {
			s += x[i] * v
		}
	}
	return s
}

func sinc(x float64) float64 {
	if x == 0 {
		return 1
	}
	return math.Sin(math.Pi*x) / (math.Pi * x)
}

// besselI0 is the modified Bessel function of the first kind, order 0, by
// its power series, which converges quickly for the arguments a Kaiser
// window uses (≤ β).
func besselI0(x float64) float64 {
	sum, term := 1.0, 1.0
	q := x * x / 4
	for m := 1; m < 200; m++ {
		term *= q / float64(m*m)
		sum += term
		if term < sum*1e-17 {
			break
		}
	}
	return sum
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}
