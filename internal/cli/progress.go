package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nhscrypt/nhscrypt/filecrypt"
)

// treeProgress renders tree events: a one-line bar on a terminal, JSON
// Lines with --json, nothing otherwise (warnings still go to stderr).
type treeProgress struct {
	g     *globalOptions
	verb  string
	bar   bool
	mu    sync.Mutex
	enc   *json.Encoder
	files int
	bytes int64 // input bytes done
	total filecrypt.Event
	last  time.Time
	start time.Time
}

func (p *treeProgress) TreeEvent(e filecrypt.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch e.Kind {
	case filecrypt.EventStart:
		p.total = e
	case filecrypt.EventFile:
		p.files++
		p.bytes += e.InputBytes
	case filecrypt.EventSkipped:
		p.clearBar()
		p.g.warnf("skipped %q: %s", e.Path, e.Reason)
	case filecrypt.EventError:
		p.clearBar()
		fmt.Fprintf(p.g.stderr, "nhscrypt: error: %s\n", e.Reason)
	}
	if e.Kind == filecrypt.EventSkipped || e.Kind == filecrypt.EventError {
		if p.enc != nil {
			p.enc.Encode(jsonFileMessage{MessageType: string(e.Kind), Path: e.Path, Reason: e.Reason})
		}
		return
	}
	now := time.Now()
	if now.Sub(p.last) < 100*time.Millisecond && p.files != p.total.Files {
		return
	}
	p.last = now
	if p.enc != nil {
		p.enc.Encode(jsonStatus{MessageType: "status", FilesDone: p.files, FilesTotal: p.total.Files,
			BytesDone: p.bytes, BytesTotal: p.total.InputBytes})
	}
	if p.bar {
		p.drawBar(now)
	}
}

func (p *treeProgress) drawBar(now time.Time) {
	const width = 30
	frac := 1.0
	if p.total.InputBytes > 0 {
		frac = float64(p.bytes) / float64(p.total.InputBytes)
	} else if p.total.Files > 0 {
		frac = float64(p.files) / float64(p.total.Files)
	}
	n := int(frac * width)
	rate := float64(p.bytes) / now.Sub(p.start).Seconds()
	fmt.Fprintf(p.g.stderr, "\r\x1b[K[%s%s] %d/%d files  %s/%s  %s/s",
		strings.Repeat("=", n), strings.Repeat(" ", width-n), p.files, p.total.Files,
		humanBytes(p.bytes), humanBytes(p.total.InputBytes), humanBytes(int64(rate)))
}

func (p *treeProgress) clearBar() {
	if p.bar {
		fmt.Fprint(p.g.stderr, "\r\x1b[K")
	}
}

func (p *treeProgress) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar {
		p.drawBar(time.Now())
		fmt.Fprintln(p.g.stderr)
	}
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// runTree runs a tree operation with progress and prints its summary.
func runTree(g *globalOptions, verb string, run func(filecrypt.Progress) (*filecrypt.TreeResult, error)) error {
	p := &treeProgress{g: g, verb: verb, start: time.Now(),
		bar: !g.JSON && !g.Quiet && isTerminal(g.stderr)}
	if g.JSON {
		p.enc = json.NewEncoder(g.stdout)
	}
	res, err := run(p)
	p.finish()
	if res == nil {
		return err
	}
	failed := len(res.Failed)
	if g.JSON {
		p.mu.Lock()
		p.enc.Encode(jsonSummary{MessageType: "summary", Operation: verb, Files: res.Files, Bytes: res.Bytes,
			Skipped: len(res.Skipped), Failed: failed, Removed: res.Removed,
			Seconds: res.Elapsed.Seconds(), Interrupted: errors.Is(err, context.Canceled)})
		p.mu.Unlock()
	} else if !g.Quiet {
		fmt.Fprintf(g.stdout, "%sed %s (%s) in %.2fs; %d skipped, %d failed",
			verb, plural(res.Files, "file"), humanBytes(res.Bytes), res.Elapsed.Seconds(), len(res.Skipped), failed)
		if res.Removed > 0 {
			fmt.Fprintf(g.stdout, ", %d sources removed", res.Removed)
		}
		fmt.Fprintln(g.stdout)
	}
	if failed > 0 {
		// Each file's error was printed as it happened; say how many.
		return &summaryError{n: failed, first: err}
	}
	return err
}

// summaryError ends a tree run in which some files failed. It keeps the
// joined errors for the exit code.
type summaryError struct {
	n     int
	first error
}

func (e *summaryError) Error() string { return plural(e.n, "file") + " failed (see above)" }

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
func (e *summaryError) Unwrap() error { return e.first }

// JSON Lines messages of tree runs (docs/json.md). message_type comes first.
type jsonStatus struct {
	MessageType string `json:"message_type"`
	FilesDone   int    `json:"files_done"`
	FilesTotal  int    `json:"files_total"`
	BytesDone   int64  `json:"bytes_done"`
	BytesTotal  int64  `json:"bytes_total"`
}

type jsonFileMessage struct {
	MessageType string `json:"message_type"`
	Path        string `json:"path"`
	Reason      string `json:"reason"`
}

type jsonSummary struct {
	MessageType string  `json:"message_type"`
	Operation   string  `json:"operation"`
	Files       int     `json:"files"`
	Bytes       int64   `json:"bytes"`
	Skipped     int     `json:"skipped"`
	Failed      int     `json:"failed"`
	Removed     int     `json:"removed"`
	Seconds     float64 `json:"seconds"`
	Interrupted bool    `json:"interrupted"`
}
