package main

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/nhscrypt/nhscrypt/keystore/vault/vaulttest"
)

// TestVaultScripts runs testdata/vault/*.txtar against one real Vault dev
// server. Each script gets a path prefix of its own ($PREFIX, for host
// $VHOST) and these tokens:
//
//	VAULT_ADDR, VAULT_TOKEN  the server and its root token
//	SERVER_TOKEN             the create-only server policy of docs/escrow.md
//	VERIFIER_TOKEN           the verifier policy of docs/escrow.md
func TestVaultScripts(t *testing.T) {
	srv := vaulttest.Start(t)
	var n atomic.Int64
	testscript.Run(t, scriptParams(t, "testdata/vault", func(e *testscript.Env) error {
		host := fmt.Sprintf("host%d", n.Add(1))
		prefix := "nhscrypt/" + host
		srv.WritePolicy(t, "server-"+host, vaulttest.ServerPolicy(prefix))
		srv.WritePolicy(t, "verifier-"+host, vaulttest.VerifierPolicy(prefix))
		e.Setenv("VHOST", host)
		e.Setenv("PREFIX", prefix)
		e.Setenv("VAULT_ADDR", srv.Addr)
		e.Setenv("VAULT_TOKEN", srv.RootToken)
		e.Setenv("SERVER_TOKEN", srv.Token(t, "server-"+host))
		e.Setenv("VERIFIER_TOKEN", srv.Token(t, "verifier-"+host))
		return nil
	}))
}
