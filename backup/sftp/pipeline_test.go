package sftp_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/nhscrypt/nhscrypt/backup"
	"github.com/nhscrypt/nhscrypt/backup/retry"
	"github.com/nhscrypt/nhscrypt/backup/sftp"
	"github.com/nhscrypt/nhscrypt/backup/sftp/sftptest"
	"github.com/nhscrypt/nhscrypt/internal/testenv"
	"github.com/nhscrypt/nhscrypt/report"
)

// repoFixture is a repository on the sftp backend, as the CLI would use
// it: wrapped in the retry decorator.
type repoFixture struct {
	srv   *sftptest.Server
	dir   string // the repository folder on the server (and here)
	state string
	id    *age.X25519Identity
	key   ed25519.PrivateKey
	repo  *backup.Repository
}

func newRepoFixture(t *testing.T, objectSize int64) *repoFixture {
	t.Helper()
	noAgent(t)
	srv := sftptest.Start(t)
	b, dir := newRepo(t, srv)
	tmp := t.TempDir()
	f := &repoFixture{srv: srv, dir: dir, state: filepath.Join(tmp, "state")}
	f.id, _ = age.GenerateX25519Identity()
	var err error
	f.key, err = backup.GenerateSigningKey(filepath.Join(tmp, "signing.key"))
	if err != nil {
		t.Fatal(err)
	}
	f.repo, err = backup.Init(context.Background(), retry.New(b, 3, 100*time.Millisecond, time.Second), []string{f.id.Recipient().String()},
		objectSize, "host-a", f.key.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *repoFixture) run(t *testing.T, paths ...string) *backup.RunResult {
	t.Helper()
	res, err := f.repo.Run(context.Background(), backup.RunOptions{Paths: paths, Host: "host-a", SigningKey: f.key, StateDir: f.state, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func writeTree(t *testing.T, root string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{
		"large/random.bin": randomData(3<<20 + 17),
		"large/text.log":   bytes.Repeat([]byte("compressible line of text\n"), 100000),
		"empty":            nil,
		"with space":       []byte("odd name"),
	}
	for i := range 300 {
		files[fmt.Sprintf("small/d%02d/f%04d.txt", i%13, i)] = []byte(strings.Repeat(fmt.Sprintf("record %d\n", i), i%40))
	}
	for name, data := range files {
		p := filepath.Join(root, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, data, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	os.Symlink("large/random.bin", filepath.Join(root, "link"))
	return files
}

// TestBackupRoundTrip: the whole library pipeline over SFTP: init, run,
// a fresh connection opens the repository, restore gives back every
// byte, a second run reuses every object, verify reads everything clean.
func TestBackupRoundTrip(t *testing.T) {
	f := newRepoFixture(t, 512<<10) // small objects, so the tree spans several
	src := filepath.Join(t.TempDir(), "src")
	files := writeTree(t, src)
	res := f.run(t, src)
	if len(res.Warnings) != 0 {
		t.Fatalf("warnings: %v", res.Warnings)
	}
	if res.Snapshot.Totals.NewObjects < 3 {
		t.Errorf("%d objects", res.Snapshot.Totals.NewObjects)
	}
	ctx := context.Background()

	// A second process, as it were: its own connection.
	b2, err := sftp.Open(ctx, f.srv.URL(f.dir), f.srv.Options())
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	repo, err := backup.Open(ctx, b2)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := repo.FindSnapshot(ctx, "latest", "", backup.Trust{})
	if err != nil || snap.ID != res.Snapshot.ID {
		t.Fatalf("latest snapshot: %v %v", snap, err)
	}
	ids := []age.Identity{f.id}
	m, err := repo.LoadManifest(ctx, snap, ids)
	if err != nil {
		t.Fatal(err)
	}
	target := t.TempDir()
	rr, err := repo.Restore(ctx, m, backup.RestoreOptions{Target: target, Identities: ids})
	if err != nil || len(rr.Failed) != 0 {
		t.Fatalf("restore: %v %v", err, rr)
	}
	for name, data := range files {
		got, err := os.ReadFile(filepath.Join(target, src, name))
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("%s restored wrong (%v)", name, err)
		}
	}
	if l, err := os.Readlink(filepath.Join(target, src, "link")); err != nil || l != "large/random.bin" {
		t.Errorf("symlink restored as %q, %v", l, err)
	}

	// Nothing changed: the next run stores no new object.
	res2 := f.run(t, src)
	if res2.Snapshot.Totals.NewObjects != 0 {
		t.Errorf("second run stored %d new objects", res2.Snapshot.Totals.NewObjects)
	}
	findings, _, err := repo.Verify(ctx, backup.VerifyOptions{ReadData: true, Identities: ids})
	if err != nil || len(findings) != 0 {
		t.Errorf("verify: %v %v", findings, err)
	}
}

// killOnObject kills the server when the first object is stored.
type killOnObject struct {
	once sync.Once
	srv  *sftptest.Server
}

func (k *killOnObject) BackupEvent(e backup.Event) {
	if e.Kind == backup.EventObject {
		k.once.Do(k.srv.Stop)
	}
}

// TestRunServerDies: sshd dies during a backup run (through the retry
// decorator, which gives up): the run fails naming the backend and
// records no snapshot; once sshd is back the next run completes, reusing
// the objects already uploaded.
func TestRunServerDies(t *testing.T) {
	f := newRepoFixture(t, 256<<10)
	src := filepath.Join(t.TempDir(), "src")
	for i := range 16 {
		p := filepath.Join(src, fmt.Sprintf("f%02d", i))
		os.MkdirAll(src, 0o755)
		if err := os.WriteFile(p, randomData(200<<10), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	_, err := f.repo.Run(ctx, backup.RunOptions{Paths: []string{src}, Host: "host-a", SigningKey: f.key, StateDir: f.state,
		Version: "test", Workers: 2, Progress: &killOnObject{srv: f.srv}})
	t.Logf("run with the server killed: %v", err)
	if err == nil || !strings.Contains(err.Error(), f.repo.Backend.Location()) {
		t.Fatalf("run with the server killed: %v", err)
	}
	if errors.Is(err, backup.ErrAuth) || errors.Is(err, backup.ErrNotFound) {
		t.Errorf("misclassified: %v", err)
	}
	f.srv.Restart(t)
	if ids, err := f.repo.SnapshotIDs(ctx); err != nil || len(ids) != 0 {
		t.Fatalf("snapshots after a failed run: %v %v", ids, err)
	}
	res := f.run(t, src)
	if n := len(res.Snapshot.Objects); res.Snapshot.Totals.NewObjects >= n {
		t.Errorf("the second run stored %d new objects of %d: nothing reused", res.Snapshot.Totals.NewObjects, n)
	}
	findings, _, err := f.repo.Verify(ctx, backup.VerifyOptions{ReadData: true, Identities: []age.Identity{f.id}})
	if err != nil || len(findings) != 0 {
		t.Errorf("verify: %v %v", findings, err)
	}
}

func findingsByID(fs []report.Finding) map[string][]report.Finding {
	m := map[string][]report.Finding{}
	for _, f := range fs {
		m[f.ID] = append(m[f.ID], f)
	}
	return m
}

// TestServerSideCorruption: a byte flipped in an object file on the
// server is named by verify with ReadData; a truncated object is caught
// by its size without reading data or any key.
func TestServerSideCorruption(t *testing.T) {
	f := newRepoFixture(t, 64<<10)
	src := filepath.Join(t.TempDir(), "src")
	for i := range 12 {
		p := filepath.Join(src, fmt.Sprintf("f%02d", i))
		os.MkdirAll(src, 0o755)
		if err := os.WriteFile(p, randomData(40000), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	snap := f.run(t, src).Snapshot
	if len(snap.Objects) < 3 {
		t.Fatalf("%d objects", len(snap.Objects))
	}
	ctx := context.Background()
	flipped, truncated := snap.Objects[0].Name, snap.Objects[1].Name
	onServer := func(name string) string { return filepath.Join(f.dir, "data", name[:2], name) }
	data, err := os.ReadFile(onServer(flipped))
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0x10
	if err := os.WriteFile(onServer(flipped), data, 0o600); err != nil {
		t.Fatal(err)
	}
	data, _ = os.ReadFile(onServer(truncated))
	if err := os.WriteFile(onServer(truncated), data[:len(data)-100], 0o600); err != nil {
		t.Fatal(err)
	}

	// Without ReadData: the size from the server's stat finds the
	// truncation (and only that).
	fs, _, err := f.repo.Verify(ctx, backup.VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m := findingsByID(fs)
	if len(fs) != 1 || len(m[backup.IDObjectSize]) != 1 || !strings.Contains(m[backup.IDObjectSize][0].Subject, truncated) {
		t.Errorf("verify without data: %+v", fs)
	}
	// With ReadData (no key): the flipped byte, by hash.
	fs, _, err = f.repo.Verify(ctx, backup.VerifyOptions{ReadData: true})
	if err != nil {
		t.Fatal(err)
	}
	m = findingsByID(fs)
	if len(m[backup.IDObjectDamaged]) != 1 || !strings.Contains(m[backup.IDObjectDamaged][0].Subject, flipped) {
		t.Errorf("verify with data: %+v", fs)
	}
	// With the key, the finding names the files the object held.
	fs, _, _ = f.repo.Verify(ctx, backup.VerifyOptions{ReadData: true, Identities: []age.Identity{f.id}})
	m = findingsByID(fs)
	if d := m[backup.IDObjectDamaged]; len(d) != 1 || !strings.Contains(d[0].Message, src) {
		t.Errorf("verify with the key: %+v", fs)
	}
}

// TestAgent: with no identity file given, keys come from ssh-agent
// ($SSH_AUTH_SOCK) and ~/.ssh.
func TestAgent(t *testing.T) {
	srv := sftptest.Start(t)
	agentBin := testenv.Tool(t, "ssh-agent")
	add := testenv.Tool(t, "ssh-add")
	sock := filepath.Join(t.TempDir(), "agent.sock")
	cmd := exec.Command(agentBin, "-D", "-a", sock)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for i := 0; ; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if i == 100 {
			t.Fatal("ssh-agent did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Setenv("SSH_AUTH_SOCK", sock)
	t.Setenv("HOME", t.TempDir()) // no ~/.ssh keys
	opts := srv.Options()
	opts.IdentityFiles = nil
	if _, err := sftp.Open(context.Background(), srv.URL(t.TempDir()), opts); err == nil {
		t.Fatal("logged in with an empty agent and no keys")
	}
	if out, err := exec.Command(add, srv.IdentityFile).CombinedOutput(); err != nil {
		t.Fatalf("ssh-add: %v %s", err, out)
	}
	b, err := sftp.Open(context.Background(), srv.URL(t.TempDir()), opts)
	if err != nil {
		t.Fatalf("with the key in ssh-agent: %v", err)
	}
	b.Close()
	// And from ~/.ssh without an agent.
	t.Setenv("SSH_AUTH_SOCK", "")
	home := os.Getenv("HOME")
	os.MkdirAll(filepath.Join(home, ".ssh"), 0o700)
	key, _ := os.ReadFile(srv.IdentityFile)
	os.WriteFile(filepath.Join(home, ".ssh", "id_ed25519"), key, 0o600)
	b, err = sftp.Open(context.Background(), srv.URL(t.TempDir()), opts)
	if err != nil {
		t.Fatalf("with ~/.ssh/id_ed25519: %v", err)
	}
	b.Close()
}
