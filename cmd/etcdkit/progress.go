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
// percentage, bytes done of the total and the rate. It is made before the
// total is known; the first report decides, once, whether stderr is a
// terminal (a scan reports per read) and starts the clock. It redraws at
// most every 100 ms so a fast copy spends no time on drawing. Report is the
// progress callback of every capability package: func(done, total int64).
type progressBar struct {
	w       io.Writer
	label   string
	decided bool // whether the first report asked about the terminal
	on      bool // stderr is a terminal: draw
	start   time.Time
	mu      sync.Mutex
	last    time.Time
	drawn   bool
}

// newProgress returns a bar for stderr.
func newProgress(stderr io.Writer, label string) *progressBar {
	return &progressBar{w: stderr, label: label}
}

// isTerminal asks the kernel whether f is a terminal (a variable so a test
// can count the questions).
var isTerminal = func(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// Report records that done of total bytes are finished.
func (p *progressBar) Report(done, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.decided {
		f, ok := p.w.(*os.File)
		p.decided, p.on, p.start = true, ok && isTerminal(f), time.Now()
	}
	if !p.on {
		return
	}
	now := time.Now()
	if now.Sub(p.last) < 100*time.Millisecond && done < total {
		return
	}
	p.last = now
	p.drawn = true
	fmt.Fprint(p.w, "\r"+renderProgress(p.label, done, total, now.Sub(p.start))+"\x1b[K")
}

// Done ends the line, if one was drawn.
func (p *progressBar) Done() {
	if p.drawn {
		fmt.Fprintln(p.w)
	}
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
