package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"

	"github.com/falocal/falocal/api/files"
	"github.com/falocal/falocal/internal/fetch"
)

// progress shows what setup is doing. On a terminal one status line is
// redrawn in place: a bar for the download under way, else a spinner for
// the step (an install, a conversion); finished downloads and steps stay
// on screen as one line each. Elsewhere (a log file, a pipe) each download
// and step is one log line when it starts and one when it ends.
type progress struct {
	w   io.Writer
	tty bool
	log *slog.Logger // plain mode's lines
	now func() time.Time
	// redraw is how often a terminal's line is drawn at most.
	redraw time.Duration
	// width is the terminal's (0 = unknown): a longer status line would
	// wrap, and a carriage return cannot take back a wrapped line.
	width int

	mu         sync.Mutex
	step       string
	stepStart  time.Time
	dl         *tracker // the download shown
	drawn      time.Time
	frame      int
	downloaded int64 // bytes of the downloads that completed
	stop       chan struct{}
	stopped    chan struct{}
}

// isTerminal says whether w is a terminal that can redraw a line.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd())) && os.Getenv("TERM") != "dumb"
}

// newProgress reports to w: bars when tty, else lines on log. On a
// terminal a ticker keeps the spinner turning; close stops it.
func newProgress(w io.Writer, tty bool, log *slog.Logger) *progress {
	p := &progress{w: w, tty: tty, log: log, now: time.Now, redraw: 100 * time.Millisecond}
	if tty {
		p.width = termWidth(w)
		p.stop, p.stopped = make(chan struct{}), make(chan struct{})
		go p.tick()
	}
	return p
}

func (p *progress) tick() {
	defer close(p.stopped)
	t := time.NewTicker(p.redraw)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			p.mu.Lock()
			p.draw(true)
			p.mu.Unlock()
		}
	}
}

// close stops the ticker and clears the status line.
func (p *progress) close() {
	if p.stop != nil {
		close(p.stop)
		<-p.stopped
		p.stop = nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty && (p.step != "" || p.dl != nil) {
		fmt.Fprint(p.w, "\r\x1b[K")
	}
}

// Write prints a log record above the status line (the logger's output on
// a terminal), so that log lines and the bar do not overwrite each other.
func (p *progress) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty {
		fmt.Fprint(p.w, "\r\x1b[K")
	}
	n, err := p.w.Write(b)
	p.draw(true)
	return n, err
}

// begin starts a step, e.g. ("installing model", "whisper-base").
func (p *progress) begin(msg, name string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.step, p.stepStart = msg+" "+name, p.now()
	if !p.tty {
		p.log.Info(msg, "name", name)
		return
	}
	p.draw(true)
}

// end finishes the step begun last.
func (p *progress) end(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	took := p.now().Sub(p.stepStart).Round(time.Second)
	step := p.step
	p.step = ""
	if !p.tty {
		if err != nil {
			p.log.Warn(step+": failed", "took", took, "err", err)
		} else {
			p.log.Info(step+": done", "took", took)
		}
		return
	}
	mark := "✓"
	if err != nil {
		mark = "✗"
	}
	fmt.Fprintf(p.w, "\r\x1b[K%s %s (%s)\n", mark, step, took)
}

// track is fetch.Client's Progress hook.
func (p *progress) track(a fetch.Artifact, total int64) fetch.Tracker {
	p.mu.Lock()
	defer p.mu.Unlock()
	t := &tracker{p: p, name: a.Name, total: total, start: p.now()}
	p.dl = t
	if !p.tty {
		p.log.Info("downloading", "file", a.Name, "url", a.URL, "bytes", total)
		return t
	}
	p.draw(true)
	return t
}

// downloadedBytes is the size of the downloads that completed.
func (p *progress) downloadedBytes() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.downloaded
}

// tracker follows one download.
type tracker struct {
	p     *progress
	name  string
	total int64
	n     int64
	start time.Time
}

func (t *tracker) Write(b []byte) (int, error) {
	t.p.mu.Lock()
	defer t.p.mu.Unlock()
	t.n += int64(len(b))
	t.p.draw(false)
	return len(b), nil
}

func (t *tracker) Done(err error) {
	p := t.p
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.dl == t {
		p.dl = nil
	}
	took := p.now().Sub(t.start)
	if err == nil {
		p.downloaded += t.n
	}
	if !p.tty {
		if err != nil {
			p.log.Warn("download failed", "file", t.name, "bytes", t.n, "err", err)
		} else {
			p.log.Info("downloaded", "file", t.name, "bytes", t.n, "took", took.Round(time.Millisecond), "rate", byteRate(t.n, took))
		}
		return
	}
	if err != nil {
		fmt.Fprintf(p.w, "\r\x1b[K  ✗ %s: %v\n", t.name, err)
	} else {
		fmt.Fprintf(p.w, "\r\x1b[K  ✓ %s  %s in %s (%s)\n", t.name, files.HumanBytes(t.n), took.Round(100*time.Millisecond), byteRate(t.n, took))
	}
	p.draw(true)
}

var spinnerFrames = []string{"⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"}

// draw redraws the terminal's status line: the download's bar, else the
// step's spinner. Unless forced it draws at most once per redraw interval.
// p.mu is held.
func (p *progress) draw(force bool) {
	if !p.tty {
		return
	}
	now := p.now()
	if !force && now.Sub(p.drawn) < p.redraw {
		return
	}
	p.drawn = now
	var line string
	switch {
	case p.dl != nil:
		t := p.dl
		// The numbers go first: they matter more than a long file name.
		line = "  " + progressBar(t.n, t.total, 24) + "  " + files.HumanBytes(t.n)
		if t.total > 0 {
			line += " / " + files.HumanBytes(t.total)
		}
		line += "  " + byteRate(t.n, now.Sub(t.start)) + "  " + t.name
	case p.step != "":
		p.frame = (p.frame + 1) % len(spinnerFrames)
		line = fmt.Sprintf("%s %s  %s", spinnerFrames[p.frame], p.step, now.Sub(p.stepStart).Round(time.Second))
	default:
		return
	}
	fmt.Fprint(p.w, "\r\x1b[K"+fitWidth(line, p.width))
}

// termWidth is the columns of the terminal w is (0 = unknown).
func termWidth(w io.Writer) int {
	if f, ok := w.(*os.File); ok {
		if cols, _, err := term.GetSize(int(f.Fd())); err == nil {
			return cols
		}
	}
	return 0
}

// fitWidth cuts a status line short of width columns (0 = unknown): a
// line that wraps cannot be redrawn in place by a carriage return.
func fitWidth(line string, width int) string {
	if r := []rune(line); width > 1 && len(r) >= width {
		return string(r[:width-1])
	}
	return line
}

// progressBar is a width-wide bar of n out of total (of question marks
// when the total is unknown).
func progressBar(n, total int64, width int) string {
	if total <= 0 {
		return "[" + strings.Repeat("?", width) + "]"
	}
	full := int(min(n, total) * int64(width) / total)
	return "[" + strings.Repeat("=", full) + strings.Repeat(" ", width-full) + "]"
}

func byteRate(n int64, d time.Duration) string {
	if d <= 0 {
		return "-/s"
	}
	return files.HumanBytes(int64(float64(n)/d.Seconds())) + "/s"
}
