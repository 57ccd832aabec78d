package lukskeys

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nhscrypt/nhscrypt/keystore"
	"github.com/nhscrypt/nhscrypt/keystore/vault/vaulttest"
	"github.com/nhscrypt/nhscrypt/luks"
	"github.com/nhscrypt/nhscrypt/report"
)

// The server and verifier policies of docs/escrow.md, for host db1.
var (
	serverPolicy   = vaulttest.ServerPolicy("nhscrypt/db1")
	verifierPolicy = vaulttest.VerifierPolicy("nhscrypt/db1")
)

func TestVaultEnrollVerifyRotate(t *testing.T) {
	srv := vaulttest.Start(t)
	ctx := context.Background()
	v := makeVolume(t, 2)
	s := vaultStore(t, srv, srv.RootToken)
	e := newEnroller(t, s)
	res, err := e.Enroll(ctx, EnrollRequest{Device: v.path, KeyFile: v.keyFile, Keyslot: -1})
	if err != nil {
		t.Fatal(err)
	}
	checkEnrolled(t, s, v, res, []int{0, 1})
	fs, err := e.Verify(ctx, VerifyRequest{Devices: []string{v.path}})
	if err != nil || !hasFinding(fs, FindKeyOK, v.path) || hasFinding(fs, FindHeaderMissing, "") {
		t.Fatalf("verify: %v %v", err, findingIDs(fs))
	}
	rot, err := e.Rotate(ctx, RotateRequest{EnrollRequest: EnrollRequest{Device: v.path, KeyFile: v.keyFile, Keyslot: -1}})
	if err != nil || !slices.Equal(rot.Retired, []string{res.Name}) {
		t.Fatalf("rotate: %v %+v", err, rot)
	}
	checkEnrolled(t, s, v, rot, []int{0, 2})
	hist, err := s.History(ctx, res.Name)
	if err != nil || len(hist) != 3 || hist[2].State != keystore.StateRetired {
		t.Errorf("history of the rotated key: %+v %v", hist, err)
	}
}

// Vault sealed or stopped between steps: what was done is undone where
// it can be, the rest is finished by the next run, and the volume and
// escrow agree afterwards.
func TestVaultUnavailable(t *testing.T) {
	ctx := context.Background()
	t.Run("sealed-before-put", func(t *testing.T) {
		srv := vaulttest.Start(t)
		v := makeVolume(t, 2)
		s := vaultStore(t, srv, srv.RootToken)
		e := newEnroller(t, s)
		srv.Seal(t)
		_, err := e.Enroll(ctx, EnrollRequest{Device: v.path, KeyFile: v.keyFile, Keyslot: -1, Name: "first"})
		if !errors.Is(err, keystore.ErrUnavailable) {
			t.Fatalf("sealed: %v", err)
		}
		if got := activeSlots(t, v.path); !slices.Equal(got, []int{0}) {
			t.Errorf("keyslots %v", got)
		}
		srv.Unseal(t)
		res, err := e.Enroll(ctx, EnrollRequest{Device: v.path, KeyFile: v.keyFile, Keyslot: -1, Name: "second"})
		if err != nil || res.Resumed != "rolled-back" {
			t.Fatalf("after unseal: %v %+v", err, res)
		}
		checkEnrolled(t, s, v, res, []int{0, 1})
		checkConsistent(t, s, v, []int{0})
	})
	t.Run("sealed-after-add", func(t *testing.T) {
		srv := vaulttest.Start(t)
		v := makeVolume(t, 2)
		s := vaultStore(t, srv, srv.RootToken)
		e := newEnroller(t, s)
		e.hook = func(st Step) error {
			if st == StepAddKeyslot {
				srv.Seal(t)
			}
			return nil
		}
		_, err := e.Enroll(ctx, EnrollRequest{Device: v.path, KeyFile: v.keyFile, Keyslot: -1, Name: "first"})
		var ee *EnrollError
		if !errors.As(err, &ee) || ee.Step != StepActivate || ee.RolledBack || len(ee.Pending) != 1 || !strings.Contains(err.Error(), "keyslot 1 removed") {
			t.Fatalf("sealed after add: %v", err)
		}
		if got := activeSlots(t, v.path); !slices.Equal(got, []int{0}) {
			t.Errorf("keyslots %v: the keyslot was not rolled back", got)
		}
		e.hook = nil
		srv.Unseal(t)
		res, err := e.Enroll(ctx, EnrollRequest{Device: v.path, KeyFile: v.keyFile, Keyslot: -1, Name: "second"})
		if err != nil || res.Resumed != "rolled-back" {
			t.Fatalf("after unseal: %v %+v", err, res)
		}
		if k, _ := getSecret(t, s, "first"); k.State != keystore.StateFailed {
			t.Errorf("first is %s, want failed", k.State)
		}
		checkEnrolled(t, s, v, res, []int{0, 1})
		checkConsistent(t, s, v, []int{0})
	})
	t.Run("stopped-after-escrow", func(t *testing.T) {
		srv := vaulttest.Start(t)
		v := makeVolume(t, 2)
		e := newEnroller(t, vaultStore(t, srv, srv.RootToken))
		e.hook = func(st Step) error {
			if st == StepEscrowPending {
				srv.Stop()
			}
			return nil
		}
		_, err := e.Enroll(ctx, EnrollRequest{Device: v.path, KeyFile: v.keyFile, Keyslot: -1})
		var ee *EnrollError
		if !errors.As(err, &ee) || !errors.Is(err, keystore.ErrUnavailable) || ee.RolledBack {
			t.Fatalf("stopped: %v", err)
		}
		if got := activeSlots(t, v.path); !slices.Equal(got, []int{0}) {
			t.Errorf("keyslots %v: the keyslot was not rolled back", got)
		}
		h, _ := luks.ParseFile(v.path)
		if _, err := os.Stat(journalPath(e.StateDir, h.UUID())); err != nil {
			t.Errorf("the journal of the unfinished rollback is gone: %v", err)
		}
	})
}

func TestVaultCreateOnly(t *testing.T) {
	srv := vaulttest.Start(t)
	ctx := context.Background()
	srv.WritePolicy(t, "server-db1", serverPolicy)
	srv.WritePolicy(t, "verifier-db1", verifierPolicy)
	server := vaultStore(t, srv, srv.Token(t, "server-db1"))
	verifier := vaultStore(t, srv, srv.Token(t, "verifier-db1"))
	v := makeVolume(t, 2)
	e := newEnroller(t, server)

	// The server enrols: the key is added and proven, but stays pending.
	res, err := e.Enroll(ctx, EnrollRequest{Device: v.path, KeyFile: v.keyFile, Keyslot: -1, Name: "first"})
	if err != nil {
		t.Fatal(err)
	}
	if res.State != keystore.StatePending || len(res.Warnings) == 0 || res.Header == "" {
		t.Errorf("create-only enrolment: %+v", res)
	}
	// It cannot read what it escrowed.
	if _, _, err := server.Get(ctx, "first"); !errors.Is(err, keystore.ErrPermission) {
		t.Errorf("server Get: %v", err)
	}
	// Until it is active, the volume counts as not escrowed.
	ve0 := newEnroller(t, verifier)
	fs0, err := ve0.Verify(ctx, VerifyRequest{Devices: []string{v.path}})
	if err != nil || !hasFinding(fs0, FindPending, v.path) || !hasFinding(fs0, FindVolumeUnescrow, v.path) ||
		slices.ContainsFunc(fs0, func(f report.Finding) bool { return f.ID == FindSlotUnescrowed && f.Evidence["keyslot"] == "1" }) {
		t.Errorf("verify before activation: %v %v", err, findingIDs(fs0))
	}
	// The verifier proves and activates it.
	ve := newEnroller(t, verifier)
	fs, err := ve.Verify(ctx, VerifyRequest{Devices: []string{v.path}, Activate: true})
	if err != nil || !hasFinding(fs, FindActivated, v.path) {
		t.Fatalf("verify --activate: %v %v", err, findingIDs(fs))
	}
	res.State = keystore.StateActive // as the verifier made it
	checkEnrolled(t, verifier, v, res, []int{0, 1})

	// A crash after the add: the server cannot read the key back to
	// prove it, so the next run touches no keyslot and leaves the entry
	// pending for the verifier, who proves and activates it.
	crash(t, e, EnrollRequest{Device: v.path, KeyFile: v.keyFile, Keyslot: -1, Name: "crashed"}, StepAddKeyslot)
	if got := activeSlots(t, v.path); !slices.Equal(got, []int{0, 1, 2}) {
		t.Fatalf("keyslots after the crash %v", got)
	}
	res2, err := e.Enroll(ctx, EnrollRequest{Device: v.path, KeyFile: v.keyFile, Keyslot: -1, Name: "third"})
	if err != nil || res2.Resumed != "left-pending" || res2.Name != "crashed" || res2.State != keystore.StatePending {
		t.Fatalf("after the crash: %v %+v", err, res2)
	}
	if got := activeSlots(t, v.path); !slices.Equal(got, []int{0, 1, 2}) {
		t.Fatalf("keyslots after resuming %v", got)
	}
	fs, err = ve.Verify(ctx, VerifyRequest{Devices: []string{v.path}, Activate: true})
	if err != nil || !hasFinding(fs, FindActivated, v.path) {
		t.Fatalf("verify: %v %v", err, findingIDs(fs))
	}
	active := checkConsistent(t, verifier, v, []int{0})
	if len(active) != 2 {
		t.Errorf("%d active keys, want 2", len(active))
	}

	// A crash after the escrow, before the add: nothing on disk; the
	// next run enrols anew and the verifier marks the stale entry failed.
	crash(t, e, EnrollRequest{Device: v.path, KeyFile: v.keyFile, Keyslot: -1, Name: "early"}, StepEscrowPending)
	res3, err := e.Enroll(ctx, EnrollRequest{Device: v.path, KeyFile: v.keyFile, Keyslot: -1, Name: "fourth"})
	if err != nil || res3.Resumed != "rolled-back" || res3.Name != "fourth" || res3.Keyslot != 3 {
		t.Fatalf("after the early crash: %v %+v", err, res3)
	}
	fs, err = ve.Verify(ctx, VerifyRequest{Devices: []string{v.path}, Activate: true, StaleAfter: time.Nanosecond})
	if err != nil || !hasFinding(fs, FindMarkedFailed, v.path) || !hasFinding(fs, FindActivated, v.path) {
		t.Fatalf("verify: %v %v", err, findingIDs(fs))
	}
	if active := checkConsistent(t, verifier, v, []int{0}); len(active) != 3 {
		t.Errorf("%d active keys, want 3", len(active))
	}

	// A bad token changes nothing.
	bad := newEnroller(t, vaultStore(t, srv, "not-a-token"))
	if _, err := bad.Enroll(ctx, EnrollRequest{Device: v.path, KeyFile: v.keyFile, Keyslot: -1}); !errors.Is(err, keystore.ErrPermission) {
		t.Errorf("bad token: %v", err)
	}
	if got := activeSlots(t, v.path); !slices.Equal(got, []int{0, 1, 2, 3}) {
		t.Errorf("keyslots after a bad token %v", got)
	}
}

// A store that stores the entry but cannot update its listed metadata
// (a policy with create on the data path only) returns the key with an
// error: the enrolment goes on, with a warning.
func TestVaultMetadataRefused(t *testing.T) {
	srv := vaulttest.Start(t)
	srv.WritePolicy(t, "data-only", `
path "secret/data/nhscrypt/db1/*" {
  capabilities = ["create"]
}`)
	v := makeVolume(t, 2)
	s := vaultStore(t, srv, srv.Token(t, "data-only"))
	e := newEnroller(t, s)
	res, err := e.Enroll(context.Background(), EnrollRequest{Device: v.path, KeyFile: v.keyFile, Keyslot: -1, Name: "k"})
	if err != nil {
		t.Fatal(err)
	}
	if res.State != keystore.StatePending || !slices.ContainsFunc(res.Warnings, func(w string) bool { return strings.Contains(w, "listed metadata was not updated") }) {
		t.Errorf("result %+v", res)
	}
	// The verifier sees it (its state unknown in the listing), proves and
	// activates it, which repairs the listing.
	root := vaultStore(t, srv, srv.RootToken)
	fs, err := newEnroller(t, root).Verify(context.Background(), VerifyRequest{Devices: []string{v.path}, Activate: true})
	if err != nil || !hasFinding(fs, FindUnknownListing, "k") {
		t.Fatalf("verify: %v %v", err, findingIDs(fs))
	}
	res.State = keystore.StateActive
	checkEnrolled(t, root, v, res, []int{0, 1})
}
