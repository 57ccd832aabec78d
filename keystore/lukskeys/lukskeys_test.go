package lukskeys

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/nhscrypt/nhscrypt/internal/testenv"
	"github.com/nhscrypt/nhscrypt/keystore"
	"github.com/nhscrypt/nhscrypt/keystore/file"
	"github.com/nhscrypt/nhscrypt/keystore/vault"
	"github.com/nhscrypt/nhscrypt/keystore/vault/vaulttest"
	"github.com/nhscrypt/nhscrypt/luks"
	"github.com/nhscrypt/nhscrypt/report"
)

const existingPass = "existing passphrase of the volume"

// volume is a LUKS image made by cryptsetup, with its existing key file.
type testVolume struct {
	path, keyFile string
}

var kdfArgs = map[int][]string{
	1: {"--type", "luks1", "--pbkdf-force-iterations", "1000", "--hash", "sha256"},
	2: {"--type", "luks2", "--pbkdf", "argon2id", "--pbkdf-force-iterations", "4", "--pbkdf-memory", "32768", "--pbkdf-parallel", "1"},
}

func makeVolume(t testing.TB, version int) testVolume {
	t.Helper()
	cs := testenv.Tool(t, "cryptsetup")
	dir := t.TempDir()
	v := testVolume{path: filepath.Join(dir, "disk.img"), keyFile: filepath.Join(dir, "existing.key")}
	if err := os.WriteFile(v.keyFile, []byte(existingPass), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(v.path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(v.path, 20<<20); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"luksFormat", "--batch-mode", "--key-file", v.keyFile}, kdfArgs[version]...)
	if out, err := exec.Command(cs, append(args, v.path)...).CombinedOutput(); err != nil {
		t.Fatalf("cryptsetup luksFormat: %v\n%s", err, out)
	}
	return v
}

// cryptsetupOpens asks cryptsetup itself whether key opens keyslot slot.
func cryptsetupOpens(t *testing.T, device string, key []byte, slot int) bool {
	t.Helper()
	cmd := exec.Command("cryptsetup", "open", "--test-passphrase", "--key-file", "-", "--key-slot", strconv.Itoa(slot), device)
	cmd.Stdin = bytes.NewReader(key)
	return cmd.Run() == nil
}

func activeSlots(t *testing.T, device string) []int {
	t.Helper()
	h, err := luks.ParseFile(device)
	if err != nil {
		t.Fatal(err)
	}
	return h.ActiveSlots()
}

func fileStore(t testing.TB) keystore.Escrow {
	t.Helper()
	admin, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	s, err := file.Open(t.TempDir(), file.Options{Recipients: []age.Recipient{admin.Recipient()}, Identities: []age.Identity{admin}})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func vaultStore(t *testing.T, srv *vaulttest.Server, token string) keystore.Escrow {
	t.Helper()
	c, err := vault.NewClient(context.Background(), vault.Config{Address: srv.Addr, Token: token, MaxRetries: -1})
	if err != nil {
		t.Fatal(err)
	}
	s, err := vault.New(c, vault.Options{Prefix: vault.DefaultPrefix("db1")})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newEnroller(t testing.TB, s keystore.Escrow) *Enroller {
	return &Enroller{Store: s, Host: "db1", StateDir: t.TempDir(), Version: "test"}
}

func getSecret(t *testing.T, s keystore.Escrow, name string) (*keystore.Key, []byte) {
	t.Helper()
	k, secret, err := s.Get(context.Background(), name)
	if err != nil {
		t.Fatalf("Get(%s): %v", name, err)
	}
	return k, secret
}

func TestRecoveryKey(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		k, err := NewRecoveryKey()
		if err != nil {
			t.Fatal(err)
		}
		if len(k) != 71 || !IsRecoveryKey(k) || seen[string(k)] {
			t.Fatalf("bad or repeated recovery key %q", k)
		}
		seen[string(k)] = true
		groups := strings.Split(string(k), "-")
		if len(groups) != 8 {
			t.Fatalf("%q has %d groups", k, len(groups))
		}
	}
	good, _ := NewRecoveryKey()
	for _, bad := range []string{"", string(good[:70]), strings.Replace(string(good), "-", "c", 1), "a" + string(good[1:]),
		strings.ToUpper(string(good)), string(good) + "\n"} {
		if IsRecoveryKey([]byte(bad)) {
			t.Errorf("IsRecoveryKey(%q) = true", bad)
		}
	}
}

// checkEnrolled checks that the result's key is active in escrow, opens its
// keyslot (asked of cryptsetup itself), and that the volume has exactly the
// expected keyslots.
func checkEnrolled(t *testing.T, s keystore.Escrow, v testVolume, res *Result, wantSlots []int) {
	t.Helper()
	k, secret := getSecret(t, s, res.Name)
	if k.State != keystore.StateActive || res.State != keystore.StateActive {
		t.Errorf("entry %s is %s (result %s), want active", res.Name, k.State, res.State)
	}
	if !IsRecoveryKey(secret) {
		t.Errorf("escrowed secret is not a recovery key")
	}
	if k.Kind != keystore.KindLUKSRecovery || k.Keyslot == nil || *k.Keyslot != res.Keyslot || k.Device != v.path || k.Host != "db1" {
		t.Errorf("metadata %+v does not match result %+v", k, res)
	}
	if h, _ := luks.ParseFile(v.path); k.LUKSUUID != h.UUID() {
		t.Errorf("entry UUID %s, volume %s", k.LUKSUUID, h.UUID())
	}
	if !cryptsetupOpens(t, v.path, secret, res.Keyslot) {
		t.Errorf("cryptsetup: the escrowed key does not open keyslot %d", res.Keyslot)
	}
	if got := activeSlots(t, v.path); !slices.Equal(got, wantSlots) {
		t.Errorf("active keyslots %v, want %v", got, wantSlots)
	}
}

func TestEnroll(t *testing.T) {
	for _, version := range []int{1, 2} {
		t.Run(fmt.Sprintf("luks%d", version), func(t *testing.T) {
			ctx := context.Background()
			v := makeVolume(t, version)
			s := fileStore(t)
			e := newEnroller(t, s)
			var steps []Step
			e.Progress = func(s Step, _ string) { steps = append(steps, s) }
			res, err := e.Enroll(ctx, EnrollRequest{Device: v.path, KeyFile: v.keyFile, Keyslot: -1})
			if err != nil {
				t.Fatal(err)
			}
			if res.Keyslot != 1 || len(res.Warnings) > 0 || res.Resumed != "" {
				t.Errorf("result %+v", res)
			}
			want := []Step{StepEscrowPending, StepAddKeyslot, StepProveKeyslot, StepActivate, StepEscrowHeader}
			if !slices.Equal(steps, want) {
				t.Errorf("steps %v, want %v", steps, want)
			}
			checkEnrolled(t, s, v, res, []int{0, 1})

			// The new keyslot is as strong as the policy asks.
			h, _ := luks.ParseFile(v.path)
			p := luks.DefaultPolicy()
			for _, f := range luks.CheckHeader(h, v.path, p) {
				if f.ID == "LUKS-KDF-WEAK" && strings.Contains(f.Message, "keyslot 1") {
					t.Errorf("new keyslot is weak: %+v", f)
				}
			}
			if version == 2 {
				kdf := h.LUKS2.Metadata.Keyslots["1"].KDF
				if kdf.Type != "argon2id" || kdf.Memory < p.MinArgon2MemoryKiB || kdf.Time < 4 {
					t.Errorf("new keyslot KDF %+v", kdf)
				}
			} else if it := h.LUKS1.KeySlots[1].Iterations; it < uint32(p.MinPBKDF2Iterations) {
				t.Errorf("new keyslot has %d iterations", it)
			}

			// A second enrolment takes the next keyslot; a taken one is refused.
			if _, err := e.Enroll(ctx, EnrollRequest{Device: v.path, KeyFile: v.keyFile, Keyslot: 1}); err == nil || !strings.Contains(err.Error(), "in use") {
				t.Errorf("enrolling into a used keyslot: %v", err)
			}
			res2, err := e.Enroll(ctx, EnrollRequest{Device: v.path, KeyFile: v.keyFile, Keyslot: 5, Name: "second"})
			if err != nil {
				t.Fatal(err)
			}
			checkEnrolled(t, s, v, res2, []int{0, 1, 5})

			// A wrong existing key changes nothing.
			bad := filepath.Join(t.TempDir(), "bad.key")
			os.WriteFile(bad, []byte("wrong"), 0o600)
			before, _ := s.List(ctx)
			if _, err := e.Enroll(ctx, EnrollRequest{Device: v.path, KeyFile: bad, Keyslot: -1}); !errors.Is(err, luks.ErrKeyMismatch) {
				t.Errorf("wrong key: %v", err)
			}
			if after, _ := s.List(ctx); len(after) != len(before) {
				t.Errorf("a refused enrolment escrowed something")
			}

			// The restore drill: the header is destroyed, restored from
			// escrow with standard tools, and the recovery key opens it.
			hk, hdrBackup := getSecret(t, s, res2.Header)
			if hk.Kind != keystore.KindLUKSHeader || hk.LUKSUUID != res.UUID || hk.State != keystore.StateActive {
				t.Errorf("header entry %+v", hk)
			}
			raw, err := DecompressHeader(hdrBackup, 32<<20)
			if err != nil {
				t.Fatal(err)
			}
			hdrFile := filepath.Join(t.TempDir(), "header.img")
			os.WriteFile(hdrFile, raw, 0o600)
			f, _ := os.OpenFile(v.path, os.O_WRONLY, 0)
			f.WriteAt(make([]byte, 64<<10), 0) // both LUKS2 headers, or the LUKS1 header and slot 0
			f.Close()
			_, secret := getSecret(t, s, res2.Name)
			if cryptsetupOpens(t, v.path, secret, res2.Keyslot) {
				t.Fatal("the damaged volume still opens")
			}
			if out, err := exec.Command("cryptsetup", "luksHeaderRestore", "--batch-mode", v.path, "--header-backup-file", hdrFile).CombinedOutput(); err != nil {
				t.Fatalf("luksHeaderRestore: %v\n%s", err, out)
			}
			if !cryptsetupOpens(t, v.path, secret, res2.Keyslot) {
				t.Error("the recovery key does not open the restored volume")
			}
			// Standard tools read it: zstd -d gives the same bytes.
			zstdCmd := exec.Command(testenv.Tool(t, "zstd"), "-d", "-c")
			zstdCmd.Stdin = bytes.NewReader(hdrBackup)
			if out, err := zstdCmd.Output(); err != nil || !bytes.Equal(out, raw) {
				t.Errorf("zstd -d: %v, or a different header than DecompressHeader", err)
			}
		})
	}
}

// TestHeaderBackupKeepsOneKeyslot: the escrowed backup holds the key
// material of the recovery keyslot only, so it stays small however many
// keyslots the volume has, and restored it opens with that key.
func TestHeaderBackupKeepsOneKeyslot(t *testing.T) {
	v := makeVolume(t, 2)
	s := fileStore(t)
	e := newEnroller(t, s)
	ctx := context.Background()
	var last *Result
	for range 4 {
		res, err := e.Enroll(ctx, EnrollRequest{Device: v.path, KeyFile: v.keyFile, Keyslot: -1})
		if err != nil {
			t.Fatal(err)
		}
		if res.Header == "" || len(res.Warnings) > 0 {
			t.Fatalf("no header escrowed: %+v", res)
		}
		last = res
	}
	_, b := getSecret(t, s, last.Header)
	if len(b) > 300<<10 {
		t.Errorf("escrowed header is %d bytes compressed", len(b))
	}
	raw, err := DecompressHeader(b, 32<<20)
	if err != nil || len(raw) != 16<<20 {
		t.Fatalf("header area %d bytes, %v", len(raw), err)
	}
	h, _ := luks.ParseFile(v.path)
	f, _ := os.Open(v.path)
	defer f.Close()
	for id, ks := range h.LUKS2.Metadata.Keyslots {
		want := make([]byte, ks.Area.Size)
		if id == strconv.Itoa(last.Keyslot) {
			f.ReadAt(want, int64(ks.Area.Offset))
		}
		if !bytes.Equal(raw[ks.Area.Offset:ks.Area.Offset+ks.Area.Size], want) {
			t.Errorf("keyslot %s area in the backup: want it %s", id, map[bool]string{true: "kept", false: "zeroed"}[id == strconv.Itoa(last.Keyslot)])
		}
	}
	// Restored onto the image, only the recovery key opens it.
	hdrFile := filepath.Join(t.TempDir(), "header.img")
	os.WriteFile(hdrFile, raw, 0o600)
	if out, err := exec.Command("cryptsetup", "luksHeaderRestore", "--batch-mode", v.path, "--header-backup-file", hdrFile).CombinedOutput(); err != nil {
		t.Fatalf("luksHeaderRestore: %v\n%s", err, out)
	}
	_, key := getSecret(t, s, last.Name)
	if !cryptsetupOpens(t, v.path, key, last.Keyslot) {
		t.Error("the recovery key does not open the restored header")
	}
	if cryptsetupOpens(t, v.path, []byte(existingPass), 0) {
		t.Error("the existing passphrase opens the restored header: key material of other keyslots was escrowed")
	}
}

// failingCryptsetup writes a cryptsetup wrapper that fails luksAddKey,
// after running it when addFirst. A fake beside the real tests: cryptsetup
// cannot be made to fail this way on demand.
func failingCryptsetup(t *testing.T, addFirst bool) string {
	real, err := exec.LookPath("cryptsetup")
	if err != nil {
		testenv.Missing(t, "cryptsetup: %v", err)
	}
	run := ""
	if addFirst {
		run = real + ` "$@" || exit $?`
	}
	script := fmt.Sprintf(`#!/bin/sh
case " $* " in
*" luksAddKey "*) %s
	echo "injected failure" >&2; exit 1;;
esac
exec %s "$@"
`, run, real)
	p := filepath.Join(t.TempDir(), "cryptsetup")
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// checkConsistent checks the invariant every failure must leave: each
// keyslot of the volume is either an original one or holds an active
// escrowed key, and every escrowed key that is not active opens nothing.
func checkConsistent(t *testing.T, s keystore.Escrow, v testVolume, original []int) (active []keystore.Key) {
	t.Helper()
	ctx := context.Background()
	keys, err := s.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	h, _ := luks.ParseFile(v.path)
	accounted := slices.Clone(original)
	for _, k := range keys {
		if k.Kind != keystore.KindLUKSRecovery {
			continue
		}
		_, secret := getSecret(t, s, k.Name)
		kt, err := luks.TestKey(ctx, v.path, h, secret, -1)
		switch {
		case k.State == keystore.StateActive:
			if err != nil || kt.Keyslot != *k.Keyslot {
				t.Errorf("active entry %s does not open its keyslot %d: %v", k.Name, *k.Keyslot, err)
			} else {
				accounted = append(accounted, kt.Keyslot)
				active = append(active, k)
			}
		case err == nil:
			t.Errorf("%s entry %s opens keyslot %d", k.State, k.Name, kt.Keyslot)
		}
	}
	for _, sl := range h.ActiveSlots() {
		if !slices.Contains(accounted, sl) {
			t.Errorf("keyslot %d is neither original nor in escrow as active", sl)
		}
	}
	return active
}

func TestEnrollRollback(t *testing.T) {
	cases := []struct {
		name     string
		addFirst *bool // luksAddKey fails (after adding when true)
		failAt   Step
	}{
		{name: "add-fails", addFirst: new(false)},
		{name: "add-succeeds-then-fails", addFirst: new(true)},
		{name: "after-escrow", failAt: StepEscrowPending},
		{name: "after-add", failAt: StepAddKeyslot},
		{name: "after-prove", failAt: StepProveKeyslot},
		{name: "after-activate", failAt: StepActivate},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			v := makeVolume(t, 2)
			s := fileStore(t)
			e := newEnroller(t, s)
			if tc.addFirst != nil {
				e.Cryptsetup = failingCryptsetup(t, *tc.addFirst)
			}
			e.hook = func(s Step) error {
				if s == tc.failAt {
					return errors.New("injected failure")
				}
				return nil
			}
			_, err := e.Enroll(ctx, EnrollRequest{Device: v.path, KeyFile: v.keyFile, Keyslot: -1, Name: "k1"})
			var ee *EnrollError
			if !errors.As(err, &ee) || !ee.RolledBack || len(ee.Pending) > 0 {
				t.Fatalf("Enroll: %v (%+v)", err, ee)
			}
			k, _ := getSecret(t, s, "k1")
			if k.State != keystore.StateFailed {
				t.Errorf("entry is %s, want failed", k.State)
			}
			if got := activeSlots(t, v.path); !slices.Equal(got, []int{0}) {
				t.Errorf("keyslots %v after rollback", got)
			}
			if _, err := os.Stat(journalPath(e.StateDir, k.LUKSUUID)); err == nil {
				t.Error("journal left after a complete rollback")
			}
			checkConsistent(t, s, v, []int{0})
			// And the next run just works.
			e.Cryptsetup, e.hook = "", nil
			res, err := e.Enroll(ctx, EnrollRequest{Device: v.path, KeyFile: v.keyFile, Keyslot: -1, Name: "k2"})
			if err != nil || res.Resumed != "" {
				t.Fatalf("next enrolment: %v %+v", err, res)
			}
			checkEnrolled(t, s, v, res, []int{0, 1})
		})
	}
}

// crash runs an enrolment that stops dead (as kill -9 would) after step:
// no rollback runs; the journal and whatever was done stay.
func crash(t *testing.T, e *Enroller, req EnrollRequest, step Step) {
	t.Helper()
	e.hook = func(s Step) error {
		if s == step {
			runtime.Goexit()
		}
		return nil
	}
	var wg sync.WaitGroup
	wg.Add(1)
	finished := false
	go func() {
		defer wg.Done()
		e.Enroll(context.Background(), req)
		finished = true
	}()
	wg.Wait()
	e.hook = nil
	if finished {
		t.Fatalf("the enrolment did not reach %s", step)
	}
}

func TestEnrollResume(t *testing.T) {
	for _, tc := range []struct {
		step Step
		want string // what the next run does with the interrupted enrolment
	}{
		{StepEscrowPending, "rolled-back"},
		{StepAddKeyslot, "finished"},
		{StepProveKeyslot, "finished"},
		{StepActivate, "finished"},
		{StepKillKeyslot, "rolled-back"}, // crashed in the middle of a rollback
	} {
		t.Run(string(tc.step), func(t *testing.T) {
			v := makeVolume(t, 2)
			s := fileStore(t)
			e := newEnroller(t, s)
			req := EnrollRequest{Device: v.path, KeyFile: v.keyFile, Keyslot: -1, Name: "first"}
			if tc.step == StepKillKeyslot {
				// Fail after the add, then crash while killing the keyslot.
				e.hook = func(s Step) error {
					switch s {
					case StepProveKeyslot:
						return errors.New("injected failure")
					case StepKillKeyslot:
						runtime.Goexit()
					}
					return nil
				}
				done := make(chan struct{})
				go func() { defer close(done); e.Enroll(context.Background(), req) }()
				<-done
				e.hook = nil
			} else {
				crash(t, e, req, tc.step)
			}
			h, _ := luks.ParseFile(v.path)
			if _, err := os.Stat(journalPath(e.StateDir, h.UUID())); err != nil {
				t.Fatalf("no journal after the crash: %v", err)
			}
			res, err := e.Enroll(context.Background(), EnrollRequest{Device: v.path, KeyFile: v.keyFile, Keyslot: -1, Name: "second"})
			if err != nil {
				t.Fatal(err)
			}
			if res.Resumed != tc.want || res.ResumedName != "first" {
				t.Fatalf("resumed %q (%s), want %q", res.Resumed, res.ResumedName, tc.want)
			}
			active := checkConsistent(t, s, v, []int{0})
			if len(active) != 1 {
				t.Fatalf("%d active keys, want 1", len(active))
			}
			wantName := "second"
			if tc.want == "finished" {
				wantName = "first"
			}
			if res.Name != wantName || active[0].Name != wantName {
				t.Errorf("active key %s, result %s, want %s", active[0].Name, res.Name, wantName)
			}
			if _, err := os.Stat(journalPath(e.StateDir, h.UUID())); err == nil {
				t.Error("journal left after resuming")
			}
		})
	}
}

// A journal names the device it was made on: a clone with the same UUID
// is refused until the original's enrolment is finished.
func TestResumeOtherDevice(t *testing.T) {
	v := makeVolume(t, 2)
	s := fileStore(t)
	e := newEnroller(t, s)
	crash(t, e, EnrollRequest{Device: v.path, KeyFile: v.keyFile, Keyslot: -1, Name: "orig"}, StepAddKeyslot)
	clone := filepath.Join(t.TempDir(), "clone.img")
	data, _ := os.ReadFile(v.path)
	os.WriteFile(clone, data, 0o600)
	_, err := e.Enroll(context.Background(), EnrollRequest{Device: clone, KeyFile: v.keyFile, Keyslot: -1})
	if err == nil || !strings.Contains(err.Error(), "--device "+v.path) {
		t.Fatalf("enrolling the clone: %v", err)
	}
	res, err := e.Enroll(context.Background(), EnrollRequest{Device: v.path, KeyFile: v.keyFile, Keyslot: -1})
	if err != nil || res.Resumed != "finished" || res.Name != "orig" {
		t.Fatalf("finishing on the original: %v %+v", err, res)
	}
	checkEnrolled(t, s, v, res, []int{0, 1})
}

func TestRotate(t *testing.T) {
	ctx := context.Background()
	v := makeVolume(t, 2)
	s := fileStore(t)
	e := newEnroller(t, s)
	first, err := e.Enroll(ctx, EnrollRequest{Device: v.path, KeyFile: v.keyFile, Keyslot: -1, Name: "first"})
	if err != nil {
		t.Fatal(err)
	}
	_, oldSecret := getSecret(t, s, "first")

	// A failed rotation keeps the old key.
	e.Cryptsetup = failingCryptsetup(t, true)
	if _, err := e.Rotate(ctx, RotateRequest{EnrollRequest: EnrollRequest{Device: v.path, KeyFile: v.keyFile, Keyslot: -1, Name: "failed"}}); err == nil {
		t.Fatal("rotation with a failing luksAddKey succeeded")
	}
	e.Cryptsetup = ""
	if !cryptsetupOpens(t, v.path, oldSecret, first.Keyslot) {
		t.Fatal("a failed rotation removed the old key")
	}

	res, err := e.Rotate(ctx, RotateRequest{EnrollRequest: EnrollRequest{Device: v.path, KeyFile: v.keyFile, Keyslot: -1, Name: "second"}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Retired, []string{"first"}) || !slices.Equal(res.Removed, []int{1}) || len(res.Warnings) > 0 {
		t.Errorf("rotation result %+v", res)
	}
	checkEnrolled(t, s, v, res, []int{0, 2})
	if k, _ := getSecret(t, s, "first"); k.State != keystore.StateRetired {
		t.Errorf("old key is %s", k.State)
	}
	if cryptsetupOpens(t, v.path, oldSecret, first.Keyslot) {
		t.Error("the old key still opens the volume")
	}
	checkConsistent(t, s, v, []int{0})

	// Nothing to rotate on a volume without escrow.
	v2 := makeVolume(t, 2)
	if _, err := e.Rotate(ctx, RotateRequest{EnrollRequest: EnrollRequest{Device: v2.path, KeyFile: v2.keyFile, Keyslot: -1}}); !errors.Is(err, keystore.ErrNotFound) {
		t.Errorf("rotating an unescrowed volume: %v", err)
	}
}

func findingIDs(fs []report.Finding) []string {
	var ids []string
	for _, f := range fs {
		ids = append(ids, f.ID+" "+f.Subject)
	}
	slices.Sort(ids)
	return ids
}

func hasFinding(fs []report.Finding, id, subject string) bool {
	return slices.ContainsFunc(fs, func(f report.Finding) bool { return f.ID == id && (subject == "" || f.Subject == subject) })
}

func TestVerify(t *testing.T) {
	ctx := context.Background()
	s := fileStore(t)
	e := newEnroller(t, s)
	good, broken, moved, bare := makeVolume(t, 2), makeVolume(t, 1), makeVolume(t, 2), makeVolume(t, 2)
	for _, v := range []testVolume{good, broken, moved} {
		if _, err := e.Enroll(ctx, EnrollRequest{Device: v.path, KeyFile: v.keyFile, Keyslot: -1}); err != nil {
			t.Fatal(err)
		}
	}
	fs, err := e.Verify(ctx, VerifyRequest{Devices: []string{good.path, broken.path, moved.path}})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []testVolume{good, broken, moved} {
		if !hasFinding(fs, FindKeyOK, v.path) || !hasFinding(fs, FindSlotUnescrowed, v.path) {
			t.Errorf("all good: findings %v", findingIDs(fs))
		}
	}
	if r := (report.Report{Findings: fs}); r.ExitCode() != 0 || hasFinding(fs, FindHeaderMissing, "") {
		t.Errorf("all good: exit %d, findings %v", r.ExitCode(), findingIDs(fs))
	}
	// Limited to recovery keys, the escrowed headers still count.
	fs, err = e.Verify(ctx, VerifyRequest{Devices: []string{good.path}, Kinds: []keystore.Kind{keystore.KindLUKSRecovery}})
	if err != nil || !hasFinding(fs, FindKeyOK, good.path) || hasFinding(fs, FindHeaderMissing, "") {
		t.Errorf("--kind luks-recovery: %v %v", err, findingIDs(fs))
	}
	// Limited to identities, volumes are not judged.
	fs, err = e.Verify(ctx, VerifyRequest{Devices: []string{bare.path}, Kinds: []keystore.Kind{keystore.KindAgeIdentity}})
	if err != nil || len(fs) != 0 {
		t.Errorf("--kind age-identity: %v %v", err, findingIDs(fs))
	}

	// Break things: the recovery keyslot of one volume is removed; another
	// is re-created under the same path; a fourth was never escrowed; a
	// pending entry was left long ago.
	if out, err := exec.Command("cryptsetup", "luksKillSlot", "--batch-mode", broken.path, "1").CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	os.Truncate(moved.path, 0)
	os.Truncate(moved.path, 20<<20)
	exec.Command("cryptsetup", append(append([]string{"luksFormat", "--batch-mode", "--key-file", moved.keyFile}, kdfArgs[2]...), moved.path)...).Run()
	key, _ := NewRecoveryKey()
	hg, _ := luks.ParseFile(good.path)
	if _, err := s.Put(ctx, keystore.Key{Name: "stale", Kind: keystore.KindLUKSRecovery, Host: "db1", Device: good.path,
		LUKSUUID: hg.UUID(), Keyslot: keystore.Slot(7), State: keystore.StatePending, Created: time.Now().Add(-2 * time.Hour)}, key); err != nil {
		t.Fatal(err)
	}
	fs, err = e.Verify(ctx, VerifyRequest{Devices: []string{good.path, broken.path, bare.path}})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []struct{ id, subject string }{
		{FindKeyOK, good.path},
		{FindKeyBroken, broken.path},
		{FindVolumeUnescrow, broken.path},
		{FindUUIDMismatch, ""},
		{FindVolumeUnescrow, bare.path},
		{FindSlotUnescrowed, bare.path},
		{FindPendingStale, good.path},
	} {
		if !hasFinding(fs, want.id, want.subject) {
			t.Errorf("no %s for %q in %v", want.id, want.subject, findingIDs(fs))
		}
	}
	if r := (report.Report{Findings: fs}); r.ExitCode() != report.ExitFailures {
		t.Errorf("exit %d, want 4", r.ExitCode())
	}

	// --activate marks the stale pending key failed.
	fs, _ = e.Verify(ctx, VerifyRequest{Devices: []string{good.path}, Activate: true})
	if !hasFinding(fs, FindMarkedFailed, good.path) {
		t.Errorf("activate: %v", findingIDs(fs))
	}
	if k, _ := getSecret(t, s, "stale"); k.State != keystore.StateFailed {
		t.Errorf("stale entry is %s", k.State)
	}
}

func TestVerifyIdentities(t *testing.T) {
	ctx := context.Background()
	s := fileStore(t)
	e := newEnroller(t, s)
	id, _ := age.GenerateX25519Identity()
	other, _ := age.GenerateX25519Identity()
	put := func(name, secret, recipient string) {
		if _, err := s.Put(ctx, keystore.Key{Name: name, Kind: keystore.KindAgeIdentity, Host: "db1", Recipient: recipient, State: keystore.StateActive}, []byte(secret)); err != nil {
			t.Fatal(err)
		}
	}
	put("used", id.String()+"\n", id.Recipient().String())
	put("unused", other.String()+"\n", other.Recipient().String())
	put("mislabelled", other.String()+"\n", id.Recipient().String())
	put("garbage", "not a key", "")
	fs, err := e.Verify(ctx, VerifyRequest{Recipients: []string{id.Recipient().String()}})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []struct{ id, subject string }{
		{FindIdentityOK, "used"}, {FindIdentityUnused, "unused"}, {FindIdentityBroken, "mislabelled"}, {FindIdentityBroken, "garbage"},
	} {
		if !hasFinding(fs, want.id, want.subject) {
			t.Errorf("no %s for %s in %v", want.id, want.subject, findingIDs(fs))
		}
	}
	for _, f := range fs {
		for _, v := range f.Evidence {
			if strings.Contains(v, "AGE-SECRET-KEY") {
				t.Errorf("a finding holds a secret: %+v", f)
			}
		}
	}
}
