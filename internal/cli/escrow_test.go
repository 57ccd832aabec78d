package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/nhscrypt/nhscrypt/keystore/vault/vaulttest"
)

// Policy of a server that may only escrow new keys (docs/escrow.md).
var escrowServerPolicy = vaulttest.ServerPolicy("nhscrypt/db1")

// vaultEnv points the vault CLI variables at srv, with no token.
func vaultEnv(t *testing.T, srv *vaulttest.Server) {
	t.Helper()
	for _, v := range []string{"VAULT_TOKEN", "VAULT_NAMESPACE", "VAULT_CACERT", "VAULT_CAPATH", "VAULT_CLIENT_CERT", "VAULT_CLIENT_KEY", "VAULT_TLS_SERVER_NAME", "VAULT_SKIP_VERIFY"} {
		t.Setenv(v, "")
	}
	t.Setenv("VAULT_ADDR", srv.Addr)
	t.Setenv("VAULT_MAX_RETRIES", "0")
	t.Setenv("HOME", t.TempDir()) // no ~/.vault-token
}

func TestEscrowVault(t *testing.T) {
	srv := vaulttest.Start(t)
	vaultEnv(t, srv)
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "recovery.txt")
	const secret = "correct-horse-battery-staple-000111"
	if err := os.WriteFile(secretFile, []byte(secret), 0o600); err != nil {
		t.Fatal(err)
	}
	pfx := "--vault-prefix=nhscrypt/db1"

	// No credentials at all: exit 10 with a hint.
	code, _, stderr := runCLI(t, "escrow", pfx, "list")
	if code != ExitAuth || !strings.Contains(stderr, "no Vault credentials") || !strings.Contains(stderr, "hint:") {
		t.Fatalf("list without credentials: exit %d, %s", code, stderr)
	}

	// The server, with a create-only token, escrows.
	srv.WritePolicy(t, "server-db1", escrowServerPolicy)
	t.Setenv("VAULT_TOKEN", srv.Token(t, "server-db1"))
	code, stdout, stderr := runCLI(t, "escrow", pfx, "--json", "put", "--kind", "luks-recovery", "--name", "sda2", "--device", "/dev/sda2", "--keyslot", "1", secretFile)
	if code != 0 || strings.Contains(stdout, secret) {
		t.Fatalf("put: exit %d\n%s%s", code, stdout, stderr)
	}
	var put struct {
		MessageType string `json:"message_type"`
		Name, State string
		Revision    int
		Fingerprint string
	}
	if err := json.Unmarshal([]byte(stdout), &put); err != nil || put.MessageType != "escrow_put" || put.State != "pending" || put.Revision != 1 || len(put.Fingerprint) != 64 {
		t.Fatalf("put JSON %q: %+v, %v", stdout, put, err)
	}
	// … and can read nothing back, nor overwrite: exit 10.
	out := filepath.Join(dir, "out.txt")
	for _, args := range [][]string{
		{"get", "sda2", "-o", out},
		{"list"},
		{"put", "--kind", "luks-recovery", "--name", "sda2", secretFile},
		{"state", "sda2", "active"},
	} {
		code, _, stderr = runCLI(t, append([]string{"escrow", pfx}, args...)...)
		if code != ExitAuth || !strings.Contains(stderr, "permission denied") {
			t.Errorf("%v with the server token: exit %d, %s", args, code, stderr)
		}
	}
	if _, err := os.Stat(out); err == nil {
		t.Fatal("a refused get left a file")
	}

	// The admin token from ~/.vault-token, as `vault login` leaves it.
	t.Setenv("VAULT_TOKEN", "")
	if err := os.WriteFile(filepath.Join(os.Getenv("HOME"), ".vault-token"), []byte(srv.RootToken), 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr = runCLI(t, "escrow", pfx, "list")
	if code != 0 || !regexpMatch(`(?m)^sda2 +luks-recovery +pending +1 +/dev/sda2 keyslot 1 `, stdout) {
		t.Fatalf("list: exit %d\n%s%s", code, stdout, stderr)
	}
	if code, _, stderr = runCLI(t, "escrow", pfx, "state", "sda2", "active", "--revision", "1"); code != 0 {
		t.Fatalf("state: exit %d, %s", code, stderr)
	}
	if code, _, stderr = runCLI(t, "escrow", pfx, "state", "sda2", "retired", "--revision", "1"); code != ExitFailed || !strings.Contains(stderr, "changed meanwhile") {
		t.Fatalf("stale state: exit %d, %s", code, stderr)
	}
	code, stdout, _ = runCLI(t, "escrow", pfx, "history", "sda2")
	if code != 0 || !regexpMatch(`(?m)^1 +pending `, stdout) || !regexpMatch(`(?m)^2 +active `, stdout) {
		t.Fatalf("history: exit %d\n%s", code, stdout)
	}
	if code, _, stderr = runCLI(t, "escrow", pfx, "get", "sda2", "-o", out); code != 0 {
		t.Fatalf("get: exit %d, %s", code, stderr)
	}
	if got, _ := os.ReadFile(out); string(got) != secret {
		t.Fatalf("get wrote %q", got)
	}
	if st, _ := os.Stat(out); st.Mode().Perm() != 0o600 {
		t.Fatalf("get wrote mode %v", st.Mode())
	}
	if code, _, _ = runCLI(t, "escrow", pfx, "get", "sda2", "-o", out); code != ExitFailed {
		t.Fatalf("get onto an existing file: exit %d", code)
	}
	if code, _, _ = runCLI(t, "escrow", pfx, "get", "missing", "-o", filepath.Join(dir, "m")); code != ExitNotFound {
		t.Fatalf("get of a missing key: exit %d, want %d", code, ExitNotFound)
	}

	// Transit wrapping: put and get back.
	if code, _, stderr = runCLI(t, "escrow", pfx, "--transit-key", "escrow", "put", "--kind", "luks-recovery", "--name", "sdb1", secretFile); code != 0 {
		t.Fatalf("put with --transit-key: exit %d, %s", code, stderr)
	}
	if code, stdout, stderr = runCLI(t, "escrow", pfx, "get", "sdb1", "-o", "-"); code != 0 || stdout != secret {
		t.Fatalf("get of a transit-wrapped key: exit %d, %q, %s", code, stdout, stderr)
	}

	// AppRole login from flags.
	srv.WritePolicy(t, "reader", `path "secret/*" { capabilities = ["read", "list"] }
path "transit/decrypt/escrow" { capabilities = ["update"] }`)
	roleID, secretIDFile := srv.AppRole(t, "reader", "reader")
	t.Setenv("HOME", t.TempDir())
	code, stdout, stderr = runCLI(t, "escrow", pfx, "--approle-role-id", roleID, "--approle-secret-id-file", secretIDFile, "get", "sda2", "-o", "-")
	if code != 0 || stdout != secret {
		t.Fatalf("get with AppRole: exit %d, %q, %s", code, stdout, stderr)
	}
	code, stdout, stderr = runCLI(t, "escrow", pfx, "--approle-role-id", roleID, "--approle-secret-id-file", secretIDFile, "get", "sdb1", "-o", "-")
	if code != 0 || stdout != secret {
		t.Fatalf("get of a transit-wrapped key with AppRole: exit %d, %q, %s", code, stdout, stderr)
	}
	bad := filepath.Join(dir, "bad-secret-id")
	os.WriteFile(bad, []byte("00000000-0000-0000-0000-000000000000"), 0o600)
	if code, _, stderr = runCLI(t, "escrow", pfx, "--approle-role-id", roleID, "--approle-secret-id-file", bad, "list"); code != ExitAuth {
		t.Fatalf("AppRole with a wrong secret ID: exit %d, %s", code, stderr)
	}

	// A bad token: exit 10, and the token is not shown.
	t.Setenv("VAULT_TOKEN", "hvs.bogus-token-for-the-test")
	code, stdout, stderr = runCLI(t, "escrow", pfx, "list")
	if code != ExitAuth || strings.Contains(stdout+stderr, "bogus-token") {
		t.Fatalf("bad token: exit %d\n%s%s", code, stdout, stderr)
	}

	// A stopped Vault: exit 1 with a hint.
	t.Setenv("VAULT_TOKEN", srv.RootToken)
	srv.Stop()
	code, _, stderr = runCLI(t, "escrow", pfx, "put", "--kind", "luks-recovery", "--name", "sdc1", secretFile)
	if code != ExitFailed || !strings.Contains(stderr, "unavailable") || !strings.Contains(stderr, "hint: check VAULT_ADDR") {
		t.Fatalf("stopped Vault: exit %d, %s", code, stderr)
	}
}

func regexpMatch(re, s string) bool { return regexp.MustCompile(re).MatchString(s) }
