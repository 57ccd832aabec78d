// Package escrowtest is the conformance suite every keystore.Escrow runs:
// the Vault store against a real Vault server and the file store on a
// folder pass the same tests.
package escrowtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io/fs"
	"sync"
	"testing"
	"time"

	"github.com/nhscrypt/nhscrypt/keystore"
)

// Factory returns a fresh, empty store for one test and registers its
// cleanup with t.
type Factory func(t *testing.T) keystore.Escrow

func randomSecret(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func recoveryKey(name string) keystore.Key {
	return keystore.Key{
		Name: name, Kind: keystore.KindLUKSRecovery, Host: "db1.example.nhs.uk",
		Device: "/dev/sda2", LUKSUUID: "8c3a1f9e-6a5b-4d2e-9f10-0123456789ab",
		Keyslot: keystore.Slot(0), NhscryptVersion: "v0.0.0-test",
	}
}

// Run runs every conformance test against stores made by newStore.
func Run(t *testing.T, newStore Factory) {
	t.Run("PutGet", func(t *testing.T) { testPutGet(t, newStore(t)) })
	t.Run("NeverOverwrite", func(t *testing.T) { testNeverOverwrite(t, newStore(t)) })
	t.Run("ConcurrentPut", func(t *testing.T) { testConcurrentPut(t, newStore(t)) })
	t.Run("NotFound", func(t *testing.T) { testNotFound(t, newStore(t)) })
	t.Run("InvalidInput", func(t *testing.T) { testInvalidInput(t, newStore(t)) })
	t.Run("SetState", func(t *testing.T) { testSetState(t, newStore(t)) })
	t.Run("ConcurrentSetState", func(t *testing.T) { testConcurrentSetState(t, newStore(t)) })
	t.Run("List", func(t *testing.T) { testList(t, newStore(t)) })
}

func testPutGet(t *testing.T, s keystore.Escrow) {
	ctx := context.Background()
	// Every byte value, and a size beyond one age chunk (64 KiB).
	secret := make([]byte, 70<<10)
	for i := range secret {
		secret[i] = byte(i)
	}
	created := time.Date(2026, 3, 4, 5, 6, 7, 890, time.FixedZone("x", 3600))
	in := recoveryKey("sda2-recovery")
	in.Created = created
	k, err := s.Put(ctx, in, secret)
	if err != nil {
		t.Fatalf("Put: %v", err)
	}
	want := in
	want.Fingerprint = keystore.Fingerprint(secret)
	want.Created = created.UTC().Truncate(time.Second)
	want.State = keystore.StatePending
	want.Revision = 1
	checkKey(t, "Put", k, &want)

	got, gotSecret, err := s.Get(ctx, in.Name)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	checkKey(t, "Get", got, &want)
	if !bytes.Equal(gotSecret, secret) {
		t.Fatalf("Get returned a different secret (%d bytes, want %d)", len(gotSecret), len(secret))
	}

	// An age identity: no keyslot, a recipient, put straight as active,
	// Created filled in.
	id := keystore.Key{Name: "backup-identity", Kind: keystore.KindAgeIdentity, Host: "db1", Recipient: "age1examplerecipient", State: keystore.StateActive}
	before := time.Now().Add(-2 * time.Second)
	k, err = s.Put(ctx, id, []byte("AGE-SECRET-KEY-1EXAMPLE\n"))
	if err != nil {
		t.Fatalf("Put identity: %v", err)
	}
	if k.State != keystore.StateActive || k.Keyslot != nil || k.Recipient != id.Recipient {
		t.Errorf("Put identity = %+v", k)
	}
	if k.Created.Before(before) || k.Created.After(time.Now().Add(2*time.Second)) {
		t.Errorf("Created = %v, want about now", k.Created)
	}
	got, _, err = s.Get(ctx, id.Name)
	if err != nil {
		t.Fatalf("Get identity: %v", err)
	}
	checkKey(t, "Get identity", got, k)
}

func checkKey(t *testing.T, op string, got, want *keystore.Key) {
	t.Helper()
	g, w := *got, *want
	if (g.Keyslot == nil) != (w.Keyslot == nil) || (g.Keyslot != nil && *g.Keyslot != *w.Keyslot) {
		t.Errorf("%s: Keyslot = %v, want %v", op, g.Keyslot, w.Keyslot)
	}
	g.Keyslot, w.Keyslot = nil, nil
	if !g.Created.Equal(w.Created) {
		t.Errorf("%s: Created = %v, want %v", op, g.Created, w.Created)
	}
	g.Created, w.Created = time.Time{}, time.Time{}
	if g != w {
		t.Errorf("%s:\n got  %+v\n want %+v", op, g, w)
	}
}

func testNeverOverwrite(t *testing.T, s keystore.Escrow) {
	ctx := context.Background()
	first := randomSecret(32)
	if _, err := s.Put(ctx, recoveryKey("k"), first); err != nil {
		t.Fatal(err)
	}
	for _, state := range []keystore.State{"", keystore.StateActive} {
		k := recoveryKey("k")
		k.State = state
		_, err := s.Put(ctx, k, randomSecret(32))
		if !errors.Is(err, keystore.ErrExists) || !errors.Is(err, fs.ErrExist) {
			t.Fatalf("second Put: err = %v, want ErrExists", err)
		}
	}
	// After a state change too.
	if _, err := s.SetState(ctx, "k", 1, keystore.StateActive); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, recoveryKey("k"), randomSecret(32)); !errors.Is(err, keystore.ErrExists) {
		t.Fatalf("Put after SetState: err = %v, want ErrExists", err)
	}
	_, got, err := s.Get(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, first) {
		t.Fatal("the first secret was overwritten")
	}
}

// testConcurrentPut races 20 writers of one name: exactly one wins, the
// others get ErrExists, and the winner's secret is the one stored.
func testConcurrentPut(t *testing.T, s keystore.Escrow) {
	ctx := context.Background()
	const n = 20
	secrets := make([][]byte, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		secrets[i] = randomSecret(32)
		wg.Go(func() {
			<-start
			_, errs[i] = s.Put(ctx, recoveryKey("raced"), secrets[i])
		})
	}
	close(start)
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil:
			if winner >= 0 {
				t.Fatalf("writers %d and %d both won", winner, i)
			}
			winner = i
		case !errors.Is(err, keystore.ErrExists):
			t.Errorf("writer %d: %v, want ErrExists", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no writer won")
	}
	_, got, err := s.Get(ctx, "raced")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, secrets[winner]) {
		t.Fatal("the stored secret is not the winner's")
	}
	h, err := s.History(ctx, "raced")
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != 1 || h[0].Revision != 1 {
		t.Fatalf("History = %+v, want one revision", h)
	}
}

func testNotFound(t *testing.T, s keystore.Escrow) {
	ctx := context.Background()
	check := func(op string, err error) {
		t.Helper()
		if !errors.Is(err, keystore.ErrNotFound) || !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s of a missing entry: err = %v, want ErrNotFound", op, err)
		}
	}
	_, _, err := s.Get(ctx, "missing")
	check("Get", err)
	_, err = s.History(ctx, "missing")
	check("History", err)
	_, err = s.SetState(ctx, "missing", 1, keystore.StateActive)
	check("SetState", err)
	keys, err := s.List(ctx)
	if err != nil || len(keys) != 0 {
		t.Errorf("List of an empty store = %v, %v", keys, err)
	}
}

func testInvalidInput(t *testing.T, s keystore.Escrow) {
	ctx := context.Background()
	for _, name := range []string{"", "../x", "a/b", ".hidden", "-x", "a b", string(make([]byte, 129))} {
		k := recoveryKey(name)
		if _, err := s.Put(ctx, k, []byte("x")); err == nil || errors.Is(err, keystore.ErrExists) {
			t.Errorf("Put(%q): err = %v, want an invalid-name error", name, err)
		}
		if _, _, err := s.Get(ctx, name); err == nil || errors.Is(err, keystore.ErrNotFound) {
			t.Errorf("Get(%q): err = %v, want an invalid-name error", name, err)
		}
	}
	if _, err := s.Put(ctx, recoveryKey("empty"), nil); err == nil {
		t.Error("Put of an empty secret succeeded")
	}
	bad := []keystore.Key{
		{Name: "nokind"},
		{Name: "badkind", Kind: "password"},
		{Name: "badstate", Kind: keystore.KindAgeIdentity, State: "lost"},
		{Name: "slot-on-identity", Kind: keystore.KindAgeIdentity, Keyslot: keystore.Slot(1)},
		{Name: "negative-slot", Kind: keystore.KindLUKSRecovery, Keyslot: keystore.Slot(-1)},
	}
	for _, k := range bad {
		if _, err := s.Put(ctx, k, []byte("x")); err == nil {
			t.Errorf("Put(%+v) succeeded", k)
		}
		if _, _, err := s.Get(ctx, k.Name); !errors.Is(err, keystore.ErrNotFound) {
			t.Errorf("after a refused Put, Get(%q): err = %v, want ErrNotFound", k.Name, err)
		}
	}
}

func testSetState(t *testing.T, s keystore.Escrow) {
	ctx := context.Background()
	secret := randomSecret(48)
	if _, err := s.Put(ctx, recoveryKey("k"), secret); err != nil {
		t.Fatal(err)
	}
	k, err := s.SetState(ctx, "k", 1, keystore.StateActive)
	if err != nil {
		t.Fatalf("pending→active: %v", err)
	}
	if k.State != keystore.StateActive || k.Revision != 2 || k.Fingerprint != keystore.Fingerprint(secret) {
		t.Fatalf("SetState = %+v", k)
	}
	// A stale revision changes nothing.
	if _, err := s.SetState(ctx, "k", 1, keystore.StateRetired); !errors.Is(err, keystore.ErrConflict) {
		t.Fatalf("stale SetState: err = %v, want ErrConflict", err)
	}
	if _, err := s.SetState(ctx, "k", 3, keystore.StateRetired); !errors.Is(err, keystore.ErrConflict) {
		t.Fatalf("future SetState: err = %v, want ErrConflict", err)
	}
	// A change the lifecycle does not allow.
	var sce *keystore.StateChangeError
	if _, err := s.SetState(ctx, "k", 2, keystore.StatePending); !errors.As(err, &sce) {
		t.Fatalf("active→pending: err = %v, want *StateChangeError", err)
	}
	got, gotSecret, err := s.Get(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if got.State != keystore.StateActive || got.Revision != 2 || !bytes.Equal(gotSecret, secret) {
		t.Fatalf("Get after SetState = %+v (secret equal: %v)", got, bytes.Equal(gotSecret, secret))
	}
	if _, err := s.SetState(ctx, "k", 2, keystore.StateRetired); err != nil {
		t.Fatalf("active→retired: %v", err)
	}
	if _, err := s.SetState(ctx, "k", 3, keystore.StateActive); !errors.As(err, &sce) {
		t.Fatalf("retired→active: err = %v, want *StateChangeError", err)
	}
	h, err := s.History(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	want := []keystore.State{keystore.StatePending, keystore.StateActive, keystore.StateRetired}
	if len(h) != len(want) {
		t.Fatalf("History = %+v, want %d revisions", h, len(want))
	}
	for i, v := range h {
		if v.Revision != i+1 || v.State != want[i] || v.Created.IsZero() || v.Deleted || v.Destroyed {
			t.Errorf("History[%d] = %+v, want revision %d %s", i, v, i+1, want[i])
		}
	}
	_, gotSecret, err = s.Get(ctx, "k")
	if err != nil || !bytes.Equal(gotSecret, secret) {
		t.Fatalf("Get after retiring: %v (secret equal: %v)", err, bytes.Equal(gotSecret, secret))
	}
}

// testConcurrentSetState races 10 state changes of one revision: exactly
// one wins.
func testConcurrentSetState(t *testing.T, s keystore.Escrow) {
	ctx := context.Background()
	if _, err := s.Put(ctx, recoveryKey("k"), randomSecret(32)); err != nil {
		t.Fatal(err)
	}
	const n = 10
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		to := keystore.StateActive
		if i%2 == 1 {
			to = keystore.StateFailed
		}
		wg.Go(func() {
			<-start
			_, errs[i] = s.SetState(ctx, "k", 1, to)
		})
	}
	close(start)
	wg.Wait()
	won := 0
	for i, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, keystore.ErrConflict):
			t.Errorf("writer %d: %v, want ErrConflict", i, err)
		}
	}
	if won != 1 {
		t.Fatalf("%d writers won, want 1", won)
	}
	h, err := s.History(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != 2 {
		t.Fatalf("History = %+v, want 2 revisions", h)
	}
}

func testList(t *testing.T, s keystore.Escrow) {
	ctx := context.Background()
	want := map[string]*keystore.Key{}
	for i, name := range []string{"c-identity", "a-recovery", "b-header"} {
		k := recoveryKey(name)
		switch i {
		case 0:
			k.Kind, k.Keyslot, k.Device, k.LUKSUUID, k.Recipient = keystore.KindAgeIdentity, nil, "", "", "age1example"
		case 2:
			k.Kind, k.Keyslot = keystore.KindLUKSHeader, nil
		}
		put, err := s.Put(ctx, k, randomSecret(16+i))
		if err != nil {
			t.Fatal(err)
		}
		want[name] = put
	}
	k, err := s.SetState(ctx, "a-recovery", 1, keystore.StateActive)
	if err != nil {
		t.Fatal(err)
	}
	want["a-recovery"] = k
	keys, err := s.List(ctx)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if len(keys) != 3 {
		t.Fatalf("List = %d entries, want 3: %+v", len(keys), keys)
	}
	for i, name := range []string{"a-recovery", "b-header", "c-identity"} {
		if keys[i].Name != name {
			t.Fatalf("List not sorted by name: %v", names(keys))
		}
		checkKey(t, "List "+name, &keys[i], want[name])
	}
}

func names(keys []keystore.Key) []string {
	var s []string
	for _, k := range keys {
		s = append(s, k.Name)
	}
	return s
}
