package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// progressBar draws one self-overwriting line on a terminal: a bar, the
// percentage, bytes done of the total and the rate. It redraws at most
// every 100 ms so a fast copy spends no time on drawing.
type progressBar struct {
	w     io.Writer
	label string
	total int64
	start time.Time
	mu    sync.Mutex
	last  time.Time
	drawn bool
}

// newProgress returns a bar on stderr when stderr is a terminal, else nil.
// A nil *progressBar ignores every call.
func newProgress(stderr io.Writer, label string, total int64) *progressBar {
	f, ok := stderr.(*os.File)
	if !ok || !isTerminal(f) {
		return nil
	}
	return &progressBar{w: f, label: label, total: total, start: time.Now()}
}

// isTerminal asks the kernel whether f is a terminal (a variable so a test
// can count the questions).
var isTerminal = func(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// Set records that done bytes are finished.
func (p *progressBar) Set(done int64) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	if now.Sub(p.last) < 100*time.Millisecond && done < p.total {
		return
	}
	p.last = now
	p.drawn = true
	fmt.Fprint(p.w, "\r"+renderProgress(p.label, done, p.total, now.Sub(p.start))+"\x1b[K")
}

// Done ends the line.
func (p *progressBar) Done() {
	if p == nil || !p.drawn {
		return
	}
	fmt.Fprintln(p.w)
}

func renderProgress(label string, done, total int64, elapsed time.Duration) string {
	const width = 30
	frac := 0.0
	if total > 0 {
		frac = min(float64(done)/float64(total), 1)
	}
	n := int(frac * width)
	bar := strings.Repeat("=", n) + strings.Repeat(" ", width-n)
	if n > 0 && n < width {
		bar = bar[:n-1] + ">" + bar[n:]
	}
	rate := ""
	if s := elapsed.Seconds(); s > 0 {
		rate = fmt.Sprintf(" %s/s", humanBytes(int64(float64(done)/s)))
	}
	return fmt.Sprintf("%s [%s] %3.0f%% %s/%s%s", label, bar, frac*100, humanBytes(done), humanBytes(total), rate)
}

// lazyBar is a progress bar created at the first report, when the total is
// known. Report is the callback for the capability packages.
type lazyBar struct {
	w       io.Writer
	label   string
	decided bool // whether the bar was made, or found not wanted
	bar     *progressBar
}

func newLazyBar(w io.Writer, label string) *lazyBar { return &lazyBar{w: w, label: label} }

// Report records progress. Whether stderr is a terminal is asked once, at
// the first report, not at every one (a scan reports per read).
func (l *lazyBar) Report(done, total int64) {
	if !l.decided {
		l.bar, l.decided = newProgress(l.w, l.label, total), true
	}
	l.bar.Set(done)
}

// Done ends the bar's line, if one was drawn.
func (l *lazyBar) Done() { l.bar.Done() }
