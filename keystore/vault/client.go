package vault

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/hashicorp/vault/api/auth/approle"

	"github.com/nhscrypt/nhscrypt/keystore"
)

// Config says how to reach and log in to Vault. Its fields mirror the
// vault CLI's variables; the caller fills them (this package reads no
// configuration of its own). Set exactly one of Token, AppRole and Cert.
// A Config prints with its token redacted.
type Config struct {
	Address       string        // VAULT_ADDR
	Namespace     string        // VAULT_NAMESPACE
	CACert        string        // VAULT_CACERT: PEM file of CA certificates
	CAPath        string        // VAULT_CAPATH: folder of PEM CA certificates
	ClientCert    string        // VAULT_CLIENT_CERT: TLS client certificate (PEM file)
	ClientKey     string        // VAULT_CLIENT_KEY: its private key (PEM file)
	TLSServerName string        // VAULT_TLS_SERVER_NAME
	Timeout       time.Duration // per request; 60 s if zero
	// MaxRetries is how often a request that failed with a 5xx status
	// or a network error is retried (the api package's default, 2, if
	// negative).
	MaxRetries int

	// Token is a Vault token (VAULT_TOKEN, or ~/.vault-token as the
	// vault CLI writes it).
	Token string
	// AppRole logs in with a role ID and a secret ID read from a file.
	AppRole *AppRole
	// Cert logs in with TLS certificate auth, presenting ClientCert.
	Cert *CertAuth
}

// AppRole is AppRole login: https://developer.hashicorp.com/vault/docs/auth/approle.
type AppRole struct {
	RoleID       string
	SecretIDFile string // file holding the secret ID (not the ID itself)
	Mount        string // "approle" if empty
}

// CertAuth is TLS certificate login: https://developer.hashicorp.com/vault/docs/auth/cert.
type CertAuth struct {
	Mount string // "cert" if empty
	Role  string // the certificate role to log in against; any matching one if empty
}

// String describes c with the token redacted.
func (c Config) String() string {
	auth := "none"
	switch {
	case c.Token != "":
		auth = "token (redacted)"
	case c.AppRole != nil:
		auth = fmt.Sprintf("approle (role ID %q, secret ID file %q)", c.AppRole.RoleID, c.AppRole.SecretIDFile)
	case c.Cert != nil:
		auth = fmt.Sprintf("cert (role %q, certificate %q)", c.Cert.Role, c.ClientCert)
	}
	return fmt.Sprintf("vault %s namespace %q auth %s", c.Address, c.Namespace, auth)
}

// GoString is String, so %#v never prints the token either.
func (c Config) GoString() string { return c.String() }

// NewClient returns a Vault client for c, logged in. It starts from
// api.DefaultConfig, so Vault's own VAULT_* variables for the connection
// (VAULT_ADDR, VAULT_CACERT, VAULT_SKIP_VERIFY, …) apply as they do for the
// vault CLI, and fields set in c take precedence; the token is never taken
// from the environment, only from c. Failed logins match
// keystore.ErrPermission.
func NewClient(ctx context.Context, c Config) (*api.Client, error) {
	n := 0
	for _, set := range []bool{c.Token != "", c.AppRole != nil, c.Cert != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		return nil, errors.New("vault: give exactly one of a token, an AppRole or a TLS certificate to log in with")
	}
	conf := api.DefaultConfig()
	if conf.Error != nil {
		return nil, fmt.Errorf("vault client configuration: %w", conf.Error)
	}
	if c.Address != "" {
		conf.Address = c.Address
	}
	if c.Timeout > 0 {
		conf.Timeout = c.Timeout
	}
	if c.MaxRetries >= 0 {
		conf.MaxRetries = c.MaxRetries
	}
	if c.CACert != "" || c.CAPath != "" || c.ClientCert != "" || c.ClientKey != "" || c.TLSServerName != "" {
		if err := conf.ConfigureTLS(&api.TLSConfig{
			CACert: c.CACert, CAPath: c.CAPath, ClientCert: c.ClientCert, ClientKey: c.ClientKey,
			TLSServerName: c.TLSServerName,
		}); err != nil {
			return nil, fmt.Errorf("vault TLS configuration: %w", err)
		}
	}
	client, err := api.NewClient(conf)
	if err != nil {
		return nil, fmt.Errorf("vault client: %w", err)
	}
	client.ClearToken() // api.NewClient reads VAULT_TOKEN
	if c.Namespace != "" {
		client.SetNamespace(c.Namespace)
	}
	switch {
	case c.Token != "":
		client.SetToken(c.Token)
	case c.AppRole != nil:
		if err := loginAppRole(ctx, client, c.AppRole); err != nil {
			return nil, err
		}
	case c.Cert != nil:
		if err := loginCert(ctx, client, c.Cert); err != nil {
			return nil, err
		}
	}
	return client, nil
}

func loginAppRole(ctx context.Context, client *api.Client, a *AppRole) error {
	mount := a.Mount
	if mount == "" {
		mount = "approle"
	}
	if a.RoleID == "" || a.SecretIDFile == "" {
		return errors.New("vault AppRole login: a role ID and a secret ID file are needed")
	}
	// Read by Login; checked first so that a missing file is not taken
	// for an unreachable server.
	if _, err := os.Stat(a.SecretIDFile); err != nil {
		return fmt.Errorf("vault AppRole login: secret ID file: %w", err)
	}
	auth, err := approle.NewAppRoleAuth(a.RoleID, &approle.SecretID{FromFile: a.SecretIDFile}, approle.WithMountPath(mount))
	if err != nil {
		return fmt.Errorf("vault AppRole login: %w", err)
	}
	sec, err := client.Auth().Login(ctx, auth)
	if err != nil {
		return fmt.Errorf("vault AppRole login at auth/%s: %w", mount, loginError(err))
	}
	if sec == nil || sec.Auth == nil || sec.Auth.ClientToken == "" {
		return fmt.Errorf("vault AppRole login at auth/%s: no token in the response", mount)
	}
	return nil
}

func loginCert(ctx context.Context, client *api.Client, c *CertAuth) error {
	mount := c.Mount
	if mount == "" {
		mount = "cert"
	}
	var body map[string]any
	if c.Role != "" {
		body = map[string]any{"name": c.Role}
	}
	sec, err := client.Logical().WriteWithContext(ctx, "auth/"+mount+"/login", body)
	if err != nil {
		return fmt.Errorf("vault certificate login at auth/%s: %w", mount, loginError(err))
	}
	if sec == nil || sec.Auth == nil || sec.Auth.ClientToken == "" {
		return fmt.Errorf("vault certificate login at auth/%s: no token in the response", mount)
	}
	client.SetToken(sec.Auth.ClientToken)
	return nil
}

// loginError classifies a failed login: Vault answers a wrong role or
// secret ID with 400 as well as 403, both refused credentials.
func loginError(err error) error {
	err = classify(err)
	var ve *vaultError
	if errors.As(err, &ve) && ve.kind == nil && ve.status >= 400 && ve.status < 500 {
		ve.kind = keystore.ErrPermission
	}
	return err
}
