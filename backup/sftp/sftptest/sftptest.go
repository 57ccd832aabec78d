// Package sftptest runs a real OpenSSH sshd for tests and benchmarks of the
// SFTP backend: Debian's /usr/sbin/sshd on 127.0.0.1 and a random high
// port, with its own sshd_config, host key and authorized key (all made
// with ssh-keygen when the server starts, in a temporary folder), serving
// internal-sftp to the current user (root in CI). Nothing is mocked.
//
// Without sshd or ssh-keygen the test is skipped; with
// NHSCRYPT_TEST_REQUIRE_SERVICES=1 it fails instead (see internal/testenv).
package sftptest

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nhscrypt/nhscrypt/backup/sftp"
	"github.com/nhscrypt/nhscrypt/internal/testenv"
)

// Server is a running sshd. Its fields describe it; do not change them.
type Server struct {
	Host string // 127.0.0.1
	Port int
	User string // the current user, whom the server lets in
	// Dir holds the server's files: sshd_config, host key, authorized
	// keys, the client key and a known_hosts naming the server.
	Dir string
	// IdentityFile is a private key (no passphrase) the server accepts.
	IdentityFile string
	// KnownHostsFile holds the server's host key under [127.0.0.1]:port.
	KnownHostsFile string
	// HostKeyFile is the server's private host key (ssh-keygen makes a
	// new one with NewHostKey).
	HostKeyFile string

	sshd   string
	keygen string
	config string
	// sftpArgs are internal-sftp's options.
	sftpArgs string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	log  *logBuffer
}

// Start starts an sshd for t and stops it when t ends.
func Start(t testing.TB) *Server {
	t.Helper()
	return StartSFTP(t, "")
}

// StartSFTP is Start with options for internal-sftp (see sftp-server(8)),
// e.g. "-P posix-rename,fsync,fsetstat" to deny those requests.
func StartSFTP(t testing.TB, sftpArgs string) *Server {
	t.Helper()
	sshd := sshdPath(t)
	keygen := testenv.Tool(t, "ssh-keygen")
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		if _, serr := os.Stat("/run/sshd"); serr != nil {
			testenv.Missing(t, "sshd needs /run/sshd, which could not be made: %v", err)
		}
	}
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	s := &Server{
		Host: "127.0.0.1", User: u.Username, Dir: dir,
		IdentityFile:   filepath.Join(dir, "id_ed25519"),
		KnownHostsFile: filepath.Join(dir, "known_hosts"),
		HostKeyFile:    filepath.Join(dir, "ssh_host_ed25519_key"),
		sshd:           sshd, keygen: keygen, config: filepath.Join(dir, "sshd_config"),
		log: &logBuffer{}, sftpArgs: sftpArgs,
	}
	GenerateKey(t, s.HostKeyFile)
	GenerateKey(t, s.IdentityFile)
	pub, err := os.ReadFile(s.IdentityFile + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), pub, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("sshd log:\n%s", s.Log())
		}
	})
	// A port picked at random may be taken between picking and binding:
	// try a few.
	for attempt := 0; ; attempt++ {
		s.Port = freePort(t)
		if err := s.writeConfig(); err != nil {
			t.Fatal(err)
		}
		err := s.start()
		if err == nil {
			break
		}
		if attempt == 4 {
			t.Fatalf("starting sshd: %v\n%s", err, s.Log())
		}
	}
	s.WriteKnownHosts(t)
	return s
}

// sshdPath finds sshd, which Debian installs in /usr/sbin (not always in
// a user's PATH). sshd must be run by its absolute path.
func sshdPath(t testing.TB) string {
	if p, err := exec.LookPath("sshd"); err == nil {
		if a, err := filepath.Abs(p); err == nil {
			return a
		}
	}
	if p, err := exec.LookPath("/usr/sbin/sshd"); err == nil {
		return p
	}
	testenv.Missing(t, "sshd not installed (make test installs openssh-server)")
	return ""
}

// GenerateKey makes an Ed25519 key pair without a passphrase at path and
// path.pub with ssh-keygen.
func GenerateKey(t testing.TB, path string) {
	t.Helper()
	keygen := testenv.Tool(t, "ssh-keygen")
	os.Remove(path)
	os.Remove(path + ".pub")
	out, err := exec.Command(keygen, "-q", "-t", "ed25519", "-N", "", "-C", "sftptest", "-f", path).CombinedOutput()
	if err != nil {
		t.Fatalf("ssh-keygen: %v: %s", err, out)
	}
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func (s *Server) writeConfig() error {
	cfg := fmt.Sprintf(`# sftptest: a throw-away sshd for tests
ListenAddress %s:%d
HostKey %s
PidFile %s
AuthorizedKeysFile %s
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
UseDNS no
PrintMotd no
MaxStartups 100:30:200
MaxSessions 64
LogLevel VERBOSE
Subsystem sftp internal-sftp %s
`, s.Host, s.Port, s.HostKeyFile, filepath.Join(s.Dir, "sshd.pid"), filepath.Join(s.Dir, "authorized_keys"), s.sftpArgs)
	return os.WriteFile(s.config, []byte(cfg), 0o600)
}

// Addr is host:port.
func (s *Server) Addr() string { return net.JoinHostPort(s.Host, strconv.Itoa(s.Port)) }

// URL is sftp://user@127.0.0.1:port/path for a folder path (absolute: the
// server is not chrooted, so it is the same path as on this machine).
func (s *Server) URL(path string) *url.URL {
	return &url.URL{Scheme: "sftp", User: url.User(s.User), Host: s.Addr(), Path: path}
}

// Options are backend options that trust the server's host key and log
// in with IdentityFile only.
func (s *Server) Options() sftp.Options {
	return sftp.Options{
		KnownHostsFile: s.KnownHostsFile,
		IdentityFiles:  []string{s.IdentityFile},
		Timeout:        10 * time.Second,
	}
}

// WriteKnownHosts (re)writes KnownHostsFile with the server's current host
// key.
func (s *Server) WriteKnownHosts(t testing.TB) {
	t.Helper()
	pub, err := os.ReadFile(s.HostKeyFile + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(pub))
	line := fmt.Sprintf("[%s]:%d %s %s\n", s.Host, s.Port, f[0], f[1])
	if err := os.WriteFile(s.KnownHostsFile, []byte(line), 0o600); err != nil {
		t.Fatal(err)
	}
}

// HostKeyFingerprint is the SHA256 fingerprint of the server's host key,
// as ssh-keygen -l prints it ("SHA256:…").
func (s *Server) HostKeyFingerprint(t testing.TB) string {
	t.Helper()
	out, err := exec.Command(s.keygen, "-l", "-f", s.HostKeyFile+".pub").Output()
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(out))
	if len(f) < 2 {
		t.Fatalf("ssh-keygen -l: %q", out)
	}
	return f[1]
}

// NewHostKey replaces the server's host key with a new one; it takes
// effect at the next Restart. KnownHostsFile is left unchanged.
func (s *Server) NewHostKey(t testing.TB) {
	t.Helper()
	GenerateKey(t, s.HostKeyFile)
}

func (s *Server) start() error {
	cmd := exec.Command(s.sshd, "-D", "-e", "-f", s.config)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// An *os.File, so that Wait does not wait for sshd's children, which
	// inherit it.
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	err = cmd.Start()
	pw.Close()
	if err != nil {
		pr.Close()
		return err
	}
	done := make(chan struct{})
	ready := make(chan struct{})
	go func() {
		defer pr.Close()
		var once sync.Once
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			s.log.Write(append(sc.Bytes(), '\n'))
			if strings.Contains(sc.Text(), "Server listening on") {
				once.Do(func() { close(ready) })
			}
		}
		io.Copy(s.log, pr)
	}()
	go func() {
		cmd.Wait()
		close(done)
	}()
	select {
	case <-ready:
	case <-done:
		return fmt.Errorf("sshd exited")
	case <-time.After(15 * time.Second):
		killTree(cmd.Process.Pid)
		<-done
		return fmt.Errorf("sshd did not start listening in 15s")
	}
	s.mu.Lock()
	s.cmd, s.done = cmd, done
	s.mu.Unlock()
	return nil
}

// Stop kills sshd and every process it started (one per connection and
// session) with SIGKILL, so that every client connection drops at once, as
// when a server dies. Stopping a stopped server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	killTree(cmd.Process.Pid)
	<-done
}

// Restart starts the server again on the same port, with its current host
// key (Stop first if it is running).
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Stop()
	var err error
	// The port may linger briefly after SIGKILL; sshd sets SO_REUSEADDR,
	// but retry a little anyway.
	for range 20 {
		if err = s.start(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("restarting sshd on port %d: %v\n%s", s.Port, err, s.Log())
}

// Pause freezes sshd and every process it started (SIGSTOP): connections
// stay open but nothing answers, as with a hung server or a network that
// drops packets. Resume undoes it.
func (s *Server) Pause() { s.signalTree(syscall.SIGSTOP) }

// Resume lets a paused server run again (SIGCONT).
func (s *Server) Resume() { s.signalTree(syscall.SIGCONT) }

func (s *Server) signalTree(sig syscall.Signal) {
	s.mu.Lock()
	cmd := s.cmd
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	for _, p := range tree(cmd.Process.Pid) {
		syscall.Kill(p, sig)
	}
}

// Log returns what sshd has logged.
func (s *Server) Log() string { return s.log.String() }

// killTree SIGKILLs pid and all its descendants. sshd's per-connection
// processes start their own sessions (setsid), so the process group does
// not hold them: they are found through /proc. The parent is stopped
// first so that it forks no new ones meanwhile.
func killTree(pid int) {
	syscall.Kill(pid, syscall.SIGSTOP)
	for _, p := range tree(pid) {
		syscall.Kill(p, syscall.SIGKILL)
	}
	syscall.Kill(-pid, syscall.SIGKILL)
}

// tree lists pid and its descendants.
func tree(pid int) []int {
	pids := []int{pid}
	children := childMap()
	for i := 0; i < len(pids); i++ {
		pids = append(pids, children[pids[i]]...)
	}
	return pids
}

// childMap maps each process ID to its children's, from /proc.
func childMap() map[int][]int {
	m := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid …; comm may hold spaces and parentheses.
		i := bytes.LastIndexByte(data, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(data[i+1:]))
		if len(f) < 2 {
			continue
		}
		ppid, err := strconv.Atoi(f[1])
		if err != nil {
			continue
		}
		m[ppid] = append(m[ppid], pid)
	}
	return m
}

type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}
