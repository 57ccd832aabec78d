package backup_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nhscrypt/nhscrypt/backup"
)

type hook func(backup.Event)

func (h hook) BackupEvent(e backup.Event) { h(e) }

// TestWarningsDoNotAbort: files that vanish or shrink between the walk and
// the read are warnings; the snapshot is made with the rest.
func TestWarningsDoNotAbort(t *testing.T) {
	f := newFixture(t, 64<<20)
	src := filepath.Join(t.TempDir(), "src")
	writeFile(t, filepath.Join(src, "keep"), []byte("kept"), 0o600, time.Now())
	writeFile(t, filepath.Join(src, "vanish"), []byte("gone soon"), 0o600, time.Now())
	writeFile(t, filepath.Join(src, "shrink"), randBytes(100000), 0o600, time.Now())
	res, err := f.repo.Run(context.Background(), backup.RunOptions{Paths: []string{src}, Host: "h", SigningKey: f.key, StateDir: f.state,
		Progress: hook(func(e backup.Event) {
			if e.Kind == backup.EventStart {
				os.Remove(filepath.Join(src, "vanish"))
				os.Truncate(filepath.Join(src, "shrink"), 10)
			}
		})})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Warnings) != 2 || !strings.HasSuffix(res.Warnings[0].Path, "shrink") || !strings.HasSuffix(res.Warnings[1].Path, "vanish") {
		t.Fatalf("warnings %+v", res.Warnings)
	}
	target := t.TempDir()
	rr := f.restore(res.Snapshot, target)
	if rr.Files != 2 || len(rr.Failed) != 0 {
		t.Errorf("restored %d files, failed %v", rr.Files, rr.Failed)
	}
	if b, _ := os.ReadFile(filepath.Join(target, src, "keep")); string(b) != "kept" {
		t.Error("the unchanged file was not restored")
	}
}

// TestInterruptedRunReused: a run cancelled after some objects leaves no
// snapshot; the next run reuses those objects.
func TestInterruptedRunReused(t *testing.T) {
	f := newFixture(t, 64<<10)
	src := filepath.Join(t.TempDir(), "src")
	for i := 0; i < 60; i++ {
		writeFile(t, filepath.Join(src, "f"+string(rune('A'+i%26))+string(rune('a'+i/26))), randBytes(30000), 0o600, time.Now())
	}
	ctx, cancel := context.WithCancel(context.Background())
	var objects atomic.Int32
	_, err := f.repo.Run(ctx, backup.RunOptions{Paths: []string{src}, Host: "h", SigningKey: f.key, StateDir: f.state, Workers: 1,
		Progress: hook(func(e backup.Event) {
			if e.Kind == backup.EventObject && objects.Add(1) == 5 {
				cancel()
			}
		})})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted run: %v", err)
	}
	if ids, _ := f.repo.SnapshotIDs(context.Background()); len(ids) != 0 {
		t.Fatalf("interrupted run left snapshots %v", ids)
	}
	stored := objects.Load()
	res := f.run(src)
	total := res.Snapshot.Totals.NewObjects
	if res.Snapshot.Totals.NewFiles >= 60 || len(res.Snapshot.Objects) != total+int(stored) && len(res.Snapshot.Objects) < int(stored) {
		t.Errorf("second run stored %d files in %d objects; %d objects were already there", res.Snapshot.Totals.NewFiles, total, stored)
	}
	target := t.TempDir()
	if rr := f.restore(res.Snapshot, target); rr.Files != 60 || len(rr.Failed) != 0 {
		t.Errorf("restore after resumed run: %d files, %v", rr.Files, rr.Failed)
	}
	compareTrees(t, src, filepath.Join(target, src))
}

// TestTwoRunsOnOneHostRefused: the second run on the same host and
// repository fails with ErrLocked while the first holds the lock.
func TestTwoRunsOnOneHostRefused(t *testing.T) {
	f := newFixture(t, 64<<20)
	src := filepath.Join(t.TempDir(), "src")
	writeFile(t, filepath.Join(src, "a"), []byte("a"), 0o600, time.Now())
	var second error
	_, err := f.repo.Run(context.Background(), backup.RunOptions{Paths: []string{src}, Host: "h", SigningKey: f.key, StateDir: f.state,
		Progress: hook(func(e backup.Event) {
			if e.Kind == backup.EventStart {
				_, second = f.repo.Run(context.Background(), backup.RunOptions{Paths: []string{src}, Host: "h", SigningKey: f.key, StateDir: f.state})
			}
		})})
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(second, backup.ErrLocked) {
		t.Fatalf("second run: %v, want ErrLocked", second)
	}
	// Another host (its own state folder) needs no lock.
	other := t.TempDir()
	if _, err := f.repo.Run(context.Background(), backup.RunOptions{Paths: []string{src}, Host: "h2", SigningKey: f.key, StateDir: other}); err != nil {
		t.Fatalf("run from another host: %v", err)
	}
}

// TestForgetAndPrune: forget removes snapshots by policy; prune removes
// only objects no remaining snapshot names, and keeps young ones.
func TestForgetAndPrune(t *testing.T) {
	f := newFixture(t, 64<<10)
	src := filepath.Join(t.TempDir(), "src")
	writeFile(t, filepath.Join(src, "stable"), randBytes(50000), 0o600, time.Now())
	ctx := context.Background()
	var ids []string
	for i := 0; i < 3; i++ {
		writeFile(t, filepath.Join(src, "changing"), randBytes(50000), 0o600, time.Now().Add(time.Duration(i)*time.Hour))
		res, err := f.repo.Run(ctx, backup.RunOptions{Paths: []string{src}, Host: "h", SigningKey: f.key, StateDir: f.state,
			Now: func() time.Time { return time.Date(2026, 1, 1+i, 12, 0, 0, 0, time.UTC) }})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, res.Snapshot.ID)
	}
	if _, _, err := f.repo.Forget(ctx, backup.RetentionPolicy{}, backup.Trust{}, false); !errors.Is(err, backup.ErrEmptyPolicy) {
		t.Errorf("empty policy: %v", err)
	}
	dec, _, err := f.repo.Forget(ctx, backup.RetentionPolicy{Last: 1}, backup.Trust{}, true)
	if err != nil || len(dec) != 3 {
		t.Fatal(dec, err)
	}
	if left, _ := f.repo.SnapshotIDs(ctx); len(left) != 3 {
		t.Fatal("dry run removed snapshots")
	}
	if _, _, err := f.repo.Forget(ctx, backup.RetentionPolicy{Last: 1}, backup.Trust{}, false); err != nil {
		t.Fatal(err)
	}
	left, _ := f.repo.SnapshotIDs(ctx)
	if len(left) != 1 || left[0] != ids[2] {
		t.Fatalf("kept %v, want the newest %s", left, ids[2])
	}
	// Young objects are kept by the grace period.
	res, err := f.repo.Prune(ctx, time.Hour, false)
	if err != nil || len(res.Removed) != 0 || res.Young == 0 {
		t.Fatalf("prune with grace: %+v %v", res, err)
	}
	res, err = f.repo.Prune(ctx, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	// The first object held "stable" and the first "changing" and stays;
	// the second version of "changing" and two manifests go.
	if len(res.Removed) != 3 {
		t.Errorf("prune removed %d objects, want 3: %+v", len(res.Removed), res.Removed)
	}
	fs, _, _ := f.repo.Verify(ctx, backup.VerifyOptions{ReadData: true})
	if len(fs) != 0 {
		t.Errorf("verify after prune: %+v", fs)
	}
	snap, _ := f.repo.FindSnapshot(ctx, "latest", "", backup.Trust{})
	if rr := f.restore(snap, t.TempDir()); rr.Files != 2 || len(rr.Failed) != 0 {
		t.Errorf("restore after prune: %+v", rr)
	}
}
