package tlscheck_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nhscrypt/nhscrypt/internal/testenv"
	"github.com/nhscrypt/nhscrypt/tlscheck"
	"github.com/nhscrypt/nhscrypt/tlscheck/tlstest"
)

// Real STARTTLS services from Debian, each in its own folder on a
// 127.0.0.1 high port, serving the test PKI's valid certificate.
func TestStartTLSServices(t *testing.T) {
	for _, tool := range []string{"/usr/lib/postfix/sbin/master", "dovecot", "/usr/sbin/slapd"} {
		testenv.Tool(t, tool)
	}
	if os.Geteuid() != 0 {
		testenv.Missing(t, "the STARTTLS services test runs as root (PostgreSQL must be started as the postgres user)")
	}
	if tlstest.PostgresBin() == "" {
		testenv.Missing(t, "PostgreSQL server not installed (make test installs postgresql)")
	}
	pki, _ := startNginx(t)
	valid := pki.Case("valid")
	cert := tlstest.Cert{CertFile: valid.CertFile, KeyFile: valid.KeyFile}
	ports, err := tlstest.FreePorts(5)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	starters := []func() (*tlstest.Service, error){
		func() (*tlstest.Service, error) {
			return tlstest.StartPostfix(filepath.Join(dir, "postfix"), ports[0], cert)
		},
		func() (*tlstest.Service, error) {
			return tlstest.StartDovecot(filepath.Join(dir, "dovecot"), ports[1], ports[2], cert)
		},
		func() (*tlstest.Service, error) {
			return tlstest.StartPostgres(filepath.Join(dir, "pg"), ports[3], cert)
		},
		func() (*tlstest.Service, error) {
			return tlstest.StartSlapd(filepath.Join(dir, "slapd"), ports[4], cert)
		},
	}
	start := time.Now()
	svcs := make([]*tlstest.Service, len(starters))
	errs := make([]error, len(starters))
	var wg sync.WaitGroup
	for i, f := range starters {
		wg.Add(1)
		go func() { defer wg.Done(); svcs[i], errs[i] = f() }()
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, s := range svcs {
			s.Stop()
		}
	})
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("postfix, dovecot, postgres and slapd started in %v", time.Since(start))

	const noStaple = tlscheck.IDOCSPNoStaple
	addr := func(p int) string { return "127.0.0.1:" + itoa(p) }
	for _, tc := range []struct {
		url  string
		want []string
	}{
		// The valid certificate names an OCSP responder; none of these
		// servers staples (nginx does, in TestNginxCases).
		// Postfix's defaults for opportunistic TLS: smtpd_tls_protocols
		// = !SSLv2, !SSLv3 re-enables TLS 1.0 and 1.1 over Debian's
		// OpenSSL minimum, and the "medium" cipher grade keeps anonymous
		// suites (sslscan --starttls-smtp agrees).
		{"smtp://" + addr(ports[0]), []string{noStaple, tlscheck.IDProtoTLS10, tlscheck.IDProtoTLS11, tlscheck.IDCipherWeak}},
		{"imap://" + addr(ports[1]), []string{noStaple}},
		{"pop3://" + addr(ports[2]), []string{noStaple}},
		{"postgres://" + addr(ports[3]), []string{noStaple}},
		// Debian's slapd uses GnuTLS, which still accepts TLS 1.0 and 1.1
		// unless olcTLSProtocolMin / TLSProtocolMin is set.
		{"ldap://" + addr(ports[4]), []string{noStaple, tlscheck.IDProtoTLS10, tlscheck.IDProtoTLS11}},
	} {
		t.Run(tc.url, func(t *testing.T) {
			tg, err := tlscheck.ParseTarget(tc.url)
			if err != nil {
				t.Fatal(err)
			}
			r := tlscheck.CheckEndpoint(context.Background(), tg, tlscheck.Options{Roots: rootPool(t, pki), Timeout: 5 * time.Second})
			if r.Err != nil {
				t.Fatal(r.Err)
			}
			if len(r.Chain) != 2 || r.Chain[0].Subject.CommonName != "valid.test" {
				t.Errorf("chain %d certificates", len(r.Chain))
			}
			if got, want := ids(r), slices.Sorted(slices.Values(tc.want)); !slices.Equal(got, want) {
				for _, f := range r.Findings {
					t.Logf("  %s %s %v", f.ID, f.Message, f.Evidence)
				}
				t.Errorf("findings %v, want %v (protocols %v)", got, want, r.Protocols)
			}
		})
	}
}
