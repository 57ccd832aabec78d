package atomicfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func entries(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func TestCommit(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "out")
	f, err := Create(p, 0o640, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("final name visible before commit")
	}
	f.Write([]byte("data"))
	mt := time.Date(2021, 5, 6, 7, 8, 9, 0, time.UTC)
	f.SetModTime(mt)
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	f.Abort() // no-op after commit
	b, err := os.ReadFile(p)
	if err != nil || string(b) != "data" {
		t.Fatalf("read %q, %v", b, err)
	}
	st, _ := os.Stat(p)
	if st.Mode().Perm() != 0o640 || !st.ModTime().Equal(mt) {
		t.Errorf("mode %v mtime %v", st.Mode().Perm(), st.ModTime())
	}
	if names := entries(t, dir); len(names) != 1 {
		t.Errorf("dir holds %v", names)
	}
}

func TestAbortLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	f, err := Create(filepath.Join(dir, "out"), 0o600, false)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("partial"))
	f.Abort()
	if names := entries(t, dir); len(names) != 0 {
		t.Errorf("dir holds %v after abort", names)
	}
}

func TestNoOverwrite(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "out")
	os.WriteFile(p, []byte("old"), 0o600)
	if _, err := Create(p, 0o600, false); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("Create over existing: %v", err)
	}
	// The name appears between Create and Commit: Commit must not replace it.
	os.Remove(p)
	f, err := Create(p, 0o600, false)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("new"))
	os.WriteFile(p, []byte("racer"), 0o600)
	if err := f.Commit(); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("Commit over a racing file: %v", err)
	}
	if b, _ := os.ReadFile(p); string(b) != "racer" {
		t.Fatalf("racing file replaced: %q", b)
	}
	if names := entries(t, dir); len(names) != 1 {
		t.Errorf("dir holds %v", names)
	}
	// With overwrite it is replaced.
	if err := WriteFile(p, []byte("forced"), 0o600, true); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "forced" {
		t.Fatalf("got %q", b)
	}
}

func TestRemovePending(t *testing.T) {
	dir := t.TempDir()
	a, _ := Create(filepath.Join(dir, "a"), 0o600, false)
	b, _ := Create(filepath.Join(dir, "b"), 0o600, false)
	b.Write([]byte("x"))
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	if !IsTemp(filepath.Base(a.File.Name())) {
		t.Fatalf("temporary name %q not recognised", a.File.Name())
	}
	RemovePending()
	if names := entries(t, dir); len(names) != 1 || names[0] != "b" {
		t.Errorf("dir holds %v, want only the committed b", names)
	}
}

// TestFinishThenPublish: a finished file is invisible until Publish, which
// never replaces an existing name without overwrite; Abort after Publish
// is a no-op.
func TestFinishThenPublish(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "out")
	f, err := Create(p, 0o640, false)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("data"))
	if err := f.Finish(false); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("finished file visible before Publish")
	}
	if err := f.Finish(false); err == nil {
		t.Error("second Finish accepted")
	}
	if err := f.Publish(); err != nil {
		t.Fatal(err)
	}
	f.Abort()
	if b, err := os.ReadFile(p); err != nil || string(b) != "data" {
		t.Fatalf("published %q %v", b, err)
	}
	g, _ := Create(filepath.Join(dir, "other"), 0o600, false)
	g.Finish(false)
	os.WriteFile(filepath.Join(dir, "other"), []byte("racer"), 0o600)
	if err := g.Publish(); !errors.Is(err, fs.ErrExist) {
		t.Errorf("Publish over a racing file: %v", err)
	}
	if names := entries(t, dir); len(names) != 2 {
		t.Errorf("dir holds %v", names)
	}
}
