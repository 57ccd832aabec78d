package tlscheck_test

import (
	"context"
	"crypto/x509"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nhscrypt/nhscrypt/tlscheck"
	"github.com/nhscrypt/nhscrypt/tlscheck/tlstest"
)

// One nginx serves every case for all the tests of this package.
var (
	nginxOnce sync.Once
	sharedPKI *tlstest.PKI
	sharedNgx *tlstest.Nginx
	nginxErr  string
)

// startNginx returns the shared nginx, starting it on first use. It is
// stopped by TestMain.
func startNginx(t *testing.T) (*tlstest.PKI, *tlstest.Nginx) {
	t.Helper()
	nginxOnce.Do(func() {
		st := &onceT{T: t}
		func() {
			defer func() { recover() }()
			sharedPKI, sharedNgx = tlstest.Start(st, tlstest.Cases())
		}()
		nginxErr = st.msg
	})
	if sharedNgx == nil {
		if strings.HasPrefix(nginxErr, "skip: ") {
			t.Skip(strings.TrimPrefix(nginxErr, "skip: "))
		}
		t.Fatal(nginxErr)
	}
	return sharedPKI, sharedNgx
}

func TestMain(m *testing.M) {
	code := m.Run()
	stopServices()
	if sharedNgx != nil {
		sharedNgx.Stop()
	}
	for _, d := range cleanupDirs {
		os.RemoveAll(d)
	}
	os.Exit(code)
}

var cleanupDirs []string

// onceT lets the shared nginx outlive the test that started it: its
// temporary folder and cleanup belong to the package, not to the test.
type onceT struct {
	*testing.T
	msg string
}

func (o *onceT) TempDir() string {
	d, err := os.MkdirTemp("", "tlscheck-nginx-")
	if err != nil {
		o.Fatal(err)
	}
	cleanupDirs = append(cleanupDirs, d)
	return d
}
func (o *onceT) Cleanup(func())                  {}
func (o *onceT) Helper()                         {}
func (o *onceT) Fatal(args ...any)               { o.msg = strings.TrimSpace(sprint(args...)); panic(o) }
func (o *onceT) Fatalf(f string, args ...any)    { o.msg = sprintf(f, args...); panic(o) }
func (o *onceT) Skipf(f string, args ...any)     { o.msg = "skip: " + sprintf(f, args...); panic(o) }
func (o *onceT) Skip(args ...any)                { o.msg = "skip: " + sprint(args...); panic(o) }
func (o *onceT) Errorf(f string, args ...any)    { o.Fatalf(f, args...) }
func (o *onceT) Logf(format string, args ...any) { o.T.Logf(format, args...) }

func rootPool(t *testing.T, pki *tlstest.PKI) *x509.CertPool {
	t.Helper()
	b, err := os.ReadFile(pki.RootFile)
	if err != nil {
		t.Fatal(err)
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(b) {
		t.Fatal("bad root")
	}
	return p
}

func ids(r tlscheck.Result) []string {
	var l []string
	for _, f := range r.Findings {
		l = append(l, f.ID)
	}
	slices.Sort(l)
	return l
}

// TestNginxCases checks every certificate case served by a real nginx and
// requires exactly the expected findings: none for the valid one.
func TestNginxCases(t *testing.T) {
	pki, ngx := startNginx(t)
	opts := tlscheck.Options{Roots: rootPool(t, pki), FetchIssuers: true, Timeout: 5 * time.Second}
	var targets []tlscheck.Target
	for _, c := range pki.Cases {
		tg, err := tlscheck.ParseTarget(ngx.Addr(c.Name))
		if err != nil {
			t.Fatal(err)
		}
		targets = append(targets, tg)
	}
	start := time.Now()
	results := tlscheck.Run(context.Background(), targets, nil, opts)
	t.Logf("%d endpoints checked in %v", len(targets), time.Since(start))
	for i, c := range pki.Cases {
		r := results[i]
		t.Run(c.Name, func(t *testing.T) {
			if r.Err != nil {
				t.Fatalf("error: %v", r.Err)
			}
			want := slices.Clone(c.Expect)
			slices.Sort(want)
			if got := ids(r); !slices.Equal(got, want) {
				for _, f := range r.Findings {
					t.Logf("  %s %s: %s %v", f.Severity, f.ID, f.Message, f.Evidence)
				}
				t.Errorf("findings %v, want %v", got, want)
			}
			for _, f := range r.Findings {
				if f.Subject != ngx.Addr(c.Name) {
					t.Errorf("finding %s has subject %q, want %q", f.ID, f.Subject, ngx.Addr(c.Name))
				}
			}
		})
	}
}

// The details behind the findings: severities, evidence, protocols.
func TestNginxDetails(t *testing.T) {
	pki, ngx := startNginx(t)
	opts := tlscheck.Options{Roots: rootPool(t, pki), FetchIssuers: true}
	check := func(name string, o tlscheck.Options) tlscheck.Result {
		t.Helper()
		tg, _ := tlscheck.ParseTarget(ngx.Addr(name))
		r := tlscheck.CheckEndpoint(context.Background(), tg, o)
		if r.Err != nil {
			t.Fatalf("%s: %v", name, r.Err)
		}
		return r
	}
	find := func(r tlscheck.Result, id string) map[string]string {
		t.Helper()
		for _, f := range r.Findings {
			if f.ID == id {
				if f.Remedy == "" {
					t.Errorf("%s has no remedy", id)
				}
				return f.Evidence
			}
		}
		t.Fatalf("%s: no %s in %v", r.Subject, id, ids(r))
		return nil
	}

	valid := check("valid", opts)
	if valid.Negotiated != tlscheck.TLS13 || !slices.Equal(valid.Protocols, []tlscheck.Version{tlscheck.TLS12, tlscheck.TLS13}) {
		t.Errorf("valid: negotiated %v, protocols %v", valid.Negotiated, valid.Protocols)
	}
	if len(valid.Chain) != 2 {
		t.Errorf("valid: chain of %d certificates, want 2", len(valid.Chain))
	}

	// The 5-day certificate is a failure by default (fail-days 7), a
	// warning with fail-days 3, and nothing with warn-days 4.
	for _, tc := range []struct {
		warn, fail int
		sev        string
	}{{0, 0, "fail"}, {30, 3, "warn"}, {4, 2, ""}} {
		o := opts
		o.WarnDays, o.FailDays = tc.warn, tc.fail
		r := check("expiring", o)
		got := ""
		for _, f := range r.Findings {
			if f.ID == tlscheck.IDCertExpiring {
				got = f.Severity.String()
				if f.Evidence["days_left"] != "5" {
					t.Errorf("days_left = %q, want 5", f.Evidence["days_left"])
				}
			}
		}
		if got != tc.sev {
			t.Errorf("expiring with warn %d fail %d: severity %q, want %q", tc.warn, tc.fail, got, tc.sev)
		}
	}

	weak := check("weak", opts)
	if !slices.Equal(weak.Protocols, []tlscheck.Version{tlscheck.TLS10, tlscheck.TLS11, tlscheck.TLS12, tlscheck.TLS13}) {
		t.Errorf("weak: protocols %v", weak.Protocols)
	}
	ev := find(weak, tlscheck.IDCipherWeak)
	if ev["classes"] != "null,anon" {
		t.Errorf("weak: classes %q, want null,anon (Debian's OpenSSL has no RC4, DES or 3DES)", ev["classes"])
	}
	for _, v := range []string{"TLS1.0", "TLS1.1", "TLS1.2"} {
		if !strings.Contains(ev[v], "_anon_") || !strings.Contains(ev[v], "NULL") {
			t.Errorf("weak: %s evidence %q lacks an anon and a NULL suite", v, ev[v])
		}
	}
	find(weak, tlscheck.IDCipherNoFS)

	if ev := find(check("rsa1024", opts), tlscheck.IDKeyWeak); ev["bits"] != "1024" || ev["key"] != "RSA" {
		t.Errorf("rsa1024 evidence %v", ev)
	}
	if ev := find(check("sha1", opts), tlscheck.IDSigWeak); ev["signature_algorithm"] != "ECDSA-SHA1" {
		t.Errorf("sha1 evidence %v", ev)
	}
	if ev := find(check("nointermediate", opts), tlscheck.IDChainIncomplete); ev["missing"] != "nhscrypt test intermediate" {
		t.Errorf("nointermediate evidence %v", ev)
	}
	if ev := find(check("wronghost", opts), tlscheck.IDHostnameMismatch); ev["name"] != "127.0.0.1" || ev["certificate_names"] != "wrong.example" {
		t.Errorf("wronghost evidence %v", ev)
	}

	// Without the caIssuers download, the missing intermediate can only be
	// told apart with a locally known intermediate; else it is untrusted.
	o := opts
	o.FetchIssuers = false
	if got := ids(check("nointermediate", o)); !slices.Equal(got, []string{tlscheck.IDChainUntrusted}) {
		t.Errorf("nointermediate without fetch: %v", got)
	}
	intPEM, _ := os.ReadFile(pki.IntFile)
	o.Intermediates = mustCerts(t, intPEM)
	if got := ids(check("nointermediate", o)); !slices.Equal(got, []string{tlscheck.IDChainIncomplete}) {
		t.Errorf("nointermediate with a known intermediate: %v", got)
	}

	// With the system roots instead of the test root the valid chain is
	// untrusted; --servername changes the name checked.
	o = tlscheck.Options{}
	if got := ids(check("valid", o)); !slices.Equal(got, []string{tlscheck.IDChainUntrusted}) {
		t.Errorf("valid against the system roots: %v", got)
	}
	o = opts
	o.ServerName = "localhost"
	if got := ids(check("valid", o)); len(got) != 0 {
		t.Errorf("valid as localhost: %v", got)
	}
	o.ServerName = "other.example"
	if got := ids(check("valid", o)); !slices.Equal(got, []string{tlscheck.IDHostnameMismatch}) {
		t.Errorf("valid as other.example: %v", got)
	}
}

func mustCerts(t *testing.T, pemData []byte) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	rest := pemData
	for {
		c, r, ok := decodeCert(rest)
		if !ok {
			break
		}
		out = append(out, c)
		rest = r
	}
	if len(out) == 0 {
		t.Fatal("no certificate")
	}
	return out
}
