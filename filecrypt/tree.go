package filecrypt

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nhscrypt/nhscrypt/internal/atomicfile"
)

// Suffix is the name suffix of encrypted files in a tree.
const Suffix = ".age"

// TreeOptions control EncryptTree and DecryptTree.
type TreeOptions struct {
	// Workers bounds the files processed at once; 0 means GOMAXPROCS.
	Workers int
	// Overwrite allows replacing existing outputs.
	Overwrite bool
	// RemoveSource deletes each source file once its output was written,
	// synced, read back and verified (encrypt: decrypted with the file key
	// and compared by SHA-256; decrypt: authenticated in full). Deleting a
	// file does not erase its data from SSDs or copy-on-write filesystems.
	RemoveSource bool
	// Progress, if set, receives events. It is called from many goroutines
	// at once, and must be quick.
	Progress Progress
}

// Progress receives tree events.
type Progress interface {
	TreeEvent(Event)
}

// EventKind says what an Event reports.
type EventKind string

// Event kinds.
const (
	EventStart   EventKind = "start"   // Files and InputBytes hold the totals to do
	EventFile    EventKind = "file"    // one file done; Path, Bytes
	EventSkipped EventKind = "skipped" // Path, Reason: not a regular file
	EventError   EventKind = "error"   // Path, Reason: this file failed
)

// Event is one progress report. It never holds file contents or keys.
type Event struct {
	Kind   EventKind `json:"kind"`
	Path   string    `json:"path,omitempty"`
	Reason string    `json:"reason,omitempty"`
	Files  int       `json:"files,omitempty"`
	Bytes  int64     `json:"bytes,omitempty"` // plaintext bytes
	// InputBytes is the size of the input file (EventFile) or of all input
	// files (EventStart), for progress in input terms.
	InputBytes int64 `json:"input_bytes,omitempty"`
}

// Skipped is an entry that was not processed, and why.
type Skipped struct {
	Path   string `json:"path"`
	Reason string `json:"reason"`
}

// FileError is a file that failed.
type FileError struct {
	Path string
	Err  error
}

func (e *FileError) Error() string { return e.Err.Error() }
func (e *FileError) Unwrap() error { return e.Err }

// TreeResult summarises a tree run.
type TreeResult struct {
	Files   int       `json:"files"`   // files written
	Bytes   int64     `json:"bytes"`   // plaintext bytes
	Removed int       `json:"removed"` // sources removed (RemoveSource)
	Skipped []Skipped `json:"skipped"`
	// Failed lists the files that failed; the error returned with the
	// result joins their errors.
	Failed  []*FileError  `json:"-"`
	Elapsed time.Duration `json:"elapsed_ns"`
}

type job struct {
	rel  string // relative source path
	info fs.FileInfo
}

type treeOp struct {
	src, dst string
	opts     TreeOptions
	file     func(ctx context.Context, j job, src, dst string) (int64, error)
	outName  func(rel string) (string, bool)
}

// EncryptTree encrypts every regular file under src to dst/REL.age, keeping
// the directory layout, permission bits and modification times (and, as
// root, owners). Symlinks and special files are reported as skipped and never
// followed. dst may exist; existing outputs are an error for that file unless
// Overwrite. On failure of some files the others are still processed and
// the error joins the per-file errors (each a *FileError). On cancellation
// it stops and removes every partial output.
func EncryptTree(ctx context.Context, src, dst string, enc EncryptOptions, opts TreeOptions) (*TreeResult, error) {
	if len(enc.Recipients) == 0 {
		return nil, errors.New("no recipients given")
	}
	fo := FileOptions{Overwrite: opts.Overwrite, KeepMetadata: true}
	op := &treeOp{src: src, dst: dst, opts: opts,
		outName: func(rel string) (string, bool) { return rel + Suffix, true },
		file: func(ctx context.Context, j job, s, d string) (int64, error) {
			if !opts.RemoveSource {
				return EncryptFile(ctx, s, d, enc, fo)
			}
			k := &keyCapture{}
			defer k.wipe()
			n, sum, err := encryptFile(ctx, s, d, enc, fo, k)
			if err != nil {
				return n, err
			}
			if err := verifyCiphertext(ctx, d, k, sum); err != nil {
				return n, fmt.Errorf("verifying %q before removing its source: %w", d, err)
			}
			return n, removeIfUnchanged(s, j.info)
		},
	}
	return op.run(ctx)
}

// DecryptTree decrypts every REL.age file under src to dst/REL, keeping
// permission bits, modification times and (as root) owners of the encrypted
// files. Other files are reported as skipped. Each plaintext file appears
// only after it authenticated in full. Errors are as for EncryptTree; a
// wrong key gives *WrongKeyError inside each *FileError.
func DecryptTree(ctx context.Context, src, dst string, dec DecryptOptions, opts TreeOptions) (*TreeResult, error) {
	fo := FileOptions{Overwrite: opts.Overwrite, KeepMetadata: true}
	op := &treeOp{src: src, dst: dst, opts: opts,
		outName: func(rel string) (string, bool) {
			out := strings.TrimSuffix(rel, Suffix)
			return out, out != rel && filepath.Base(out) != ""
		},
		file: func(ctx context.Context, j job, s, d string) (int64, error) {
			n, err := DecryptFile(ctx, s, d, dec, fo)
			if err != nil || !opts.RemoveSource {
				return n, err
			}
			return n, removeIfUnchanged(s, j.info)
		},
	}
	return op.run(ctx)
}

// removeIfUnchanged removes a processed source file unless it changed while
// it was being read.
func removeIfUnchanged(path string, before fs.FileInfo) error {
	now, err := os.Lstat(path)
	if err != nil {
		return err
	}
	if now.Size() != before.Size() || !now.ModTime().Equal(before.ModTime()) || !os.SameFile(now, before) {
		return fmt.Errorf("%q changed while it was processed; not removed", path)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("removing source: %w", err)
	}
	return nil
}

func (op *treeOp) run(ctx context.Context) (*TreeResult, error) {
	start := time.Now()
	src, err := filepath.Abs(op.src)
	if err != nil {
		return nil, err
	}
	dst, err := filepath.Abs(op.dst)
	if err != nil {
		return nil, err
	}
	st, err := os.Stat(src)
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("%q is not a directory", op.src)
	}
	if dst == src || strings.HasPrefix(dst, src+string(filepath.Separator)) {
		return nil, fmt.Errorf("output %q must not be inside the source tree %q", op.dst, op.src)
	}
	res := &TreeResult{}
	var jobs []job
	var dirs []job
	var total int64
	err = filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		rel, _ := filepath.Rel(src, p)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			dirs = append(dirs, job{rel, info})
		case d.Type().IsRegular():
			if atomicfile.IsTemp(d.Name()) {
				op.skip(res, rel, "temporary file of an interrupted run")
			} else if _, ok := op.outName(rel); !ok {
				op.skip(res, rel, "not an "+Suffix+" file")
			} else {
				jobs = append(jobs, job{rel, info})
				total += info.Size()
			}
		case d.Type()&fs.ModeSymlink != 0:
			op.skip(res, rel, "symbolic link, not followed")
		default:
			op.skip(res, rel, "special file ("+d.Type().String()+"), not read")
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("walking %q: %w", op.src, err)
	}
	// Create the directory layout first, owner-writable; fix modes last.
	for _, d := range dirs {
		if err := os.MkdirAll(filepath.Join(dst, d.rel), 0o700); err != nil {
			return nil, err
		}
	}
	op.event(Event{Kind: EventStart, Files: len(jobs), InputBytes: total})

	workers := op.opts.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	ch := make(chan job)
	var mu sync.Mutex
	var files, removed atomic.Int64
	var bytes atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range ch {
				out, _ := op.outName(j.rel)
				n, err := op.file(ctx, j, filepath.Join(src, j.rel), filepath.Join(dst, out))
				if err != nil {
					if ctx.Err() != nil {
						continue
					}
					mu.Lock()
					res.Failed = append(res.Failed, &FileError{Path: j.rel, Err: err})
					mu.Unlock()
					op.event(Event{Kind: EventError, Path: j.rel, Reason: err.Error()})
					continue
				}
				files.Add(1)
				bytes.Add(n)
				if op.opts.RemoveSource {
					removed.Add(1)
				}
				op.event(Event{Kind: EventFile, Path: j.rel, Bytes: n, InputBytes: j.info.Size()})
			}
		}()
	}
feed:
	for _, j := range jobs {
		select {
		case ch <- j:
		case <-ctx.Done():
			break feed
		}
	}
	close(ch)
	wg.Wait()
	res.Files, res.Bytes, res.Removed = int(files.Load()), bytes.Load(), int(removed.Load())
	res.Elapsed = time.Since(start)
	if err := ctx.Err(); err != nil {
		return res, err
	}
	// Directory modes and times, deepest first so that setting a child's
	// time does not disturb its parent's.
	sort.Slice(dirs, func(a, b int) bool { return len(dirs[a].rel) > len(dirs[b].rel) })
	for _, d := range dirs {
		p := filepath.Join(dst, d.rel)
		if sys, ok := d.info.Sys().(*syscall.Stat_t); ok && os.Geteuid() == 0 {
			os.Lchown(p, int(sys.Uid), int(sys.Gid))
		}
		if err := os.Chmod(p, d.info.Mode().Perm()|0o700); err != nil {
			return res, err
		}
		os.Chtimes(p, d.info.ModTime(), d.info.ModTime())
	}
	res.Elapsed = time.Since(start)
	sort.Slice(res.Failed, func(a, b int) bool { return res.Failed[a].Path < res.Failed[b].Path })
	if len(res.Failed) > 0 {
		errs := make([]error, len(res.Failed))
		for i, f := range res.Failed {
			errs[i] = f
		}
		return res, errors.Join(errs...)
	}
	return res, nil
}

func (op *treeOp) skip(res *TreeResult, rel, reason string) {
	res.Skipped = append(res.Skipped, Skipped{Path: rel, Reason: reason})
	op.event(Event{Kind: EventSkipped, Path: rel, Reason: reason})
}

func (op *treeOp) event(e Event) {
	if op.opts.Progress != nil {
		op.opts.Progress.TreeEvent(e)
	}
}
