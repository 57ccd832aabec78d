package sftp

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pkg/sftp"

	"github.com/nhscrypt/nhscrypt/backup"
	"github.com/nhscrypt/nhscrypt/internal/atomicfile"
)

// Backend is a repository on an SFTP server. It is safe for concurrent
// use. Its errors name it (its Location) and the object.
type Backend struct {
	loc  string // sftp://user@host:port/path
	addr string // host:port
	user string
	dir  string // the repository folder on the server
	opts Options
	sem  chan struct{} // bounds concurrent uploads
	dial chan struct{} // one dial at a time

	mu      sync.Mutex
	cur     *conn
	closed  bool
	dials   int   // dials so far
	dialErr error // how the last one failed
}

var _ backup.Backend = (*Backend)(nil)

var errNotExist = fs.ErrNotExist

// readBuffer is how much an Open reader asks for at once: up to 32
// pipelined 32 KiB read requests.
const readBuffer = 1 << 20

// Location is sftp://user@host:port/path (never with credentials).
func (b *Backend) Location() string { return b.loc }

// Close closes the connection. Operations in flight fail.
func (b *Backend) Close() error {
	b.mu.Lock()
	c := b.cur
	b.cur, b.closed = nil, true
	b.mu.Unlock()
	if c != nil {
		c.close()
	}
	return nil
}

// Create makes the repository folder (if missing; the folder above it must
// exist) and its snapshots, manifests and data folders, mode 0700. The
// data folder's fan-out folders are made when first needed. Create fails
// with an error wrapping fs.ErrExist if the folder already holds a
// repository config.
func (b *Backend) Create(ctx context.Context) error {
	c, err := b.client(ctx)
	if err != nil {
		return b.wrap("creating", "the repository", err)
	}
	cfg := b.path(backup.Handle{Type: backup.ConfigFile})
	if _, err := b.stat(ctx, c, cfg); err == nil {
		return fmt.Errorf("%s already holds a repository: %w", b.loc, fs.ErrExist)
	} else if !errors.Is(err, errNotExist) {
		return b.fail(c, "looking at", "config", err)
	}
	for _, d := range []string{b.dir, b.typeDir(backup.SnapshotFile), b.typeDir(backup.ManifestFile), b.typeDir(backup.DataFile)} {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := b.mkdir(c, d); err != nil {
			return b.fail(c, "making folder", d, err)
		}
	}
	return nil
}

// mkdir makes a folder 0700; one that exists already is fine.
func (b *Backend) mkdir(c *conn, dir string) error {
	if err := c.session().Mkdir(dir); err != nil {
		// SFTP v3 has no "exists" status: look.
		if st, serr := c.session().Stat(dir); serr == nil && st.IsDir() {
			return nil
		}
		return err
	}
	c.session().Chmod(dir, 0o700) // a courtesy, as for files
	return nil
}

func (b *Backend) typeDir(t backup.FileType) string { return path.Join(b.dir, string(t)) }

func (b *Backend) path(h backup.Handle) string {
	if h.Type == backup.ConfigFile {
		return path.Join(b.dir, "config")
	}
	if h.Type == backup.DataFile && len(h.Name) > 2 {
		return path.Join(b.dir, string(h.Type), h.Name[:2], h.Name)
	}
	return path.Join(b.dir, string(h.Type), h.Name)
}

// objName names an object in messages: data/3fa2….
func objName(h backup.Handle) string {
	if h.Type == backup.ConfigFile {
		return "config"
	}
	return string(h.Type) + "/" + h.Name
}

func validName(h backup.Handle) error {
	switch h.Type {
	case backup.ConfigFile:
		return nil
	case backup.SnapshotFile, backup.ManifestFile, backup.DataFile:
	default:
		return fmt.Errorf("invalid object type %q", h.Type)
	}
	if h.Name == "" || strings.ContainsAny(h.Name, "/\\\x00") || h.Name == "." || h.Name == ".." || atomicfile.IsTemp(h.Name) {
		return fmt.Errorf("invalid object name %q", h.Name)
	}
	return nil
}

// tempName is a fresh temporary name for an upload of base.
func tempName(base string) string {
	var rnd [6]byte
	rand.Read(rnd[:])
	if len(base) > 160 {
		base = base[:160]
	}
	return atomicfile.TempPrefix + hex.EncodeToString(rnd[:]) + "-" + base
}

// Save uploads the object to a temporary name in its folder, fsyncs it
// (where the server offers fsync@openssh.com) and renames it into place
// (atomically replacing an existing config with posix-rename@openssh.com;
// without that extension the old config is removed first). A
// content-named object already stored with the same size is not uploaded
// again. At most Options.Connections uploads run at once; others wait.
func (b *Backend) Save(ctx context.Context, h backup.Handle, size int64, r io.Reader) error {
	if err := validName(h); err != nil {
		return err
	}
	select {
	case b.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-b.sem }()
	c, err := b.client(ctx)
	if err != nil {
		return b.wrap("save", objName(h), err)
	}
	s := c.session() // for the whole upload
	what := objName(h)
	final := b.path(h)
	// pkg/sftp's calls take no context: if ctx ends and the upload does
	// not stop within Timeout (a stalled server that no longer reads), the
	// connection is given up, which ends it.
	finished := make(chan struct{})
	defer close(finished)
	defer context.AfterFunc(ctx, func() {
		select {
		case <-finished:
		case <-time.After(b.opts.Timeout):
			c.close()
		}
	})()
	if h.Type != backup.ConfigFile {
		st, err := s.Stat(final)
		if err == nil && st.Mode().IsRegular() && st.Size() == size {
			return nil // content-named: already stored
		}
		if err != nil && !errors.Is(err, errNotExist) {
			return b.fail(c, "save", what, err)
		}
	}
	folder := path.Dir(final)
	tmp := path.Join(folder, tempName(path.Base(final)))
	const flags = os.O_WRONLY | os.O_CREATE | os.O_EXCL
	f, err := s.OpenFile(tmp, flags)
	if errors.Is(err, errNotExist) && h.Type == backup.DataFile && folder != b.typeDir(backup.DataFile) {
		// The fan-out folder is made on first use (not the data folder:
		// a missing one means a missing repository).
		if err := s.Mkdir(folder); err == nil {
			s.Chmod(folder, 0o700)
		}
		f, err = s.OpenFile(tmp, flags)
	}
	if err != nil {
		return b.fail(c, "save", what, err)
	}
	done := false
	defer func() {
		if !done {
			f.Close()
			if !c.dead() {
				s.Remove(tmp)
			}
		}
	}()
	// Mode 0600, set while the data goes (hiding a round trip). Objects
	// are encrypted and their folders 0700: a courtesy that servers
	// refusing SETSTAT (internal-sftp -P setstat) need not grant.
	chmodded := make(chan struct{})
	go func() {
		defer close(chmodded)
		s.Chmod(tmp, 0o600)
	}()
	src := &srcReader{ctx: ctx, r: r}
	var in io.Reader = src
	if size >= 0 {
		in = io.LimitReader(src, size+1)
	}
	n, err := f.ReadFromWithConcurrency(in, 0)
	if err != nil {
		if src.err != nil && errors.Is(err, src.err) {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("%s: save %s: reading the data: %w", b.loc, what, err)
		}
		return b.fail(c, "save", what, err)
	}
	if size >= 0 && n < size {
		return fmt.Errorf("%s: save %s: the data ended after %d bytes, expected %d", b.loc, what, n, size)
	}
	if size >= 0 && n > size {
		return fmt.Errorf("%s: save %s: the data is longer than the %d bytes expected", b.loc, what, size)
	}
	<-chmodded
	if c.fsync.Load() {
		if err := f.Sync(); refused(err) {
			c.fsync.Store(false) // denied by the server's configuration
		} else if err != nil {
			return b.fail(c, "save (fsync)", what, err)
		}
	}
	if err := f.Close(); err != nil {
		return b.fail(c, "save (close)", what, err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if c.posixRename.Load() {
		err = s.PosixRename(tmp, final)
		if refused(err) {
			c.posixRename.Store(false) // denied by the server's configuration
		} else if err != nil {
			return b.fail(c, "save (rename)", what, err)
		} else {
			done = true
			return nil
		}
	}
	// Plain SFTP rename does not replace an existing file.
	if h.Type == backup.ConfigFile {
		// Not atomic: there is a moment with no config.
		if err := s.Remove(final); err != nil && !errors.Is(err, errNotExist) {
			return b.fail(c, "save", what, err)
		}
	}
	if err := s.Rename(tmp, final); err != nil {
		// Another upload of the same content-named object won.
		if st, serr := s.Stat(final); h.Type != backup.ConfigFile && serr == nil && st.Size() == size {
			return nil // the deferred cleanup removes tmp
		}
		return b.fail(c, "save (rename)", what, err)
	}
	done = true
	return nil
}

// refused reports whether the server refused an optional request (an
// extension it does not have, or one its configuration denies).
func refused(err error) bool {
	var se *sftp.StatusError
	return errors.As(err, &se) && se.FxCode() == sftp.ErrSSHFxOpUnsupported || errors.Is(err, fs.ErrPermission)
}

// srcReader reads the caller's data, stopping when ctx is cancelled, and
// remembers its error (to tell it from the server's).
type srcReader struct {
	ctx context.Context
	r   io.Reader
	err error
}

func (s *srcReader) Read(p []byte) (int, error) {
	if err := s.ctx.Err(); err != nil {
		s.err = err
		return 0, err
	}
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF {
		s.err = err
	}
	return n, err
}

// Open reads the object from offset; length 0 reads to the end.
func (b *Backend) Open(ctx context.Context, h backup.Handle, offset, length int64) (io.ReadCloser, error) {
	if err := validName(h); err != nil {
		return nil, err
	}
	if offset < 0 || length < 0 {
		return nil, fmt.Errorf("invalid range %d+%d", offset, length)
	}
	c, err := b.client(ctx)
	if err != nil {
		return nil, b.wrap("open", objName(h), err)
	}
	what := objName(h)
	f, err := await(ctx, func() (*sftp.File, error) { return c.session().Open(b.path(h)) }, func(f *sftp.File) { f.Close() })
	if err != nil {
		return nil, b.fail(c, "open", what, err)
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		f.Close()
		return nil, b.fail(c, "open", what, err)
	}
	var r io.Reader = f
	bufSize := readBuffer
	if length > 0 {
		r = io.LimitReader(f, length)
		bufSize = int(min(int64(bufSize), max(length, 4096)))
	}
	return &reader{ctx: ctx, b: b, c: c, f: f, what: what, r: bufio.NewReaderSize(r, bufSize)}, nil
}

type reader struct {
	ctx  context.Context
	b    *Backend
	c    *conn
	f    *sftp.File
	what string
	r    io.Reader
}

func (r *reader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		err = r.b.fail(r.c, "read", r.what, err)
	}
	return n, err
}

func (r *reader) Close() error {
	if r.c.dead() {
		return nil
	}
	if err := r.f.Close(); err != nil {
		return r.b.fail(r.c, "close", r.what, err)
	}
	return nil
}

// Stat describes the object.
func (b *Backend) Stat(ctx context.Context, h backup.Handle) (backup.FileInfo, error) {
	if err := validName(h); err != nil {
		return backup.FileInfo{}, err
	}
	c, err := b.client(ctx)
	if err != nil {
		return backup.FileInfo{}, b.wrap("stat", objName(h), err)
	}
	st, err := b.stat(ctx, c, b.path(h))
	if err != nil {
		return backup.FileInfo{}, b.fail(c, "stat", objName(h), err)
	}
	return backup.FileInfo{Name: h.Name, Size: st.Size(), ModTime: st.ModTime()}, nil
}

// Remove deletes the object.
func (b *Backend) Remove(ctx context.Context, h backup.Handle) error {
	if err := validName(h); err != nil {
		return err
	}
	c, err := b.client(ctx)
	if err != nil {
		return b.wrap("remove", objName(h), err)
	}
	if _, err := await(ctx, func() (struct{}, error) { return struct{}{}, c.session().Remove(b.path(h)) }, nil); err != nil {
		return b.fail(c, "remove", objName(h), err)
	}
	return nil
}

// listWorkers is how many data fan-out folders List reads at once (to
// hide the round trips on a distant server).
const listWorkers = 8

// List calls fn for every object of type t (not for temporary files of
// uploads in progress or interrupted), one call at a time. The data
// folder's fan-out folders are read concurrently.
func (b *Backend) List(ctx context.Context, t backup.FileType, fn func(backup.FileInfo) error) error {
	if err := validName(backup.Handle{Type: t, Name: "x"}); err != nil || t == backup.ConfigFile {
		return fmt.Errorf("cannot list objects of type %q", t)
	}
	c, err := b.client(ctx)
	if err != nil {
		return b.wrap("list", string(t), err)
	}
	root := b.typeDir(t)
	ents, err := c.session().ReadDirContext(ctx, root)
	if err != nil {
		return b.fail(c, "list", string(t), err)
	}
	var dirs []string
	emit := func(ents []os.FileInfo, top bool) error {
		for _, e := range ents {
			if e.IsDir() {
				if top && t == backup.DataFile {
					dirs = append(dirs, e.Name())
				}
				continue
			}
			if !e.Mode().IsRegular() || atomicfile.IsTemp(e.Name()) {
				continue
			}
			if err := fn(backup.FileInfo{Name: e.Name(), Size: e.Size(), ModTime: e.ModTime()}); err != nil {
				return err
			}
		}
		return nil
	}
	if err := emit(ents, true); err != nil {
		return err
	}
	if len(dirs) == 0 {
		return nil
	}
	var wg sync.WaitGroup
	defer wg.Wait() // after cancel (defers run last first)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		dir  string
		ents []os.FileInfo
		err  error
	}
	results := make(chan result)
	next := make(chan string)
	for range min(listWorkers, len(dirs)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for d := range next {
				ents, err := c.session().ReadDirContext(ctx, path.Join(root, d))
				select {
				case results <- result{d, ents, err}:
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	go func() {
		defer close(next)
		for _, d := range dirs {
			select {
			case next <- d:
			case <-ctx.Done():
				return
			}
		}
	}()
	for range dirs {
		var r result
		select {
		case r = <-results:
		case <-ctx.Done():
			return ctx.Err()
		}
		if r.err != nil {
			if errors.Is(r.err, errNotExist) {
				continue // removed meanwhile
			}
			return b.fail(c, "list", string(t)+"/"+r.dir, r.err)
		}
		if err := emit(r.ents, false); err != nil {
			return err
		}
	}
	return nil
}

// stat is Stat on one of c's sessions, giving up when ctx is done.
func (b *Backend) stat(ctx context.Context, c *conn, p string) (os.FileInfo, error) {
	return await(ctx, func() (os.FileInfo, error) { return c.session().Stat(p) }, nil)
}

// await runs f and returns its result, or ctx's error as soon as ctx is
// done (pkg/sftp's calls take no context). f then finishes in the
// background (a stalled server's connection is closed by the keepalive),
// and undo, if set, releases what it returned.
func await[T any](ctx context.Context, f func() (T, error), undo func(T)) (T, error) {
	var zero T
	if err := ctx.Err(); err != nil {
		return zero, err
	}
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1)
	go func() {
		v, err := f()
		ch <- result{v, err}
	}()
	select {
	case r := <-ch:
		return r.v, r.err
	case <-ctx.Done():
		if undo != nil {
			go func() {
				if r := <-ch; r.err == nil {
					undo(r.v)
				}
			}()
		}
		return zero, ctx.Err()
	}
}

// notFound and denied are the server's answers, wrapped so that callers
// can branch with errors.Is on the backup sentinels and the fs ones.
type wrapped struct {
	msg  string
	errs []error
}

func (w *wrapped) Error() string   { return w.msg }
func (w *wrapped) Unwrap() []error { return w.errs }

// fail classifies err from an operation on c and names the backend, the
// operation and the object: missing files wrap backup.ErrNotFound,
// permission errors backup.ErrAuth, and a lost connection is closed (the
// next operation dials again) and returned as a transient error.
func (b *Backend) fail(c *conn, op, what string, err error) error {
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case errors.Is(err, errNotExist):
		err = &wrapped{"does not exist", []error{backup.ErrNotFound, err}}
	case errors.Is(err, fs.ErrPermission):
		err = &wrapped{"permission denied by the server", []error{backup.ErrAuth, err}}
	case c.dead() || connLost(err):
		c.close()
		err = &connError{addr: b.addr, err: err}
	}
	return b.wrap(op, what, err)
}

// wrap names the backend, the operation and the object in err (but not in
// a cancellation).
func (b *Backend) wrap(op, what string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if what != "" {
		op += " " + what
	}
	return fmt.Errorf("%s: %s: %w", b.loc, op, err)
}

// connLost reports whether err means the connection is gone.
func connLost(err error) bool {
	var oe *net.OpError
	return errors.Is(err, sftp.ErrSSHFxConnectionLost) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.As(err, &oe)
}
