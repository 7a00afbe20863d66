package main

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/falocal/falocal/api/files"
	"github.com/falocal/falocal/internal/fetch"
)

// fakeClock advances by step on every reading.
func fakeClock(step time.Duration) func() time.Time {
	t := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	return func() time.Time { t = t.Add(step); return t }
}

// runDownloads drives p through a step with a download of total bytes in
// 1 KiB chunks and one that fails.
func runDownloads(p *progress, total int64) {
	p.begin("installing model", "tiny")
	tr := p.track(fetch.Artifact{Name: "pkg.tgz", URL: "https://registry.example/pkg.tgz"}, total)
	chunk := make([]byte, 1024)
	for n := int64(0); n < total; n += int64(len(chunk)) {
		tr.Write(chunk)
	}
	tr.Done(nil)
	bad := p.track(fetch.Artifact{Name: "bad.tgz"}, 0)
	bad.Write(chunk)
	bad.Done(errors.New("checksum mismatch"))
	p.end(nil)
}

func TestProgress(t *testing.T) {
	for _, tc := range []struct {
		name      string
		tty       bool
		want      []string // substrings, in order
		lines     int      // newline-ended lines
		returns   int      // carriage returns (redraws), at least
		forbidden []string
	}{
		{
			name: "plain",
			want: []string{
				`msg="installing model" name=tiny`,
				`msg=downloading file=pkg.tgz url=https://registry.example/pkg.tgz bytes=65536`,
				`msg=downloaded file=pkg.tgz bytes=65536`, `rate=`,
				`msg="download failed" file=bad.tgz bytes=1024 err="checksum mismatch"`,
				`msg="installing model tiny: done"`,
			},
			lines:     6, // one per start and end, none per chunk
			forbidden: []string{"\r", "["},
		},
		{
			name: "terminal",
			tty:  true,
			want: []string{
				"\r\x1b[K⠙ installing model tiny",
				"\r\x1b[K  [", "] ", " / 64.0 KiB", "/s  pkg.tgz",
				"[========================]  64.0 KiB / 64.0 KiB",
				"  ✓ pkg.tgz  64.0 KiB in ", "\n",
				"  ✗ bad.tgz: checksum mismatch\n",
				"✓ installing model tiny (",
			},
			lines:     3, // the finished download, the failed one, the step
			returns:   10,
			forbidden: []string{"level=INFO"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			p := &progress{w: &out, tty: tc.tty, now: fakeClock(30 * time.Millisecond), redraw: 100 * time.Millisecond,
				log: slog.New(slog.NewTextHandler(&out, nil))}
			runDownloads(p, 64<<10)
			got := out.String()
			rest := got
			for _, w := range tc.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("output lacks %q (in order) in:\n%q", w, got)
				}
				rest = rest[i+len(w):]
			}
			if n := strings.Count(got, "\n"); n != tc.lines {
				t.Errorf("%d lines, want %d:\n%q", n, tc.lines, got)
			}
			if n := strings.Count(got, "\r"); n < tc.returns {
				t.Errorf("%d redraws, want at least %d", n, tc.returns)
			}
			// 64 chunks at 30 ms each: the redraws are throttled to about
			// one per 100 ms, not one per chunk.
			if n := strings.Count(got, "\r"); tc.tty && n > 40 {
				t.Errorf("%d redraws for 64 chunks", n)
			}
			for _, f := range tc.forbidden {
				if strings.Contains(got, f) {
					t.Errorf("output has %q:\n%q", f, got)
				}
			}
			if p.downloadedBytes() != 64<<10 {
				t.Errorf("downloaded %d bytes, want only the completed download's", p.downloadedBytes())
			}
		})
	}
}

// On a terminal a log record goes above the status line, which is drawn
// again below it.
func TestProgressLogAboveBar(t *testing.T) {
	var out bytes.Buffer
	p := &progress{w: &out, tty: true, now: fakeClock(time.Second), redraw: 100 * time.Millisecond}
	p.begin("installing model", "tiny")
	out.Reset()
	slog.New(slog.NewTextHandler(p, nil)).Warn("reinstalling")
	got := out.String()
	if !strings.HasPrefix(got, "\r\x1b[Ktime=") || !strings.Contains(got, "msg=reinstalling\n\r\x1b[K") ||
		!strings.HasSuffix(strings.TrimRight(got, "0123456789s"), "installing model tiny  ") {
		t.Errorf("log line not drawn above the status line: %q", got)
	}
}

// On a terminal the spinner turns by itself while a step makes no
// progress that it could report; close stops it and clears the line.
func TestProgressSpinner(t *testing.T) {
	var out bytes.Buffer
	p := newProgress(&out, true, nil)
	p.begin("converting", "model")
	frames := func() int {
		p.mu.Lock() // the ticker writes under it
		defer p.mu.Unlock()
		return strings.Count(out.String(), " converting model  ")
	}
	// begin draws one frame, the ticker the others: wait for two of them,
	// however busy the machine is.
	for deadline := time.Now().Add(time.Minute); frames() < 3; time.Sleep(p.redraw) {
		if time.Now().After(deadline) {
			t.Fatalf("%d spinner frames in a minute", frames())
		}
	}
	p.close()
	got := out.String()
	if !strings.HasSuffix(got, "\r\x1b[K") {
		t.Errorf("status line not cleared: %q", got)
	}
	time.Sleep(2 * p.redraw)
	if out.Len() != len(got) {
		t.Error("drawn after close")
	}
}

// A status line is cut to the terminal's width: a wrapped line could not
// be redrawn in place.
func TestProgressWidth(t *testing.T) {
	var out bytes.Buffer
	p := &progress{w: &out, tty: true, now: fakeClock(time.Second), redraw: 100 * time.Millisecond, width: 40}
	tr := p.track(fetch.Artifact{Name: "a-package-with-a-long-name-1.2.3.tgz"}, 1<<20)
	tr.Write(make([]byte, 1<<19))
	for _, l := range strings.Split(out.String(), "\r\x1b[K")[1:] {
		if n := len([]rune(l)); n > 39 {
			t.Errorf("%d columns: %q", n, l)
		}
	}
	if !strings.Contains(out.String(), "[============            ]  512.0 KiB") {
		t.Errorf("no half bar in %q", out.String())
	}
}

func TestHumanBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1536: "1.5 KiB", 113507888: "108.2 MiB", 5 << 40: "5.0 TiB"} {
		if got := files.HumanBytes(n); got != want {
			t.Errorf("files.HumanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}
