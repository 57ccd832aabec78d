package s3_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/nhscrypt/nhscrypt/backup"
	"github.com/nhscrypt/nhscrypt/backup/retry"
	"github.com/nhscrypt/nhscrypt/backup/s3"
	"github.com/nhscrypt/nhscrypt/backup/s3/s3test"
)

// TestRepositoryUnderObjectLock: with retention on, a run extends the lock
// of every object it reuses; forget and prune cannot delete locked
// snapshots and objects, report them, and carry on.
func TestRepositoryUnderObjectLock(t *testing.T) {
	srv := s3test.Start(t)
	bucket := srv.NewBucket(s3test.BucketOptions{ObjectLock: true})
	ctx := context.Background()
	// Through the retry decorator, as the CLI uses it.
	ret := s3.Retention{Mode: s3.Governance, Days: 1}
	sb := open(t, srv, bucket, "locked", s3.Options{Retention: &ret, PartSize: s3.MinPartSize})
	if err := sb.Create(ctx); err != nil {
		t.Fatal(err)
	}
	b := retry.New(sb, 3, time.Millisecond, 10*time.Millisecond)
	f := newRepo(t, b, 256<<10)
	src := writeTree(t, 50)
	first := f.run(t, src)
	lockOf := func(name string) time.Time {
		st, err := srv.Client().StatObject(ctx, bucket, sb.Key(backup.Handle{Type: backup.DataFile, Name: name}), minio.StatObjectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		u, _ := time.Parse(time.RFC3339, st.Metadata.Get("X-Amz-Object-Lock-Retain-Until-Date"))
		return u
	}
	obj := first.Objects[0].Name
	before := lockOf(obj)
	time.Sleep(1100 * time.Millisecond) // retain-until has one-second resolution
	second := f.run(t, src)
	if second.Totals.NewObjects != 0 {
		t.Fatalf("second run stored %d objects", second.Totals.NewObjects)
	}
	if after := lockOf(obj); !after.After(before) {
		t.Errorf("reused object's lock not extended: %v then %v", before, after)
	}
	// Forget the first snapshot: its object is locked, so it is reported,
	// not an error.
	dec, locked, err := f.repo.Forget(ctx, backup.RetentionPolicy{Last: 1}, backup.Trust{}, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(dec) != 2 || len(locked) != 1 || !strings.Contains(locked[0].Path, first.ID) {
		t.Fatalf("forget under lock: decisions %d, not removed %+v", len(dec), locked)
	}
	res, err := f.repo.Prune(ctx, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Removed) != 0 {
		t.Errorf("prune removed locked objects: %+v", res.Removed)
	}
}
