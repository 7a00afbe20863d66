package api

import (
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
)

var jsonCases = []string{
	``, ` `, `{}`, ` {} `, `{"a":1}`, `{"a":1}}`, `{"a":1} x`, `{"a":`, `{"a"}`, `{"a" 1}`, `{,}`, `{"a":1,}`,
	`{"a":1,"b":[1,2,{"c":null}],"d":true,"e":false}`, `[]`, `[1,]`, `[,1]`, `[1 2]`, `"x"`, `"x`, `x`, `null`,
	`nul`, `nulll`, `true`, `tru`, `truex`, `-`, `-0`, `-01`, `01`, `0`, `0.`, `0.5`, `.5`, `1e`, `1e+`, `1e+5`,
	`1E-05`, `1.5e3`, `-1.5E+3`, `123abc`, `"\u00e9"`, `"\u00G9"`, `"\u00e"`, `"\x"`, `"\/\b\f\n\r\t\"\\"`,
	`"tab	inside"`, "\"nl\ninside\"", "\"nul\x00inside\"", "\"del\x7finside\"", "\"\xff\xfe bytes\"",
	`"é"`, "\t{\r\n\"a\" :\t[ ] }\n", `{"a":"` + strings.Repeat("A", 100) + `\"` + strings.Repeat("B", 13) + `"}`,
	`{"image_url":"data:image/png;base64,` + strings.Repeat("QUJD", 1000) + `"}`, `"abcdefg\`, `"abcdefgh\"`,
	`"abcdefghijklmnop`, `"abcdefghijklmno"`, `{"a":1}` + "\x00", "\xef\xbb\xbf{}", `[[[[]]]]`, `[[[[]]]`,
	`{"a":{"b":{"c":[1,{"d":"e"}]}}}`, `name=a`, `[1,2]`,
}

// validJSON agrees with encoding/json's json.Valid.
func TestValidJSONMatchesEncodingJSON(t *testing.T) {
	check := func(s string) {
		if got, want := validJSON([]byte(s)), json.Valid([]byte(s)); got != want {
			if len(s) > 200 {
				s = s[:100] + "…" + s[len(s)-100:]
			}
			t.Errorf("validJSON(%q) = %v, json.Valid says %v", s, got, want)
		}
	}
	for _, s := range jsonCases {
		check(s)
	}
	// Nesting at encoding/json's limit and one beyond it.
	for _, n := range []int{9999, 10000, 10001} {
		check(strings.Repeat("[", n) + strings.Repeat("]", n))
		check(strings.Repeat(`{"a":`, n) + "1" + strings.Repeat("}", n))
	}
	// Random mutations of the cases: every byte value, at every place.
	r := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte("{}[]\":,\\ \t\n-+.eE0123456789tfnulrabx\x00\x1f\x7f\x80\xff")
	for range 200000 {
		b := []byte(jsonCases[r.IntN(len(jsonCases))])
		for range 1 + r.IntN(3) {
			switch op := r.IntN(3); {
			case op == 0 && len(b) > 0:
				b[r.IntN(len(b))] = alphabet[r.IntN(len(alphabet))]
			case op == 1:
				at := r.IntN(len(b) + 1)
				b = append(b[:at], append([]byte{alphabet[r.IntN(len(alphabet))]}, b[at:]...)...)
			case len(b) > 0:
				at := r.IntN(len(b))
				b = append(b[:at], b[at+1:]...)
			}
		}
		check(string(b))
	}
}

func FuzzValidJSON(f *testing.F) {
	for _, s := range jsonCases {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := validJSON(b), json.Valid(b); got != want {
			t.Errorf("validJSON(%q) = %v, json.Valid says %v", b, got, want)
		}
	})
}

// A 1 MiB data URI body: validJSON against json.Valid.
func BenchmarkValidJSON(b *testing.B) {
	body := []byte(`{"image_url":"data:image/png;base64,` + strings.Repeat("QUJD", 1<<18) + `"}`)
	b.Run("validJSON", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			validJSON(body)
		}
	})
	b.Run("json.Valid", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			json.Valid(body)
		}
	})
}
