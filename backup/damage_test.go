package backup_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/nhscrypt/nhscrypt/backup"
	"github.com/nhscrypt/nhscrypt/backup/local"
	"github.com/nhscrypt/nhscrypt/report"
)

func objectPath(f *fixture, name string) string {
	return filepath.Join(f.repoDir, "data", name[:2], name)
}

func findingIDs(fs []report.Finding) map[string][]report.Finding {
	m := map[string][]report.Finding{}
	for _, f := range fs {
		m[f.ID] = append(m[f.ID], f)
	}
	return m
}

// TestDamage: bit flips and truncation in data objects and a manifest are
// named by verify, with the files they hold; the rest still restores.
func TestDamage(t *testing.T) {
	f := newFixture(t, 64<<10)
	src := filepath.Join(t.TempDir(), "src")
	for i := 0; i < 40; i++ {
		writeFile(t, filepath.Join(src, "f", string(rune('a'+i%26))+string(rune('a'+i/26))), randBytes(20000), 0o600, time.Now())
	}
	snap := f.run(src).Snapshot
	if len(snap.Objects) < 4 {
		t.Fatalf("%d objects", len(snap.Objects))
	}
	ids := []age.Identity{f.id}
	ctx := context.Background()
	clean, _, err := f.repo.Verify(ctx, backup.VerifyOptions{ReadData: true, Identities: ids})
	if err != nil || len(clean) != 0 {
		t.Fatalf("fresh repository: %v %v", clean, err)
	}
	flipped, truncated := snap.Objects[0].Name, snap.Objects[1].Name
	p := objectPath(f, flipped)
	data, _ := os.ReadFile(p)
	data[len(data)/2] ^= 1
	os.WriteFile(p, data, 0o600)
	p2 := objectPath(f, truncated)
	data2, _ := os.ReadFile(p2)
	os.WriteFile(p2, data2[:len(data2)-100], 0o600)

	// Without a key: the size check finds the truncation; reading the data
	// finds the flip by hash.
	fs, _, err := f.repo.Verify(ctx, backup.VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m := findingIDs(fs)
	if len(m[backup.IDObjectSize]) != 1 || !strings.Contains(m[backup.IDObjectSize][0].Subject, truncated) || len(fs) != 1 {
		t.Errorf("verify without data: %+v", fs)
	}
	fs, _, _ = f.repo.Verify(ctx, backup.VerifyOptions{ReadData: true})
	m = findingIDs(fs)
	if len(m[backup.IDObjectDamaged]) != 1 || !strings.Contains(m[backup.IDObjectDamaged][0].Subject, flipped) {
		t.Errorf("verify --read-data without a key: %+v", fs)
	}
	// With a key, the findings name the files each object held.
	fs, _, _ = f.repo.Verify(ctx, backup.VerifyOptions{ReadData: true, Identities: ids})
	m = findingIDs(fs)
	dmg := m[backup.IDObjectDamaged]
	if len(dmg) != 1 || !strings.Contains(dmg[0].Message, "holds") || !strings.Contains(dmg[0].Message, src) {
		t.Errorf("verify with key: %+v", fs)
	}
	// Restore: everything but the files of the two objects comes back.
	target := t.TempDir()
	rr := f.restore(snap, target)
	if len(rr.Failed) == 0 || rr.Files == 0 || rr.Files+len(rr.Failed) != 40 {
		t.Fatalf("restore of a damaged snapshot: %d restored, %d failed", rr.Files, len(rr.Failed))
	}
	for _, fl := range rr.Failed {
		if _, err := os.Stat(filepath.Join(target, fl.Path)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s failed but exists", fl.Path)
		}
	}
	// A damaged manifest.
	mp := filepath.Join(f.repoDir, "manifests", snap.Manifest.Name)
	md, _ := os.ReadFile(mp)
	md[len(md)-3] ^= 1
	os.WriteFile(mp, md, 0o600)
	if _, err := f.repo.LoadManifest(ctx, snap, ids); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Errorf("damaged manifest loaded: %v", err)
	}
	fs, _, _ = f.repo.Verify(ctx, backup.VerifyOptions{ReadData: true})
	if len(findingIDs(fs)[backup.IDObjectDamaged]) != 2 {
		t.Errorf("damaged manifest not found by hash: %+v", fs)
	}
}

// TestForgedSnapshot: someone who knows only the public recipients writes
// a manifest and a snapshot; it is refused unless explicitly allowed.
func TestForgedSnapshot(t *testing.T) {
	f := newFixture(t, 64<<20)
	src := filepath.Join(t.TempDir(), "src")
	writeFile(t, filepath.Join(src, "a"), []byte("real"), 0o600, time.Now())
	real := f.run(src).Snapshot
	ctx := context.Background()
	b := local.Open(f.repoDir)
	// The attacker re-encrypts a manifest of their own, naming the real
	// objects, and signs with their own key (or not at all).
	_, attacker, _ := ed25519.GenerateKey(rand.Reader)
	forge := func(key ed25519.PrivateKey, addToConfig bool) string {
		repo, _ := backup.Open(ctx, b)
		if addToConfig {
			repo.AddSigner(ctx, "evil", key.Public().(ed25519.PublicKey))
		}
		attackerState := filepath.Join(t.TempDir(), "st")
		evil := filepath.Join(t.TempDir(), "evil")
		writeFile(t, filepath.Join(evil, "a"), []byte("forged"), 0o600, time.Now())
		res, err := repo.Run(ctx, backup.RunOptions{Paths: []string{evil}, Host: "host-a", SigningKey: key, StateDir: attackerState})
		if err != nil {
			t.Fatal(err)
		}
		return res.Snapshot.ID
	}
	// 1. Signed by a key that is not in the config: a fresh Run adds its
	// own key, so remove it again as an attacker without config write
	// access would not have it... instead pin the trusted key.
	pinned := backup.Trust{Keys: []string{signerOf(f)}}
	forged := forge(attacker, true)
	repo, _ := backup.Open(ctx, b)
	if _, err := repo.LoadSnapshot(ctx, forged, pinned); !errors.Is(err, backup.ErrUntrustedSignature) {
		t.Errorf("forged snapshot with pinned trust: %v", err)
	}
	if _, err := repo.LoadSnapshot(ctx, real.ID, pinned); err != nil {
		t.Errorf("real snapshot with pinned trust: %v", err)
	}
	// 2. Unsigned: refused even with the config's signers, unless allowed.
	unsigned := writeUnsigned(t, f, real)
	if _, err := repo.LoadSnapshot(ctx, unsigned, backup.Trust{}); !errors.Is(err, backup.ErrUntrustedSignature) {
		t.Errorf("unsigned snapshot: %v", err)
	}
	if s, err := repo.LoadSnapshot(ctx, unsigned, backup.Trust{AllowUnsigned: true}); err != nil || s.Trusted {
		t.Errorf("unsigned with AllowUnsigned: %+v %v", s, err)
	}
	// 3. Verify reports both.
	fs, _, _ := repo.Verify(ctx, backup.VerifyOptions{Trust: pinned})
	if n := len(findingIDs(fs)[backup.IDSnapshotUntrusted]); n != 2 {
		t.Errorf("verify found %d untrusted snapshots, want 2: %+v", n, fs)
	}
	// 4. A snapshot whose bytes were edited no longer matches its name.
	sp := filepath.Join(f.repoDir, "snapshots", real.ID)
	data, _ := os.ReadFile(sp)
	os.WriteFile(sp, bytes.Replace(data, []byte(`"host-a"`), []byte(`"host-b"`), 1), 0o600)
	if _, err := repo.LoadSnapshot(ctx, real.ID, backup.Trust{}); err == nil || !strings.Contains(err.Error(), "does not match its name") {
		t.Errorf("edited snapshot: %v", err)
	}
}

func signerOf(f *fixture) string {
	return backupB64(f.key.Public().(ed25519.PublicKey))
}

// writeUnsigned stores a copy of s's index without a signature.
func writeUnsigned(t *testing.T, f *fixture, s *backup.Snapshot) string {
	t.Helper()
	idx, _ := json.Marshal(s.SnapshotIndex)
	data, _ := json.Marshal(backup.SignedIndex{Index: idx})
	data = append(data, '\n')
	id := sha256hex(data)
	os.WriteFile(filepath.Join(f.repoDir, "snapshots", id), data, 0o600)
	return id
}
