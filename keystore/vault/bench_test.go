package vault_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/nhscrypt/nhscrypt/keystore"
	"github.com/nhscrypt/nhscrypt/keystore/vault"
	"github.com/nhscrypt/nhscrypt/keystore/vault/vaulttest"
)

// The benchmarks run against a real Vault dev server on 127.0.0.1 (in-memory
// storage), one per benchmark, so they measure the client's requests and
// the server's handling, not a network. bench/escrow.sh compares the CLI
// with the vault CLI on the same operations.
//
//	go test -run '^$' -bench . -benchtime 20x ./keystore/vault

// benchSecret is as long as a LUKS recovery key.
var benchSecret = []byte("fhgidtrr-cvegtdbh-kblcrhbr-jjuvhgtu-lfhlcnvd-ubnrfgcl-nklrnttt-lhtknkvd")

func benchStore(b *testing.B, prefix string) *vault.Store {
	b.Helper()
	srv := vaulttest.Start(b)
	c, err := vault.NewClient(context.Background(), vault.Config{Address: srv.Addr, Token: srv.RootToken})
	if err != nil {
		b.Fatal(err)
	}
	s, err := vault.New(c, vault.Options{Prefix: prefix})
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// BenchmarkPut escrows a new entry per iteration: a check-and-set write of
// the data, then the custom metadata (two requests).
func BenchmarkPut(b *testing.B) {
	ctx := context.Background()
	s := benchStore(b, prefix)
	i := 0
	for b.Loop() {
		i++
		if _, err := s.Put(ctx, recoveryKey(fmt.Sprintf("k%d", i)), benchSecret); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGet reads one entry and its secret (one request).
func BenchmarkGet(b *testing.B) {
	ctx := context.Background()
	s := benchStore(b, prefix)
	if _, err := s.Put(ctx, recoveryKey("k"), benchSecret); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, secret, err := s.Get(ctx, "k"); err != nil || len(secret) != len(benchSecret) {
			b.Fatal(err)
		}
	}
}

// BenchmarkList lists 100 entries: one list request and a metadata read per
// entry.
func BenchmarkList(b *testing.B) {
	ctx := context.Background()
	s := benchStore(b, prefix)
	const n = 100
	for i := range n {
		if _, err := s.Put(ctx, recoveryKey(fmt.Sprintf("k%03d", i)), benchSecret); err != nil {
			b.Fatal(err)
		}
	}
	for b.Loop() {
		keys, err := s.List(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if len(keys) != n {
			b.Fatalf("List returned %d entries, want %d", len(keys), n)
		}
	}
}

// BenchmarkSetState marks a pending entry active: a metadata read, a
// check-and-set merge patch of the data and a metadata write. Each
// iteration takes a new pending entry (escrowed with the timer stopped),
// since a state change is one-way.
func BenchmarkSetState(b *testing.B) {
	ctx := context.Background()
	s := benchStore(b, prefix)
	i := 0
	for b.Loop() {
		b.StopTimer()
		i++
		name := fmt.Sprintf("k%d", i)
		k, err := s.Put(ctx, recoveryKey(name), benchSecret)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if _, err := s.SetState(ctx, name, k.Revision, keystore.StateActive); err != nil {
			b.Fatal(err)
		}
	}
}
