package audio

import (
	"math"
	"testing"
)

func sine(freq float64, rate, n int, amp float64) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(amp * math.Sin(2*math.Pi*freq*float64(i)/float64(rate)))
	}
	return x
}

func TestResampleSine(t *testing.T) {
	const freq, amp = 1000.0, 0.5
	for _, rate := range []int{44100, 48000, 8000, 22050, 11025, 32000, 96000, 44056} {
		in := sine(freq, rate, rate, amp) // one second
		a := &Audio{Samples: in, Rate: rate, Channels: 1}
		out := a.Mono16k()
		if want := 16000; abs(len(out)-want) > 1 {
			t.Errorf("%d Hz: %d output samples, want ~%d", rate, len(out), want)
		}
		// Away from the edges (where the filter sees silence beyond the
		// signal), the result must be the analytic sine at 16 kHz.
		var maxErr float64
		for n := 800; n < len(out)-800; n++ {
			want := amp * math.Sin(2*math.Pi*freq*float64(n)/16000)
			maxErr = math.Max(maxErr, math.Abs(float64(out[n])-want))
		}
		if maxErr > 2e-3 {
			t.Errorf("%d Hz: max abs error %.2g vs the analytic sine", rate, maxErr)
		}
		t.Logf("%d Hz → 16 kHz: max error %.2g", rate, maxErr)
	}
}

func TestResampleRejectsAboveNyquist(t *testing.T) {
	// 10 kHz cannot exist at 16 kHz; it must be filtered out, not aliased
	// down to 6 kHz.
	for _, tc := range []struct {
		rate int
		freq float64
	}{{44100, 10000}, {48000, 10000}, {22050, 9500}, {44100, 15000}} {
		out := (&Audio{Samples: sine(tc.freq, tc.rate, tc.rate, 0.9), Rate: tc.rate, Channels: 1}).Mono16k()
		rms := rmsOf(out[800 : len(out)-800])
		inRMS := 0.9 / math.Sqrt2
		if db := 20 * math.Log10(rms/inRMS); db > -60 {
			t.Errorf("%g Hz at %d Hz attenuated only %.1f dB", tc.freq, tc.rate, -db)
		} else {
			t.Logf("%g Hz at %d Hz: %.1f dB", tc.freq, tc.rate, db)
		}
	}
}

func TestMono16kPassThrough(t *testing.T) {
	in := sine(440, 16000, 4000, 0.3)
	in[7] = 0.123456789 // not a value a sine formula would reproduce by chance
	a := &Audio{Samples: in, Rate: 16000, Channels: 1}
	out := a.Mono16k()
	if len(out) != len(in) {
		t.Fatalf("len %d, want %d", len(out), len(in))
	}
	for i := range in {
		if math.Float32bits(out[i]) != math.Float32bits(in[i]) {
			t.Fatalf("sample %d changed: %v → %v", i, in[i], out[i])
		}
	}
	out[0] = 42
	if in[0] == 42 {
		t.Fatal("Mono16k returned the input slice, not a copy")
	}
}

func TestMono16kDownmix(t *testing.T) {
	// Stereo with different content per channel: the result is the mean.
	l := sine(440, 16000, 1000, 0.5)
	r := sine(1300, 16000, 1000, 0.25)
	st := make([]float32, 0, 2000)
	for i := range l {
		st = append(st, l[i], r[i])
	}
	out := (&Audio{Samples: st, Rate: 16000, Channels: 2}).Mono16k()
	for i := range l {
		if want := (l[i] + r[i]) / 2; math.Abs(float64(out[i]-want)) > 1e-7 {
			t.Fatalf("sample %d: %v, want %v", i, out[i], want)
		}
	}
	// Three channels, and a resample on top: the mean is resampled.
	var tri []float32
	x := sine(1000, 48000, 48000, 0.6)
	for _, v := range x {
		tri = append(tri, v, 0, -v/2)
	}
	out = (&Audio{Samples: tri, Rate: 48000, Channels: 3}).Mono16k()
	for n := 800; n < len(out)-800; n++ {
		want := 0.6 / 6 * math.Sin(2*math.Pi*1000*float64(n)/16000)
		if math.Abs(float64(out[n])-want) > 1e-3 {
			t.Fatalf("3-channel sample %d: %v, want %v", n, out[n], want)
		}
	}
}

func TestResampleEdgeCases(t *testing.T) {
	if got := (&Audio{Rate: 44100, Channels: 1}).Mono16k(); len(got) != 0 {
		t.Fatalf("empty input gave %d samples", len(got))
	}
	if got := (&Audio{Samples: []float32{1}, Rate: 44100, Channels: 1}).Mono16k(); len(got) != 1 {
		t.Fatalf("one sample gave %d", len(got))
	}
	if got := (*Audio)(nil).Mono16k(); got != nil {
		t.Fatal("nil audio gave samples")
	}
	// DC stays DC (per-phase normalisation).
	dc := make([]float32, 44100)
	for i := range dc {
		dc[i] = 0.25
	}
	out := (&Audio{Samples: dc, Rate: 44100, Channels: 1}).Mono16k()
	for n := 400; n < len(out)-400; n++ {
		if math.Abs(float64(out[n])-0.25) > 1e-5 {
			t.Fatalf("DC sample %d = %v", n, out[n])
		}
	}
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

func rmsOf(x []float32) float64 {
	var s float64
	for _, v := range x {
		s += float64(v) * float64(v)
	}
	return math.Sqrt(s / float64(len(x)))
}
