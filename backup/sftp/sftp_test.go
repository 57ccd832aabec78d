package sftp_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nhscrypt/nhscrypt/backup"
	"github.com/nhscrypt/nhscrypt/backup/backendtest"
	"github.com/nhscrypt/nhscrypt/backup/retry"
	"github.com/nhscrypt/nhscrypt/backup/sftp"
	"github.com/nhscrypt/nhscrypt/backup/sftp/sftptest"
	"github.com/nhscrypt/nhscrypt/internal/testenv"
)

// noAgent keeps a developer's ssh-agent out of the tests.
func noAgent(t *testing.T) { t.Setenv("SSH_AUTH_SOCK", "") }

// newRepo opens the backend on a fresh repository folder on srv and
// creates it; it returns the backend and the folder (the same path on the
// server and here).
func newRepo(t *testing.T, srv *sftptest.Server) (*sftp.Backend, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "repo")
	b, err := sftp.Open(context.Background(), srv.URL(dir), srv.Options())
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	if err := b.Create(context.Background()); err != nil {
		t.Fatalf("Create: %v", err)
	}
	return b, dir
}

func randomData(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func hashName(data []byte) string {
	s := sha256.Sum256(data)
	return hex.EncodeToString(s[:])
}

func TestConformance(t *testing.T) {
	noAgent(t)
	srv := sftptest.Start(t)
	backendtest.Run(t, func(t *testing.T) backup.Backend {
		b, _ := newRepo(t, srv)
		return b
	})
}

// TestConformanceMinimalServer: the suite against a server that refuses
// posix-rename, fsync and SETSTAT, so that uploads fall back to plain
// rename (and the config is replaced by remove and rename).
func TestConformanceMinimalServer(t *testing.T) {
	noAgent(t)
	srv := sftptest.StartSFTP(t, "-P posix-rename,fsync,fsetstat,setstat")
	backendtest.Run(t, func(t *testing.T) backup.Backend {
		b, _ := newRepo(t, srv)
		return b
	})
	// OpenSSH does not offer the extensions it denies: the suite ran
	// with the fallbacks.
	b, _ := newRepo(t, srv)
	if pr, fs := b.Extensions(); pr || fs {
		t.Errorf("posix-rename %v, fsync %v in use", pr, fs)
	}
}

func TestParseURL(t *testing.T) {
	for _, c := range []struct{ in, user, addr, dir, err string }{
		{in: "sftp://backup@host.example/srv/repo", user: "backup", addr: "host.example:22", dir: "/srv/repo"},
		{in: "sftp://backup@host.example:2222/srv/repo/", user: "backup", addr: "host.example:2222", dir: "/srv/repo"},
		{in: "sftp://backup@[2001:db8::1]:2222/r", user: "backup", addr: "[2001:db8::1]:2222", dir: "/r"},
		{in: "sftp://b@h/~/repo", err: "~ is not supported"},
		{in: "sftp://b@h", err: "no folder"},
		{in: "sftp://b@h/", err: "no folder"},
		{in: "sftp://b:secret@h/r", err: "passwords are not supported"},
		{in: "s3://h/r", err: "scheme"},
		{in: "sftp:h:/r", err: "expected sftp://"},
		{in: "sftp://b@h/r?x=1", err: "query"},
	} {
		u, err := url.Parse(c.in)
		if err != nil {
			t.Fatal(err)
		}
		usr, addr, dir, err := sftp.ParseURL(u)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: error %v, want %q", c.in, err, c.err)
			}
			if err != nil && strings.Contains(err.Error(), "secret") {
				t.Errorf("%s: error shows the password: %v", c.in, err)
			}
			continue
		}
		if err != nil || usr != c.user || addr != c.addr || dir != c.dir {
			t.Errorf("%s: %q %q %q %v", c.in, usr, addr, dir, err)
		}
	}
}

// TestHostKeys: an unknown host is refused unless AcceptNew, which records
// its key; a changed key is refused even with AcceptNew, also when an
// open backend reconnects.
func TestHostKeys(t *testing.T) {
	noAgent(t)
	srv := sftptest.Start(t)
	ctx := context.Background()
	dir := t.TempDir()
	u := srv.URL(dir)
	opts := srv.Options()
	opts.KnownHostsFile = filepath.Join(t.TempDir(), "known_hosts")
	fp := srv.HostKeyFingerprint(t)
	// Another host's line, without a final newline.
	pub, _ := os.ReadFile(srv.IdentityFile + ".pub")
	other := "other.example " + strings.Join(strings.Fields(string(pub))[:2], " ")
	os.WriteFile(opts.KnownHostsFile, []byte(other), 0o600)

	_, err := sftp.Open(ctx, u, opts)
	t.Logf("unknown host: %v", err)
	var hke *sftp.HostKeyError
	if !errors.Is(err, backup.ErrAuth) || !errors.As(err, &hke) || hke.Changed {
		t.Fatalf("unknown host: %v", err)
	}
	if hke.Fingerprint != fp || !strings.Contains(err.Error(), fp) || !strings.Contains(err.Error(), "--ssh-accept-new") ||
		!strings.Contains(err.Error(), "verify") {
		t.Errorf("unknown host message does not give the fingerprint %s and the way on: %v", fp, err)
	}
	if retry.IsTransient(err) {
		t.Error("an unknown host key is retried")
	}
	if kh, _ := os.ReadFile(opts.KnownHostsFile); string(kh) != other {
		t.Errorf("known_hosts written without AcceptNew: %q", kh)
	}

	opts.AcceptNew = true
	b, err := sftp.Open(ctx, u, opts)
	if err != nil {
		t.Fatalf("AcceptNew: %v", err)
	}
	kh, err := os.ReadFile(opts.KnownHostsFile)
	lines := strings.Split(string(kh), "\n")
	if err != nil || len(lines) != 3 || lines[0] != other || !strings.HasPrefix(lines[1], "[127.0.0.1]:"+strconv.Itoa(srv.Port)+" ssh-ed25519 ") || lines[2] != "" {
		t.Fatalf("known_hosts after AcceptNew: %q %v", kh, err)
	}
	// A new file is made 0600 in a 0700 folder.
	opts2 := opts
	opts2.KnownHostsFile = filepath.Join(t.TempDir(), "ssh", "known_hosts")
	b0, err := sftp.Open(ctx, u, opts2)
	if err != nil {
		t.Fatal(err)
	}
	b0.Close()
	if st, err := os.Stat(opts2.KnownHostsFile); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("new known_hosts: %v %v", st, err)
	}
	// Recorded: trusted now without AcceptNew, and recorded only once.
	opts.AcceptNew = false
	b2, err := sftp.Open(ctx, u, opts)
	if err != nil {
		t.Fatalf("after recording: %v", err)
	}
	b2.Close()
	if kh2, _ := os.ReadFile(opts.KnownHostsFile); !bytes.Equal(kh, kh2) {
		t.Errorf("known_hosts changed by a second connection: %q", kh2)
	}

	// The server gets a new host key (same address).
	srv.NewHostKey(t)
	srv.Restart(t)
	opts.AcceptNew = true
	_, err = sftp.Open(ctx, u, opts)
	t.Logf("changed host key: %v", err)
	if !errors.Is(err, backup.ErrAuth) || !errors.As(err, &hke) || !hke.Changed || !strings.Contains(err.Error(), "CHANGED") {
		t.Fatalf("changed host key with AcceptNew: %v", err)
	}
	if hke.Fingerprint != srv.HostKeyFingerprint(t) {
		t.Errorf("changed key fingerprint %s, server's %s", hke.Fingerprint, srv.HostKeyFingerprint(t))
	}
	// The backend opened before the change reconnects and refuses too.
	if _, err := b.Stat(ctx, backup.Handle{Type: backup.ConfigFile}); !errors.As(err, &hke) || !hke.Changed {
		t.Errorf("reconnecting to a changed host key: %v", err)
	}
	b.Close()
	if kh2, _ := os.ReadFile(opts.KnownHostsFile); !bytes.Equal(kh, kh2) {
		t.Errorf("known_hosts changed after a refused key: %q", kh2)
	}

	// known_hosts records only an RSA key for the host (the server has
	// only Ed25519): the key changed, although no key of the same type
	// was offered.
	keygen := testenv.Tool(t, "ssh-keygen")
	rsa := filepath.Join(t.TempDir(), "rsa")
	if out, err := exec.Command(keygen, "-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", rsa).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	rsaPub, _ := os.ReadFile(rsa + ".pub")
	f := strings.Fields(string(rsaPub))
	os.WriteFile(opts.KnownHostsFile, []byte("# comment\n[127.0.0.1]:"+strconv.Itoa(srv.Port)+" "+f[0]+" "+f[1]+"\n"), 0o600)
	_, err = sftp.Open(ctx, u, opts)
	t.Logf("host known by an RSA key only: %v", err)
	if !errors.Is(err, backup.ErrAuth) || !errors.As(err, &hke) || !hke.Changed {
		t.Errorf("host known by another key type: %v", err)
	}
	// Once the administrator has checked, the right line is added and
	// the host is trusted again.
	srv.WriteKnownHosts(t)
	opts.KnownHostsFile = srv.KnownHostsFile
	opts.AcceptNew = false
	b3, err := sftp.Open(ctx, u, opts)
	if err != nil {
		t.Fatalf("after fixing known_hosts: %v", err)
	}
	b3.Close()
}

// TestWrongKey: a key the server does not accept is an authentication
// failure, never retried.
func TestWrongKey(t *testing.T) {
	noAgent(t)
	srv := sftptest.Start(t)
	other := filepath.Join(t.TempDir(), "id_other")
	sftptest.GenerateKey(t, other)
	opts := srv.Options()
	opts.IdentityFiles = []string{other}
	_, err := sftp.Open(context.Background(), srv.URL(t.TempDir()), opts)
	t.Logf("wrong key: %v", err)
	if !errors.Is(err, backup.ErrAuth) || retry.IsTransient(err) {
		t.Fatalf("wrong key: %v (transient %v)", err, retry.IsTransient(err))
	}
	if !strings.Contains(err.Error(), srv.Addr()) {
		t.Errorf("error does not name the server: %v", err)
	}
	// No key at all.
	opts.IdentityFiles = []string{filepath.Join(t.TempDir(), "missing")}
	if _, err := sftp.Open(context.Background(), srv.URL(t.TempDir()), opts); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing identity file: %v", err)
	}
}

// TestMissingPath: a repository path whose parent is missing fails Open
// with ErrNotFound; a missing repository folder (parent present) opens,
// every operation says ErrNotFound, and Create makes it.
func TestMissingPath(t *testing.T) {
	noAgent(t)
	srv := sftptest.Start(t)
	ctx := context.Background()
	_, err := sftp.Open(ctx, srv.URL(filepath.Join(t.TempDir(), "nope", "repo")), srv.Options())
	t.Logf("missing parent: %v", err)
	if !errors.Is(err, backup.ErrNotFound) || retry.IsTransient(err) {
		t.Fatalf("Open of a path whose parent is missing: %v", err)
	}
	dir := filepath.Join(t.TempDir(), "repo")
	b, err := sftp.Open(ctx, srv.URL(dir), srv.Options())
	if err != nil {
		t.Fatalf("Open of a missing repository folder: %v", err)
	}
	defer b.Close()
	data := []byte("abc")
	h := backup.Handle{Type: backup.DataFile, Name: hashName(data)}
	_, err = b.Stat(ctx, backup.Handle{Type: backup.ConfigFile})
	t.Logf("missing folder, Stat: %v", err)
	if !errors.Is(err, backup.ErrNotFound) {
		t.Errorf("Stat config: %v", err)
	}
	if err := b.List(ctx, backup.SnapshotFile, func(backup.FileInfo) error { return nil }); !errors.Is(err, backup.ErrNotFound) {
		t.Errorf("List: %v", err)
	}
	if err := b.Save(ctx, h, 3, bytes.NewReader(data)); !errors.Is(err, backup.ErrNotFound) {
		t.Errorf("Save: %v", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Save made the repository folder: %v", err)
	}
	if _, err := backup.Open(ctx, b); !errors.Is(err, backup.ErrNoRepository) {
		t.Errorf("backup.Open: %v", err)
	}
	if err := b.Create(ctx); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"", "snapshots", "manifests", "data"} {
		if st, err := os.Stat(filepath.Join(dir, d)); err != nil || st.Mode().Perm() != 0o700 {
			t.Errorf("%s/%s after Create: %v %v", dir, d, st.Mode(), err)
		}
	}
	if err := b.Save(ctx, h, 3, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(filepath.Join(dir, "data", h.Name[:2], h.Name)); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("stored object: %v %v", st, err)
	}
	if err := b.Save(ctx, backup.Handle{Type: backup.ConfigFile}, 2, strings.NewReader("{}")); err != nil {
		t.Fatal(err)
	}
	if err := b.Create(ctx); !errors.Is(err, fs.ErrExist) {
		t.Errorf("Create over a repository: %v", err)
	}
}

// killingReader reads data and, once past killAt bytes the first time,
// kills the server: the upload is then in progress.
type killingReader struct {
	*bytes.Reader
	killAt int64
	kill   func()
}

func (k *killingReader) Read(p []byte) (int, error) {
	n, err := k.Reader.Read(p)
	if k.kill != nil && k.Size()-int64(k.Len()) > k.killAt {
		k.kill()
		k.kill = nil
	}
	return n, err
}

// TestServerDiesMidUpload: sshd is killed during a large upload. The Save
// fails with a transient error naming the backend and leaves nothing
// under the final name; the same backend reconnects once sshd is back, and
// the upload retried through the retry decorator succeeds.
func TestServerDiesMidUpload(t *testing.T) {
	noAgent(t)
	srv := sftptest.Start(t)
	b, dir := newRepo(t, srv)
	ctx := context.Background()
	data := randomData(48 << 20)
	h := backup.Handle{Type: backup.DataFile, Name: hashName(data)}
	final := filepath.Join(dir, "data", h.Name[:2], h.Name)

	start := time.Now()
	err := b.Save(ctx, h, int64(len(data)), &killingReader{Reader: bytes.NewReader(data), killAt: 8 << 20, kill: srv.Stop})
	t.Logf("Save with the server killed: %v after %v", err, time.Since(start).Round(time.Millisecond))
	if err == nil {
		t.Fatal("Save succeeded although the server was killed")
	}
	if !strings.Contains(err.Error(), b.Location()) || !strings.Contains(b.Location(), "sftp://"+srv.User+"@"+srv.Addr()+dir) {
		t.Errorf("error does not name the backend %s: %v", b.Location(), err)
	}
	if !retry.IsTransient(err) || errors.Is(err, backup.ErrAuth) || errors.Is(err, backup.ErrNotFound) {
		t.Errorf("a dropped connection is not transient: %v", err)
	}
	if _, err := os.Stat(final); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("object under its final name after a failed Save: %v", err)
	}
	// While the server is down: transient failures.
	if _, err := b.Stat(ctx, h); !retry.IsTransient(err) {
		t.Errorf("Stat with the server down: %v (transient %v)", err, retry.IsTransient(err))
	}

	// Retried through the decorator: the first attempts find the server
	// down; it comes back after the second.
	rb := retry.New(b, 6, 50*time.Millisecond, 500*time.Millisecond)
	var retries []string
	rb.OnRetry = func(op string, attempt int, err error) {
		retries = append(retries, err.Error())
		if attempt == 2 {
			srv.Restart(t)
		}
	}
	if err := rb.Save(ctx, h, int64(len(data)), bytes.NewReader(data)); err != nil {
		t.Fatalf("retried Save: %v (retries %q)", err, retries)
	}
	if len(retries) != 2 {
		t.Errorf("retries: %q", retries)
	}
	got, err := os.ReadFile(final)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("stored object differs (%d bytes, %v)", len(got), err)
	}
	// The killed upload's temporary file may remain; List ignores it.
	n := 0
	if err := b.List(ctx, backup.DataFile, func(fi backup.FileInfo) error {
		n++
		if fi.Name != h.Name || fi.Size != int64(len(data)) {
			t.Errorf("listed %+v", fi)
		}
		return nil
	}); err != nil || n != 1 {
		t.Errorf("List: %d objects, %v", n, err)
	}
	ents, _ := os.ReadDir(filepath.Dir(final))
	t.Logf("server folder after the retry: %d entries (the killed upload's temporary file: %v)", len(ents), len(ents) == 2)
}

// TestCancelledSave: a cancelled upload removes its temporary file.
func TestCancelledSave(t *testing.T) {
	noAgent(t)
	srv := sftptest.Start(t)
	b, dir := newRepo(t, srv)
	data := randomData(8 << 20)
	h := backup.Handle{Type: backup.DataFile, Name: hashName(data)}
	ctx, cancel := context.WithCancel(context.Background())
	r := &killingReader{Reader: bytes.NewReader(data), killAt: 1 << 20, kill: cancel}
	if err := b.Save(ctx, h, int64(len(data)), r); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Save: %v", err)
	}
	ents, _ := os.ReadDir(filepath.Join(dir, "data", h.Name[:2]))
	if len(ents) != 0 {
		t.Errorf("a cancelled Save left %v", ents)
	}
	// The connection is still usable.
	if err := b.Save(context.Background(), h, int64(len(data)), bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
}

var _ io.Reader = (*killingReader)(nil)

// TestHungServer: a server that stops answering (frozen, or a network
// dropping packets) does not hang the backend: a cancelled call returns
// at once, the SSH keepalive gives the connection up within about
// 3×Timeout with a transient error, and the next call reconnects.
func TestHungServer(t *testing.T) {
	noAgent(t)
	srv := sftptest.Start(t)
	dir := t.TempDir()
	opts := srv.Options()
	opts.Timeout = time.Second
	b, err := sftp.Open(context.Background(), srv.URL(dir), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.Create(context.Background()); err != nil {
		t.Fatal(err)
	}
	h := backup.Handle{Type: backup.ConfigFile}
	srv.Pause()
	defer srv.Resume()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := b.Stat(ctx, h); !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 2*time.Second {
		t.Errorf("Stat with a deadline on a hung server: %v after %v", err, time.Since(start))
	}
	start = time.Now()
	_, err = b.Stat(context.Background(), h)
	t.Logf("Stat on a hung server: %v after %v", err, time.Since(start).Round(time.Millisecond))
	if !retry.IsTransient(err) || time.Since(start) > 10*time.Second {
		t.Errorf("Stat on a hung server: %v after %v", err, time.Since(start))
	}
	srv.Resume()
	if _, err := b.Stat(context.Background(), h); !errors.Is(err, backup.ErrNotFound) {
		t.Errorf("Stat after the server resumed: %v", err)
	}
}
