package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nhscrypt/nhscrypt/backup/s3/s3test"
	"github.com/nhscrypt/nhscrypt/backup/sftp/sftptest"
)

func s3Env(srv *s3test.Server) []string {
	return []string{"AWS_ACCESS_KEY_ID=" + srv.AccessKey, "AWS_SECRET_ACCESS_KEY=" + srv.SecretKey, "AWS_REGION=us-east-1"}
}

func sshFlags(srv *sftptest.Server) []string {
	return []string{"--ssh-identity", srv.IdentityFile, "--ssh-known-hosts", srv.KnownHostsFile}
}

func TestKill9DuringBackupS3(t *testing.T) {
	srv := s3test.Start(t)
	bucket := srv.NewBucket(s3test.BucketOptions{})
	b := newBackupEnv(t, srv.URL(bucket, "host-a").String(), s3Env(srv)...)
	src := makeSource(t, 400, 256<<10)
	killDuringBackup(t, b, src, killPoints)
}

func TestKill9DuringBackupSFTP(t *testing.T) {
	srv := sftptest.Start(t)
	dir := t.TempDir()
	b := newBackupEnvFlags(t, srv.URL(dir+"/repo").String(), sshFlags(srv))
	src := makeSource(t, 400, 256<<10)
	killDuringBackup(t, b, src, killPoints)
}

// TestRemoteErrors: exit codes and messages of the network backends.
func TestRemoteErrors(t *testing.T) {
	srv := s3test.Start(t)
	bucket := srv.NewBucket(s3test.BucketOptions{})
	// Wrong credentials: 10, with a hint.
	bad := &backupEnv{t: t, bin: nhscryptBin(t), repo: srv.URL(bucket, "x").String(), state: t.TempDir(),
		env: []string{"AWS_ACCESS_KEY_ID=" + srv.AccessKey, "AWS_SECRET_ACCESS_KEY=wrong", "AWS_REGION=us-east-1"}}
	if _, errs, code := bad.run("snapshots"); code != 10 || !strings.Contains(errs, "hint: check AWS_ACCESS_KEY_ID") {
		t.Errorf("wrong S3 secret: exit %d: %s", code, errs)
	}
	// A missing bucket: 11.
	nob := &backupEnv{t: t, bin: nhscryptBin(t), repo: srv.URL("no-such-bucket", "x").String(), state: t.TempDir(), env: s3Env(srv)}
	if _, errs, code := nob.run("snapshots"); code != 11 {
		t.Errorf("missing bucket: exit %d: %s", code, errs)
	}
	// An SFTP server whose host key is unknown: 10 with a hint; accepted
	// with --ssh-accept-new.
	ss := sftptest.Start(t)
	dir := t.TempDir()
	known := t.TempDir() + "/known_hosts"
	flags := []string{"--ssh-identity", ss.IdentityFile, "--ssh-known-hosts", known}
	u := &backupEnv{t: t, bin: nhscryptBin(t), repo: ss.URL(dir + "/repo").String(), state: t.TempDir()}
	if _, errs, code := u.run(append(flags, "snapshots")...); code != 10 || !strings.Contains(errs, "--ssh-accept-new") {
		t.Errorf("unknown host key: exit %d: %s", code, errs)
	}
	if _, errs, code := u.run(append(flags, "--ssh-accept-new", "snapshots")...); code != 11 || !strings.Contains(errs, "no nhscrypt repository here") {
		t.Errorf("accept-new then no repository: exit %d: %s", code, errs)
	}
	// A changed host key is refused even with --ssh-accept-new.
	ss.NewHostKey(t)
	ss.Restart(t)
	if _, errs, code := u.run(append(flags, "--ssh-accept-new", "snapshots")...); code != 10 {
		t.Errorf("changed host key: exit %d: %s", code, errs)
	}
}

// TestServerStopsMidRun: the S3 server goes away during a run: exit 1
// naming the backend, no snapshot; the next run succeeds.
func TestServerStopsMidRun(t *testing.T) {
	srv := s3test.Start(t)
	bucket := srv.NewBucket(s3test.BucketOptions{})
	b := newBackupEnv(t, srv.URL(bucket, "host-a").String(), s3Env(srv)...)
	src := makeSource(t, 200, 256<<10)
	c := b.cmd("--retries", "2", "run", src)
	var errb strings.Builder
	c.Stderr = &errb
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	srv.Stop()
	err := c.Wait()
	if err == nil || c.ProcessState.ExitCode() != 1 || !strings.Contains(errb.String(), "s3+http://"+srv.Endpoint) {
		t.Fatalf("run with the server gone: %v exit %d: %s", err, c.ProcessState.ExitCode(), errb.String())
	}
	srv.Restart()
	if out, _, _ := b.run("snapshots"); !strings.Contains(out, "0 snapshots") {
		t.Errorf("a snapshot was recorded:\n%s", out)
	}
	b.must("run", src)
	b.must("verify", "--read-data", "-i", b.key)
}

// TestObjectLockCLI: with --retain-days every object is locked; forget and
// prune report what they cannot delete yet (exit 3) and the S3 server keeps
// it.
func TestObjectLockCLI(t *testing.T) {
	srv := s3test.Start(t)
	bucket := srv.NewBucket(s3test.BucketOptions{ObjectLock: true})
	b := newBackupEnv(t, srv.URL(bucket, "host-a").String(), s3Env(srv)...)
	src := makeSource(t, 10, 1000)
	lock := []string{"--retain-days", "1", "--retain-mode", "governance"}
	b.must(append(lock, "run", src)...)
	os.WriteFile(filepath.Join(src, "d00/f0000"), []byte("changed"), 0o640)
	b.must(append(lock, "run", src)...)
	out, errs, code := b.run("forget", "--keep-last", "1", "--prune", "--grace", "0s")
	if code != 3 || !strings.Contains(errs, "not removed yet") {
		t.Fatalf("forget under object lock: exit %d\n%s%s", code, out, errs)
	}
	if out, _, _ := b.run("snapshots"); !strings.Contains(out, "2 snapshots") {
		t.Errorf("a locked snapshot was deleted:\n%s", out)
	}
	b.must("verify", "--read-data", "-i", b.key)
	// A bad mode is a usage error.
	if _, errs, code := b.run("--retain-days", "1", "--retain-mode", "forever", "snapshots"); code != 2 {
		t.Errorf("bad retain mode: exit %d: %s", code, errs)
	}
}

// TestSSHDStopsMidRun: sshd goes away during a run: exit 1 naming the
// backend, no snapshot; the next run succeeds and reuses what was stored.
func TestSSHDStopsMidRun(t *testing.T) {
	srv := sftptest.Start(t)
	b := newBackupEnvFlags(t, srv.URL(t.TempDir()+"/repo").String(), append(sshFlags(srv), "--retries", "2"))
	src := makeSource(t, 200, 256<<10)
	c := b.cmd("run", src)
	var errb strings.Builder
	c.Stderr = &errb
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(400 * time.Millisecond)
	srv.Stop()
	err := c.Wait()
	if err == nil || c.ProcessState.ExitCode() != 1 || !strings.Contains(errb.String(), "sftp://") {
		t.Fatalf("run with sshd gone: %v exit %d: %s", err, c.ProcessState.ExitCode(), errb.String())
	}
	srv.Restart(t)
	if out, _, _ := b.run("snapshots"); !strings.Contains(out, "0 snapshots") {
		t.Errorf("a snapshot was recorded:\n%s", out)
	}
	b.must("run", src)
	b.must("verify", "--read-data", "-i", b.key)
	// A repository path whose parent does not exist: 11.
	missing := &backupEnv{t: t, bin: b.bin, repo: srv.URL("/nonexistent/parent/repo").String(), state: t.TempDir(), flags: sshFlags(srv)}
	if _, errs, code := missing.run("snapshots"); code != 11 {
		t.Errorf("missing SFTP path: exit %d: %s", code, errs)
	}
}
