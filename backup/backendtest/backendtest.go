// Package backendtest is the conformance suite every backup backend runs
// against a real server: the local folder, SFTP and S3 backends all pass
// the same tests.
package backendtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/nhscrypt/nhscrypt/backup"
)

// Factory returns a fresh, empty backend for one test (a new folder, bucket
// prefix or path) and registers its cleanup with t.
type Factory func(t *testing.T) backup.Backend

func randomData(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func name(data []byte) string {
	s := sha256.Sum256(data)
	return hex.EncodeToString(s[:])
}

func save(t *testing.T, b backup.Backend, typ backup.FileType, data []byte) backup.Handle {
	t.Helper()
	h := backup.Handle{Type: typ, Name: name(data)}
	if err := b.Save(context.Background(), h, int64(len(data)), bytes.NewReader(data)); err != nil {
		t.Fatalf("Save %s/%s: %v", h.Type, h.Name, err)
	}
	return h
}

func load(t *testing.T, b backup.Backend, h backup.Handle, off, n int64) []byte {
	t.Helper()
	rc, err := b.Open(context.Background(), h, off, n)
	if err != nil {
		t.Fatalf("Open %s/%s: %v", h.Type, h.Name, err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("reading %s/%s: %v", h.Type, h.Name, err)
	}
	return data
}

func list(t *testing.T, b backup.Backend, typ backup.FileType) map[string]int64 {
	t.Helper()
	m := map[string]int64{}
	var mu sync.Mutex
	if err := b.List(context.Background(), typ, func(fi backup.FileInfo) error {
		mu.Lock()
		defer mu.Unlock()
		if _, dup := m[fi.Name]; dup {
			return fmt.Errorf("%s listed twice", fi.Name)
		}
		m[fi.Name] = fi.Size
		return nil
	}); err != nil {
		t.Fatalf("List %s: %v", typ, err)
	}
	return m
}

// Run runs the whole suite.
func Run(t *testing.T, newBackend Factory) {
	t.Run("SaveOpenStat", func(t *testing.T) { testSaveOpenStat(t, newBackend(t)) })
	t.Run("EmptyAndLarge", func(t *testing.T) { testEmptyAndLarge(t, newBackend(t)) })
	t.Run("RangeReads", func(t *testing.T) { testRangeReads(t, newBackend(t)) })
	t.Run("ListMany", func(t *testing.T) { testListMany(t, newBackend(t)) })
	t.Run("OddNames", func(t *testing.T) { testOddNames(t, newBackend(t)) })
	t.Run("Config", func(t *testing.T) { testConfig(t, newBackend(t)) })
	t.Run("Remove", func(t *testing.T) { testRemove(t, newBackend(t)) })
	t.Run("NotFound", func(t *testing.T) { testNotFound(t, newBackend(t)) })
	t.Run("ConcurrentSaves", func(t *testing.T) { testConcurrentSaves(t, newBackend(t)) })
	t.Run("Cancellation", func(t *testing.T) { testCancellation(t, newBackend(t)) })
	t.Run("ShortReader", func(t *testing.T) { testShortReader(t, newBackend(t)) })
}

func testSaveOpenStat(t *testing.T, b backup.Backend) {
	data := randomData(12345)
	h := save(t, b, backup.DataFile, data)
	if got := load(t, b, h, 0, 0); !bytes.Equal(got, data) {
		t.Fatal("content read back differs")
	}
	fi, err := b.Stat(context.Background(), h)
	if err != nil || fi.Size != int64(len(data)) || fi.Name != h.Name {
		t.Fatalf("Stat = %+v, %v", fi, err)
	}
	if fi.ModTime.IsZero() || time.Since(fi.ModTime) > time.Hour || time.Until(fi.ModTime) > time.Minute {
		t.Errorf("Stat ModTime %v is not about now", fi.ModTime)
	}
	// Saving the same content-named object again succeeds and changes
	// nothing.
	save(t, b, backup.DataFile, data)
	if n := len(list(t, b, backup.DataFile)); n != 1 {
		t.Errorf("%d objects after saving one twice", n)
	}
	// Types are separate namespaces.
	mh := save(t, b, backup.ManifestFile, data)
	if l := list(t, b, backup.ManifestFile); len(l) != 1 || l[mh.Name] != int64(len(data)) {
		t.Errorf("manifests listed %v", l)
	}
	if l := list(t, b, backup.SnapshotFile); len(l) != 0 {
		t.Errorf("snapshots listed %v", l)
	}
}

func testEmptyAndLarge(t *testing.T, b backup.Backend) {
	empty := save(t, b, backup.DataFile, nil)
	if got := load(t, b, empty, 0, 0); len(got) != 0 {
		t.Errorf("empty object read back %d bytes", len(got))
	}
	if fi, err := b.Stat(context.Background(), empty); err != nil || fi.Size != 0 {
		t.Errorf("empty Stat %+v %v", fi, err)
	}
	large := randomData(40<<20 + 123) // several multipart parts
	h := save(t, b, backup.DataFile, large)
	if got := load(t, b, h, 0, 0); !bytes.Equal(got, large) {
		t.Fatal("large object read back differs")
	}
}

func testRangeReads(t *testing.T, b backup.Backend) {
	data := randomData(100000)
	h := save(t, b, backup.DataFile, data)
	for _, c := range []struct{ off, n int64 }{{0, 1}, {0, 100000}, {1, 10}, {99999, 1}, {50000, 0}, {12345, 54321}} {
		want := data[c.off:]
		if c.n > 0 {
			want = data[c.off : c.off+c.n]
		}
		if got := load(t, b, h, c.off, c.n); !bytes.Equal(got, want) {
			t.Errorf("range %d+%d: %d bytes differ", c.off, c.n, len(got))
		}
	}
}

func testListMany(t *testing.T, b backup.Backend) {
	want := map[string]int64{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := 0; i < 1100; i++ { // over S3's 1000-key page
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			data := []byte(fmt.Sprintf("object %d", i))
			h := backup.Handle{Type: backup.DataFile, Name: name(data)}
			if err := b.Save(context.Background(), h, int64(len(data)), bytes.NewReader(data)); err != nil {
				t.Errorf("Save: %v", err)
			}
			mu.Lock()
			want[h.Name] = int64(len(data))
			mu.Unlock()
		}(i)
	}
	wg.Wait()
	got := list(t, b, backup.DataFile)
	if len(got) != len(want) {
		t.Fatalf("listed %d objects, saved %d", len(got), len(want))
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("%s listed with size %d, want %d", k, got[k], v)
		}
	}
	// An error from the callback stops the listing and is returned.
	stop := errors.New("stop")
	n := 0
	err := b.List(context.Background(), backup.DataFile, func(backup.FileInfo) error { n++; return stop })
	if !errors.Is(err, stop) || n != 1 {
		t.Errorf("List after a callback error: %v after %d calls", err, n)
	}
}

func testOddNames(t *testing.T, b backup.Backend) {
	// Object names are hex hashes, but snapshot and manifest names pass
	// through the same code: names with odd characters must round trip or
	// be refused cleanly, never escape the repository.
	for _, n := range []string{"with space", "ünïcödé", "a+b=c", "percent%2F", "semi;colon"} {
		h := backup.Handle{Type: backup.SnapshotFile, Name: n}
		err := b.Save(context.Background(), h, 3, bytes.NewReader([]byte("abc")))
		if err != nil {
			continue // refused cleanly
		}
		if got := load(t, b, h, 0, 0); string(got) != "abc" {
			t.Errorf("%q read back %q", n, got)
		}
		if l := list(t, b, backup.SnapshotFile); l[n] != 3 {
			t.Errorf("%q not listed under its name: %v", n, l)
		}
		b.Remove(context.Background(), h)
	}
	for _, n := range []string{"../escape", "a/b", "", ".."} {
		h := backup.Handle{Type: backup.SnapshotFile, Name: n}
		if err := b.Save(context.Background(), h, 1, bytes.NewReader([]byte("x"))); err == nil {
			t.Errorf("name %q accepted", n)
		}
	}
}

func testConfig(t *testing.T, b backup.Backend) {
	h := backup.Handle{Type: backup.ConfigFile, Name: "config"}
	for _, v := range []string{"first", "second, longer"} {
		if err := b.Save(context.Background(), h, int64(len(v)), bytes.NewReader([]byte(v))); err != nil {
			t.Fatal(err)
		}
		if got := load(t, b, h, 0, 0); string(got) != v {
			t.Fatalf("config read back %q, want %q (the config is replaced on save)", got, v)
		}
	}
}

func testRemove(t *testing.T, b backup.Backend) {
	data := randomData(100)
	h := save(t, b, backup.DataFile, data)
	if err := b.Remove(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Stat(context.Background(), h); !errors.Is(err, backup.ErrNotFound) {
		t.Errorf("Stat after Remove: %v", err)
	}
	if err := b.Remove(context.Background(), h); !errors.Is(err, backup.ErrNotFound) {
		t.Errorf("second Remove: %v, want ErrNotFound", err)
	}
	if l := list(t, b, backup.DataFile); len(l) != 0 {
		t.Errorf("listed after Remove: %v", l)
	}
}

func testNotFound(t *testing.T, b backup.Backend) {
	h := backup.Handle{Type: backup.DataFile, Name: name([]byte("never saved"))}
	if _, err := b.Open(context.Background(), h, 0, 0); !errors.Is(err, backup.ErrNotFound) {
		t.Errorf("Open missing: %v", err)
	}
	if _, err := b.Stat(context.Background(), h); !errors.Is(err, backup.ErrNotFound) {
		t.Errorf("Stat missing: %v", err)
	}
}

func testConcurrentSaves(t *testing.T, b backup.Backend) {
	var wg sync.WaitGroup
	datas := make([][]byte, 16)
	for i := range datas {
		datas[i] = randomData(256<<10 + i)
	}
	errs := make(chan error, 64)
	for i := range datas {
		for range 3 { // the same object from three writers at once
			wg.Add(1)
			go func(d []byte) {
				defer wg.Done()
				h := backup.Handle{Type: backup.DataFile, Name: name(d)}
				if err := b.Save(context.Background(), h, int64(len(d)), bytes.NewReader(d)); err != nil {
					errs <- err
				}
			}(datas[i])
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent Save: %v", err)
	}
	got := list(t, b, backup.DataFile)
	if len(got) != len(datas) {
		t.Errorf("%d objects after concurrent saves of %d", len(got), len(datas))
	}
	for _, d := range datas {
		h := backup.Handle{Type: backup.DataFile, Name: name(d)}
		if !bytes.Equal(load(t, b, h, 0, 0), d) {
			t.Errorf("%s damaged by concurrent saves", h.Name[:12])
		}
	}
}

// slowReader delivers data slowly, cancelling ctx part-way.
type slowReader struct {
	data   []byte
	cancel context.CancelFunc
	n      int
}

func (s *slowReader) Read(p []byte) (int, error) {
	if len(s.data) == 0 {
		return 0, io.EOF
	}
	n := min(len(p), 64<<10, len(s.data))
	copy(p, s.data[:n])
	s.data = s.data[n:]
	s.n += n
	if s.n > 1<<20 && s.cancel != nil {
		s.cancel()
		s.cancel = nil
		time.Sleep(50 * time.Millisecond)
	}
	return n, nil
}

func testCancellation(t *testing.T, b backup.Backend) {
	data := randomData(24 << 20)
	h := backup.Handle{Type: backup.DataFile, Name: name(data)}
	ctx, cancel := context.WithCancel(context.Background())
	err := b.Save(ctx, h, int64(len(data)), &slowReader{data: data, cancel: cancel})
	if err == nil {
		t.Fatal("Save succeeded although cancelled part-way")
	}
	if _, err := b.Stat(context.Background(), h); !errors.Is(err, backup.ErrNotFound) {
		t.Errorf("a cancelled Save left an object: %v", err)
	}
	if l := list(t, b, backup.DataFile); len(l) != 0 {
		t.Errorf("a cancelled Save left %v", l)
	}
	// Calls with a cancelled context fail.
	if _, err := b.Stat(ctx, h); err == nil {
		t.Error("Stat with a cancelled context succeeded")
	}
	if err := b.List(ctx, backup.DataFile, func(backup.FileInfo) error { return nil }); err == nil {
		t.Error("List with a cancelled context succeeded")
	}
}

// testShortReader: a reader with fewer bytes than announced must fail the
// Save and leave nothing.
func testShortReader(t *testing.T, b backup.Backend) {
	data := randomData(1000)
	h := backup.Handle{Type: backup.DataFile, Name: name(data)}
	if err := b.Save(context.Background(), h, 2000, bytes.NewReader(data)); err == nil {
		t.Fatal("Save of a short reader succeeded")
	}
	if _, err := b.Stat(context.Background(), h); !errors.Is(err, backup.ErrNotFound) {
		t.Errorf("short Save left an object: %v", err)
	}
}
