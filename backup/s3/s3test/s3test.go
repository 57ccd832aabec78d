// Package s3test runs a real S3-compatible server, versitygw
// (github.com/versity/versitygw, Apache-2.0) over a posix folder, for the
// tests of the S3 backend and of anything that stores backups in S3.
//
// The server binary is looked for as $NHSCRYPT_VERSITYGW, then
// versitygw in $(go env GOBIN) or $(go env GOPATH)/bin, then on $PATH.
// When it is missing, Start builds it with
//
//	go install github.com/versity/versitygw/cmd/versitygw@v1.8.0
//
// (`make test-tools` does the same ahead of the tests). When it cannot be
// had, tests are skipped, or fail under NHSCRYPT_TEST_REQUIRE_SERVICES=1.
package s3test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/nhscrypt/nhscrypt/internal/testenv"
)

// Package is the versitygw release the tests run against.
const Package = "github.com/versity/versitygw/cmd/versitygw@" + Version

// Version is the versitygw release.
const Version = "v1.8.0"

// Server is one running versitygw on 127.0.0.1.
type Server struct {
	// Endpoint is host:port.
	Endpoint string
	// AccessKey and SecretKey are the root user's.
	AccessKey, SecretKey string
	// DataDir is the posix root: bucket B's object K is the file
	// DataDir/B/K (its current version).
	DataDir string
	// VersionsDir holds older object versions.
	VersionsDir string
	// CertPEM is the server's self-signed certificate when it serves
	// HTTPS (StartTLS), else nil.
	CertPEM []byte

	t       testing.TB
	bin     string
	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	out     *testenv.Output
	tlsArgs []string
}

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// Binary returns the path of the versitygw binary, building it with go
// install when it is missing.
func Binary() (string, error) {
	binOnce.Do(func() { binPath, binErr = findOrBuild() })
	return binPath, binErr
}

func goBinDir() string {
	out, err := exec.Command("go", "env", "GOBIN", "GOPATH").Output()
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) > 0 && strings.TrimSpace(lines[0]) != "" {
		return strings.TrimSpace(lines[0])
	}
	if len(lines) > 1 {
		gp := strings.TrimSpace(lines[1])
		if i := strings.IndexByte(gp, os.PathListSeparator); i >= 0 {
			gp = gp[:i]
		}
		if gp != "" {
			return filepath.Join(gp, "bin")
		}
	}
	return ""
}

func findOrBuild() (string, error) {
	if p := os.Getenv("NHSCRYPT_VERSITYGW"); p != "" {
		if !isExec(p) {
			return "", fmt.Errorf("NHSCRYPT_VERSITYGW=%s is not an executable", p)
		}
		return p, nil
	}
	dir := goBinDir()
	if dir != "" {
		if p := filepath.Join(dir, "versitygw"); isExec(p) && isRelease(p) {
			return p, nil
		}
	}
	if p, err := exec.LookPath("versitygw"); err == nil && isRelease(p) {
		return p, nil
	}
	if dir == "" {
		return "", fmt.Errorf("versitygw %s not found and go is not available to build it", Version)
	}
	// Build it: about 2.5 minutes cold, seconds with a warm cache.
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "install", Package)
	cmd.Dir = os.TempDir() // outside any module: install the pinned release
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go install %s: %v: %s", Package, err, lastLines(out, 10))
	}
	p := filepath.Join(dir, "versitygw")
	if !isExec(p) {
		return "", fmt.Errorf("go install %s did not produce %s", Package, p)
	}
	return p, nil
}

// isRelease reports whether the binary at p was built from the pinned
// release (go version -m reads the module version go install records).
func isRelease(p string) bool {
	out, err := exec.Command("go", "version", "-m", p).Output()
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) >= 3 && f[0] == "mod" && f[1] == "github.com/versity/versitygw" {
			return f[2] == Version
		}
	}
	return false
}

func isExec(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Start starts a server in fresh folders under t.TempDir() and stops it
// when t ends. It skips t (or fails it under
// NHSCRYPT_TEST_REQUIRE_SERVICES=1) when versitygw cannot be had.
func Start(t testing.TB) *Server {
	t.Helper()
	return start(t, false)
}

// StartTLS is Start with the server on HTTPS, with a fresh self-signed
// certificate for 127.0.0.1 (CertPEM; trust it with RootCAs).
func StartTLS(t testing.TB) *Server {
	t.Helper()
	return start(t, true)
}

func start(t testing.TB, withTLS bool) *Server {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		testenv.Missing(t, "versitygw unavailable (make test-tools installs it): %v", err)
	}
	dir := t.TempDir()
	s := &Server{
		AccessKey:   "nhscrypt" + randomHex(4),
		SecretKey:   randomHex(20),
		DataDir:     filepath.Join(dir, "data"),
		VersionsDir: filepath.Join(dir, "versions"),
		t:           t,
		bin:         bin,
		out:         &testenv.Output{},
	}
	for _, d := range []string{s.DataDir, s.VersionsDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if withTLS {
		certPEM, keyPEM, err := selfSigned()
		if err != nil {
			t.Fatal(err)
		}
		cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
		if err := os.WriteFile(cert, certPEM, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(key, keyPEM, 0o600); err != nil {
			t.Fatal(err)
		}
		s.CertPEM = certPEM
		s.tlsArgs = []string{"--cert", cert, "--key", key}
	}
	var lastErr error
	for range 5 { // a free port may be taken between probe and listen
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		s.Endpoint = fmt.Sprintf("127.0.0.1:%d", port)
		if lastErr = s.start(); lastErr == nil {
			break
		}
	}
	if lastErr != nil {
		t.Fatalf("starting versitygw: %v", lastErr)
	}
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() && s.out.Len() > 0 {
			t.Logf("versitygw output:\n%s", lastLines(s.out.Bytes(), 40))
		}
	})
	return s
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return fmt.Errorf("versitygw already running")
	}
	args := append([]string{"--port", s.Endpoint, "--quiet"}, s.tlsArgs...)
	args = append(args, "posix", "--versioning-dir", s.VersionsDir, s.DataDir)
	cmd := exec.Command(s.bin, args...)
	// A clean environment: versitygw reads many VGW_* variables.
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"),
		"ROOT_ACCESS_KEY=" + s.AccessKey, "ROOT_SECRET_KEY=" + s.SecretKey}
	cmd.Stdout, cmd.Stderr = s.out, s.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case <-exited:
			return fmt.Errorf("versitygw exited: %s", lastLines(s.out.Bytes(), 10))
		default:
		}
		c, err := net.DialTimeout("tcp", s.Endpoint, time.Second)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-exited
			return fmt.Errorf("versitygw not listening on %s after 15s", s.Endpoint)
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.cmd, s.exited = cmd, exited
	return nil
}

// Stop kills the server at once (SIGKILL, as a crash or a pulled cable
// would), leaving its folders as they are. Stopping a stopped server does
// nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	<-s.exited
	s.cmd, s.exited = nil, nil
}

// Restart starts a stopped server again on the same port and folders.
func (s *Server) Restart() {
	s.t.Helper()
	var err error
	for i := range 50 { // the port may linger briefly
		if err = s.start(); err == nil {
			return
		}
		time.Sleep(time.Duration(i+1) * 20 * time.Millisecond)
	}
	s.t.Fatalf("restarting versitygw on %s: %v", s.Endpoint, err)
}

// Credentials are the root user's static credentials.
func (s *Server) Credentials() *credentials.Credentials {
	return credentials.NewStaticV4(s.AccessKey, s.SecretKey, "")
}

// Client is a raw minio-go client with the root user's credentials, for
// setting up buckets and for checking what the server itself allows.
func (s *Server) Client() *minio.Client {
	s.t.Helper()
	o := &minio.Options{Creds: s.Credentials(), Region: "us-east-1"}
	if s.CertPEM != nil {
		t, err := minio.DefaultTransport(true)
		if err != nil {
			s.t.Fatal(err)
		}
		t.TLSClientConfig.RootCAs = s.RootCAs()
		o.Secure, o.Transport = true, t
	}
	c, err := minio.New(s.Endpoint, o)
	if err != nil {
		s.t.Fatal(err)
	}
	return c
}

// RootCAs trusts the server's certificate (nil without TLS).
func (s *Server) RootCAs() *x509.CertPool {
	if s.CertPEM == nil {
		return nil
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(s.CertPEM)
	return pool
}

// URL is the repository URL s3+http://endpoint/bucket[/prefix], or
// s3://… when the server serves HTTPS.
func (s *Server) URL(bucket, prefix string) *url.URL {
	p := "/" + bucket
	if prefix != "" {
		p += "/" + strings.Trim(prefix, "/")
	}
	scheme := "s3+http"
	if s.CertPEM != nil {
		scheme = "s3"
	}
	return &url.URL{Scheme: scheme, Host: s.Endpoint, Path: p}
}

// selfSigned makes a P-256 certificate for 127.0.0.1, valid for a day.
func selfSigned() (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "nhscrypt s3test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost"},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), nil
}

// BucketOptions says how to create a bucket.
type BucketOptions struct {
	// ObjectLock creates the bucket with object lock enabled (which
	// turns on versioning).
	ObjectLock bool
	// Versioning turns on versioning without object lock.
	Versioning bool
}

// CreateBucket creates a bucket named name.
func (s *Server) CreateBucket(name string, o BucketOptions) {
	s.t.Helper()
	ctx := context.Background()
	c := s.Client()
	if err := c.MakeBucket(ctx, name, minio.MakeBucketOptions{ObjectLocking: o.ObjectLock}); err != nil {
		s.t.Fatalf("creating bucket %s: %v", name, err)
	}
	if o.Versioning && !o.ObjectLock {
		if err := c.EnableVersioning(ctx, name); err != nil {
			s.t.Fatalf("enabling versioning on %s: %v", name, err)
		}
	}
}

// NewBucket creates a bucket with a fresh name and returns the name.
func (s *Server) NewBucket(o BucketOptions) string {
	s.t.Helper()
	name := "nhscrypt-" + randomHex(6)
	s.CreateBucket(name, o)
	return name
}

// ObjectPath is the file holding the current version of key in bucket.
func (s *Server) ObjectPath(bucket, key string) string {
	return filepath.Join(s.DataDir, bucket, filepath.FromSlash(key))
}
