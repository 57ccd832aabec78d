package vault_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/nhscrypt/nhscrypt/keystore"
	"github.com/nhscrypt/nhscrypt/keystore/escrowtest"
	"github.com/nhscrypt/nhscrypt/keystore/vault"
	"github.com/nhscrypt/nhscrypt/keystore/vault/vaulttest"
)

func newClient(t *testing.T, c vault.Config) *api.Client {
	t.Helper()
	client, err := vault.NewClient(context.Background(), c)
	if err != nil {
		t.Fatalf("NewClient(%v): %v", c, err)
	}
	return client
}

func newStore(t *testing.T, srv *vaulttest.Server, token, prefix string) *vault.Store {
	t.Helper()
	s, err := vault.New(newClient(t, vault.Config{Address: srv.Addr, CACert: srv.CACert, Token: token}), vault.Options{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	srv := vaulttest.Start(t)
	var n atomic.Int64
	escrowtest.Run(t, func(t *testing.T) keystore.Escrow {
		return newStore(t, srv, srv.RootToken, fmt.Sprintf("nhscrypt/conformance-%d", n.Add(1)))
	})
}

// The policies of docs/escrow.md, for host "db1".
var (
	// serverPolicy: escrow new keys only.
	serverPolicy = vaulttest.ServerPolicy("nhscrypt/db1")
	// verifierPolicy: read everything of the host, change states.
	verifierPolicy = vaulttest.VerifierPolicy("nhscrypt/db1")
)

const (
	// listerPolicy: list and read metadata, never a secret.
	listerPolicy = `
path "secret/metadata/nhscrypt/db1/*" {
  capabilities = ["read", "list"]
}
`
	// statePolicy: change states without reading secrets.
	statePolicy = `
path "secret/metadata/nhscrypt/db1/*" {
  capabilities = ["read", "list", "update"]
  allowed_parameters = {
    "custom_metadata" = []
  }
}
path "secret/data/nhscrypt/db1/*" {
  capabilities = ["patch"]
}
`
)

const prefix = "nhscrypt/db1"

func recoveryKey(name string) keystore.Key {
	return keystore.Key{Name: name, Kind: keystore.KindLUKSRecovery, Host: "db1", Device: "/dev/sda2", LUKSUUID: "8c3a1f9e-6a5b-4d2e-9f10-0123456789ab", Keyslot: keystore.Slot(1)}
}

// TestListReadsNoSecrets: a token that may read and list metadata but not
// data lists every entry with its metadata and history, and cannot read a
// secret.
func TestListReadsNoSecrets(t *testing.T) {
	ctx := context.Background()
	srv := vaulttest.Start(t)
	srv.WritePolicy(t, "lister", listerPolicy)
	admin := newStore(t, srv, srv.RootToken, prefix)
	var want []*keystore.Key
	for _, n := range []string{"a", "b"} {
		k, err := admin.Put(ctx, recoveryKey(n), []byte("secret "+n))
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, k)
	}
	if k, err := admin.SetState(ctx, "b", 1, keystore.StateActive); err != nil {
		t.Fatal(err)
	} else {
		want[1] = k
	}

	lister := newStore(t, srv, srv.Token(t, "lister"), prefix)
	keys, err := lister.List(ctx)
	if err != nil {
		t.Fatalf("List with metadata-only token: %v", err)
	}
	if len(keys) != 2 {
		t.Fatalf("List = %+v", keys)
	}
	for i, k := range keys {
		w := want[i]
		if k.Name != w.Name || k.State != w.State || k.Revision != w.Revision || k.Fingerprint != w.Fingerprint ||
			k.Kind != w.Kind || k.Device != w.Device || k.LUKSUUID != w.LUKSUUID || k.Keyslot == nil || *k.Keyslot != 1 ||
			!k.Created.Equal(w.Created) || k.Host != "db1" {
			t.Errorf("List[%d] = %+v, want %+v", i, k, *w)
		}
	}
	h, err := lister.History(ctx, "b")
	if err != nil {
		t.Fatalf("History with metadata-only token: %v", err)
	}
	if len(h) != 2 || h[0].State != keystore.StatePending || h[1].State != keystore.StateActive {
		t.Fatalf("History = %+v", h)
	}
	_, _, err = lister.Get(ctx, "a")
	if !errors.Is(err, keystore.ErrPermission) || !errors.Is(err, fs.ErrPermission) {
		t.Fatalf("Get with metadata-only token: err = %v, want ErrPermission", err)
	}
}

// TestWriteOnlyServer: a server token with only create on its data path
// (and custom metadata) escrows a new key, and can do nothing else to any
// escrowed key: not read, overwrite, update, patch, delete, destroy,
// change its metadata settings, list, or touch another host's path.
func TestWriteOnlyServer(t *testing.T) {
	ctx := context.Background()
	srv := vaulttest.Start(t)
	srv.WritePolicy(t, "server-db1", serverPolicy)
	token := srv.Token(t, "server-db1")
	server := newStore(t, srv, token, prefix)
	admin := newStore(t, srv, srv.RootToken, prefix)

	secret := []byte("the recovery passphrase")
	k, err := server.Put(ctx, recoveryKey("sda2"), secret)
	if err != nil {
		t.Fatalf("Put with the server token: %v", err)
	}
	if k.State != keystore.StatePending || k.Revision != 1 {
		t.Fatalf("Put = %+v", k)
	}
	// The admin sees it, listed metadata included.
	keys, err := admin.List(ctx)
	if err != nil || len(keys) != 1 || keys[0].State != keystore.StatePending || keys[0].Fingerprint != keystore.Fingerprint(secret) {
		t.Fatalf("admin List = %+v, %v", keys, err)
	}

	denied := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, keystore.ErrPermission) {
			t.Errorf("%s with the server token: err = %v, want ErrPermission", what, err)
		}
	}
	_, _, err = server.Get(ctx, "sda2")
	denied("Get", err)
	_, err = server.Put(ctx, recoveryKey("sda2"), []byte("overwrite"))
	denied("Put of an existing name", err)
	_, err = server.SetState(ctx, "sda2", 1, keystore.StateActive)
	denied("SetState", err)
	_, err = server.List(ctx)
	denied("List", err)
	_, err = server.History(ctx, "sda2")
	denied("History", err)

	// The raw operations the policy must refuse.
	c := srv.Client(t, token)
	kv := c.KVv2("secret")
	p := prefix + "/sda2"
	raw := []struct {
		what string
		do   func() error
	}{
		{"read data", func() error { _, err := c.Logical().Read("secret/data/" + p); return err }},
		{"read version 1", func() error { _, err := kv.GetVersion(ctx, p, 1); return err }},
		{"update without CAS", func() error { _, err := kv.Put(ctx, p, map[string]any{"secret": "x"}); return err }},
		{"update with CAS 1", func() error {
			_, err := kv.Put(ctx, p, map[string]any{"secret": "x"}, api.WithCheckAndSet(1))
			return err
		}},
		{"patch", func() error {
			_, err := c.Logical().JSONMergePatch(ctx, "secret/data/"+p, map[string]any{"data": map[string]any{"secret": "x"}})
			return err
		}},
		{"delete latest", func() error { return kv.Delete(ctx, p) }},
		{"delete versions", func() error { return kv.DeleteVersions(ctx, p, []int{1}) }},
		{"destroy", func() error { return kv.Destroy(ctx, p, []int{1}) }},
		{"delete metadata", func() error { return kv.DeleteMetadata(ctx, p) }},
		{"set max_versions", func() error {
			_, err := c.Logical().Write("secret/metadata/"+p, map[string]any{"max_versions": 1})
			return err
		}},
		{"set delete_version_after", func() error {
			_, err := c.Logical().Write("secret/metadata/"+p, map[string]any{"delete_version_after": "1s"})
			return err
		}},
		{"read metadata", func() error { _, err := kv.GetMetadata(ctx, p); return err }},
		{"write another host's path", func() error {
			_, err := kv.Put(ctx, "nhscrypt/db2/x", map[string]any{"secret": "x"}, api.WithCheckAndSet(0))
			return err
		}},
	}
	for _, r := range raw {
		err := r.do()
		var re *api.ResponseError
		if !errors.As(err, &re) || re.StatusCode != 403 {
			t.Errorf("%s with the server token: err = %v, want HTTP 403", r.what, err)
		}
	}

	// Nothing changed: one version, the original secret.
	got, gotSecret, err := admin.Get(ctx, "sda2")
	if err != nil {
		t.Fatal(err)
	}
	if got.Revision != 1 || !bytes.Equal(gotSecret, secret) {
		t.Fatalf("after the refused operations: %+v, secret equal %v", got, bytes.Equal(gotSecret, secret))
	}
	md, err := srv.Root(t).KVv2("secret").GetMetadata(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if md.MaxVersions != 0 || md.DeleteVersionAfter != 0 || len(md.Versions) != 1 {
		t.Fatalf("metadata changed: %+v", md)
	}
}

// TestStateChangeWithoutSecretReads: a token with patch on data but no
// read changes states with check-and-set, and cannot read a secret.
func TestStateChangeWithoutSecretReads(t *testing.T) {
	ctx := context.Background()
	srv := vaulttest.Start(t)
	srv.WritePolicy(t, "state", statePolicy)
	admin := newStore(t, srv, srv.RootToken, prefix)
	if _, err := admin.Put(ctx, recoveryKey("sda2"), []byte("s")); err != nil {
		t.Fatal(err)
	}
	st := newStore(t, srv, srv.Token(t, "state"), prefix)
	k, err := st.SetState(ctx, "sda2", 1, keystore.StateActive)
	if err != nil {
		t.Fatalf("SetState with patch-only token: %v", err)
	}
	if k.State != keystore.StateActive || k.Revision != 2 || k.Device != "/dev/sda2" {
		t.Fatalf("SetState = %+v", k)
	}
	if _, err := st.SetState(ctx, "sda2", 1, keystore.StateRetired); !errors.Is(err, keystore.ErrConflict) {
		t.Fatalf("stale SetState: err = %v, want ErrConflict", err)
	}
	if _, _, err := st.Get(ctx, "sda2"); !errors.Is(err, keystore.ErrPermission) {
		t.Fatalf("Get with patch-only token: err = %v, want ErrPermission", err)
	}
	got, secret, err := admin.Get(ctx, "sda2")
	if err != nil || got.State != keystore.StateActive || got.Revision != 2 || string(secret) != "s" {
		t.Fatalf("admin Get = %+v, %q, %v", got, secret, err)
	}
}

// TestMetadataLag: when the custom metadata is missing (a writer stopped
// after writing the data), List says so and SetState repairs it.
func TestMetadataLag(t *testing.T) {
	ctx := context.Background()
	srv := vaulttest.Start(t)
	admin := newStore(t, srv, srv.RootToken, prefix)
	if _, err := admin.Put(ctx, recoveryKey("sda2"), []byte("s")); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Root(t).Logical().Write("secret/metadata/"+prefix+"/sda2", map[string]any{"custom_metadata": map[string]any{}}); err != nil {
		t.Fatal(err)
	}
	keys, err := admin.List(ctx)
	if err != nil || len(keys) != 1 || keys[0].State != keystore.StateUnknown || keys[0].Revision != 1 {
		t.Fatalf("List = %+v, %v; want one entry in state unknown", keys, err)
	}
	if _, err := admin.SetState(ctx, "sda2", 1, keystore.StateActive); err != nil {
		t.Fatal(err)
	}
	keys, err = admin.List(ctx)
	if err != nil || len(keys) != 1 || keys[0].State != keystore.StateActive || keys[0].Kind != keystore.KindLUKSRecovery {
		t.Fatalf("List after SetState = %+v, %v", keys, err)
	}
}

func TestAppRoleLogin(t *testing.T) {
	ctx := context.Background()
	srv := vaulttest.Start(t)
	srv.WritePolicy(t, "verifier", verifierPolicy)
	admin := newStore(t, srv, srv.RootToken, prefix)
	if _, err := admin.Put(ctx, recoveryKey("sda2"), []byte("s")); err != nil {
		t.Fatal(err)
	}
	roleID, secretIDFile := srv.AppRole(t, "verifier", "verifier")
	client := newClient(t, vault.Config{Address: srv.Addr, AppRole: &vault.AppRole{RoleID: roleID, SecretIDFile: secretIDFile}})
	s, err := vault.New(client, vault.Options{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	if _, secret, err := s.Get(ctx, "sda2"); err != nil || string(secret) != "s" {
		t.Fatalf("Get after AppRole login: %q, %v", secret, err)
	}
	if _, err := s.SetState(ctx, "sda2", 1, keystore.StateActive); err != nil {
		t.Fatalf("SetState after AppRole login: %v", err)
	}

	wrong := filepath.Join(t.TempDir(), "wrong")
	if err := os.WriteFile(wrong, []byte("00000000-0000-0000-0000-000000000000\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = vault.NewClient(ctx, vault.Config{Address: srv.Addr, MaxRetries: 0, AppRole: &vault.AppRole{RoleID: roleID, SecretIDFile: wrong}})
	if !errors.Is(err, keystore.ErrPermission) {
		t.Fatalf("AppRole login with a wrong secret ID: err = %v, want ErrPermission", err)
	}
	_, err = vault.NewClient(ctx, vault.Config{Address: srv.Addr, AppRole: &vault.AppRole{RoleID: roleID, SecretIDFile: filepath.Join(t.TempDir(), "missing")}})
	if !errors.Is(err, fs.ErrNotExist) || errors.Is(err, keystore.ErrUnavailable) {
		t.Fatalf("AppRole login with a missing secret ID file: err = %v, want a not-exist error", err)
	}
}

func TestCertLogin(t *testing.T) {
	ctx := context.Background()
	srv := vaulttest.StartWith(t, vaulttest.Options{TLS: true})
	srv.WritePolicy(t, "verifier", verifierPolicy)
	dir := t.TempDir()
	caPEM, certFile, keyFile := clientCert(t, dir)
	if _, err := srv.Root(t).Logical().Write("auth/cert/certs/db1-verifier", map[string]any{
		"certificate": string(caPEM), "token_policies": "verifier", "token_no_default_policy": true,
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := newStore(t, srv, srv.RootToken, prefix).Put(ctx, recoveryKey("sda2"), []byte("s")); err != nil {
		t.Fatal(err)
	}
	client := newClient(t, vault.Config{
		Address: srv.Addr, CACert: srv.CACert, ClientCert: certFile, ClientKey: keyFile,
		Cert: &vault.CertAuth{Role: "db1-verifier"},
	})
	s, err := vault.New(client, vault.Options{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	if _, secret, err := s.Get(ctx, "sda2"); err != nil || string(secret) != "s" {
		t.Fatalf("Get after certificate login: %q, %v", secret, err)
	}
	// Without a client certificate the login is refused.
	_, err = vault.NewClient(ctx, vault.Config{Address: srv.Addr, CACert: srv.CACert, MaxRetries: 0, Cert: &vault.CertAuth{Role: "db1-verifier"}})
	if !errors.Is(err, keystore.ErrPermission) {
		t.Fatalf("certificate login without a certificate: err = %v, want ErrPermission", err)
	}
}

// clientCert writes a CA and a client certificate it signed, and returns
// the CA's PEM and the certificate and key files.
func clientCert(t *testing.T, dir string) (caPEM []byte, certFile, keyFile string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "nhscrypt test client CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "db1"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "client.pem"), filepath.Join(dir, "client-key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), certFile, keyFile
}

// TestBadToken: a refused token is ErrPermission (exit 10 in the CLI), and
// the token is in no error.
func TestBadToken(t *testing.T) {
	ctx := context.Background()
	srv := vaulttest.Start(t)
	const bogus = "hvs.not-a-real-token-0123456789"
	s := newStore(t, srv, bogus, prefix)
	_, err := s.Put(ctx, recoveryKey("x"), []byte("s"))
	if !errors.Is(err, keystore.ErrPermission) || !errors.Is(err, fs.ErrPermission) {
		t.Fatalf("Put with a bad token: err = %v, want ErrPermission", err)
	}
	_, _, err2 := s.Get(ctx, "x")
	_, err3 := s.List(ctx)
	for _, e := range []error{err, err2, err3} {
		if !errors.Is(e, keystore.ErrPermission) {
			t.Errorf("err = %v, want ErrPermission", e)
		}
		if e != nil && strings.Contains(e.Error(), bogus) {
			t.Errorf("error shows the token: %v", e)
		}
	}
	// Nothing was written.
	if _, _, err := newStore(t, srv, srv.RootToken, prefix).Get(ctx, "x"); !errors.Is(err, keystore.ErrNotFound) {
		t.Fatalf("after a refused Put, Get: err = %v, want ErrNotFound", err)
	}
}

// TestUnavailable: a stopped or sealed Vault is ErrUnavailable, fast, with
// nothing half-written.
func TestUnavailable(t *testing.T) {
	ctx := context.Background()
	t.Run("sealed", func(t *testing.T) {
		srv := vaulttest.Start(t)
		admin := newStore(t, srv, srv.RootToken, prefix)
		if _, err := admin.Put(ctx, recoveryKey("a"), []byte("s")); err != nil {
			t.Fatal(err)
		}
		if err := srv.Root(t).Sys().Seal(); err != nil {
			t.Fatal(err)
		}
		s, err := vault.New(newClient(t, vault.Config{Address: srv.Addr, Token: srv.RootToken, MaxRetries: 0}), vault.Options{Prefix: prefix})
		if err != nil {
			t.Fatal(err)
		}
		_, err = s.Put(ctx, recoveryKey("b"), []byte("s"))
		if !errors.Is(err, keystore.ErrUnavailable) {
			t.Fatalf("Put to a sealed Vault: err = %v, want ErrUnavailable", err)
		}
		if !strings.Contains(err.Error(), "sealed") {
			t.Errorf("error does not say Vault is sealed: %v", err)
		}
		if _, _, err := s.Get(ctx, "a"); !errors.Is(err, keystore.ErrUnavailable) {
			t.Fatalf("Get from a sealed Vault: err = %v, want ErrUnavailable", err)
		}
	})
	t.Run("stopped", func(t *testing.T) {
		srv := vaulttest.Start(t)
		s, err := vault.New(newClient(t, vault.Config{Address: srv.Addr, Token: srv.RootToken, MaxRetries: 0}), vault.Options{Prefix: prefix})
		if err != nil {
			t.Fatal(err)
		}
		srv.Stop()
		start := time.Now()
		_, err = s.Put(ctx, recoveryKey("b"), []byte("s"))
		if !errors.Is(err, keystore.ErrUnavailable) {
			t.Fatalf("Put to a stopped Vault: err = %v, want ErrUnavailable", err)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("took %v", d)
		}
		if _, err := s.List(ctx); !errors.Is(err, keystore.ErrUnavailable) {
			t.Fatalf("List from a stopped Vault: err = %v, want ErrUnavailable", err)
		}
	})
}

func TestConfigRedacted(t *testing.T) {
	c := vault.Config{Address: "https://vault.example:8200", Token: "hvs.SECRET-TOKEN"}
	for _, s := range []string{fmt.Sprint(c), fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c), fmt.Sprintf("%v", &c)} {
		if strings.Contains(s, "SECRET") {
			t.Errorf("config printed its token: %s", s)
		}
	}
}

func TestNewClientNeedsOneAuth(t *testing.T) {
	ctx := context.Background()
	for _, c := range []vault.Config{
		{Address: "http://127.0.0.1:1"},
		{Address: "http://127.0.0.1:1", Token: "t", AppRole: &vault.AppRole{RoleID: "r", SecretIDFile: "f"}},
	} {
		if _, err := vault.NewClient(ctx, c); err == nil {
			t.Errorf("NewClient(%v) succeeded", c)
		}
	}
}

func TestNewRejectsBadPaths(t *testing.T) {
	c, err := api.NewClient(api.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range []vault.Options{{}, {Prefix: "/x"}, {Prefix: "x/"}, {Prefix: "a//b"}, {Prefix: "a/../b"}, {Prefix: "a/*"}, {Mount: "/secret", Prefix: "x"}} {
		if _, err := vault.New(c, o); err == nil {
			t.Errorf("New(%+v) succeeded", o)
		}
	}
}

// TestTransitWrap: with a transit key the KV entry holds only the transit
// ciphertext; reading the secret needs decrypt on the key as well as read
// on the entry.
func TestTransitWrap(t *testing.T) {
	ctx := context.Background()
	srv := vaulttest.Start(t)
	root := srv.Root(t)
	if _, err := root.Logical().Write("transit/keys/escrow", nil); err != nil {
		t.Fatal(err)
	}
	srv.WritePolicy(t, "server-transit", serverPolicy+`
path "transit/encrypt/escrow" {
  capabilities = ["update"]
}
`)
	srv.WritePolicy(t, "server-db1", serverPolicy)
	srv.WritePolicy(t, "kv-reader", verifierPolicy)
	srv.WritePolicy(t, "transit-reader", verifierPolicy+`
path "transit/decrypt/escrow" {
  capabilities = ["update"]
}
`)
	open := func(token string) *vault.Store {
		s, err := vault.New(newClient(t, vault.Config{Address: srv.Addr, Token: token}), vault.Options{Prefix: prefix, TransitKey: "escrow"})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	secret := []byte("AGE-SECRET-KEY-1TRANSITWRAPPEDIDENTITY")
	k, err := open(srv.Token(t, "server-transit")).Put(ctx, keystore.Key{Name: "backup-identity", Kind: keystore.KindAgeIdentity, Recipient: "age1x"}, secret)
	if err != nil {
		t.Fatalf("Put with transit: %v", err)
	}
	raw, err := root.KVv2("secret").Get(ctx, prefix+"/backup-identity")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := raw.Data["secret"]; ok {
		t.Fatal("the KV entry holds the secret itself")
	}
	tr, _ := raw.Data["transit"].(map[string]any)
	if ct, _ := tr["ciphertext"].(string); !strings.HasPrefix(ct, "vault:v1:") || tr["key"] != "escrow" {
		t.Fatalf("transit wrapping = %v", raw.Data["transit"])
	}
	// Read on the entry without decrypt on the key: refused.
	if _, _, err := open(srv.Token(t, "kv-reader")).Get(ctx, "backup-identity"); !errors.Is(err, keystore.ErrPermission) {
		t.Fatalf("Get without transit decrypt: err = %v, want ErrPermission", err)
	}
	// Both: the secret. A store without TransitKey unwraps too (the entry
	// records its key).
	for _, s := range []*vault.Store{open(srv.Token(t, "transit-reader")), newStore(t, srv, srv.Token(t, "transit-reader"), prefix)} {
		got, gotSecret, err := s.Get(ctx, "backup-identity")
		if err != nil || !bytes.Equal(gotSecret, secret) || got.Fingerprint != k.Fingerprint {
			t.Fatalf("Get with transit decrypt: %v, %q, %v", got, gotSecret, err)
		}
	}
	// A server without encrypt on the key cannot escrow with it, and
	// writes nothing.
	if _, err := open(srv.Token(t, "server-db1")).Put(ctx, recoveryKey("x"), secret); !errors.Is(err, keystore.ErrPermission) {
		t.Fatalf("Put without transit encrypt: err = %v, want ErrPermission", err)
	}
	if _, _, err := newStore(t, srv, srv.RootToken, prefix).Get(ctx, "x"); !errors.Is(err, keystore.ErrNotFound) {
		t.Fatalf("after a refused wrapped Put: err = %v, want ErrNotFound", err)
	}
}
