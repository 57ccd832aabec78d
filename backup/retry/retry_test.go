package retry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"syscall"
	"testing"
	"time"

	"github.com/nhscrypt/nhscrypt/backup"
	"github.com/nhscrypt/nhscrypt/backup/local"
)

// flaky fails the first n calls of each operation with err. It is a fake:
// the transient errors a real server shows only under faults (resets,
// 503s) are made here; the real-server fault tests are in backup/s3 and
// backup/sftp.
type flaky struct {
	backup.Backend
	n     int
	err   error
	calls int
}

func (f *flaky) Save(ctx context.Context, h backup.Handle, size int64, r io.Reader) error {
	f.calls++
	if f.calls <= f.n {
		io.CopyN(io.Discard, r, 10) // consume some, as a failed upload would
		return f.err
	}
	return f.Backend.Save(ctx, h, size, r)
}

func (f *flaky) Stat(ctx context.Context, h backup.Handle) (backup.FileInfo, error) {
	f.calls++
	if f.calls <= f.n {
		return backup.FileInfo{}, f.err
	}
	return f.Backend.Stat(ctx, h)
}

type status503 struct{}

func (status503) Error() string   { return "503 Slow Down" }
func (status503) Transient() bool { return true }

func TestRetry(t *testing.T) {
	cases := []struct {
		err       error
		retried   bool
		finalCall int
	}{
		{fmt.Errorf("write: %w", syscall.ECONNRESET), true, 3},
		{status503{}, true, 3},
		{&timeoutErr{}, true, 3},
		{fmt.Errorf("bad key: %w", backup.ErrAuth), false, 1},
		{fmt.Errorf("no bucket: %w", backup.ErrNotFound), false, 1},
		{errors.New("disk full"), false, 1},
	}
	for _, c := range cases {
		dir := t.TempDir()
		l := local.Open(dir)
		l.Create()
		f := &flaky{Backend: l, n: 2, err: c.err}
		b := New(f, 5, time.Millisecond, 4*time.Millisecond)
		retries := 0
		b.OnRetry = func(string, int, error) { retries++ }
		data := []byte("0123456789abcdefghij")
		err := b.Save(context.Background(), backup.Handle{Type: backup.DataFile, Name: "x"}, int64(len(data)), bytes.NewReader(data))
		if c.retried {
			if err != nil || retries != 2 || f.calls != c.finalCall {
				t.Errorf("%v: err %v after %d retries, %d calls", c.err, err, retries, f.calls)
			}
			if fi, _ := l.Stat(context.Background(), backup.Handle{Type: backup.DataFile, Name: "x"}); fi.Size != int64(len(data)) {
				t.Errorf("%v: retried upload stored %d bytes (reader not rewound?)", c.err, fi.Size)
			}
		} else if err == nil || retries != 0 || f.calls != 1 {
			t.Errorf("%v: err %v, %d retries, want no retry", c.err, err, retries)
		}
	}
}

type timeoutErr struct{}

func (*timeoutErr) Error() string   { return "i/o timeout" }
func (*timeoutErr) Timeout() bool   { return true }
func (*timeoutErr) Temporary() bool { return true }

func TestRetryGivesUp(t *testing.T) {
	l := local.Open(t.TempDir())
	l.Create()
	f := &flaky{Backend: l, n: 100, err: syscall.ECONNRESET}
	b := New(f, 4, time.Millisecond, 2*time.Millisecond)
	start := time.Now()
	_, err := b.Stat(context.Background(), backup.Handle{Type: backup.DataFile, Name: "x"})
	if !errors.Is(err, syscall.ECONNRESET) || f.calls != 4 {
		t.Errorf("after %d calls: %v", f.calls, err)
	}
	if time.Since(start) > time.Second {
		t.Error("backoff not capped")
	}
	// A cancelled context stops the waiting.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	f.calls = 0
	b = New(f, 100, time.Hour, time.Hour)
	if _, err := b.Stat(ctx, backup.Handle{Type: backup.DataFile, Name: "x"}); err == nil || f.calls != 1 {
		t.Errorf("cancelled: %v after %d calls", err, f.calls)
	}
}
