package backup_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/nhscrypt/nhscrypt/backup"
	"github.com/nhscrypt/nhscrypt/backup/local"
	"github.com/nhscrypt/nhscrypt/internal/testenv"
)

type fixture struct {
	t       *testing.T
	repoDir string
	state   string
	id      *age.X25519Identity
	key     ed25519.PrivateKey
	repo    *backup.Repository
}

func newFixture(t *testing.T, objectSize int64) *fixture {
	t.Helper()
	dir := t.TempDir()
	f := &fixture{t: t, repoDir: filepath.Join(dir, "repo"), state: filepath.Join(dir, "state")}
	f.id, _ = age.GenerateX25519Identity()
	var err error
	f.key, err = backup.GenerateSigningKey(filepath.Join(dir, "signing.key"))
	if err != nil {
		t.Fatal(err)
	}
	b := local.Open(f.repoDir)
	if err := b.Create(); err != nil {
		t.Fatal(err)
	}
	f.repo, err = backup.Init(context.Background(), b, []string{f.id.Recipient().String()}, objectSize, "host-a", f.key.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) run(paths ...string) *backup.RunResult {
	f.t.Helper()
	res, err := f.repo.Run(context.Background(), backup.RunOptions{Paths: paths, Host: "host-a", SigningKey: f.key, StateDir: f.state, Version: "test"})
	if err != nil {
		f.t.Fatal(err)
	}
	return res
}

func (f *fixture) restore(snap *backup.Snapshot, target string, includes ...string) *backup.RestoreResult {
	f.t.Helper()
	m, err := f.repo.LoadManifest(context.Background(), snap, []age.Identity{f.id})
	if err != nil {
		f.t.Fatal(err)
	}
	res, err := f.repo.Restore(context.Background(), m, backup.RestoreOptions{Target: target, Includes: includes, Identities: []age.Identity{f.id}})
	if err != nil {
		f.t.Fatal(err)
	}
	return res
}

func writeFile(t *testing.T, p string, data []byte, mode fs.FileMode, mtime time.Time) {
	t.Helper()
	os.MkdirAll(filepath.Dir(p), 0o755)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	os.Chmod(p, mode)
	os.Chtimes(p, mtime, mtime)
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// makeTree writes the awkward tree of the issue: many small files, large
// ones, empty files, hard links, symlinks, odd names, sparse files, modes.
func makeTree(t *testing.T, root string, small int) {
	t0 := time.Date(2024, 3, 4, 5, 6, 7, 123456789, time.UTC)
	for i := 0; i < small; i++ {
		writeFile(t, filepath.Join(root, fmt.Sprintf("small/d%02d/f%04d.txt", i%17, i)), []byte(strings.Repeat(fmt.Sprintf("record %d\n", i), i%50)), 0o640, t0.Add(time.Duration(i)*time.Second))
	}
	writeFile(t, filepath.Join(root, "large/random.bin"), randBytes(3<<20+17), 0o600, t0)
	writeFile(t, filepath.Join(root, "large/text.log"), bytes.Repeat([]byte("compressible line of text\n"), 200000), 0o644, t0)
	writeFile(t, filepath.Join(root, "empty"), nil, 0o600, t0)
	writeFile(t, filepath.Join(root, "with space and\nnewline"), []byte("odd name"), 0o644, t0)
	writeFile(t, filepath.Join(root, "latin1-\xe9t\xe9"), []byte("not utf-8 name"), 0o644, t0)
	writeFile(t, filepath.Join(root, "exec.sh"), []byte("#!/bin/sh\n"), 0o755, t0)
	writeFile(t, filepath.Join(root, "setgid-dir/file"), []byte("x"), 0o644, t0)
	os.Chmod(filepath.Join(root, "setgid-dir"), 0o2775)
	os.Link(filepath.Join(root, "exec.sh"), filepath.Join(root, "hardlink.sh"))
	os.Symlink("large/random.bin", filepath.Join(root, "link-rel"))
	os.Symlink("/nonexistent/target", filepath.Join(root, "link-dangling"))
	// A sparse file: 8 MiB with 4 KiB of data in the middle.
	sp, _ := os.Create(filepath.Join(root, "sparse.img"))
	sp.Truncate(8 << 20)
	sp.WriteAt(bytes.Repeat([]byte{7}, 4096), 4<<20)
	sp.Close()
	os.Chtimes(filepath.Join(root, "sparse.img"), t0, t0)
	os.Chtimes(filepath.Join(root, "small"), t0, t0)
}

// compareTrees checks every file's bytes, mode and mtime, and link targets.
func compareTrees(t *testing.T, src, dst string) int { return compareTreesOpt(t, src, dst, true) }

func compareTreesOpt(t *testing.T, src, dst string, dirTimes bool) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		q := filepath.Join(dst, rel)
		si, _ := os.Lstat(p)
		di, err := os.Lstat(q)
		if err != nil {
			t.Errorf("%q not restored: %v", rel, err)
			return nil
		}
		if si.Mode() != di.Mode() {
			t.Errorf("%q: mode %v, restored %v", rel, si.Mode(), di.Mode())
		}
		switch {
		case si.Mode()&fs.ModeSymlink != 0:
			a, _ := os.Readlink(p)
			b, _ := os.Readlink(q)
			if a != b {
				t.Errorf("%q: link %q, restored %q", rel, a, b)
			}
		case si.Mode().IsRegular():
			a, _ := os.ReadFile(p)
			b, _ := os.ReadFile(q)
			if !bytes.Equal(a, b) {
				t.Errorf("%q: content differs", rel)
			}
			if !si.ModTime().Equal(di.ModTime()) {
				t.Errorf("%q: mtime %v, restored %v", rel, si.ModTime(), di.ModTime())
			}
			n++
		case si.IsDir() && p != src && dirTimes:
			if !si.ModTime().Equal(di.ModTime()) {
				t.Errorf("%q: dir mtime %v, restored %v", rel, si.ModTime(), di.ModTime())
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestRoundTrip(t *testing.T) {
	f := newFixture(t, 1<<20) // small objects, so the tree spans many
	src := filepath.Join(t.TempDir(), "src")
	makeTree(t, src, 2000)
	res := f.run(src)
	if len(res.Warnings) != 0 {
		t.Fatalf("warnings: %v", res.Warnings)
	}
	if res.Snapshot.Totals.NewObjects < 5 {
		t.Errorf("only %d objects for a tree over 1 MiB objects", res.Snapshot.Totals.NewObjects)
	}
	target := t.TempDir()
	rr := f.restore(res.Snapshot, target)
	if len(rr.Failed) != 0 {
		t.Fatalf("restore failures: %v", rr.Failed)
	}
	restored := filepath.Join(target, src)
	if n := compareTrees(t, src, restored); n < 2000 {
		t.Errorf("compared %d files", n)
	}
	// Hard links are restored as links, sparse files with holes.
	a, _ := os.Stat(filepath.Join(restored, "exec.sh"))
	b, _ := os.Stat(filepath.Join(restored, "hardlink.sh"))
	if !os.SameFile(a, b) {
		t.Error("hard link not restored as a hard link")
	}
	sp, _ := os.Stat(filepath.Join(restored, "sparse.img"))
	if blocks := sp.Sys().(*syscall.Stat_t).Blocks * 512; blocks > 1<<20 {
		t.Errorf("sparse file restored with %d bytes allocated", blocks)
	}
	// Restore refuses to overwrite, and --include limits it.
	rr2 := f.restore(res.Snapshot, target, filepath.Join(src, "large"))
	if rr2.Files != 0 || len(rr2.Failed) != 2 || !strings.Contains(rr2.Failed[0].Message, "not overwritten") {
		t.Errorf("second restore over the first: %+v", rr2)
	}
	only := t.TempDir()
	rr3 := f.restore(res.Snapshot, only, filepath.Join(src, "large"))
	if rr3.Files != 2 {
		t.Errorf("include restored %d files, want 2", rr3.Files)
	}
	if _, err := os.Stat(filepath.Join(only, src, "empty")); !errors.Is(err, fs.ErrNotExist) {
		t.Error("include restored a file outside it")
	}
}

func TestIncremental(t *testing.T) {
	f := newFixture(t, 256<<10)
	src := filepath.Join(t.TempDir(), "src")
	makeTree(t, src, 300)
	first := f.run(src).Snapshot
	second := f.run(src).Snapshot
	if second.Totals.NewObjects != 0 || second.Totals.NewFiles != 0 {
		t.Fatalf("unchanged tree stored %d objects, %d files", second.Totals.NewObjects, second.Totals.NewFiles)
	}
	if second.Totals.Files != first.Totals.Files {
		t.Errorf("second snapshot has %d files, first %d", second.Totals.Files, first.Totals.Files)
	}
	// Edit two files, add one, delete one.
	time.Sleep(10 * time.Millisecond)
	os.WriteFile(filepath.Join(src, "small/d01/f0001.txt"), []byte("changed"), 0o640)
	os.WriteFile(filepath.Join(src, "new.txt"), []byte("new file"), 0o640)
	os.WriteFile(filepath.Join(src, "empty"), []byte("no longer empty"), 0o600)
	os.Remove(filepath.Join(src, "small/d02/f0002.txt"))
	third := f.run(src).Snapshot
	if third.Totals.NewFiles != 3 {
		t.Errorf("after 3 edits, %d files stored", third.Totals.NewFiles)
	}
	target := t.TempDir()
	if rr := f.restore(third, target); len(rr.Failed) != 0 {
		t.Fatalf("restore: %v", rr.Failed)
	}
	compareTrees(t, src, filepath.Join(target, src))
	if _, err := os.Stat(filepath.Join(target, src, "small/d02/f0002.txt")); !errors.Is(err, fs.ErrNotExist) {
		t.Error("deleted file is in the new snapshot")
	}
}

// TestStandardToolsRecipe: a data object restores alone with
// `age -d -i KEY OBJ | zstd -d | tar x`.
func TestStandardToolsRecipe(t *testing.T) {
	for _, tool := range []string{"age", "zstd", "tar"} {
		testenv.Tool(t, tool)
	}
	f := newFixture(t, 64<<20)
	src := filepath.Join(t.TempDir(), "src")
	writeFile(t, filepath.Join(src, "a/report.txt"), []byte("patient report"), 0o640, time.Now())
	writeFile(t, filepath.Join(src, "b.bin"), randBytes(100000), 0o600, time.Now())
	snap := f.run(src).Snapshot
	keyFile := filepath.Join(t.TempDir(), "key.txt")
	os.WriteFile(keyFile, []byte(f.id.String()+"\n"), 0o600)
	obj := filepath.Join(f.repoDir, "data", snap.Objects[0].Name[:2], snap.Objects[0].Name)
	out := t.TempDir()
	cmd := exec.Command("sh", "-c", `age -d -i "$1" "$2" | zstd -d | tar x`, "sh", keyFile, obj)
	cmd.Dir = out
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("recipe: %v: %s", err, b)
	}
	// tar x restores files (content, mode, mtime); folders it makes itself.
	compareTreesOpt(t, src, filepath.Join(out, src), false)
}
