package imageio

import (
	"bytes"
	"errors"
	"testing"
)

func TestDataURIRoundTrip(t *testing.T) {
	data := []byte{0x89, 'P', 'N', 'G', 0, 0xff, '+', '/'}
	s := DataURI(data, "image/png")
	if s != "data:image/png;base64,iVBORwD/Ky8=" {
		t.Fatalf("DataURI = %q", s)
	}
	got, ct, err := ParseDataURI(s)
	if err != nil || ct != "image/png" || !bytes.Equal(got, data) {
		t.Fatalf("ParseDataURI = %q, %q, %v", got, ct, err)
	}
}

func TestParseDataURI(t *testing.T) {
	tests := []struct {
		name, in, data, ct string
		bad                bool
	}{
		{name: "rfc plain", in: "data:,A%20brief%20note", data: "A brief note", ct: "text/plain;charset=US-ASCII"},
		{name: "params only", in: "data:;charset=utf-8,%C3%A9", data: "é", ct: "text/plain;charset=utf-8"},
		{name: "plain with type", in: "data:text/html,<b>hi</b>", data: "<b>hi</b>", ct: "text/html"},
		{name: "plus is literal", in: "data:,a+b", data: "a+b", ct: "text/plain;charset=US-ASCII"},
		{name: "base64", in: "data:image/gif;base64,R0lGODlh", data: "GIF89a", ct: "image/gif"},
		{name: "base64 no type", in: "data:;base64,aGk=", data: "hi", ct: "text/plain;charset=US-ASCII"},
		{name: "base64 no padding", in: "data:image/png;base64,aGk", data: "hi", ct: "image/png"},
		{name: "base64 whitespace", in: "data:image/png;base64,aG\r\n k=", data: "hi", ct: "image/png"},
		{name: "base64 percent", in: "data:image/png;base64,Ky8%3D", data: "+/", ct: "image/png"},
		{name: "case insensitive", in: "DATA:image/png;BASE64,aGk=", data: "hi", ct: "image/png"},
		{name: "params and base64", in: "data:image/svg+xml;charset=utf-8;base64,PHN2Zz4=", data: "<svg>", ct: "image/svg+xml;charset=utf-8"},
		{name: "comma in data", in: "data:,a,b", data: "a,b", ct: "text/plain;charset=US-ASCII"},
		{name: "empty data", in: "data:image/png;base64,", data: "", ct: "image/png"},
		{name: "no scheme", in: "image/png;base64,aGk=", bad: true},
		{name: "other scheme", in: "http://x/y.png", bad: true},
		{name: "no comma", in: "data:image/png;base64", bad: true},
		{name: "bad base64", in: "data:image/png;base64,a!b=", bad: true},
		{name: "misplaced padding", in: "data:image/png;base64,a=Gk", bad: true},
		{name: "bad escape", in: "data:,100%", bad: true},
		{name: "bad type", in: "data:image;base64,aGk=", bad: true},
		{name: "empty", in: "", bad: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data, ct, err := ParseDataURI(tt.in)
			if tt.bad {
				if !errors.Is(err, ErrDataURI) {
					t.Fatalf("err = %v, want ErrDataURI", err)
				}
				return
			}
			if err != nil || string(data) != tt.data || ct != tt.ct {
				t.Fatalf("got %q, %q, %v; want %q, %q", data, ct, err, tt.data, tt.ct)
			}
		})
	}
}
