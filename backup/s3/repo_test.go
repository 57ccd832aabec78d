package s3_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/nhscrypt/nhscrypt/backup"
	"github.com/nhscrypt/nhscrypt/backup/s3"
	"github.com/nhscrypt/nhscrypt/backup/s3/s3test"
	"github.com/nhscrypt/nhscrypt/report"
)

type repoFixture struct {
	repo  *backup.Repository
	id    *age.X25519Identity
	key   ed25519.PrivateKey
	state string
}

func newRepo(t *testing.T, b backup.Backend, objectSize int64) *repoFixture {
	t.Helper()
	dir := t.TempDir()
	f := &repoFixture{state: filepath.Join(dir, "state")}
	f.id, _ = age.GenerateX25519Identity()
	var err error
	if f.key, err = backup.GenerateSigningKey(filepath.Join(dir, "signing.key")); err != nil {
		t.Fatal(err)
	}
	if f.repo, err = backup.Init(context.Background(), b, []string{f.id.Recipient().String()}, objectSize, "host-a", f.key.Public().(ed25519.PublicKey)); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *repoFixture) run(t *testing.T, paths ...string) *backup.Snapshot {
	t.Helper()
	res, err := f.repo.Run(context.Background(), backup.RunOptions{Paths: paths, Host: "host-a", SigningKey: f.key, StateDir: f.state, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Warnings) != 0 {
		t.Fatalf("warnings: %v", res.Warnings)
	}
	return res.Snapshot
}

// writeTree writes n small files and two of a few hundred KiB.
func writeTree(t *testing.T, n int) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), "src")
	t0 := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	put := func(rel string, data []byte, mode os.FileMode) {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, mode); err != nil {
			t.Fatal(err)
		}
		os.Chtimes(p, t0, t0)
	}
	for i := range n {
		put(fmt.Sprintf("notes/d%d/patient-%04d.txt", i%7, i), []byte(strings.Repeat(fmt.Sprintf("record %d\n", i), i%40+1)), 0o640)
	}
	put("scans/a.bin", randomData(300<<10), 0o600)
	put("scans/b.bin", randomData(500<<10+7), 0o600)
	put("empty", nil, 0o600)
	os.Symlink("scans/a.bin", filepath.Join(root, "link"))
	return root
}

func compareTrees(t *testing.T, src, dst string) int {
	t.Helper()
	n := 0
	filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		q := filepath.Join(dst, rel)
		di, err := os.Lstat(q)
		if err != nil {
			t.Errorf("%s not restored", rel)
			return nil
		}
		if fi.Mode() != di.Mode() {
			t.Errorf("%s: mode %v, restored %v", rel, fi.Mode(), di.Mode())
		}
		switch {
		case fi.Mode().IsRegular():
			a, _ := os.ReadFile(p)
			b, _ := os.ReadFile(q)
			if !bytes.Equal(a, b) || !fi.ModTime().Equal(di.ModTime()) {
				t.Errorf("%s: content or mtime differs", rel)
			}
			n++
		case fi.Mode()&os.ModeSymlink != 0:
			a, _ := os.Readlink(p)
			b, _ := os.Readlink(q)
			if a != b {
				t.Errorf("%s: link %q restored as %q", rel, a, b)
			}
		}
		return nil
	})
	return n
}

func findings(fs []report.Finding) map[string][]report.Finding {
	m := map[string][]report.Finding{}
	for _, f := range fs {
		m[f.ID] = append(m[f.ID], f)
	}
	return m
}

// TestRepositoryRoundTrip: Init, Run (twice: the second stores nothing),
// Restore and Verify of a repository in S3, then open it again from the
// URL alone.
func TestRepositoryRoundTrip(t *testing.T) {
	srv := s3test.Start(t)
	bucket := srv.NewBucket(s3test.BucketOptions{})
	ctx := context.Background()
	b := open(t, srv, bucket, "hosts/a", s3.Options{PartSize: s3.MinPartSize})
	if err := b.Create(ctx); err != nil {
		t.Fatal(err)
	}
	f := newRepo(t, b, 256<<10) // small objects: the tree spans several
	src := writeTree(t, 300)
	snap := f.run(t, src)
	if snap.Totals.NewObjects < 2 {
		t.Errorf("%d objects", snap.Totals.NewObjects)
	}
	if again := f.run(t, src); again.Totals.NewObjects != 0 {
		t.Errorf("unchanged tree stored %d new objects", again.Totals.NewObjects)
	}
	if err := b.Create(ctx); err == nil {
		t.Error("Create over the repository succeeded")
	}

	// A fresh backend from the URL opens the same repository.
	repo, err := backup.Open(ctx, open(t, srv, bucket, "hosts/a", s3.Options{}))
	if err != nil {
		t.Fatal(err)
	}
	m, err := repo.LoadManifest(ctx, snap, []age.Identity{f.id})
	if err != nil {
		t.Fatal(err)
	}
	target := t.TempDir()
	rr, err := repo.Restore(ctx, m, backup.RestoreOptions{Target: target, Identities: []age.Identity{f.id}})
	if err != nil || len(rr.Failed) != 0 {
		t.Fatalf("restore: %v %v", err, rr.Failed)
	}
	if n := compareTrees(t, src, filepath.Join(target, src)); n < 303 {
		t.Errorf("compared %d files", n)
	}
	fs, _, err := repo.Verify(ctx, backup.VerifyOptions{ReadData: true, Identities: []age.Identity{f.id}})
	if err != nil || len(fs) != 0 {
		t.Errorf("verify: %v %v", fs, err)
	}
}

// TestServerSideDamage: a byte flipped in a stored object, in the
// server's own storage, is named by verify with ReadData (by hash); a
// truncated object is caught by size, from the listing and stat alone.
func TestServerSideDamage(t *testing.T) {
	srv := s3test.Start(t)
	bucket := srv.NewBucket(s3test.BucketOptions{})
	ctx := context.Background()
	b := open(t, srv, bucket, "repo", s3.Options{})
	f := newRepo(t, b, 128<<10)
	snap := f.run(t, writeTree(t, 100))
	if len(snap.Objects) < 2 {
		t.Fatalf("%d objects", len(snap.Objects))
	}
	clean, _, err := f.repo.Verify(ctx, backup.VerifyOptions{ReadData: true})
	if err != nil || len(clean) != 0 {
		t.Fatalf("fresh repository: %v %v", clean, err)
	}
	flipped, truncated := snap.Objects[0].Name, snap.Objects[1].Name
	path := func(name string) string {
		return srv.ObjectPath(bucket, b.Key(backup.Handle{Type: backup.DataFile, Name: name}))
	}
	p := path(flipped)
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0x20
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	p2 := path(truncated)
	st, err := os.Stat(p2)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p2, st.Size()-100); err != nil {
		t.Fatal(err)
	}

	// Without reading data: only the truncation, found by size.
	fs, _, err := f.repo.Verify(ctx, backup.VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m := findings(fs)
	if len(fs) != 1 || len(m[backup.IDObjectSize]) != 1 || !strings.Contains(m[backup.IDObjectSize][0].Subject, truncated) {
		t.Errorf("verify without data: %+v", fs)
	}
	// Reading the data (no key needed): the flip, by hash.
	fs, _, err = f.repo.Verify(ctx, backup.VerifyOptions{ReadData: true})
	if err != nil {
		t.Fatal(err)
	}
	m = findings(fs)
	if len(m[backup.IDObjectDamaged]) != 1 || !strings.Contains(m[backup.IDObjectDamaged][0].Subject, flipped) {
		t.Errorf("verify with data: %+v", fs)
	}
	if len(m[backup.IDObjectSize]) != 1 {
		t.Errorf("verify with data lost the size finding: %+v", fs)
	}
}
