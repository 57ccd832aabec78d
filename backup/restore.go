package backup

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"

	"filippo.io/age"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"

	"github.com/nhscrypt/nhscrypt/internal/atomicfile"
)

// RestoreOptions say where and what to restore.
type RestoreOptions struct {
	// Target is the folder to restore into; a file backed up as /srv/a is
	// restored as Target/srv/a.
	Target string
	// Includes limit the restore to these paths and what is under them.
	Includes []string
	// Identities decrypt the manifest and the objects.
	Identities []age.Identity
	// Overwrite allows replacing existing files.
	Overwrite bool
	Workers   int
	Progress  Progress
}

// RestoreResult says what was restored and what was not.
type RestoreResult struct {
	Files int   `json:"files"`
	Dirs  int   `json:"dirs"`
	Bytes int64 `json:"bytes"`
	// Failed lists files that were not restored, with why (a damaged or
	// missing object, a hash mismatch, an existing file).
	Failed []Warning `json:"failed"`
}

// objectReader streams one data object: ciphertext hashed against its name,
// decrypted, decompressed, as tar.
type objectReader struct {
	rc   io.ReadCloser
	h    hash.Hash
	name string
	zr   *zstd.Decoder
	tr   *tar.Reader
}

func (r *Repository) openObject(ctx context.Context, name string, ids []age.Identity) (*objectReader, error) {
	rc, err := r.Backend.Open(ctx, Handle{Type: DataFile, Name: name}, 0, 0)
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	ar, err := age.Decrypt(io.TeeReader(rc, h), ids...)
	if err != nil {
		rc.Close()
		var nm *age.NoIdentityMatchError
		if errors.As(err, &nm) {
			return nil, fmt.Errorf("object %s: %w", short(name), errWrongKey(nm))
		}
		return nil, fmt.Errorf("object %s is damaged: %v", short(name), err)
	}
	zr, err := zstd.NewReader(ar, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
	if err != nil {
		rc.Close()
		return nil, err
	}
	return &objectReader{rc: rc, h: h, name: name, zr: zr, tr: tar.NewReader(zr)}, nil
}

func (o *objectReader) close() {
	o.zr.Close()
	o.rc.Close()
}

// finish reads the rest of the object and checks its hash.
func (o *objectReader) finish() error {
	if _, err := io.Copy(io.Discard, o.zr); err != nil {
		return fmt.Errorf("object %s is damaged: %v", short(o.name), err)
	}
	io.Copy(io.Discard, o.rc)
	if hex.EncodeToString(o.h.Sum(nil)) != o.name {
		return fmt.Errorf("object %s is damaged: its content does not match its name", short(o.name))
	}
	return nil
}

// WrongKeyError says no identity opened an object or manifest.
type WrongKeyError struct{ StanzaTypes []string }

func (e *WrongKeyError) Error() string {
	return "no identity matched; the repository is encrypted to: " + strings.Join(e.StanzaTypes, ", ")
}

func errWrongKey(nm *age.NoIdentityMatchError) error {
	return &WrongKeyError{StanzaTypes: nm.StanzaTypes}
}

func included(path string, includes []string) bool {
	if len(includes) == 0 {
		return true
	}
	for _, inc := range includes {
		inc = strings.TrimSuffix(inc, "/")
		if path == inc || strings.HasPrefix(path, inc+"/") || inc == "" {
			return true
		}
	}
	return false
}

// Restore restores the entries of manifest m into opts.Target. Objects are
// streamed, never staged on disk; every file is written to a temporary
// name, checked against its SHA-256 and only then renamed into place, with
// its mode, modification time and (as root) owner. Files are not synced one
// by one: the files of each object are written to temporary names, the
// target's filesystem is synced once, and only then are they renamed into
// place, so no name ever points at data a crash could lose; the renames
// are synced at the end, so the restore is durable when Restore returns. A damaged object costs only the files it
// holds: the rest is restored, and Failed names the lost files.
func (r *Repository) Restore(ctx context.Context, m *Manifest, opts RestoreOptions) (*RestoreResult, error) {
	if opts.Workers <= 0 {
		opts.Workers = runtime.GOMAXPROCS(0)
	}
	res := &RestoreResult{}
	var mu sync.Mutex
	fail := func(path, msg string) {
		mu.Lock()
		res.Failed = append(res.Failed, Warning{Path: path, Message: msg})
		mu.Unlock()
	}
	target, err := filepath.Abs(opts.Target)
	if err != nil {
		return nil, err
	}
	dest := func(p string) string { return filepath.Join(target, p) }
	var dirs, links, hardlinks, streams []*Entry
	byObject := map[string]map[string]*Entry{}
	var total int64
	for i := range m.Entries {
		e := &m.Entries[i]
		if !included(e.Path, opts.Includes) {
			continue
		}
		switch e.Type {
		case TypeDir:
			dirs = append(dirs, e)
		case TypeSymlink, TypeFIFO:
			links = append(links, e)
		case TypeHardlink:
			hardlinks = append(hardlinks, e)
		case TypeStream:
			streams = append(streams, e)
			total += e.Size
		case TypeFile:
			if byObject[e.Object] == nil {
				byObject[e.Object] = map[string]*Entry{}
			}
			byObject[e.Object][e.Member] = e
			total += e.Size
		}
	}
	if opts.Progress != nil {
		opts.Progress.BackupEvent(Event{Kind: EventStart, Bytes: total})
	}
	if err := os.MkdirAll(target, 0o700); err != nil {
		return nil, err
	}
	for _, d := range dirs {
		if err := os.MkdirAll(dest(d.Path), 0o700); err != nil {
			return nil, fmt.Errorf("creating %q: %w", dest(d.Path), err)
		}
	}
	objs := make([]string, 0, len(byObject))
	for o := range byObject {
		objs = append(objs, o)
	}
	sort.Strings(objs)
	ch := make(chan string)
	var wg sync.WaitGroup
	for range opts.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, copyBufferSize)
			for name := range ch {
				r.restoreObject(ctx, name, byObject[name], dest, opts, res, &mu, fail, buf, target)
			}
		}()
	}
	for _, o := range objs {
		if ctx.Err() != nil {
			break
		}
		ch <- o
	}
	close(ch)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return res, err
	}
	for _, e := range streams {
		if err := r.restoreStream(ctx, e, dest(e.Path), opts); err != nil {
			if ctx.Err() != nil {
				return res, ctx.Err()
			}
			fail(e.Path, err.Error())
			continue
		}
		res.Files++
		res.Bytes += e.Size
	}
	for _, e := range hardlinks {
		p := dest(e.Path)
		if opts.Overwrite {
			os.Remove(p)
		}
		if err := os.Link(dest(e.Link), p); err != nil {
			fail(e.Path, "hard link: "+errText(err))
			continue
		}
		res.Files++
	}
	// Symlinks last, so no file is ever written through one.
	for _, e := range links {
		p := dest(e.Path)
		if opts.Overwrite {
			os.Remove(p)
		}
		var err error
		if e.Type == TypeSymlink {
			err = os.Symlink(e.Link, p)
		} else {
			err = mkfifo(p, e.Mode&0o7777)
		}
		if err != nil {
			fail(e.Path, errText(err))
			continue
		}
		lchownRoot(p, e)
		if e.Type == TypeSymlink {
			setLinkTime(p, e.MTime)
		}
	}
	// Folder modes and times, deepest first.
	sort.Slice(dirs, func(i, j int) bool { return len(dirs[i].Path) > len(dirs[j].Path) })
	for _, d := range dirs {
		p := dest(d.Path)
		lchownRoot(p, d)
		os.Chmod(p, fs.FileMode(d.Mode&0o777)|modeBits(d.Mode))
		os.Chtimes(p, d.MTime, d.MTime)
		res.Dirs++
	}
	sort.Slice(res.Failed, func(i, j int) bool { return res.Failed[i].Path < res.Failed[j].Path })
	if err := syncFS(target); err != nil {
		return res, fmt.Errorf("syncing the restored files in %q: %w", target, err)
	}
	return res, nil
}

// syncFS flushes the filesystem holding dir to disk: one call instead of an
// fsync of every restored file and its folder, which on ext4 cost more
// than decrypting, decompressing and hashing a tree of small files.
func syncFS(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return unix.Syncfs(int(d.Fd()))
}

func modeBits(m uint32) fs.FileMode {
	var b fs.FileMode
	if m&0o4000 != 0 {
		b |= fs.ModeSetuid
	}
	if m&0o2000 != 0 {
		b |= fs.ModeSetgid
	}
	if m&0o1000 != 0 {
		b |= fs.ModeSticky
	}
	return b
}

func lchownRoot(p string, e *Entry) {
	if os.Geteuid() == 0 {
		os.Lchown(p, e.UID, e.GID)
	}
}

// restoreObject streams one object and writes the wanted members.
func (r *Repository) restoreObject(ctx context.Context, name string, want map[string]*Entry, dest func(string) string,
	opts RestoreOptions, res *RestoreResult, mu *sync.Mutex, fail func(string, string), buf []byte, target string) {
	failRest := func(msg string) {
		for _, e := range want {
			fail(e.Path, msg)
		}
	}
	// Files written from this object wait, finished but unnamed, until
	// their data is durable.
	type done struct {
		f *atomicfile.File
		e *Entry
		n int64
	}
	var written []done
	defer func() {
		for _, d := range written {
			d.f.Abort() // no-op once published
		}
	}()
	publish := func() {
		if len(written) == 0 {
			return
		}
		if err := syncFS(target); err != nil {
			for _, d := range written {
				fail(d.e.Path, "syncing: "+err.Error())
			}
			return
		}
		for _, d := range written {
			if err := d.f.Publish(); err != nil {
				if errors.Is(err, fs.ErrExist) {
					fail(d.e.Path, "exists; not overwritten (use --overwrite)")
				} else {
					fail(d.e.Path, err.Error())
				}
				continue
			}
			mu.Lock()
			res.Files++
			res.Bytes += d.n
			mu.Unlock()
			if opts.Progress != nil {
				opts.Progress.BackupEvent(Event{Kind: EventFile, Path: d.e.Path, Bytes: d.n})
			}
		}
	}
	or, err := r.openObject(ctx, name, opts.Identities)
	if err != nil {
		failRest(err.Error())
		return
	}
	defer or.close()
	for len(want) > 0 {
		hdr, err := or.tr.Next()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			msg := fmt.Sprintf("object %s is damaged or truncated: %v", short(name), err)
			if err == io.EOF {
				msg = fmt.Sprintf("object %s does not hold this file", short(name))
			}
			failRest(msg)
			break
		}
		e, ok := want[hdr.Name]
		if !ok {
			continue
		}
		delete(want, hdr.Name)
		f, n, err := writeFile(dest(e.Path), or.tr, e, opts.Overwrite, buf)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			fail(e.Path, err.Error())
			continue
		}
		written = append(written, done{f, e, n})
	}
	if ctx.Err() == nil {
		publish()
	}
}

// writeFile writes one file from r to a temporary name beside p and checks
// its size and hash. It returns the finished (closed, unsynced) file: the
// caller makes the data durable for a whole object at once and only then
// publishes the names, so no name ever points at data a crash could lose.
func writeFile(p string, r io.Reader, e *Entry, overwrite bool, buf []byte) (*atomicfile.File, int64, error) {
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return nil, 0, err
	}
	f, err := atomicfile.Create(p, fs.FileMode(e.Mode&0o777)|modeBits(e.Mode), overwrite)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, 0, errors.New("exists; not overwritten (use --overwrite)")
		}
		return nil, 0, err
	}
	h := sha256.New()
	var w io.Writer = f
	if e.Sparse {
		w = &sparseWriter{f: f.File}
	}
	n, err := io.CopyBuffer(io.MultiWriter(w, h), r, buf)
	if err != nil {
		f.Abort()
		return nil, n, fmt.Errorf("reading from the backup: %v", err)
	}
	if e.Sparse {
		if err := f.Truncate(n); err != nil {
			f.Abort()
			return nil, n, err
		}
	}
	if n != e.Size || hex.EncodeToString(h.Sum(nil)) != e.SHA256 {
		f.Abort()
		return nil, n, errors.New("content does not match the manifest's SHA-256 (damaged backup); not restored")
	}
	f.SetModTime(e.MTime)
	f.SetOwner(e.UID, e.GID)
	if err := f.Finish(false); err != nil {
		return nil, n, err
	}
	return f, n, nil
}

// sparseWriter seeks over all-zero blocks, leaving holes.
type sparseWriter struct{ f *os.File }

func (s *sparseWriter) Write(p []byte) (int, error) {
	const block = 4096
	written := 0
	for len(p) > 0 {
		n := min(block, len(p))
		if allZero(p[:n]) {
			if _, err := s.f.Seek(int64(n), io.SeekCurrent); err != nil {
				return written, err
			}
		} else if _, err := s.f.Write(p[:n]); err != nil {
			return written, err
		}
		written += n
		p = p[n:]
	}
	return written, nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// restoreStream restores a stream from its parts, in order.
func (r *Repository) restoreStream(ctx context.Context, e *Entry, p string, opts RestoreOptions) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	f, err := atomicfile.Create(p, 0o600, opts.Overwrite)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return errors.New("exists; not overwritten (use --overwrite)")
		}
		return err
	}
	defer f.Abort()
	h := sha256.New()
	var or *objectReader
	defer func() {
		if or != nil {
			or.close()
		}
	}()
	for _, part := range e.Parts {
		if or == nil || or.name != part.Object {
			if or != nil {
				or.close()
			}
			if or, err = r.openObject(ctx, part.Object, opts.Identities); err != nil {
				return err
			}
		}
		for {
			hdr, err := or.tr.Next()
			if err != nil {
				return fmt.Errorf("object %s: part %s missing or damaged: %v", short(part.Object), part.Member, err)
			}
			if hdr.Name == part.Member {
				break
			}
		}
		if _, err := io.Copy(io.MultiWriter(f, h), or.tr); err != nil {
			return fmt.Errorf("object %s is damaged: %v", short(part.Object), err)
		}
	}
	if hex.EncodeToString(h.Sum(nil)) != e.SHA256 {
		return errors.New("content does not match the manifest's SHA-256 (damaged backup); not restored")
	}
	f.SetModTime(e.MTime)
	return f.Commit()
}
