// Package retry is a Backend decorator that retries transient errors
// (timeouts, connection resets, 5xx) with capped exponential backoff. It
// never retries authentication failures or missing objects and buckets.
package retry

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"syscall"
	"time"

	"github.com/nhscrypt/nhscrypt/backup"
)

// Backend retries the operations of an inner backend.
type Backend struct {
	inner    backup.Backend
	attempts int
	base     time.Duration
	max      time.Duration
	// OnRetry, if set, is told of each retry (for logs and tests).
	OnRetry func(op string, attempt int, err error)
}

// New wraps b: at most attempts tries per operation, waiting base, 2·base,
// … up to max between them (with jitter).
func New(b backup.Backend, attempts int, base, max time.Duration) *Backend {
	if attempts < 1 {
		attempts = 1
	}
	return &Backend{inner: b, attempts: attempts, base: base, max: max}
}

// Unwrap returns the inner backend.
func (b *Backend) Unwrap() backup.Backend { return b.inner }

// IsTransient reports whether err is worth retrying.
func IsTransient(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, backup.ErrAuth) || errors.Is(err, backup.ErrNotFound) {
		return false
	}
	var t backup.Transient
	if errors.As(err, &t) {
		return t.Transient()
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	for _, e := range []error{syscall.ECONNRESET, syscall.ECONNREFUSED, syscall.ECONNABORTED, syscall.EPIPE,
		syscall.ETIMEDOUT, syscall.EHOSTUNREACH, syscall.ENETUNREACH, io.ErrUnexpectedEOF, net.ErrClosed} {
		if errors.Is(err, e) {
			return true
		}
	}
	var oe *net.OpError
	return errors.As(err, &oe)
}

func (b *Backend) do(ctx context.Context, op string, f func() error) error {
	delay := b.base
	var err error
	for attempt := 1; ; attempt++ {
		if err = f(); err == nil || !IsTransient(err) || attempt >= b.attempts {
			return err
		}
		if b.OnRetry != nil {
			b.OnRetry(op, attempt, err)
		}
		wait := delay/2 + time.Duration(rand.Int64N(int64(delay/2)+1))
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		delay = min(2*delay, b.max)
	}
}

// Location is the inner backend's.
func (b *Backend) Location() string { return b.inner.Location() }

// Save retries only when r can be rewound (an io.Seeker).
func (b *Backend) Save(ctx context.Context, h backup.Handle, size int64, r io.Reader) error {
	seeker, ok := r.(io.Seeker)
	first := true
	return b.do(ctx, "save "+h.Name, func() error {
		if !first {
			if !ok {
				return errors.New("cannot retry an upload from a stream")
			}
			if _, err := seeker.Seek(0, io.SeekStart); err != nil {
				return err
			}
		}
		first = false
		return b.inner.Save(ctx, h, size, r)
	})
}

// Open retries opening (not reading).
func (b *Backend) Open(ctx context.Context, h backup.Handle, offset, length int64) (io.ReadCloser, error) {
	var rc io.ReadCloser
	err := b.do(ctx, "open "+h.Name, func() error {
		var err error
		rc, err = b.inner.Open(ctx, h, offset, length)
		return err
	})
	return rc, err
}

// Stat retries.
func (b *Backend) Stat(ctx context.Context, h backup.Handle) (backup.FileInfo, error) {
	var fi backup.FileInfo
	err := b.do(ctx, "stat "+h.Name, func() error {
		var err error
		fi, err = b.inner.Stat(ctx, h)
		return err
	})
	return fi, err
}

// List retries from the start, skipping names already passed to fn.
func (b *Backend) List(ctx context.Context, t backup.FileType, fn func(backup.FileInfo) error) error {
	seen := map[string]bool{}
	return b.do(ctx, "list "+string(t), func() error {
		return b.inner.List(ctx, t, func(fi backup.FileInfo) error {
			if seen[fi.Name] {
				return nil
			}
			seen[fi.Name] = true
			return fn(fi)
		})
	})
}

// Remove retries; a retried remove that finds the object gone succeeded.
func (b *Backend) Remove(ctx context.Context, h backup.Handle) error {
	tried := false
	return b.do(ctx, "remove "+h.Name, func() error {
		err := b.inner.Remove(ctx, h)
		if tried && errors.Is(err, backup.ErrNotFound) {
			return nil
		}
		tried = true
		return err
	})
}

// Close closes the inner backend.
func (b *Backend) Close() error { return b.inner.Close() }

// ExtendRetention delegates to the inner backend when it has object lock.
func (b *Backend) ExtendRetention(ctx context.Context, h backup.Handle) error {
	ext, ok := b.inner.(backup.RetentionExtender)
	if !ok {
		return nil
	}
	return b.do(ctx, "extend retention of "+h.Name, func() error { return ext.ExtendRetention(ctx, h) })
}
