package s3_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/nhscrypt/nhscrypt/backup"
	"github.com/nhscrypt/nhscrypt/backup/retry"
	"github.com/nhscrypt/nhscrypt/backup/s3"
	"github.com/nhscrypt/nhscrypt/backup/s3/s3test"
)

// hookReader calls hook once after n bytes have been read; it seeks, so
// the retry decorator can rewind it.
type hookReader struct {
	r    *bytes.Reader
	n    int64
	read int64
	hook func()
}

func (h *hookReader) Read(p []byte) (int, error) {
	m, err := h.r.Read(p)
	h.read += int64(m)
	if h.hook != nil && h.read >= h.n {
		f := h.hook
		h.hook = nil
		f()
	}
	return m, err
}

func (h *hookReader) Seek(off int64, whence int) (int64, error) { return h.r.Seek(off, whence) }

// TestServerStopsMidUpload: the S3 server is killed during a large Save.
// The Save fails with an error naming the repository, is classed as
// transient, and leaves no object; once the server is back on the same
// port, a Save through the retry decorator succeeds, including one whose
// first attempt the outage cut short.
func TestServerStopsMidUpload(t *testing.T) {
	srv := s3test.Start(t)
	bucket := srv.NewBucket(s3test.BucketOptions{})
	ctx := context.Background()
	b := open(t, srv, bucket, "offsite/host-a", s3.Options{PartSize: s3.MinPartSize, Concurrency: 2, Timeout: 10 * time.Second})
	data := randomData(48 << 20)
	h := backup.Handle{Type: backup.DataFile, Name: hashName(data)}

	start := time.Now()
	err := b.Save(ctx, h, int64(len(data)), &hookReader{r: bytes.NewReader(data), n: 20 << 20, hook: srv.Stop})
	if err == nil {
		t.Fatal("Save succeeded with the server killed mid-upload")
	}
	t.Logf("Save failed after %v: %v", time.Since(start).Round(time.Millisecond), err)
	wantLoc := "s3+http://" + srv.Endpoint + "/" + bucket + "/offsite/host-a"
	if !strings.Contains(err.Error(), wantLoc) || !strings.Contains(err.Error(), "saving data/"+h.Name[:12]) {
		t.Errorf("error does not name the object and %s: %v", wantLoc, err)
	}
	if !retry.IsTransient(err) || errors.Is(err, backup.ErrAuth) || errors.Is(err, backup.ErrNotFound) {
		t.Errorf("server outage not transient: %v", err)
	}
	if time.Since(start) > 20*time.Second {
		t.Errorf("Save took %v to fail", time.Since(start))
	}
	// While the server is down, other calls fail the same way.
	if _, err := b.Stat(ctx, h); !retry.IsTransient(err) {
		t.Errorf("Stat with the server down: %v", err)
	}

	srv.Restart()
	if _, err := b.Stat(ctx, h); !errors.Is(err, backup.ErrNotFound) {
		t.Errorf("a failed Save left an object: %v", err)
	}
	n := 0
	if err := b.List(ctx, backup.DataFile, func(backup.FileInfo) error { n++; return nil }); err != nil || n != 0 {
		t.Errorf("after the failed Save, List found %d objects: %v", n, err)
	}

	// The retry decorator: the server dies during the first attempt and
	// comes back a moment later on the same port.
	rb := retry.New(b, 8, 200*time.Millisecond, 2*time.Second)
	var retries atomic.Int32
	rb.OnRetry = func(op string, attempt int, err error) {
		retries.Add(1)
		t.Logf("retry %d of %s: %v", attempt, op, err)
	}
	var wg sync.WaitGroup
	hook := func() {
		srv.Stop()
		wg.Add(1)
		go func() { defer wg.Done(); time.Sleep(700 * time.Millisecond); srv.Restart() }()
	}
	if err := rb.Save(ctx, h, int64(len(data)), &hookReader{r: bytes.NewReader(data), n: 10 << 20, hook: hook}); err != nil {
		t.Fatalf("Save through retry: %v", err)
	}
	wg.Wait()
	if retries.Load() == 0 {
		t.Error("no retry happened")
	}
	rc, err := b.Open(ctx, h, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("object after retried Save: %d bytes, %v", len(got), err)
	}
	// Reads through retry also survive a restart.
	srv.Stop()
	go func() { time.Sleep(300 * time.Millisecond); srv.Restart() }()
	if fi, err := rb.Stat(ctx, h); err != nil || fi.Size != int64(len(data)) {
		t.Errorf("Stat through retry across a restart: %+v %v", fi, err)
	}
}

// streamReader is a non-seekable stream of pseudo-random bytes.
type streamReader struct {
	rng  *rand.ChaCha8
	left int64
}

func newStream(n int64) *streamReader {
	return &streamReader{rng: rand.NewChaCha8([32]byte{1, 2, 3}), left: n}
}

func (s *streamReader) Read(p []byte) (int, error) {
	if s.left == 0 {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), s.left)]
	s.rng.Read(p)
	s.left -= int64(len(p))
	return len(p), nil
}

// TestUnknownSizeMemory: a 200 MiB stream of unknown size (a non-seekable
// reader, size -1) uploads with the heap bounded by Concurrency ×
// PartSize (default 4 × 16 MiB), far below the object's size.
func TestUnknownSizeMemory(t *testing.T) {
	const size = 200 << 20
	srv := s3test.Start(t)
	bucket := srv.NewBucket(s3test.BucketOptions{})
	ctx := context.Background()
	b := open(t, srv, bucket, "", s3.Options{})

	hs := sha256.New()
	io.Copy(hs, newStream(size))
	h := backup.Handle{Type: backup.DataFile, Name: hex.EncodeToString(hs.Sum(nil))}

	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	var peak atomic.Uint64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	start := time.Now()
	err := b.Save(ctx, h, -1, struct{ io.Reader }{newStream(size)})
	close(stop)
	<-done
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d MiB of unknown size in %v; heap in use %d MiB before, peak %d MiB",
		size>>20, time.Since(start).Round(time.Millisecond), base.HeapInuse>>20, peak.Load()>>20)
	if peak.Load() > 128<<20 {
		t.Errorf("heap peaked at %d MiB uploading a stream of unknown size", peak.Load()>>20)
	}
	st, err := srv.Client().StatObject(ctx, bucket, b.Key(h), minio.StatObjectOptions{Checksum: true})
	if err != nil || st.Size != size {
		t.Fatalf("stored %d bytes, %v", st.Size, err)
	}
	if !strings.HasSuffix(st.ChecksumSHA256, "-13") { // 200 MiB in 16 MiB parts
		t.Errorf("stored checksum %q: not 13 parts", st.ChecksumSHA256)
	}
}
