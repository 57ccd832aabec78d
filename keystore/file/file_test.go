package file_test

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"filippo.io/age"

	"github.com/nhscrypt/nhscrypt/keystore"
	"github.com/nhscrypt/nhscrypt/keystore/escrowtest"
	"github.com/nhscrypt/nhscrypt/keystore/file"
)

func newIdentity(t *testing.T) *age.X25519Identity {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestConformance(t *testing.T) {
	id := newIdentity(t)
	escrowtest.Run(t, func(t *testing.T) keystore.Escrow {
		s, err := file.Open(filepath.Join(t.TempDir(), "escrow"), file.Options{
			Recipients: []age.Recipient{id.Recipient()}, Identities: []age.Identity{id},
		})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

// TestFilesAtRest checks what is on disk: modes, no plaintext secret, and
// no temporary leftovers.
func TestFilesAtRest(t *testing.T) {
	ctx := context.Background()
	id := newIdentity(t)
	dir := filepath.Join(t.TempDir(), "escrow")
	s, err := file.Open(dir, file.Options{Recipients: []age.Recipient{id.Recipient()}})
	if err != nil {
		t.Fatal(err)
	}
	secret := []byte("recovery-passphrase-that-must-not-appear-on-disk")
	if _, err := s.Put(ctx, keystore.Key{Name: "k", Kind: keystore.KindLUKSRecovery, Keyslot: keystore.Slot(3)}, secret); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetState(ctx, "k", 1, keystore.StateActive); err != nil {
		t.Fatal(err)
	}
	var files []string
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		want := fs.FileMode(0o600)
		if d.IsDir() {
			want = fs.ModeDir | 0o700
		}
		if info.Mode() != want {
			t.Errorf("%s: mode %v, want %v", p, info.Mode(), want)
		}
		if !d.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			files = append(files, rel)
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if bytes.Contains(data, secret) {
				t.Errorf("%s holds the secret in plain text", p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"k/r1.json", "k/r2.json", "k/secret.age"}
	if len(files) != len(want) {
		t.Fatalf("files = %v, want %v", files, want)
	}
	for i := range want {
		if files[i] != want[i] {
			t.Fatalf("files = %v, want %v", files, want)
		}
	}

	// The age CLI's format: the admin identity decrypts it.
	ciphertext, err := os.ReadFile(filepath.Join(dir, "k", "secret.age"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := age.Decrypt(bytes.NewReader(ciphertext), id)
	if err != nil {
		t.Fatal(err)
	}
	var plain bytes.Buffer
	if _, err := plain.ReadFrom(r); err != nil || !bytes.Equal(plain.Bytes(), secret) {
		t.Fatalf("age-decrypted secret differs (%v)", err)
	}
}

// TestWriteOnly: a machine that holds only the admin recipient can escrow
// and list, but cannot read a secret back.
func TestWriteOnly(t *testing.T) {
	ctx := context.Background()
	admin, other := newIdentity(t), newIdentity(t)
	dir := t.TempDir()
	w, err := file.Open(dir, file.Options{Recipients: []age.Recipient{admin.Recipient()}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Put(ctx, keystore.Key{Name: "id", Kind: keystore.KindAgeIdentity}, []byte("AGE-SECRET-KEY-1X")); err != nil {
		t.Fatal(err)
	}
	if keys, err := w.List(ctx); err != nil || len(keys) != 1 {
		t.Fatalf("List = %v, %v", keys, err)
	}
	if _, _, err := w.Get(ctx, "id"); !errors.Is(err, keystore.ErrPermission) {
		t.Fatalf("Get without identity: err = %v, want ErrPermission", err)
	}
	wrong, err := file.Open(dir, file.Options{Identities: []age.Identity{other}})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := wrong.Get(ctx, "id"); !errors.Is(err, keystore.ErrPermission) {
		t.Fatalf("Get with the wrong identity: err = %v, want ErrPermission", err)
	}
	if _, err := wrong.Put(ctx, keystore.Key{Name: "id2", Kind: keystore.KindAgeIdentity}, []byte("x")); err == nil {
		t.Fatal("Put without a recipient succeeded")
	}
}

// TestTampered: a secret swapped between entries fails its fingerprint.
func TestTampered(t *testing.T) {
	ctx := context.Background()
	id := newIdentity(t)
	dir := t.TempDir()
	s, err := file.Open(dir, file.Options{Recipients: []age.Recipient{id.Recipient()}, Identities: []age.Identity{id}})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"a", "b"} {
		if _, err := s.Put(ctx, keystore.Key{Name: n, Kind: keystore.KindLUKSRecovery}, []byte("secret of "+n)); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, "b", "secret.age"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "a", "secret.age"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	var fe *keystore.FingerprintError
	if _, _, err := s.Get(ctx, "a"); !errors.As(err, &fe) {
		t.Fatalf("Get of a swapped secret: err = %v, want *FingerprintError", err)
	}
}
