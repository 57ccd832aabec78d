package s3_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/nhscrypt/nhscrypt/backup"
	"github.com/nhscrypt/nhscrypt/backup/retry"
	"github.com/nhscrypt/nhscrypt/backup/s3"
	"github.com/nhscrypt/nhscrypt/backup/s3/s3test"
)

// TestObjectLock: with retention, every object is stored locked; Remove
// fails with a LockedError, the server itself refuses to delete the
// version (or let an overwrite or a delete marker destroy it), and Prune
// reports the objects as not removed rather than failing.
func TestObjectLock(t *testing.T) {
	srv := s3test.Start(t)
	bucket := srv.NewBucket(s3test.BucketOptions{ObjectLock: true})
	raw := srv.Client()
	ctx := context.Background()
	for _, c := range []struct {
		name string
		ret  s3.Retention
	}{
		{"governance", s3.Retention{Mode: s3.Governance, Days: 2}},
		{"compliance", s3.Retention{Mode: s3.Compliance, Until: time.Now().Add(3 * time.Hour).Truncate(time.Second)}},
	} {
		t.Run(c.name, func(t *testing.T) {
			ret := c.ret
			b := open(t, srv, bucket, c.name, s3.Options{Retention: &ret, PartSize: s3.MinPartSize})
			wantUntil := ret.Until
			if ret.Days > 0 {
				wantUntil = time.Now().Add(time.Duration(ret.Days) * 24 * time.Hour)
			}
			var hs []backup.Handle
			for _, n := range []int{1000, s3.MinPartSize + 1} { // single PUT and multipart
				data := randomData(n)
				h := backup.Handle{Type: backup.DataFile, Name: hashName(data)}
				if err := b.Save(ctx, h, int64(n), bytes.NewReader(data)); err != nil {
					t.Fatal(err)
				}
				hs = append(hs, h)
				// The lock as the server reports it (from HEAD: versitygw's
				// GetObjectRetention reply does not parse in minio-go).
				st, err := raw.StatObject(ctx, bucket, b.Key(h), minio.StatObjectOptions{})
				if err != nil {
					t.Fatal(err)
				}
				mode := st.Metadata.Get("X-Amz-Object-Lock-Mode")
				until, _ := time.Parse(time.RFC3339, st.Metadata.Get("X-Amz-Object-Lock-Retain-Until-Date"))
				if !strings.EqualFold(mode, string(ret.Mode)) || until.Sub(wantUntil).Abs() > time.Minute {
					t.Errorf("%d-byte object locked %q until %v, want %s until %v", n, mode, until, ret.Mode, wantUntil)
				}

				// Remove is refused, as a LockedError: not auth, not
				// missing, not retried.
				err = b.Remove(ctx, h)
				if !errors.Is(err, s3.ErrLocked) || errors.Is(err, backup.ErrAuth) || errors.Is(err, backup.ErrNotFound) || retry.IsTransient(err) {
					t.Fatalf("Remove of a locked object: %v", err)
				}
				t.Logf("Remove: %v", err)
				var le *s3.LockedError
				if !errors.As(err, &le) || le.RetainUntil.Sub(wantUntil).Abs() > time.Minute || !strings.EqualFold(string(le.Mode), string(ret.Mode)) {
					t.Errorf("LockedError %+v", le)
				}
				if !strings.Contains(err.Error(), "cannot be deleted yet") || !strings.Contains(err.Error(), b.Location()) {
					t.Errorf("message: %v", err)
				}
				if _, err := b.Stat(ctx, h); err != nil {
					t.Errorf("locked object gone after Remove: %v", err)
				}

				// The server itself refuses to delete the version, with
				// the root credentials.
				if err := raw.RemoveObject(ctx, bucket, b.Key(h), minio.RemoveObjectOptions{VersionID: st.VersionID}); err == nil {
					t.Errorf("server deleted locked version %s", st.VersionID)
				}
				// An overwrite or a plain DELETE makes a new version or a
				// delete marker; the locked version stays, intact.
				if _, err := raw.PutObject(ctx, bucket, b.Key(h), strings.NewReader("ransom"), 6, minio.PutObjectOptions{}); err != nil {
					t.Logf("overwrite refused: %v", err)
				}
				if err := raw.RemoveObject(ctx, bucket, b.Key(h), minio.RemoveObjectOptions{}); err != nil {
					t.Logf("delete refused: %v", err)
				}
				obj, err := raw.GetObject(ctx, bucket, b.Key(h), minio.GetObjectOptions{VersionID: st.VersionID})
				if err != nil {
					t.Fatal(err)
				}
				got, err := io.ReadAll(obj)
				if err != nil || !bytes.Equal(got, data) {
					t.Errorf("locked version after overwrite and delete: %d bytes, %v", len(got), err)
				}
				// Put it back as the current version for the prune below.
				if err := b.Save(ctx, h, int64(n), bytes.NewReader(data)); err != nil {
					t.Fatal(err)
				}
			}

			// Prune over a repository whose unreferenced objects are locked:
			// reported in NotRemoved, not a failure.
			f := newRepo(t, b, 1<<20)
			f.run(t, writeTree(t, 5))
			res, err := f.repo.Prune(ctx, -time.Hour, false)
			if err != nil {
				t.Fatalf("Prune: %v", err)
			}
			if len(res.Removed) != 0 || len(res.NotRemoved) != len(hs) {
				t.Fatalf("Prune removed %d, not removed %v", len(res.Removed), res.NotRemoved)
			}
			for i, w := range res.NotRemoved {
				if !strings.Contains(w.Path, "data/") || !strings.Contains(w.Message, "cannot be deleted yet") {
					t.Errorf("NotRemoved[%d] = %+v", i, w)
				}
			}
			for _, h := range hs {
				if _, err := b.Stat(ctx, h); err != nil {
					t.Errorf("%s after prune: %v", h.Name, err)
				}
			}
		})
	}
}

// TestBucketDefaultRetention: a bucket's default retention locks objects
// the backend writes without retention of its own; versitygw enforces it
// without reporting it, and Remove still says why it failed.
func TestBucketDefaultRetention(t *testing.T) {
	srv := s3test.Start(t)
	bucket := srv.NewBucket(s3test.BucketOptions{ObjectLock: true})
	raw := srv.Client()
	ctx := context.Background()
	mode, days, unit := minio.Governance, uint(1), minio.Days
	if err := raw.SetObjectLockConfig(ctx, bucket, &mode, &days, &unit); err != nil {
		t.Fatal(err)
	}
	b := open(t, srv, bucket, "", s3.Options{})
	data := randomData(100)
	h := backup.Handle{Type: backup.DataFile, Name: hashName(data)}
	if err := b.Save(ctx, h, 100, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	err := b.Remove(ctx, h)
	if !errors.Is(err, s3.ErrLocked) || errors.Is(err, backup.ErrAuth) {
		t.Fatalf("Remove under a default retention: %v", err)
	}
	t.Logf("Remove: %v", err)
	if _, err := b.Stat(ctx, h); err != nil {
		t.Errorf("object gone: %v", err)
	}
}

// TestExtendRetention: a reused object's lock is extended to what a new
// upload would get, and never shortened.
func TestExtendRetention(t *testing.T) {
	srv := s3test.Start(t)
	bucket := srv.NewBucket(s3test.BucketOptions{ObjectLock: true})
	ctx := context.Background()
	lockOf := func(b *s3.Backend, h backup.Handle) (string, time.Time) {
		st, err := srv.Client().StatObject(ctx, bucket, b.Key(h), minio.StatObjectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		until, _ := time.Parse(time.RFC3339, st.Metadata.Get("X-Amz-Object-Lock-Retain-Until-Date"))
		return st.Metadata.Get("X-Amz-Object-Lock-Mode"), until
	}
	short := open(t, srv, bucket, "", s3.Options{Retention: &s3.Retention{Mode: s3.Compliance, Days: 1}})
	long := open(t, srv, bucket, "", s3.Options{Retention: &s3.Retention{Mode: s3.Governance, Days: 5}})
	data := randomData(100)
	h := backup.Handle{Type: backup.DataFile, Name: hashName(data)}
	if err := short.Save(ctx, h, 100, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if err := long.ExtendRetention(ctx, h); err != nil {
		t.Fatal(err)
	}
	mode, until := lockOf(long, h)
	if want := time.Now().Add(5 * 24 * time.Hour); until.Sub(want).Abs() > time.Minute || !strings.EqualFold(mode, "COMPLIANCE") {
		t.Errorf("after extending: %s until %v, want COMPLIANCE (kept) until %v", mode, until, want)
	}
	if err := short.ExtendRetention(ctx, h); err != nil {
		t.Fatal(err)
	}
	if _, again := lockOf(short, h); !again.Equal(until) {
		t.Errorf("lock shortened from %v to %v", until, again)
	}
}
