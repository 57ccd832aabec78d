package backup

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"filippo.io/age"
	"github.com/klauspost/compress/zstd"
)

// RunOptions say what to back up and how.
type RunOptions struct {
	// Paths are the files and folders to back up (made absolute).
	Paths []string
	// Stdin, with StdinName, backs up a stream instead (a database dump).
	Stdin     io.Reader
	StdinName string
	Tags      []string
	// Excludes are glob patterns (path.Match) matched against the full
	// path and against the base name.
	Excludes      []string
	OneFileSystem bool
	// Host names the host in the snapshot.
	Host string
	// SigningKey signs the snapshot. Required.
	SigningKey ed25519.PrivateKey
	// StateDir holds the host's cache, journal and lock for the repository.
	StateDir string
	// Workers bounds objects built at once; 0 means GOMAXPROCS.
	Workers int
	// VerifyUnchanged re-reads this fraction (0–1) of unchanged files and
	// checks their hash against the cache.
	VerifyUnchanged float64
	// Progress receives events; called from many goroutines.
	Progress Progress
	// Now returns the snapshot time (tests use fixed times); default
	// time.Now.
	Now func() time.Time
	// Version is the nhscrypt version recorded in the snapshot.
	Version string
}

// Progress receives backup, restore and verify events.
type Progress interface {
	BackupEvent(Event)
}

// Event kinds.
const (
	EventStart   = "start"   // Files, Bytes: totals to process
	EventFile    = "file"    // Path, Bytes: one file done (stored or reused)
	EventObject  = "object"  // Object, Bytes: one object stored
	EventWarning = "warning" // Path, Message
)

// Event is a progress report. It never holds file contents or keys.
type Event struct {
	Kind    string `json:"kind"`
	Path    string `json:"path,omitempty"`
	Object  string `json:"object,omitempty"`
	Message string `json:"message,omitempty"`
	Files   int    `json:"files,omitempty"`
	Bytes   int64  `json:"bytes,omitempty"`
}

// Warning is a file that could not be backed up as it was (it changed,
// vanished or could not be read). A run with warnings still makes a
// snapshot.
type Warning struct {
	Path    string `json:"path"`
	Message string `json:"message"`
}

// RunResult is what a run made.
type RunResult struct {
	Snapshot *Snapshot `json:"snapshot"`
	Warnings []Warning `json:"warnings"`
}

type fileJob struct {
	entry *Entry
	info  *syscall.Stat_t
}

type runState struct {
	r        *Repository
	opts     RunOptions
	cache    *stateCache
	existing map[string]int64
	journal  *journal

	reused map[string]bool // objects of earlier runs this snapshot names

	mu       sync.Mutex
	warnings []Warning
	objects  []ObjectRef
	totals   Totals
	cached   []cachedFile
}

func (rs *runState) warn(path, msg string) {
	rs.mu.Lock()
	rs.warnings = append(rs.warnings, Warning{Path: path, Message: msg})
	rs.mu.Unlock()
	rs.event(Event{Kind: EventWarning, Path: path, Message: msg})
}

func (rs *runState) event(e Event) {
	if rs.opts.Progress != nil {
		rs.opts.Progress.BackupEvent(e)
	}
}

// Run backs up opts.Paths (or opts.Stdin) and records a signed snapshot.
// Data objects are written first; the encrypted manifest and then the
// snapshot last, so an interrupted run leaves no snapshot, and its
// objects are reused by the next run. Run never reads back any encrypted
// object and needs no private key. Files that change, vanish or cannot be
// read become Warnings; they never abort the run.
func (r *Repository) Run(ctx context.Context, opts RunOptions) (*RunResult, error) {
	if opts.SigningKey == nil {
		return nil, errors.New("a signing key is needed to record a snapshot")
	}
	if opts.StateDir == "" {
		return nil, errors.New("a state folder is needed")
	}
	if (len(opts.Paths) == 0) == (opts.Stdin == nil) {
		return nil, errors.New("give paths to back up, or a stream with a name")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Workers <= 0 {
		opts.Workers = runtime.GOMAXPROCS(0)
	}
	unlock, err := lockState(opts.StateDir, r.Config.ID)
	if err != nil {
		return nil, err
	}
	defer unlock()
	start := opts.Now().UTC()
	cache, err := loadState(opts.StateDir, r.Config.ID)
	if err != nil {
		return nil, fmt.Errorf("reading the state cache: %w", err)
	}
	rs := &runState{r: r, opts: opts, cache: cache, existing: map[string]int64{}, reused: map[string]bool{}}
	// Cached entries are reused only if their object is still stored
	// (a forget and prune may have removed it).
	if err := r.Backend.List(ctx, DataFile, func(fi FileInfo) error {
		rs.existing[fi.Name] = fi.Size
		return nil
	}); err != nil {
		return nil, fmt.Errorf("listing %s: %w", r.Backend.Location(), err)
	}
	if err := r.AddSigner(ctx, opts.Host, opts.SigningKey.Public().(ed25519.PublicKey)); err != nil {
		return nil, fmt.Errorf("recording the host's signing key: %w", err)
	}
	rs.journal, err = cache.openJournal()
	if err != nil {
		return nil, err
	}
	defer rs.journal.close()

	var entries []*Entry
	var jobs []fileJob
	var paths []string
	if opts.Stdin != nil {
		name := strings.Trim(filepath.ToSlash(filepath.Clean(opts.StdinName)), "/")
		if name == "" || name == "." || strings.HasPrefix(name, "../") {
			return nil, fmt.Errorf("invalid stream name %q", opts.StdinName)
		}
		e := &Entry{Path: name, Type: TypeStream, Mode: 0o600, MTime: start, UID: os.Getuid(), GID: os.Getgid()}
		entries = append(entries, e)
		paths = []string{name}
		if err := rs.storeStream(ctx, e); err != nil {
			return nil, err
		}
	} else {
		for _, p := range opts.Paths {
			abs, err := filepath.Abs(p)
			if err != nil {
				return nil, err
			}
			paths = append(paths, abs)
		}
		entries, jobs, err = rs.walk(ctx, paths)
		if err != nil {
			return nil, err
		}
		if err := rs.pack(ctx, jobs); err != nil {
			return nil, err
		}
	}
	// Drop files that failed to store.
	kept := entries[:0]
	for _, e := range entries {
		if (e.Type == TypeFile && e.Object == "") || (e.Type == TypeStream && len(e.Parts) == 0 && e.Size > 0) {
			continue
		}
		kept = append(kept, e)
	}
	entries = kept
	for _, e := range entries {
		switch e.Type {
		case TypeDir:
			rs.totals.Dirs++
		case TypeFile, TypeStream, TypeHardlink:
			rs.totals.Files++
			rs.totals.Bytes += e.Size
		}
	}
	end := opts.Now().UTC()
	if !end.After(start) {
		end = start
	}
	if ext, ok := r.Backend.(RetentionExtender); ok {
		// Objects this snapshot reuses get its lock too.
		for name := range rs.reused {
			if err := ext.ExtendRetention(ctx, Handle{Type: DataFile, Name: name}); err != nil {
				return nil, fmt.Errorf("extending the object lock of %s: %w", short(name), err)
			}
		}
	}
	snap, err := rs.commit(ctx, entries, paths, start, end)
	if err != nil {
		return nil, err
	}
	if err := cache.save(rs.cached); err != nil {
		return nil, fmt.Errorf("snapshot %s recorded, but saving the state cache failed: %w", short(snap.ID), err)
	}
	sort.Slice(rs.warnings, func(i, j int) bool { return rs.warnings[i].Path < rs.warnings[j].Path })
	return &RunResult{Snapshot: snap, Warnings: rs.warnings}, nil
}

// excluded reports whether path matches an exclude pattern.
func (rs *runState) excluded(path string) bool {
	for _, pat := range rs.opts.Excludes {
		if ok, _ := filepath.Match(pat, path); ok {
			return true
		}
		if ok, _ := filepath.Match(pat, filepath.Base(path)); ok {
			return true
		}
	}
	return false
}

// walk lists every entry under paths, reusing cached files.
func (rs *runState) walk(ctx context.Context, paths []string) ([]*Entry, []fileJob, error) {
	var entries []*Entry
	var jobs []fileJob
	links := map[[2]uint64]string{}
	var total int64
	for _, root := range paths {
		rst, err := os.Lstat(root)
		if err != nil {
			return nil, nil, fmt.Errorf("backing up %q: %w", root, err)
		}
		rootDev := rst.Sys().(*syscall.Stat_t).Dev
		err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if cerr := ctx.Err(); cerr != nil {
				return cerr
			}
			if err != nil {
				if p == root {
					return err
				}
				rs.warn(p, "cannot read: "+errText(err))
				return nil
			}
			if p != root && rs.excluded(p) {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			info, err := d.Info()
			if err != nil {
				rs.warn(p, "vanished or cannot be read: "+errText(err))
				return nil
			}
			st := info.Sys().(*syscall.Stat_t)
			if rs.opts.OneFileSystem && d.IsDir() && p != root && st.Dev != rootDev {
				return filepath.SkipDir
			}
			e := &Entry{Path: p, Mode: uint32(info.Mode().Perm()) | specialBits(info.Mode()), UID: int(st.Uid), GID: int(st.Gid),
				MTime: info.ModTime().UTC()}
			switch {
			case d.IsDir():
				e.Type = TypeDir
			case info.Mode()&fs.ModeSymlink != 0:
				e.Type = TypeSymlink
				t, err := os.Readlink(p)
				if err != nil {
					rs.warn(p, "cannot read the link: "+errText(err))
					return nil
				}
				e.Link = t
			case info.Mode()&fs.ModeNamedPipe != 0:
				e.Type = TypeFIFO
			case info.Mode().IsRegular():
				key := [2]uint64{uint64(st.Dev), st.Ino}
				if first, ok := links[key]; ok && st.Nlink > 1 {
					e.Type, e.Link, e.Size = TypeHardlink, first, info.Size()
					break
				}
				if st.Nlink > 1 {
					links[key] = p
				}
				e.Type, e.Size = TypeFile, info.Size()
				e.Sparse = st.Blocks*512 < info.Size()
				if c, ok := rs.cache.match(p, st, info.Size()); ok && rs.existing[c.Object] > 0 && !rs.recheck(p, c) {
					e.SHA256, e.Object, e.Offset, e.Member, e.Sparse = c.SHA256, c.Object, c.Offset, c.Member, c.Sparse
					rs.cached = append(rs.cached, c)
					rs.reuseObject(c.Object)
					break
				}
				jobs = append(jobs, fileJob{entry: e, info: st})
				total += info.Size()
			default:
				rs.warn(p, "special file ("+info.Mode().Type().String()+"), not backed up")
				return nil
			}
			entries = append(entries, e)
			return nil
		})
		if err != nil {
			return nil, nil, fmt.Errorf("backing up %q: %w", root, err)
		}
	}
	rs.event(Event{Kind: EventStart, Files: len(jobs), Bytes: total})
	return entries, jobs, nil
}

func specialBits(m fs.FileMode) uint32 {
	var b uint32
	if m&fs.ModeSetuid != 0 {
		b |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		b |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		b |= 0o1000
	}
	return b
}

func errText(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// recheck re-hashes a sample of unchanged files (--verify-unchanged): true
// means the content no longer matches the cache and must be stored again.
func (rs *runState) recheck(path string, c cachedFile) bool {
	if rs.opts.VerifyUnchanged <= 0 || rand.Float64() >= rs.opts.VerifyUnchanged {
		return false
	}
	f, err := os.Open(path)
	if err != nil {
		return true
	}
	defer f.Close()
	h := sha256.New()
	io.Copy(h, f)
	if hex.EncodeToString(h.Sum(nil)) != c.SHA256 {
		rs.warn(path, "content changed although size and times did not; stored again")
		return true
	}
	return false
}

func (rs *runState) reuseObject(name string) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	rs.reused[name] = true
	for _, o := range rs.objects {
		if o.Name == name {
			return
		}
	}
	rs.objects = append(rs.objects, ObjectRef{Name: name, Size: rs.existing[name]})
}

// pack stores the jobs in objects of about ObjectSize, in parallel.
func (rs *runState) pack(ctx context.Context, jobs []fileJob) error {
	var batches [][]fileJob
	var cur []fileJob
	var size int64
	for _, j := range jobs {
		cur = append(cur, j)
		size += j.entry.Size + 512
		if size >= rs.r.Config.ObjectSize {
			batches = append(batches, cur)
			cur, size = nil, 0
		}
	}
	if len(cur) > 0 {
		batches = append(batches, cur)
	}
	ch := make(chan []fileJob)
	errc := make(chan error, rs.opts.Workers)
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range rs.opts.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range ch {
				if err := rs.storeObject(ctx, b); err != nil {
					errc <- err
					cancel()
					return
				}
			}
		}()
	}
feed:
	for _, b := range batches {
		select {
		case ch <- b:
		case <-ctx.Done():
			break feed
		}
	}
	close(ch)
	wg.Wait()
	close(errc)
	if err := <-errc; err != nil {
		return err
	}
	return ctx.Err()
}

// storeErr names the backend in a storage error, unless the backend did.
func (rs *runState) storeErr(err error) error {
	if loc := rs.r.Backend.Location(); !strings.Contains(err.Error(), loc) {
		return fmt.Errorf("storing an object in %s: %w", loc, err)
	}
	return err
}

// countWriter counts bytes on their way into the tar stream's compressor,
// giving each member's offset in the uncompressed tar.
type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// zstdEncoders holds encoders for reuse. The window is 2 MiB, as
// `zstd -3` uses for large inputs. WithLowerEncoderMem is not used: it keeps
// only one block of history beyond the window, so the whole window was
// copied down after every 128 KiB block (a quarter of a backup's CPU time
// went to memmove); with a 2 MiB window the history buffer (twice the
// window) is smaller than the low-memory one with the 8 MiB default.
var zstdEncoders = map[zstd.EncoderLevel]*sync.Pool{}

func init() {
	for _, l := range []zstd.EncoderLevel{zstd.SpeedFastest, zstd.SpeedDefault, zstd.SpeedBetterCompression, zstd.SpeedBestCompression} {
		zstdEncoders[l] = &sync.Pool{New: func() any {
			e, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(l), zstd.WithEncoderConcurrency(1), zstd.WithWindowSize(2<<20))
			return e
		}}
	}
}

// encoderLevel maps the config's compression_level to a zstd level.
func encoderLevel(name string) zstd.EncoderLevel {
	switch name {
	case "default":
		return zstd.SpeedDefault
	case "better":
		return zstd.SpeedBetterCompression
	case "best":
		return zstd.SpeedBestCompression
	}
	return zstd.SpeedFastest
}

// copyBufferSize is the size of the buffer each object writer reads files
// with.
const copyBufferSize = 256 << 10

// objectWriter builds one data object: tar → zstd → age → spool.
type objectWriter struct {
	sp   *spool
	age  io.WriteCloser
	zw   *zstd.Encoder
	pool *sync.Pool // where zw goes back
	cw   *countWriter
	tw   *tar.Writer
	buf  []byte // for reading files
}

// spoolDir is where objects are collected before they are stored.
func (rs *runState) spoolDir() string {
	if fsv, ok := rs.r.Backend.(FileSaver); ok {
		return fsv.SpoolDir()
	}
	return filepath.Join(rs.opts.StateDir, "spool")
}

func (rs *runState) newObjectWriter() (*objectWriter, error) {
	sp, err := newSpool(rs.spoolDir())
	if err != nil {
		return nil, err
	}
	aw, err := age.Encrypt(sp, rs.r.recipients...)
	if err != nil {
		sp.discard()
		return nil, err
	}
	pool := zstdEncoders[encoderLevel(rs.r.Config.CompressionLevel)]
	zw := pool.Get().(*zstd.Encoder)
	zw.Reset(aw)
	cw := &countWriter{w: zw}
	return &objectWriter{sp: sp, age: aw, zw: zw, pool: pool, cw: cw, tw: tar.NewWriter(cw), buf: make([]byte, copyBufferSize)}, nil
}

func (ow *objectWriter) finish() error {
	if err := ow.tw.Close(); err != nil {
		return err
	}
	if err := ow.zw.Close(); err != nil {
		return err
	}
	ow.pool.Put(ow.zw)
	ow.zw = nil
	return ow.age.Close()
}

func (ow *objectWriter) discard() {
	if ow.zw != nil {
		ow.zw.Reset(nil)
		ow.pool.Put(ow.zw)
		ow.zw = nil
	}
	ow.sp.discard()
}

// storeObject writes a batch of files into one object and stores it.
func (rs *runState) storeObject(ctx context.Context, batch []fileJob) error {
	ow, err := rs.newObjectWriter()
	if err != nil {
		return err
	}
	defer ow.discard()
	var stored []fileJob
	for _, j := range batch {
		if err := ctx.Err(); err != nil {
			return err
		}
		ok, err := rs.addFile(ow, j)
		if err != nil {
			return err
		}
		if ok {
			stored = append(stored, j)
		}
	}
	if len(stored) == 0 {
		return nil
	}
	if err := ow.finish(); err != nil {
		return err
	}
	ref, err := ow.sp.store(ctx, rs.r.Backend, DataFile)
	if err != nil {
		return rs.storeErr(err)
	}
	cf := make([]cachedFile, 0, len(stored))
	var bytes int64
	for _, j := range stored {
		e, st := j.entry, j.info
		e.Object = ref.Name
		bytes += e.Size
		cf = append(cf, cachedFile{Path: e.Path, Size: e.Size, MTime: st.Mtim.Nano(), CTime: st.Ctim.Nano(),
			Inode: st.Ino, Dev: uint64(st.Dev), SHA256: e.SHA256, Object: ref.Name, Offset: e.Offset, Member: e.Member, Sparse: e.Sparse})
	}
	if err := rs.journal.add(cf); err != nil {
		return fmt.Errorf("writing the journal: %w", err)
	}
	rs.mu.Lock()
	rs.objects = append(rs.objects, ref)
	rs.cached = append(rs.cached, cf...)
	rs.totals.NewFiles += len(stored)
	rs.totals.NewBytes += bytes
	rs.totals.NewObjects++
	rs.totals.StoredBytes += ref.Size
	rs.mu.Unlock()
	rs.event(Event{Kind: EventObject, Object: ref.Name, Bytes: ref.Size})
	return nil
}

// addFile writes one file into the object. A file that vanished or cannot
// be read is a warning (false, nil); an error is a failure of the object.
func (rs *runState) addFile(ow *objectWriter, j fileJob) (bool, error) {
	e := j.entry
	f, err := os.Open(e.Path)
	if err != nil {
		rs.warn(e.Path, "vanished or cannot be read: "+errText(err))
		return false, nil
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		rs.warn(e.Path, "changed type while being backed up; skipped")
		return false, nil
	}
	st := fi.Sys().(*syscall.Stat_t)
	if st.Ino != j.info.Ino {
		rs.warn(e.Path, "replaced while being backed up; skipped")
		return false, nil
	}
	if fi.Size() != j.entry.Size || st.Mtim != j.info.Mtim {
		rs.warn(e.Path, "changed during the backup; stored as it was when read")
	}
	// The size read now is what goes into the tar header.
	e.Size = fi.Size()
	e.MTime = fi.ModTime().UTC()
	j.info = st
	member := strings.TrimPrefix(e.Path, "/")
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: member, Size: e.Size, Mode: int64(e.Mode),
		Uid: e.UID, Gid: e.GID, ModTime: e.MTime, Format: tar.FormatPAX}
	e.Offset = ow.cw.n
	e.Member = member
	if err := ow.tw.WriteHeader(hdr); err != nil {
		return false, fmt.Errorf("%q: %w", e.Path, err)
	}
	h := sha256.New()
	n, err := io.CopyBuffer(io.MultiWriter(ow.tw, h), io.LimitReader(f, e.Size), ow.buf)
	if err != nil {
		if ow.cw.n == 0 {
			return false, err
		}
		// Pad to keep the tar stream valid, and say so.
		if perr := padZeros(io.MultiWriter(ow.tw, h), e.Size-n); perr != nil {
			return false, perr
		}
		rs.warn(e.Path, "read error part-way ("+errText(err)+"); stored padded with zeros")
	} else if n < e.Size {
		if perr := padZeros(io.MultiWriter(ow.tw, h), e.Size-n); perr != nil {
			return false, perr
		}
		rs.warn(e.Path, "shrank while being read; stored padded with zeros")
	}
	e.SHA256 = hex.EncodeToString(h.Sum(nil))
	if after, err := f.Stat(); err == nil && (after.Size() != e.Size || !after.ModTime().Equal(fi.ModTime())) {
		rs.warn(e.Path, "changed while being read; the stored copy may be inconsistent")
	}
	rs.event(Event{Kind: EventFile, Path: e.Path, Bytes: e.Size})
	return true, nil
}

func padZeros(w io.Writer, n int64) error {
	_, err := io.CopyN(w, zeroReader{}, n)
	return err
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// streamPartSize is the size of the pieces a stream is stored in.
const streamPartSize = 16 << 20

// storeStream stores a stream of unknown size in parts of streamPartSize,
// each a tar member, in objects of about ObjectSize.
func (rs *runState) storeStream(ctx context.Context, e *Entry) error {
	ow, err := rs.newObjectWriter()
	if err != nil {
		return err
	}
	defer func() { ow.discard() }()
	total := sha256.New()
	buf := make([]byte, streamPartSize)
	var inObject int64
	var pending []int // indexes of parts in the current object
	flush := func() error {
		if err := ow.finish(); err != nil {
			return err
		}
		ref, err := ow.sp.store(ctx, rs.r.Backend, DataFile)
		if err != nil {
			return rs.storeErr(err)
		}
		for _, i := range pending {
			e.Parts[i].Object = ref.Name
		}
		rs.objects = append(rs.objects, ref)
		rs.totals.NewObjects++
		rs.totals.StoredBytes += ref.Size
		rs.event(Event{Kind: EventObject, Object: ref.Name, Bytes: ref.Size})
		pending, inObject = nil, 0
		ow.discard()
		ow, err = rs.newObjectWriter()
		return err
	}
	for i := 0; ; i++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, rerr := io.ReadFull(rs.opts.Stdin, buf)
		if n > 0 {
			member := fmt.Sprintf("%s.part%06d", e.Path, i)
			p := Part{Offset: ow.cw.n, Member: member, Size: int64(n)}
			hdr := &tar.Header{Typeflag: tar.TypeReg, Name: member, Size: int64(n), Mode: 0o600, ModTime: e.MTime, Format: tar.FormatPAX}
			if err := ow.tw.WriteHeader(hdr); err != nil {
				return err
			}
			if _, err := ow.tw.Write(buf[:n]); err != nil {
				return err
			}
			total.Write(buf[:n])
			e.Parts = append(e.Parts, p)
			pending = append(pending, len(e.Parts)-1)
			e.Size += int64(n)
			inObject += int64(n)
			if inObject >= rs.r.Config.ObjectSize {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			return fmt.Errorf("reading the stream: %w", rerr)
		}
	}
	if len(pending) > 0 {
		if err := flush(); err != nil {
			return err
		}
	}
	e.SHA256 = hex.EncodeToString(total.Sum(nil))
	rs.totals.NewFiles++
	rs.totals.NewBytes += e.Size
	return nil
}

// commit writes the encrypted manifest and then the signed snapshot.
func (rs *runState) commit(ctx context.Context, entries []*Entry, paths []string, start, end time.Time) (*Snapshot, error) {
	r := rs.r
	m := Manifest{Version: FormatVersion, Repository: r.Config.ID, Host: rs.opts.Host, Paths: paths, Tags: rs.opts.Tags,
		Start: start, End: end, Totals: rs.totals, NhscryptVersion: rs.opts.Version}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Path < entries[j].Path })
	mref, err := rs.storeManifest(ctx, m, entries)
	if err != nil {
		return nil, fmt.Errorf("storing the manifest: %w", err)
	}
	objs := append([]ObjectRef(nil), rs.objects...)
	sort.Slice(objs, func(i, j int) bool { return objs[i].Name < objs[j].Name })
	if objs == nil {
		objs = []ObjectRef{}
	}
	idx := SnapshotIndex{Version: FormatVersion, Repository: r.Config.ID, Time: start, EndTime: end, Host: rs.opts.Host,
		Paths: paths, Tags: rs.opts.Tags, Manifest: mref, Objects: objs, Totals: rs.totals, NhscryptVersion: rs.opts.Version}
	data, id, err := signIndex(idx, rs.opts.SigningKey)
	if err != nil {
		return nil, err
	}
	if err := r.Backend.Save(ctx, Handle{Type: SnapshotFile, Name: id}, int64(len(data)), bytes.NewReader(data)); err != nil {
		return nil, fmt.Errorf("storing the snapshot: %w", err)
	}
	return &Snapshot{ID: id, SnapshotIndex: idx, Signer: base64.StdEncoding.EncodeToString(rs.opts.SigningKey.Public().(ed25519.PublicKey)), Trusted: true}, nil
}

// signIndex serialises and signs an index, returning the snapshot object
// and its ID.
func signIndex(idx SnapshotIndex, key ed25519.PrivateKey) ([]byte, string, error) {
	raw, err := json.Marshal(idx)
	if err != nil {
		return nil, "", err
	}
	si := SignedIndex{Index: raw}
	if key != nil {
		si.Signer = base64.StdEncoding.EncodeToString(key.Public().(ed25519.PublicKey))
		si.Signature = base64.StdEncoding.EncodeToString(ed25519.Sign(key, raw))
	}
	data, err := json.Marshal(si)
	if err != nil {
		return nil, "", err
	}
	data = append(data, '\n')
	sum := sha256.Sum256(data)
	return data, hex.EncodeToString(sum[:]), nil
}

// storeManifest stores manifest m with entries as its Entries: the JSON
// json.Marshal makes, encrypted to the repository's recipients and named by
// the hash of the ciphertext. It is written one entry at a time through a
// spool file, so a large tree's manifest is never held in memory whole (as
// entries, JSON and ciphertext: several times the size of the JSON).
func (rs *runState) storeManifest(ctx context.Context, m Manifest, entries []*Entry) (ObjectRef, error) {
	m.Entries = []Entry{}
	head, err := json.Marshal(m)
	if err != nil {
		return ObjectRef{}, err
	}
	// Entries is the last field: the entries go between its brackets.
	head, ok := bytes.CutSuffix(head, []byte(`[]}`))
	if !ok {
		return ObjectRef{}, errors.New("manifest JSON does not end with its entries")
	}
	sp, err := newSpool(rs.spoolDir())
	if err != nil {
		return ObjectRef{}, err
	}
	defer sp.discard()
	aw, err := age.Encrypt(sp, rs.r.recipients...)
	if err != nil {
		return ObjectRef{}, err
	}
	bw := bufio.NewWriterSize(aw, 64<<10)
	bw.Write(head)
	bw.WriteByte('[')
	for i, e := range entries {
		if i > 0 {
			bw.WriteByte(',')
		}
		b, err := json.Marshal(e)
		if err != nil {
			return ObjectRef{}, err
		}
		bw.Write(b)
	}
	bw.WriteString("]}")
	if err := bw.Flush(); err != nil {
		return ObjectRef{}, err
	}
	if err := aw.Close(); err != nil {
		return ObjectRef{}, err
	}
	return sp.store(ctx, rs.r.Backend, ManifestFile)
}
