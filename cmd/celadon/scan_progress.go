package main

// The progress line of `celadon scan` on a terminal.

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/term"
)

// progress shows, on one line of stderr rewritten in place, what a scan
// of a cluster is listing and how far it is; only when stderr is a
// terminal, so that logs and pipes get nothing of it.
type progress struct {
	w     io.Writer
	on    bool
	width int // of the terminal; 0 unknown
	start time.Time
	last  time.Time
	shown bool
}

// progressInterval is how often the line is rewritten at most.
const progressInterval = 100 * time.Millisecond

func newProgress(w io.Writer) *progress {
	p := &progress{w: w, start: time.Now()}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		p.on = true
		p.width, _, _ = term.GetSize(int(f.Fd()))
	}
	return p
}

// update shows the resource being listed: done of total objects (total
// -1 when unknown), and the scan's objects and denials so far.
func (p *progress) update(resource string, done, total, scanned, denied int) {
	if !p.on {
		return
	}
	now := time.Now()
	if now.Sub(p.last) < progressInterval && (total < 0 || done < total) {
		return
	}
	p.last = now
	line := progressLine(resource, done, total, scanned, denied, now.Sub(p.start))
	if p.width > 1 && len(line) >= p.width {
		line = line[:p.width-1]
	}
	fmt.Fprintf(p.w, "\r\033[K%s", line)
	p.shown = true
}

// progressLine is the text of the progress line.
func progressLine(resource string, done, total, scanned, denied int, elapsed time.Duration) string {
	var b strings.Builder
	if total > 0 {
		const width = 20
		fill := min(width*done/total, width)
		fmt.Fprintf(&b, "[%s%s] %3d%% ", strings.Repeat("=", fill), strings.Repeat(" ", width-fill), 100*done/total)
		fmt.Fprintf(&b, "%s %d/%d", resource, done, total)
	} else {
		fmt.Fprintf(&b, "%s %d", resource, done)
	}
	fmt.Fprintf(&b, " · %d objects scanned, %d denied · %s", scanned, denied, elapsed.Round(time.Second))
	return b.String()
}

// finish clears the line.
func (p *progress) finish() {
	if p.shown {
		fmt.Fprint(p.w, "\r\033[K")
		p.shown = false
	}
}
