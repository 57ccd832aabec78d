package main

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nhscrypt/nhscrypt/internal/testenv"
)

// backupEnv runs the real nhscrypt binary against one repository.
type backupEnv struct {
	t     *testing.T
	bin   string
	repo  string // --repo value (a folder or URL)
	state string
	key   string // admin identity file
	env   []string
	flags []string // on every command (backend options)
}

func (b *backupEnv) cmd(args ...string) *exec.Cmd {
	c := exec.Command(b.bin, append(append([]string{"backup", "--repo", b.repo, "--state-dir", b.state}, b.flags...), args...)...)
	c.Env = append(os.Environ(), b.env...)
	return c
}

func (b *backupEnv) run(args ...string) (string, string, int) {
	b.t.Helper()
	c := b.cmd(args...)
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	err := c.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		b.t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

func (b *backupEnv) must(args ...string) string {
	b.t.Helper()
	out, errs, code := b.run(args...)
	if code != 0 {
		b.t.Fatalf("nhscrypt backup %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errs)
	}
	return out
}

func newBackupEnv(t *testing.T, repo string, env ...string) *backupEnv {
	return newBackupEnvFlags(t, repo, nil, env...)
}

func newBackupEnvFlags(t *testing.T, repo string, flags []string, env ...string) *backupEnv {
	t.Helper()
	dir := t.TempDir()
	b := &backupEnv{t: t, bin: nhscryptBin(t), repo: repo, state: filepath.Join(dir, "state"), key: filepath.Join(dir, "admin.key"), env: env, flags: flags}
	if out, err := exec.Command(b.bin, "keygen", "-o", b.key).CombinedOutput(); err != nil {
		t.Fatalf("keygen: %v %s", err, out)
	}
	pub, err := exec.Command(b.bin, "keygen", "-y", b.key).Output()
	if err != nil {
		t.Fatal(err)
	}
	b.must("init", "-r", strings.TrimSpace(string(pub)), "--object-size", "1048576")
	return b
}

func makeSource(t *testing.T, files, size int) string {
	t.Helper()
	src := filepath.Join(t.TempDir(), "src")
	buf := make([]byte, size)
	for i := 0; i < files; i++ {
		p := filepath.Join(src, fmt.Sprintf("d%02d/f%04d", i%20, i))
		os.MkdirAll(filepath.Dir(p), 0o755)
		rand.Read(buf)
		if err := os.WriteFile(p, buf, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	return src
}

type runSummary struct {
	MessageType string `json:"message_type"`
	Snapshot    string `json:"snapshot_id"`
	Totals      struct {
		Files      int `json:"files"`
		NewFiles   int `json:"new_files"`
		NewObjects int `json:"new_objects"`
	} `json:"totals"`
}

func lastSummary(t *testing.T, out string) runSummary {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var s runSummary
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &s); err != nil || s.MessageType != "summary" {
		t.Fatalf("no summary in %q", out)
	}
	return s
}

// killDuringBackup kills -9 the real binary at many points of a large
// backup: no snapshot may ever name a missing or damaged object, and the
// next run completes and reuses what was stored.
func killDuringBackup(t *testing.T, b *backupEnv, src string, points []time.Duration) {
	t.Helper()
	killed := 0
	for _, d := range points {
		c := b.cmd("run", src)
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(d)
		if c.Process.Signal(syscall.SIGKILL) == nil {
			killed++
		}
		c.Wait()
		// Whatever was left, verification finds no snapshot naming a
		// missing or damaged object.
		if out, errs, code := b.run("verify", "--read-data"); code != 0 {
			t.Fatalf("after kill at %v: verify exit %d\n%s%s", d, code, out, errs)
		}
	}
	if killed < len(points)/2 {
		t.Fatalf("only %d of %d runs were still running when killed: make the source larger", killed, len(points))
	}
	out := b.must("--json", "run", src)
	s := lastSummary(t, out)
	if s.Totals.Files != 400 {
		t.Fatalf("final snapshot has %d files", s.Totals.Files)
	}
	if s.Totals.NewFiles >= 400 {
		t.Errorf("the run after the kills stored all %d files again: nothing reused", s.Totals.NewFiles)
	}
	b.must("verify", "--read-data", "-i", b.key)
	target := t.TempDir()
	b.must("restore", s.Snapshot, "--target", target, "-i", b.key)
	for _, p := range []string{"d00/f0000", "d19/f0399", "d07/f0207"} {
		a, _ := os.ReadFile(filepath.Join(src, p))
		r, err := os.ReadFile(filepath.Join(target, src, p))
		if err != nil || !bytes.Equal(a, r) {
			t.Errorf("%s not restored intact: %v", p, err)
		}
	}
}

var killPoints = []time.Duration{30 * time.Millisecond, 80 * time.Millisecond, 150 * time.Millisecond, 250 * time.Millisecond,
	400 * time.Millisecond, 600 * time.Millisecond, 900 * time.Millisecond}

func TestKill9DuringBackupLocal(t *testing.T) {
	src := makeSource(t, 400, 256<<10) // 100 MiB in 400 files
	b := newBackupEnv(t, filepath.Join(t.TempDir(), "repo"))
	killDuringBackup(t, b, src, killPoints)
}

// TestBackupDiskFull: a repository on a full (small tmpfs) disk gives a
// clear error, exit 1, and records no snapshot.
func TestBackupDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Missing(t, "mounting a tmpfs needs root")
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", mnt).CombinedOutput(); err != nil {
		testenv.Missing(t, "cannot mount a tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })
	b := newBackupEnv(t, filepath.Join(mnt, "repo"))
	src := makeSource(t, 40, 256<<10) // 10 MiB of random data into 6 MiB
	out, errs, code := b.run("run", src)
	if code != 1 || !strings.Contains(errs, "no space left on device") {
		t.Fatalf("disk full: exit %d\n%s%s", code, out, errs)
	}
	if out, _, _ := b.run("snapshots"); !strings.Contains(out, "0 snapshots") {
		t.Errorf("a snapshot was recorded on a full disk:\n%s", out)
	}
	b.must("verify", "--read-data")
	// After freeing space (a smaller source), a run succeeds.
	small := makeSource(t, 4, 1000)
	b.must("run", small)
}
