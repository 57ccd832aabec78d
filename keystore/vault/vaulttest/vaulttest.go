// Package vaulttest runs a real HashiCorp Vault dev server for tests: Start
// launches `vault server -dev` on a random 127.0.0.1 port with a known root
// token, enables the transit engine and the AppRole and TLS certificate
// auth methods (KV version 2 is mounted at secret/ in dev mode), and stops
// it when the test ends.
//
// The vault binary is found through $NHSCRYPT_VAULT_BIN, then the cache
// folder scripts/install-vault.sh installs into, then $PATH. Without one
// the test is skipped, or fails when NHSCRYPT_TEST_REQUIRE_SERVICES=1 (CI):
// `make test` builds it.
package vaulttest

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/nhscrypt/nhscrypt/internal/testenv"
)

// BinEnv names the variable that points at the vault binary.
const BinEnv = "NHSCRYPT_VAULT_BIN"

// CacheBins are where scripts/install-vault.sh links the binary
// ($NHSCRYPT_TEST_CACHE, as root, and otherwise), tried after BinEnv.
func CacheBins() []string {
	var bins []string
	if d := os.Getenv("NHSCRYPT_TEST_CACHE"); d != "" {
		bins = append(bins, filepath.Join(d, "bin", "vault"))
	}
	bins = append(bins, "/var/cache/nhscrypt-test/bin/vault")
	if d, err := os.UserCacheDir(); err == nil {
		bins = append(bins, filepath.Join(d, "nhscrypt-test", "bin", "vault"))
	}
	return bins
}

// Binary returns the path of the vault binary, or skips (fails in CI) t.
func Binary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv(BinEnv); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%s=%s: %v", BinEnv, p, err)
		}
		return p
	}
	for _, p := range CacheBins() {
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p
		}
	}
	if p, err := exec.LookPath("vault"); err == nil {
		return p
	}
	testenv.Missing(t, "vault binary not found (set %s, or run `make test`, which builds it with scripts/install-vault.sh)", BinEnv)
	return ""
}

// Options change how Start runs the server.
type Options struct {
	// TLS serves HTTPS with a CA and certificate the server makes
	// (-dev-tls); Server.CACert is the CA file. Needed for certificate
	// auth, which reads the client certificate of the TLS connection.
	TLS bool
}

// Server is a running Vault dev server.
type Server struct {
	Addr      string // http(s)://127.0.0.1:PORT
	RootToken string
	CACert    string // with TLS: the CA certificate file (PEM)

	cmd     *exec.Cmd
	out     *testenv.Output
	waitErr chan error
	stop    sync.Once
}

// Start starts a dev server and stops it when t ends.
func Start(t testing.TB) *Server { return StartWith(t, Options{}) }

// StartWith starts a dev server with options and stops it when t ends.
func StartWith(t testing.TB, opts Options) *Server {
	t.Helper()
	bin := Binary(t)
	var lastErr error
	// The port is picked free, then handed to vault: another process can
	// take it in between, so try again a few times.
	for range 3 {
		s, err := start(t, bin, opts)
		if err == nil {
			return s
		}
		lastErr = err
	}
	t.Fatalf("starting vault: %v", lastErr)
	return nil
}

func start(t testing.TB, bin string, opts Options) (*Server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	dir := t.TempDir()
	var tok [16]byte
	rand.Read(tok[:])
	s := &Server{RootToken: "root-" + hex.EncodeToString(tok[:]), out: &testenv.Output{}, waitErr: make(chan error, 1)}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	args := []string{"server", "-dev", "-dev-root-token-id=" + s.RootToken, "-dev-listen-address=" + addr, "-dev-no-store-token", "-log-level=warn"}
	scheme := "http"
	if opts.TLS {
		args = append(args, "-dev-tls", "-dev-tls-cert-dir="+dir)
		scheme = "https"
		s.CACert = filepath.Join(dir, "vault-ca.pem")
	}
	s.Addr = scheme + "://" + addr
	s.cmd = exec.Command(bin, args...)
	// None of the caller's VAULT_* variables, and a home of its own.
	s.cmd.Env = []string{"HOME=" + dir, "PATH=" + os.Getenv("PATH")}
	s.cmd.Dir = dir
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { s.waitErr <- s.cmd.Wait() }()
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("vault server output:\n%s", s.out.String())
		}
	})
	if err := s.waitHealthy(60 * time.Second); err != nil {
		s.Stop()
		return nil, fmt.Errorf("%w\nvault output:\n%s", err, s.out.String())
	}
	root := s.Client(t, s.RootToken)
	ctx := context.Background()
	for _, m := range []struct{ path, typ string }{
		{"sys/mounts/transit", "transit"},
		{"sys/auth/approle", "approle"},
		{"sys/auth/cert", "cert"},
	} {
		if _, err := root.Logical().WriteWithContext(ctx, m.path, map[string]any{"type": m.typ}); err != nil {
			s.Stop()
			return nil, fmt.Errorf("enabling %s: %w", m.typ, err)
		}
	}
	return s, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// waitHealthy polls /v1/sys/health until the server is initialised,
// unsealed and active.
func (s *Server) waitHealthy(limit time.Duration) error {
	hc := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if s.CACert != "" && hc.Transport == nil {
			if pem, err := os.ReadFile(s.CACert); err == nil {
				pool := x509.NewCertPool()
				pool.AppendCertsFromPEM(pem)
				hc.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
			}
		}
		if s.CACert == "" || hc.Transport != nil {
			resp, err := hc.Get(s.Addr + "/v1/sys/health")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return nil
				}
			}
		}
		select {
		case err := <-s.waitErr:
			s.waitErr <- err
			return fmt.Errorf("vault exited: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	return errors.New("vault not healthy after " + limit.String())
}

// Stop stops the server (SIGTERM, then SIGKILL after 10 s) and waits for
// it. It is safe to call more than once; tests call it to see how clients
// behave when Vault goes away.
func (s *Server) Stop() {
	s.stop.Do(func() {
		s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-s.waitErr:
			s.waitErr <- err
		case <-time.After(10 * time.Second):
			s.cmd.Process.Kill()
			s.waitErr <- <-s.waitErr
		}
	})
}

// Client returns an api client for the server using token, without
// retries (so failures show at once).
func (s *Server) Client(t testing.TB, token string) *api.Client {
	t.Helper()
	conf := api.DefaultConfig()
	if conf.Error != nil {
		t.Fatal(conf.Error)
	}
	conf.Address = s.Addr
	conf.MaxRetries = 0
	if s.CACert != "" {
		if err := conf.ConfigureTLS(&api.TLSConfig{CACert: s.CACert}); err != nil {
			t.Fatal(err)
		}
	}
	c, err := api.NewClient(conf)
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(token)
	return c
}

// Root returns a client with the root token.
func (s *Server) Root(t testing.TB) *api.Client { return s.Client(t, s.RootToken) }

// WritePolicy writes an ACL policy (HCL).
func (s *Server) WritePolicy(t testing.TB, name, hcl string) {
	t.Helper()
	if err := s.Root(t).Sys().PutPolicy(name, hcl); err != nil {
		t.Fatalf("writing policy %s: %v", name, err)
	}
}

// Token creates a token with the policies (and not the default policy).
func (s *Server) Token(t testing.TB, policies ...string) string {
	t.Helper()
	sec, err := s.Root(t).Auth().Token().Create(&api.TokenCreateRequest{Policies: policies, NoDefaultPolicy: true, TTL: "1h"})
	if err != nil {
		t.Fatalf("creating token: %v", err)
	}
	return sec.Auth.ClientToken
}

// AppRole creates an AppRole role with the policies and returns its role
// ID and a file (0600, in a temporary folder) holding a new secret ID.
func (s *Server) AppRole(t testing.TB, role string, policies ...string) (roleID, secretIDFile string) {
	t.Helper()
	root := s.Root(t)
	ctx := context.Background()
	if _, err := root.Logical().WriteWithContext(ctx, "auth/approle/role/"+role, map[string]any{
		"token_policies": policies, "token_ttl": "1h", "token_no_default_policy": true,
	}); err != nil {
		t.Fatalf("creating AppRole %s: %v", role, err)
	}
	sec, err := root.Logical().ReadWithContext(ctx, "auth/approle/role/"+role+"/role-id")
	if err != nil {
		t.Fatal(err)
	}
	roleID, _ = sec.Data["role_id"].(string)
	sec, err = root.Logical().WriteWithContext(ctx, "auth/approle/role/"+role+"/secret-id", nil)
	if err != nil {
		t.Fatal(err)
	}
	secretID, _ := sec.Data["secret_id"].(string)
	secretIDFile = filepath.Join(t.TempDir(), "secret-id")
	if err := os.WriteFile(secretIDFile, []byte(secretID+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return roleID, secretIDFile
}

var unsealKeyRE = regexp.MustCompile(`Unseal Key: (\S+)`)

// Seal seals the server (as `vault operator seal`): it keeps its data but
// answers every request with 503 until Unseal.
func (s *Server) Seal(t testing.TB) {
	t.Helper()
	if err := s.Root(t).Sys().SealWithContext(context.Background()); err != nil {
		t.Fatalf("sealing vault: %v", err)
	}
}

// Unseal unseals a sealed server with the dev server's unseal key.
func (s *Server) Unseal(t testing.TB) {
	t.Helper()
	m := unsealKeyRE.FindStringSubmatch(s.out.String())
	if m == nil {
		t.Fatalf("no unseal key in the vault server's output")
	}
	st, err := s.Root(t).Sys().UnsealWithContext(context.Background(), m[1])
	if err != nil || st.Sealed {
		t.Fatalf("unsealing vault: %v (sealed %v)", err, st != nil && st.Sealed)
	}
}

// ServerPolicy is the create-only server policy of docs/escrow.md for the
// entries under prefix of the KV mount "secret": escrow new entries and
// set their custom metadata, nothing else.
func ServerPolicy(prefix string) string {
	return fmt.Sprintf(`
path "secret/data/%[1]s/*" {
  capabilities = ["create"]
}
path "secret/metadata/%[1]s/*" {
  capabilities = ["update"]
  allowed_parameters = {
    "custom_metadata" = []
  }
}
`, prefix)
}

// VerifierPolicy is the verifier policy of docs/escrow.md for the entries
// under prefix: read and list everything, change states.
func VerifierPolicy(prefix string) string {
	return fmt.Sprintf(`
path "secret/metadata/%[1]s/*" {
  capabilities = ["read", "list", "update"]
  allowed_parameters = {
    "custom_metadata" = []
  }
}
path "secret/data/%[1]s/*" {
  capabilities = ["read", "patch"]
}
`, prefix)
}
