package lukskeys

import (
	"context"
	"testing"

	"github.com/nhscrypt/nhscrypt/luks"
)

// Benchmarks of the in-process parts of escrow; bench/escrow.sh runs the
// commands beside cryptsetup and the vault CLI.
//
//	go test -run '^$' -bench . -benchtime 20x ./keystore/lukskeys
//
// The volume is the tests' LUKS2 image (argon2id, 32 MiB, time 4, one
// thread); the recovery keyslot enrolment adds is raised to the policy's
// 64 MiB, so each key test is one argon2id derivation of 64 MiB, time 4,
// one lane.

// benchEnrolled returns an enroller over a file store and a LUKS2 volume
// with an escrowed, active recovery key (and header backup).
func benchEnrolled(b *testing.B) (*Enroller, testVolume, *Result) {
	b.Helper()
	v := makeVolume(b, 2)
	e := newEnroller(b, fileStore(b))
	res, err := e.Enroll(context.Background(), EnrollRequest{Device: v.path, KeyFile: v.keyFile, Keyslot: -1})
	if err != nil {
		b.Fatal(err)
	}
	return e, v, res
}

// BenchmarkVerify verifies one enrolled volume: list the store, read the
// key (age-decrypt it), test it on its keyslot in-process, check the
// keyslots. Compare with BenchmarkTestKey, the key test alone.
func BenchmarkVerify(b *testing.B) {
	ctx := context.Background()
	e, v, _ := benchEnrolled(b)
	b.ReportAllocs()
	for b.Loop() {
		fs, err := e.Verify(ctx, VerifyRequest{Devices: []string{v.path}})
		if err != nil {
			b.Fatal(err)
		}
		if !hasFinding(fs, FindKeyOK, v.path) {
			b.Fatalf("findings %v", findingIDs(fs))
		}
	}
}

// BenchmarkTestKey is the in-process key test Verify makes: one argon2id
// derivation (64 MiB, time 4, one lane), the anti-forensic merge and the
// digest check.
func BenchmarkTestKey(b *testing.B) {
	ctx := context.Background()
	e, v, res := benchEnrolled(b)
	_, key, err := e.Store.Get(ctx, res.Name)
	if err != nil {
		b.Fatal(err)
	}
	hdr, err := luks.ParseFile(v.path)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := luks.TestKey(ctx, v.path, hdr, key, res.Keyslot); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkNewRecoveryKey(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		k, err := NewRecoveryKey()
		if err != nil {
			b.Fatal(err)
		}
		clear(k)
	}
}

// BenchmarkHeaderBackup makes the header backup escrowed beside a recovery
// key: read the 16 MiB header area, zero the other keyslots' areas, zstd
// it. Throughput is of the header area; B/backup is the compressed size.
func BenchmarkHeaderBackup(b *testing.B) {
	_, v, res := benchEnrolled(b)
	hdr, err := luks.ParseFile(v.path)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(luks.HeaderAreaSize(hdr))
	b.ReportAllocs()
	var size int
	for b.Loop() {
		backup, _, err := HeaderBackup(v.path, hdr, []int{res.Keyslot})
		if err != nil {
			b.Fatal(err)
		}
		size = len(backup)
	}
	b.ReportMetric(float64(size), "B/backup")
}
