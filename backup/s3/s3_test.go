package s3_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/nhscrypt/nhscrypt/backup"
	"github.com/nhscrypt/nhscrypt/backup/backendtest"
	"github.com/nhscrypt/nhscrypt/backup/retry"
	"github.com/nhscrypt/nhscrypt/backup/s3"
	"github.com/nhscrypt/nhscrypt/backup/s3/s3test"
)

var prefixes atomic.Int64

func open(t testing.TB, srv *s3test.Server, bucket, prefix string, opts s3.Options) *s3.Backend {
	t.Helper()
	if opts.Credentials == nil {
		opts.Credentials = srv.Credentials()
	}
	b, err := s3.Open(context.Background(), srv.URL(bucket, prefix), opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func randomData(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func hashName(data []byte) string {
	s := sha256.Sum256(data)
	return hex.EncodeToString(s[:])
}

func TestConformance(t *testing.T) {
	srv := s3test.Start(t)
	for _, c := range []struct {
		name string
		o    s3test.BucketOptions
	}{
		{"Plain", s3test.BucketOptions{}},
		// Object lock turns versioning on: Remove deletes every version.
		{"ObjectLockBucket", s3test.BucketOptions{ObjectLock: true}},
	} {
		t.Run(c.name, func(t *testing.T) {
			bucket := srv.NewBucket(c.o)
			backendtest.Run(t, func(t *testing.T) backup.Backend {
				return open(t, srv, bucket, fmt.Sprintf("repo%d/x", prefixes.Add(1)), s3.Options{PartSize: s3.MinPartSize * 2})
			})
		})
	}
}

func TestOpenErrors(t *testing.T) {
	srv := s3test.Start(t)
	bucket := srv.NewBucket(s3test.BucketOptions{})
	ctx := context.Background()

	// Wrong credentials: ErrAuth (exit 10), not retried.
	for _, creds := range []*credentials.Credentials{
		credentials.NewStaticV4(srv.AccessKey, "wrong-secret", ""),
		credentials.NewStaticV4("no-such-key", srv.SecretKey, ""),
		nil, // anonymous
	} {
		_, err := s3.Open(ctx, srv.URL(bucket, "p"), s3.Options{Credentials: creds})
		if creds == nil {
			// Anonymous: Open with no credentials at all.
			b, oerr := s3.Open(ctx, srv.URL(bucket, "p"), s3.Options{})
			if oerr == nil {
				_, err = b.Stat(ctx, backup.Handle{Type: backup.ConfigFile})
				b.Close()
			} else {
				err = oerr
			}
		}
		if !errors.Is(err, backup.ErrAuth) || retry.IsTransient(err) {
			t.Errorf("bad credentials: %v, want ErrAuth", err)
		}
		if err != nil && (strings.Contains(err.Error(), "wrong-secret") || strings.Contains(err.Error(), srv.SecretKey)) {
			t.Errorf("error shows a secret: %v", err)
		}
	}
	// With good credentials opened first, then the key is wrong on use.
	b := open(t, srv, bucket, "p", s3.Options{})
	if _, err := b.Stat(ctx, backup.Handle{Type: backup.ConfigFile}); !errors.Is(err, backup.ErrNotFound) {
		t.Errorf("Stat of a missing config: %v", err)
	}
	bad, err := s3.Open(ctx, srv.URL(bucket, "p"), s3.Options{Credentials: credentials.NewStaticV4(srv.AccessKey, "wrong", "")})
	if err == nil || !errors.Is(err, backup.ErrAuth) {
		t.Fatalf("Open with a wrong secret: %v", err)
	}
	_ = bad

	// Missing bucket: ErrNotFound (exit 11), with the URL in the message.
	_, err = s3.Open(ctx, srv.URL("no-such-bucket", "p"), s3.Options{Credentials: srv.Credentials()})
	if !errors.Is(err, backup.ErrNotFound) || retry.IsTransient(err) {
		t.Errorf("missing bucket: %v, want ErrNotFound", err)
	} else if !strings.Contains(err.Error(), "s3+http://"+srv.Endpoint+"/no-such-bucket/p") || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("missing bucket message: %v", err)
	}
	// A bucket removed after Open: operations wrap ErrNotFound.
	gone := srv.NewBucket(s3test.BucketOptions{})
	gb := open(t, srv, gone, "", s3.Options{})
	if err := srv.Client().RemoveBucket(ctx, gone); err != nil {
		t.Fatal(err)
	}
	data := []byte("x")
	err = gb.Save(ctx, backup.Handle{Type: backup.DataFile, Name: hashName(data)}, 1, bytes.NewReader(data))
	if !errors.Is(err, backup.ErrNotFound) {
		t.Errorf("Save into a removed bucket: %v", err)
	}
	if err := gb.List(ctx, backup.DataFile, func(backup.FileInfo) error { return nil }); !errors.Is(err, backup.ErrNotFound) {
		t.Errorf("List of a removed bucket: %v", err)
	}

	// Retention on a bucket without object lock is refused at Open.
	_, err = s3.Open(ctx, srv.URL(bucket, "p"), s3.Options{Credentials: srv.Credentials(),
		Retention: &s3.Retention{Mode: s3.Governance, Days: 1}})
	if err == nil || !strings.Contains(err.Error(), "object lock") {
		t.Errorf("retention on a bucket without object lock: %v", err)
	}

	// Bad URLs.
	for _, u := range []string{"s3://host", "s3://host/", "s3://user:pw@host/b", "http://host/b", "s3://host/b/../x", "s3://host/b?x=1"} {
		pu, _ := url.Parse(u)
		if _, err := s3.Open(ctx, pu, s3.Options{}); err == nil {
			t.Errorf("Open(%s) succeeded", u)
		} else if strings.Contains(err.Error(), "pw") {
			t.Errorf("Open(%s) shows the password: %v", u, err)
		}
	}
}

func TestCreate(t *testing.T) {
	srv := s3test.Start(t)
	bucket := srv.NewBucket(s3test.BucketOptions{})
	ctx := context.Background()
	b := open(t, srv, bucket, "repo", s3.Options{})
	if err := b.Create(ctx); err != nil {
		t.Fatal(err)
	}
	cfg := []byte("config")
	if err := b.Save(ctx, backup.Handle{Type: backup.ConfigFile, Name: "config"}, int64(len(cfg)), bytes.NewReader(cfg)); err != nil {
		t.Fatal(err)
	}
	if err := b.Create(ctx); !errors.Is(err, fs.ErrExist) {
		t.Errorf("Create over a repository: %v", err)
	}
	// Another prefix in the same bucket is another repository.
	if err := open(t, srv, bucket, "repo2", s3.Options{}).Create(ctx); err != nil {
		t.Errorf("Create beside a repository: %v", err)
	}
	if got, want := b.Location(), "s3+http://"+srv.Endpoint+"/"+bucket+"/repo"; got != want {
		t.Errorf("Location %q, want %q", got, want)
	}
}

// TestStoredChecksum: what the server holds carries the SHA-256 checked at
// upload (the object's own for a single PUT, the composite of the parts'
// for a multipart upload), and a stream whose content does not hash to
// its name is refused.
func TestStoredChecksum(t *testing.T) {
	srv := s3test.Start(t)
	bucket := srv.NewBucket(s3test.BucketOptions{})
	ctx := context.Background()
	b := open(t, srv, bucket, "", s3.Options{PartSize: s3.MinPartSize, StorageClass: "STANDARD"})
	raw := srv.Client()

	small := randomData(1000)
	h := backup.Handle{Type: backup.DataFile, Name: hashName(small)}
	if err := b.Save(ctx, h, int64(len(small)), bytes.NewReader(small)); err != nil {
		t.Fatal(err)
	}
	st, err := raw.StatObject(ctx, bucket, b.Key(h), minio.StatObjectOptions{Checksum: true})
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(small)
	if want := b64(sum[:]); st.ChecksumSHA256 != want {
		t.Errorf("stored checksum %q, want %q", st.ChecksumSHA256, want)
	}

	large := randomData(3*s3.MinPartSize + 77)
	lh := backup.Handle{Type: backup.DataFile, Name: hashName(large)}
	if err := b.Save(ctx, lh, -1, io.MultiReader(bytes.NewReader(large))); err != nil {
		t.Fatal(err)
	}
	st, err = raw.StatObject(ctx, bucket, b.Key(lh), minio.StatObjectOptions{Checksum: true})
	if err != nil {
		t.Fatal(err)
	}
	comp := sha256.New()
	for off := 0; off < len(large); off += s3.MinPartSize {
		s := sha256.Sum256(large[off:min(off+s3.MinPartSize, len(large))])
		comp.Write(s[:])
	}
	if want := b64(comp.Sum(nil)) + "-4"; st.ChecksumSHA256 != want {
		t.Errorf("stored composite checksum %q, want %q", st.ChecksumSHA256, want)
	}
	if st.Size != int64(len(large)) {
		t.Errorf("stored size %d", st.Size)
	}

	// Content that does not match its name is not stored, single or
	// multipart.
	for _, n := range []int{100, 2*s3.MinPartSize + 1} {
		data := randomData(n)
		wrong := backup.Handle{Type: backup.DataFile, Name: hashName(randomData(10))}
		err := b.Save(ctx, wrong, int64(n), bytes.NewReader(data))
		if err == nil || !strings.Contains(err.Error(), "not the") {
			t.Errorf("%d bytes under the wrong name: %v", n, err)
		}
		if _, err := b.Stat(ctx, wrong); !errors.Is(err, backup.ErrNotFound) {
			t.Errorf("object under the wrong name stored: %v", err)
		}
	}
	// No multipart upload is left behind.
	for u := range raw.ListIncompleteUploads(ctx, bucket, "", true) {
		t.Errorf("incomplete upload left: %+v", u)
	}
}

func b64(p []byte) string { return base64.StdEncoding.EncodeToString(p) }

func TestRetentionValidation(t *testing.T) {
	srv := s3test.Start(t)
	bucket := srv.NewBucket(s3test.BucketOptions{ObjectLock: true})
	for _, r := range []s3.Retention{
		{Mode: "weird", Days: 1},
		{Mode: s3.Governance},
		{Mode: s3.Governance, Days: 1, Until: time.Now().Add(time.Hour)},
		{Mode: s3.Compliance, Until: time.Now().Add(-time.Hour)},
		{Mode: s3.Compliance, Days: -1},
	} {
		if _, err := s3.Open(context.Background(), srv.URL(bucket, ""), s3.Options{Credentials: srv.Credentials(), Retention: &r}); err == nil {
			t.Errorf("retention %+v accepted", r)
		}
	}
	if m, err := s3.ParseRetentionMode("Compliance"); err != nil || m != s3.Compliance {
		t.Errorf("ParseRetentionMode: %v %v", m, err)
	}
}

// TestTLS: s3:// speaks HTTPS; a certificate the system does not trust is
// an authentication failure (the server's identity is unproven), not a
// transient one; trusting it through Options.Transport works.
func TestTLS(t *testing.T) {
	srv := s3test.StartTLS(t)
	bucket := srv.NewBucket(s3test.BucketOptions{})
	ctx := context.Background()
	u := srv.URL(bucket, "repo")
	if u.Scheme != "s3" {
		t.Fatalf("URL %s", u)
	}
	_, err := s3.Open(ctx, u, s3.Options{Credentials: srv.Credentials()})
	if !errors.Is(err, backup.ErrAuth) || retry.IsTransient(err) || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("untrusted certificate: %v, want ErrAuth", err)
	}
	t.Logf("untrusted: %v", err)
	// Plain HTTP to an HTTPS server fails cleanly.
	hu := *u
	hu.Scheme = "s3+http"
	if _, err := s3.Open(ctx, &hu, s3.Options{Credentials: srv.Credentials(), Timeout: 5 * time.Second}); err == nil {
		t.Error("s3+http:// to an HTTPS server succeeded")
	} else {
		t.Logf("plain HTTP: %v", err)
	}
	tr, err := minio.DefaultTransport(true)
	if err != nil {
		t.Fatal(err)
	}
	tr.TLSClientConfig.RootCAs = srv.RootCAs()
	b, err := s3.Open(ctx, u, s3.Options{Credentials: srv.Credentials(), Transport: tr, PartSize: s3.MinPartSize})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for _, n := range []int{10, s3.MinPartSize + 10} {
		data := randomData(n)
		h := backup.Handle{Type: backup.DataFile, Name: hashName(data)}
		if err := b.Save(ctx, h, int64(n), bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
		rc, err := b.Open(ctx, h, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(rc)
		rc.Close()
		if !bytes.Equal(got, data) {
			t.Errorf("%d bytes over TLS read back differently", n)
		}
	}
}
