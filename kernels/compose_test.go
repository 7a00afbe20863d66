package kernels

import (
	"bytes"
	"errors"
	"math"
	"testing"
)

func TestComposeAlpha(t *testing.T) {
	nan := float32(math.NaN())
	tests := []struct {
		name      string
		src       []uint8
		w, h      int
		stride, c int
		mask      []float32
		want      []uint8
	}{
		{
			name: "rgb", w: 3, h: 1, stride: 9, c: 3,
			src:  []uint8{10, 20, 30, 40, 50, 60, 70, 80, 90},
			mask: []float32{0, 0.5, 1},
			want: []uint8{10, 20, 30, 0, 40, 50, 60, 128, 70, 80, 90, 255},
		},
		{
			name: "rgb clamps and rounds", w: 2, h: 2, stride: 8, c: 3, // 2 bytes row padding
			src:  []uint8{1, 2, 3, 4, 5, 6, 99, 99, 7, 8, 9, 10, 11, 12},
			mask: []float32{-0.5, 1.7, nan, 0.1},
			want: []uint8{1, 2, 3, 0, 4, 5, 6, 255, 7, 8, 9, 0, 10, 11, 12, 26},
		},
		{
			name: "rgba multiplies source alpha", w: 4, h: 1, stride: 16, c: 4,
			src:  []uint8{1, 2, 3, 255, 4, 5, 6, 128, 7, 8, 9, 3, 10, 11, 12, 0},
			mask: []float32{0.5, 1, 0.5, 1},
			// 0.5*255=127.5 -> 128; 128; 0.5*3=1.5 -> 2; 0.
			want: []uint8{1, 2, 3, 128, 4, 5, 6, 128, 7, 8, 9, 2, 10, 11, 12, 0},
		},
		{
			name: "gray replicated", w: 2, h: 1, stride: 5, c: 1,
			src:  []uint8{77, 200},
			mask: []float32{0.25, 0.75},
			want: []uint8{77, 77, 77, 64, 200, 200, 200, 191},
		},
	}
	var k CPU
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dst := bytes.Repeat([]uint8{0xAB}, 4*tc.w*tc.h)
			if err := k.ComposeAlpha(dst, tc.src, tc.w, tc.h, tc.stride, tc.c, tc.mask); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(dst, tc.want) {
				t.Fatalf("got  %v\nwant %v", dst, tc.want)
			}
		})
	}
}

func TestComposeAlphaErrors(t *testing.T) {
	var k CPU
	src := randBytes(newRand(9), 2*2*3)
	mask := []float32{0.1, 0.2, 0.3, 0.4}
	tests := []struct {
		name      string
		dst       []uint8
		src       []uint8
		w, h      int
		stride, c int
		mask      []float32
	}{
		{"short dst", make([]uint8, 15), src, 2, 2, 6, 3, mask},
		{"short mask", make([]uint8, 16), src, 2, 2, 6, 3, mask[:3]},
		{"short src", make([]uint8, 16), src[:11], 2, 2, 6, 3, mask},
		{"two channels", make([]uint8, 16), src, 2, 2, 6, 2, mask},
		{"zero size", make([]uint8, 16), src, 0, 2, 6, 3, mask},
	}
	for _, tc := range tests {
		if err := k.ComposeAlpha(tc.dst, tc.src, tc.w, tc.h, tc.stride, tc.c, tc.mask); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%s: got %v, want ErrInvalidArgument", tc.name, err)
		}
	}
}
