package audio

import (
	"bytes"
	"crypto/md5"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mewkiz/flac"
)

func fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func decodeFixture(t testing.TB, name string) *Audio {
	t.Helper()
	a, err := Decode(fixture(t, name), time.Minute)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return a
}

// reference is the first 3 s of jfk.wav, from the lossless FLAC fixture
// (TestFLACMatchesJFK checks that against the real file when assets exist).
func reference(t testing.TB) []float32 {
	t.Helper()
	return decodeFixture(t, "jfk_3s.flac").Samples
}

// alignedSNR finds the delay of x against ref by cross-correlation over
// ±maxLag samples (codecs add encoder delay) and returns the SNR in dB of
// x as a copy of ref at that delay, ignoring 1000 samples at either end.
func alignedSNR(ref, x []float32, maxLag int) (snr float64, lag int) {
	lo, hi := len(ref)/4, min(len(ref)*3/4, len(ref)/4+16000) // 1 s of speech settles the delay
	best := math.Inf(-1)
	for l := -maxLag; l <= maxLag; l++ {
		var c float64
		for i := lo; i < hi; i++ {
			if j := i + l; j >= 0 && j < len(x) {
				c += float64(ref[i]) * float64(x[j])
			}
		}
		if c > best {
			best, lag = c, l
		}
	}
	var sig, noise float64
	for i := 1000; i < len(ref)-1000; i++ {
		j := i + lag
		if j < 0 || j >= len(x) {
			continue
		}
		d := float64(ref[i]) - float64(x[j])
		sig += float64(ref[i]) * float64(ref[i])
		noise += d * d
	}
	return 10 * math.Log10(sig/noise), lag
}

func TestFLACLossless(t *testing.T) {
	data := fixture(t, "jfk_3s.flac")
	a := decodeFixture(t, "jfk_3s.flac")
	if a.Rate != 16000 || a.Channels != 1 || len(a.Samples) != 48000 {
		t.Fatalf("rate %d ch %d samples %d", a.Rate, a.Channels, len(a.Samples))
	}
	// The encoder stored the MD5 of its input PCM: our samples, turned back
	// into s16le, must hash the same — bit-exact without any other file.
	st, err := flac.New(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	pcm := make([]byte, 0, 2*len(a.Samples))
	for _, v := range a.Samples {
		s := v * 32768
		if s != float32(int16(s)) {
			t.Fatalf("sample %v is not an exact int16/32768", v)
		}
		pcm = binary.LittleEndian.AppendUint16(pcm, uint16(int16(s)))
	}
	if md5.Sum(pcm) != st.Info.MD5sum {
		t.Fatal("decoded PCM does not match the MD5 stored in STREAMINFO")
	}
}

func TestLossyFixtures(t *testing.T) {
	ref := reference(t)
	for _, tc := range []struct {
		file   string
		rate   int
		minSNR float64
	}{
		{"jfk_3s.ogg", 16000, 15},
		{"jfk_3s.opus", 48000, 15},
		{"jfk_2s.mp3", 16000, 10}, // 32 kb/s
		{"jfk_2s_44k_stereo_s24.flac", 44100, 25},
	} {
		t.Run(tc.file, func(t *testing.T) {
			a := decodeFixture(t, tc.file)
			if a.Rate != tc.rate {
				t.Fatalf("rate %d, want %d", a.Rate, tc.rate)
			}
			mono := a.Mono16k()
			snr, lag := alignedSNR(ref[:min(len(ref), len(mono))], mono, 2000)
			t.Logf("%s: %.1f s at %d Hz × %d, SNR %.1f dB at lag %d", tc.file, a.Duration().Seconds(), a.Rate, a.Channels, snr, lag)
			if snr < tc.minSNR {
				t.Fatalf("SNR %.1f dB < %.0f dB", snr, tc.minSNR)
			}
		})
	}
}

func TestID3BeforeFLAC(t *testing.T) {
	data := append(id3(300), fixture(t, "jfk_3s.flac")...)
	a, err := Decode(data, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if want := reference(t); len(a.Samples) != len(want) || a.Samples[1000] != want[1000] {
		t.Fatalf("%d samples", len(a.Samples))
	}
}

func TestStereo24FLAC(t *testing.T) {
	a := decodeFixture(t, "jfk_2s_44k_stereo_s24.flac")
	if a.Rate != 44100 || a.Channels != 2 || len(a.Samples) != 2*88200 {
		t.Fatalf("rate %d ch %d samples %d", a.Rate, a.Channels, len(a.Samples))
	}
	for i := 0; i < len(a.Samples); i += 2 {
		if a.Samples[i] != a.Samples[i+1] {
			t.Fatalf("frame %d: channels differ", i/2)
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	random := make([]byte, 4096)
	rng.Read(random)
	random[0] = 0x42
	s16 := fmtChunk(wavPCM, 1, 16000, 16)
	unsupported := func(err error) bool { var u *UnsupportedError; return errors.As(err, &u) }
	is := func(target error) func(error) bool { return func(err error) bool { return errors.Is(err, target) } }

	flacData := fixture(t, "jfk_3s.flac")
	hugeFLAC := append([]byte{}, flacData...)
	copy(hugeFLAC[22:26], []byte{0xFF, 0xFF, 0xFF, 0xFF}) // STREAMINFO total samples ≈ 2³² (74 h)
	flacHeadersOnly := append([]byte{}, flacData[:42]...) // signature + STREAMINFO, no frames
	flacHeadersOnly[4] |= 0x80                            // STREAMINFO is now the last metadata block

	tests := []struct {
		name  string
		data  []byte
		limit time.Duration
		ok    func(error) bool
	}{
		{"nil", nil, 0, is(ErrEmpty)},
		{"text", []byte("hello, this is not audio"), 0, is(ErrUnknownFormat)},
		{"zeros", make([]byte, 1024), 0, is(ErrUnknownFormat)},
		{"random", random, 0, is(ErrUnknownFormat)},
		{"PNG", []byte("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"), 0, is(ErrUnknownFormat)},
		{"RIFF only", []byte("RIFF"), 0, is(ErrUnknownFormat)},
		{"WAV header only", []byte("RIFF\x04\x00\x00\x00WAVE"), 0, is(ErrCorrupt)},
		{"WAV fmt, no data", riff(s16), 0, is(ErrCorrupt)},
		{"WAV data before fmt", riff(chunk("data", le16(1, 2)), s16), 0, is(ErrCorrupt)},
		{"WAV zero-length data", riff(s16, chunk("data", nil)), 0, is(ErrEmpty)},
		{"WAV one byte of s16 data", riff(s16, chunk("data", []byte{1})), 0, is(ErrEmpty)},
		{"WAV truncated fmt", riff(s16)[:24], 0, is(ErrCorrupt)},
		{"WAV short fmt", riff(chunk("fmt ", make([]byte, 8)), chunk("data", le16(1))), 0, is(ErrCorrupt)},
		{"WAV chunk past the end", riff(s16, chunk("LIST", make([]byte, 10)))[:50], 0, is(ErrCorrupt)},
		{"WAV rate 0", riff(fmtChunk(wavPCM, 1, 0, 16), chunk("data", le16(1))), 0, is(ErrCorrupt)},
		{"WAV rate 4 GHz", riff(fmtChunk(wavPCM, 1, 4e9, 16), chunk("data", le16(1))), 0, is(ErrCorrupt)},
		{"WAV 0 channels", riff(fmtChunk(wavPCM, 0, 16000, 16), chunk("data", le16(1))), 0, is(ErrCorrupt)},
		{"WAV 1000 channels", riff(fmtChunk(wavPCM, 1000, 16000, 16), chunk("data", le16(1))), 0, is(ErrCorrupt)},
		{"WAV block align too small", riff(setBlockAlign(fmtChunk(wavPCM, 2, 16000, 16), 2), chunk("data", le16(1, 2))), 0, is(ErrCorrupt)},
		{"WAV IMA ADPCM", riff(fmtChunk(0x11, 1, 16000, 4), chunk("data", le16(1))), 0, unsupported},
		{"WAV 48-bit PCM", riff(fmtChunk(wavPCM, 1, 16000, 48), chunk("data", make([]byte, 12))), 0, unsupported},
		{"WAV 16-bit float", riff(fmtChunk(wavFloat, 1, 16000, 16), chunk("data", le16(1))), 0, unsupported},
		{"WAV extensible, odd GUID", riff(badGUID(extensible(wavPCM, 1, 16000, 16, 16)), chunk("data", le16(1))), 0, unsupported},
		{"RIFX", append([]byte("RIFX\x00\x00\x00\x20WAVE"), make([]byte, 32)...), 0, unsupported},
		{"RF64", append([]byte("RF64\xff\xff\xff\xffWAVE"), make([]byte, 32)...), 0, unsupported},
		{"M4A", []byte("\x00\x00\x00\x20ftypM4A \x00\x00\x00\x00M4A mp42isom"), 0, unsupported},
		{"MP4", []byte("\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"), 0, unsupported},
		{"WebM", []byte("\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\xf7\x81\x01webm"), 0, unsupported},
		{"ADTS AAC", []byte("\xff\xf1\x50\x80\x02\x1f\xfc\x21\x00\x49\x90\x02\x19\x00"), 0, unsupported},
		{"ID3 + ADTS AAC", append(id3(20), []byte("\xff\xf1\x50\x80\x02\x1f\xfc")...), 0, unsupported},
		{"MP2", []byte("\xff\xfd\x94\x00\x00\x00\x00\x00"), 0, unsupported},
		{"AIFF", []byte("FORM\x00\x00\x00\x20AIFFCOMM\x00\x00\x00\x12"), 0, unsupported},
		{"Ogg Speex", oggPage("Speex   1.2"), 0, unsupported},
		{"Ogg FLAC", oggPage("\x7fFLAC\x01\x00"), 0, unsupported},
		{"Ogg unknown", oggPage("\x00something"), 0, unsupported},
		{"Ogg Vorbis header only", oggPage("\x01vorbis\x00\x00\x00\x00\x01\x80\xbb\x00\x00"), 0, is(ErrCorrupt)},
		{"Ogg Opus header only", oggPage("OpusHead\x01\x01\x38\x01\x80\xbb\x00\x00\x00\x00\x00"), 0, func(err error) bool { return errors.Is(err, ErrCorrupt) || errors.Is(err, ErrEmpty) }},
		{"FLAC signature only", []byte("fLaC"), 0, is(ErrCorrupt)},
		{"FLAC without frames", flacHeadersOnly, 0, is(ErrEmpty)},
		{"FLAC declaring 74 hours", hugeFLAC, 30 * time.Second, is(ErrTooLong)},
		{"FLAC over the limit", flacData, 2 * time.Second, is(ErrTooLong)},
		{"MP3 over the limit", fixture(t, "jfk_2s.mp3"), time.Second, is(ErrTooLong)},
		{"MP3 ID3 tag only", id3(100)[:30], 0, is(ErrCorrupt)},
		{"MP3 ID3 tag larger than the file", append(id3(1 << 27)[:10], 0xFF, 0xFB, 0x90, 0x00), 0, func(err error) bool { return err != nil }},
		{"MP3 frame header only", []byte("\xff\xfb\x90\x00"), 0, func(err error) bool { return errors.Is(err, ErrCorrupt) || errors.Is(err, ErrEmpty) }},
		{"Vorbis over the limit", fixture(t, "jfk_3s.ogg"), 2 * time.Second, is(ErrTooLong)},
		{"Vorbis declaring 50 days", lastGranuleTo(fixture(t, "jfk_3s.ogg"), 1<<36), time.Minute, is(ErrTooLong)},
		{"Opus over the limit", fixture(t, "jfk_3s.opus"), 2 * time.Second, is(ErrTooLong)},
		{"Opus declaring 16 days", lastGranuleTo(fixture(t, "jfk_3s.opus"), 1<<36), time.Minute, is(ErrTooLong)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			a, err := Decode(tc.data, tc.limit)
			if !tc.ok(err) {
				t.Fatalf("Decode = %v, %v", a, err)
			}
			if a != nil {
				t.Fatalf("audio returned with error %v", err)
			}
			if el := time.Since(start); el > 2*time.Second {
				t.Errorf("took %v", el)
			}
			t.Log(err)
		})
	}
}

func TestUnsupportedMessage(t *testing.T) {
	_, err := Decode([]byte("\x00\x00\x00\x20ftypM4A \x00\x00\x00\x00"), 0)
	for _, f := range []string{"WAV", "FLAC", "MP3", "Ogg Vorbis"} {
		if !strings.Contains(err.Error(), f) {
			t.Errorf("%q does not name %s", err, f)
		}
	}
}

func setBlockAlign(fmtc []byte, align int) []byte {
	binary.LittleEndian.PutUint16(fmtc[8+12:], uint16(align))
	return fmtc
}

func badGUID(fmtc []byte) []byte {
	fmtc[len(fmtc)-1] ^= 0xFF
	return fmtc
}

// id3 is an ID3v2.4 header declaring a tag body of size bytes, plus padding.
func id3(size int) []byte {
	b := []byte{'I', 'D', '3', 4, 0, 0, byte(size >> 21 & 0x7F), byte(size >> 14 & 0x7F), byte(size >> 7 & 0x7F), byte(size & 0x7F)}
	return append(b, make([]byte, min(size, 1<<16))...)
}

// oggPage is a first Ogg page holding one packet (CRC left zero: sniffing
// must not depend on it).
func oggPage(packet string) []byte {
	b := []byte("OggS\x00\x02")
	b = append(b, make([]byte, 8+4+4+4)...) // granule, serial, sequence, CRC
	b = append(b, 1, byte(len(packet)))
	return append(b, packet...)
}

// lastGranuleTo sets the granule position of the file's last Ogg page.
func lastGranuleTo(data []byte, g uint64) []byte {
	data = append([]byte{}, data...)
	i := bytes.LastIndex(data, []byte("OggS"))
	binary.LittleEndian.PutUint64(data[i+6:], g)
	return data
}

// TestMutations feeds a few hundred damaged copies of a valid file of every
// format to Decode: each must come back as audio or a typed error, quickly,
// without a panic escaping.
func TestMutations(t *testing.T) {
	wav := riff(fmtChunk(wavPCM, 2, 22050, 16), chunk("LIST", []byte("INFOx")), chunk("data", le16(make([]int16, 2*11025)...)))
	inputs := map[string][]byte{
		"wav":        wav,
		"wav-f32":    riff(extensible(wavFloat, 1, 8000, 32, 32), chunk("data", f32(make([]float32, 4000)...))),
		"flac":       fixture(t, "jfk_3s.flac"),
		"flac-44k":   fixture(t, "jfk_2s_44k_stereo_s24.flac"),
		"mp3":        fixture(t, "jfk_2s.mp3"),
		"ogg-vorbis": fixture(t, "jfk_3s.ogg"),
		"ogg-opus":   fixture(t, "jfk_3s.opus"),
	}
	iters := 300
	if testing.Short() {
		iters = 40
	}
	for name, orig := range inputs {
		t.Run(name, func(t *testing.T) {
			rng := rand.New(rand.NewSource(int64(len(orig))))
			before := recovered.Load()
			var decoded, failed int
			for it := 0; it < iters; it++ {
				m := mutate(rng, orig)
				done := make(chan error, 1)
				go func() {
					_, err := Decode(m, 10*time.Second)
					done <- err
				}()
				select {
				case err := <-done:
					if err == nil {
						decoded++
						continue
					}
					failed++
					var u *UnsupportedError
					if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrEmpty) && !errors.Is(err, ErrTooLong) &&
						!errors.Is(err, ErrUnknownFormat) && !errors.As(err, &u) {
						t.Fatalf("iteration %d: untyped error %v", it, err)
					}
				case <-time.After(20 * time.Second):
					os.WriteFile(filepath.Join(t.TempDir(), "hang"), m, 0o644)
					t.Fatalf("iteration %d: Decode hangs (input of %d bytes, md5 %x)", it, len(m), md5.Sum(m))
				}
			}
			t.Logf("%d decoded, %d refused (%d decoder panics recovered)", decoded, failed, recovered.Load()-before)
		})
	}
}

func mutate(rng *rand.Rand, orig []byte) []byte {
	m := append([]byte{}, orig...)
	switch rng.Intn(5) {
	case 0: // flip a few bytes, mostly in the headers where damage matters most
		for n := 1 + rng.Intn(8); n > 0; n-- {
			i := rng.Intn(len(m))
			if rng.Intn(2) == 0 {
				i = rng.Intn(min(len(m), 256))
			}
			m[i] ^= byte(1 + rng.Intn(255))
		}
	case 1: // truncate
		m = m[:rng.Intn(len(m))]
	case 2: // overwrite a window with noise
		i := rng.Intn(len(m))
		rng.Read(m[i:min(len(m), i+1+rng.Intn(512))])
	case 3: // splice: repeat a region somewhere else
		i, j := rng.Intn(len(m)), rng.Intn(len(m))
		n := rng.Intn(min(2048, len(m)-i))
		m = append(m[:j:j], append(append([]byte{}, orig[i:i+n]...), orig[j:]...)...)
	case 4: // extreme values in a 32-bit field
		i := rng.Intn(max(1, min(len(m)-4, 512)))
		v := []uint32{0, 0xFFFFFFFF, 0x7FFFFFFF, 0x80000000, 1}[rng.Intn(5)]
		binary.LittleEndian.PutUint32(m[i:], v)
	}
	return m
}

func TestDuration(t *testing.T) {
	for _, tc := range []struct {
		a    *Audio
		want time.Duration
	}{
		{&Audio{Samples: make([]float32, 32000), Rate: 16000, Channels: 2}, time.Second},
		{&Audio{Samples: make([]float32, 441), Rate: 44100, Channels: 1}, 10 * time.Millisecond},
		{&Audio{Rate: 0, Channels: 1}, 0},
		{nil, 0},
	} {
		if got := tc.a.Duration(); got != tc.want {
			t.Errorf("%v: %v, want %v", tc.a, got, tc.want)
		}
	}
}

func Example() {
	wav := riff(fmtChunk(wavPCM, 2, 48000, 16), chunk("data", le16(make([]int16, 2*4800)...)))
	a, err := Decode(wav, 30*time.Minute)
	if err != nil {
		panic(err)
	}
	fmt.Println(a.Rate, a.Channels, a.Duration(), len(a.Mono16k()))
	// Output: 48000 2 100ms 1600
}
