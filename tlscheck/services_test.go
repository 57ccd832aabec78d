package tlscheck_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nhscrypt/nhscrypt/internal/testenv"
	"github.com/nhscrypt/nhscrypt/tlscheck"
	"github.com/nhscrypt/nhscrypt/tlscheck/tlstest"
)

// Real STARTTLS services from Debian, each in its own folder on a
// 127.0.0.1 high port, started once for the tests of this package and
// stopped by TestMain: Postfix, Dovecot (IMAP and POP3), PostgreSQL,
// slapd, MariaDB and vsftpd serving the test PKI's valid certificate, and
// Postfix, Dovecot and vsftpd again without TLS.
var (
	servicesOnce sync.Once
	sharedSvcs   []*tlstest.Service
	sharedEPs    []endpoint
	servicesErr  error
)

// An endpoint is one port of a started service and what tlscheck must
// make of it.
type endpoint struct {
	url   string
	svc   *tlstest.Service
	proto tlscheck.Protocol
	// processes are the names the listener's owner may have: the
	// daemon, or a child it passed the socket to.
	processes []string
	// want are the finding IDs, sorted; protocols the versions accepted
	// (nil for a service without TLS).
	want      []string
	protocols []tlscheck.Version
	tls       bool
}

func (e endpoint) addr() string { return strings.SplitN(e.url, "://", 2)[1] }

// startServices returns the running services' endpoints, starting them
// (and the shared nginx, for the PKI) on first use.
func startServices(t *testing.T) (*tlstest.PKI, []endpoint) {
	t.Helper()
	for _, tool := range []string{"/usr/lib/postfix/sbin/master", "dovecot", "/usr/sbin/slapd",
		"/usr/sbin/mariadbd", "mariadb-install-db", "/usr/sbin/vsftpd"} {
		testenv.Tool(t, tool)
	}
	if os.Geteuid() != 0 {
		testenv.Missing(t, "the STARTTLS services tests run as root (PostgreSQL must be started as the postgres user)")
	}
	if tlstest.PostgresBin() == "" {
		testenv.Missing(t, "PostgreSQL server not installed (make test installs postgresql)")
	}
	pki, _ := startNginx(t)
	servicesOnce.Do(func() { sharedSvcs, sharedEPs, servicesErr = launchServices(pki) })
	if servicesErr != nil {
		t.Fatal(servicesErr)
	}
	return pki, sharedEPs
}

func launchServices(pki *tlstest.PKI) ([]*tlstest.Service, []endpoint, error) {
	valid := pki.Case("valid")
	cert := tlstest.Cert{CertFile: valid.CertFile, KeyFile: valid.KeyFile}
	var plain tlstest.Cert
	ports, err := tlstest.FreePorts(11)
	if err != nil {
		return nil, nil, err
	}
	dir, err := os.MkdirTemp("", "tlscheck-services-")
	if err != nil {
		return nil, nil, err
	}
	cleanupDirs = append(cleanupDirs, dir)
	d := func(name string) string { return filepath.Join(dir, name) }
	starters := []func() (*tlstest.Service, error){
		func() (*tlstest.Service, error) { return tlstest.StartPostfix(d("postfix"), ports[0], cert) },
		func() (*tlstest.Service, error) { return tlstest.StartDovecot(d("dovecot"), ports[1], ports[2], cert) },
		func() (*tlstest.Service, error) { return tlstest.StartPostgres(d("pg"), ports[3], cert) },
		func() (*tlstest.Service, error) { return tlstest.StartSlapd(d("slapd"), ports[4], cert) },
		func() (*tlstest.Service, error) { return tlstest.StartMariaDB(d("mariadb"), ports[5], cert) },
		func() (*tlstest.Service, error) { return tlstest.StartVsftpd(d("vsftpd"), ports[6], cert) },
		func() (*tlstest.Service, error) { return tlstest.StartPostfix(d("postfix-plain"), ports[7], plain) },
		func() (*tlstest.Service, error) {
			return tlstest.StartDovecot(d("dovecot-plain"), ports[8], ports[9], plain)
		},
		func() (*tlstest.Service, error) { return tlstest.StartVsftpd(d("vsftpd-plain"), ports[10], plain) },
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
	for i, err := range errs {
		if err != nil {
			for _, s := range svcs {
				s.Stop()
			}
			return nil, nil, fmt.Errorf("starting service %d: %w", i, err)
		}
	}
	started := time.Since(start)

	const noStaple = tlscheck.IDOCSPNoStaple
	v12, v13 := tlscheck.TLS12, tlscheck.TLS13
	modern := []tlscheck.Version{v12, v13}
	old := []tlscheck.Version{tlscheck.TLS10, tlscheck.TLS11, v12, v13}
	u := func(scheme string, port int) string { return fmt.Sprintf("%s://127.0.0.1:%d", scheme, port) }
	eps := []endpoint{
		// The valid certificate names an OCSP responder; none of these
		// servers staples (nginx does, in TestNginxCases).
		// Postfix's defaults for opportunistic TLS: smtpd_tls_protocols
		// = !SSLv2, !SSLv3 re-enables TLS 1.0 and 1.1 over Debian's
		// OpenSSL minimum, and the "medium" cipher grade keeps anonymous
		// suites (sslscan --starttls-smtp agrees).
		{url: u("smtp", ports[0]), svc: svcs[0], proto: tlscheck.SMTP, processes: []string{"master", "smtpd"},
			want: []string{noStaple, tlscheck.IDProtoTLS10, tlscheck.IDProtoTLS11, tlscheck.IDCipherWeak}, protocols: old},
		{url: u("imap", ports[1]), svc: svcs[1], proto: tlscheck.IMAP, processes: []string{"dovecot", "imap-login"},
			want: []string{noStaple}, protocols: modern},
		{url: u("pop3", ports[2]), svc: svcs[1], proto: tlscheck.POP3, processes: []string{"dovecot", "pop3-login"},
			want: []string{noStaple}, protocols: modern},
		{url: u("postgres", ports[3]), svc: svcs[2], proto: tlscheck.Postgres, processes: []string{"postgres"},
			want: []string{noStaple}, protocols: modern},
		// Debian's slapd uses GnuTLS, which still accepts TLS 1.0 and 1.1
		// unless olcTLSProtocolMin / TLSProtocolMin is set.
		{url: u("ldap", ports[4]), svc: svcs[3], proto: tlscheck.LDAP, processes: []string{"slapd"},
			want: []string{noStaple, tlscheck.IDProtoTLS10, tlscheck.IDProtoTLS11}, protocols: old},
		// MariaDB with --ssl-cert/--ssl-key and nothing else: Debian's
		// OpenSSL defaults (TLS 1.2 and 1.3, no weak suites).
		{url: u("mysql", ports[5]), svc: svcs[4], proto: tlscheck.MySQL, processes: []string{"mariadbd"},
			want: []string{noStaple}, protocols: modern},
		// vsftpd's default ssl_ciphers is DES-CBC3-SHA, which Debian's
		// OpenSSL (security level 2) refuses: no TLS 1.2 suite is left,
		// and only TLS 1.3 handshakes succeed (sslscan --starttls-ftp
		// agrees). Not accepting TLS 1.2 is not a finding.
		{url: u("ftp", ports[6]), svc: svcs[5], proto: tlscheck.FTP, processes: []string{"vsftpd"},
			want: []string{noStaple}, protocols: []tlscheck.Version{v13}},
		// Without TLS: each answers, and does not offer the upgrade.
		{url: u("smtp", ports[7]), svc: svcs[6], proto: tlscheck.SMTP, processes: []string{"master", "smtpd"},
			want: []string{tlscheck.IDStartTLSMissing}},
		{url: u("imap", ports[8]), svc: svcs[7], proto: tlscheck.IMAP, processes: []string{"dovecot", "imap-login"},
			want: []string{tlscheck.IDStartTLSMissing}},
		{url: u("pop3", ports[9]), svc: svcs[7], proto: tlscheck.POP3, processes: []string{"dovecot", "pop3-login"},
			want: []string{tlscheck.IDStartTLSMissing}},
		{url: u("ftp", ports[10]), svc: svcs[8], proto: tlscheck.FTP, processes: []string{"vsftpd"},
			want: []string{tlscheck.IDStartTLSMissing}},
	}
	for i := range eps {
		slices.Sort(eps[i].want)
		eps[i].tls = eps[i].protocols != nil
	}
	fmt.Fprintf(os.Stderr, "tlscheck tests: %d services started in %v\n", len(svcs), started.Round(time.Millisecond))
	return svcs, eps, nil
}

func stopServices() {
	for _, s := range sharedSvcs {
		s.Stop()
	}
}

// Each service, checked by URL, gives exactly the findings expected.
func TestStartTLSServices(t *testing.T) {
	pki, eps := startServices(t)
	opts := tlscheck.Options{Roots: rootPool(t, pki), Timeout: 5 * time.Second}
	var targets []tlscheck.Target
	for _, ep := range eps {
		tg, err := tlscheck.ParseTarget(ep.url)
		if err != nil {
			t.Fatal(err)
		}
		if tg.StartTLS != ep.proto {
			t.Fatalf("%s: StartTLS %q, want %q", ep.url, tg.StartTLS, ep.proto)
		}
		targets = append(targets, tg)
	}
	start := time.Now()
	results := tlscheck.Run(context.Background(), targets, nil, opts)
	t.Logf("%d service endpoints checked in %v", len(targets), time.Since(start))
	for i, ep := range eps {
		t.Run(ep.url, func(t *testing.T) {
			checkServiceResult(t, ep, results[i])
		})
	}
}

// checkServiceResult compares a result with what ep must give.
func checkServiceResult(t *testing.T, ep endpoint, r tlscheck.Result) {
	t.Helper()
	if r.Err != nil {
		t.Fatalf("%v\n%s logs:\n%s", r.Err, ep.svc.Name, ep.svc.Logs())
	}
	if r.Subject != ep.url {
		t.Errorf("subject %q, want %q", r.Subject, ep.url)
	}
	if got := ids(r); !slices.Equal(got, ep.want) {
		for _, f := range r.Findings {
			t.Logf("  %s %s %v", f.ID, f.Message, f.Evidence)
		}
		t.Errorf("findings %v, want %v (protocols %v)", got, ep.want, r.Protocols)
	}
	if !ep.tls {
		// The finding says what the server answered to the upgrade.
		if len(r.Findings) == 1 && (r.Findings[0].Evidence["detail"] == "" || r.Findings[0].Severity.String() != "fail") {
			t.Errorf("STARTTLS-MISSING: severity %v, evidence %v", r.Findings[0].Severity, r.Findings[0].Evidence)
		}
		if r.Chain != nil || r.Protocols != nil {
			t.Errorf("plaintext service: chain %d, protocols %v", len(r.Chain), r.Protocols)
		}
		return
	}
	if len(r.Chain) != 2 || r.Chain[0].Subject.CommonName != "valid.test" {
		t.Errorf("chain of %d certificates", len(r.Chain))
	}
	if !slices.Equal(r.Protocols, ep.protocols) {
		t.Errorf("protocols %v, want %v", r.Protocols, ep.protocols)
	}
}

// Discovery with the services running. Listeners on the real /proc
// finds each service's port, owned by a process of that service. Discover
// then runs on a view of the real /proc that shows only the services'
// ports (tlstest.ProcView: the kernel's own lines for those ports, and
// every real process): it must find exactly those listeners, each mapped
// to its service's process and given the right protocol, and checking
// the discovered targets must give the same findings as checking the
// URLs. (Discover on the whole /proc would also probe every other
// listener on the machine, which a test has no business connecting to;
// Listeners alone only reads /proc.)
func TestDiscoverServices(t *testing.T) {
	pki, eps := startServices(t)
	opts := tlscheck.Options{Roots: rootPool(t, pki), Timeout: 3 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	ls, err := tlscheck.Listeners("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var ports []int
	for _, ep := range eps {
		port := ep.svc.Ports[string(ep.proto)]
		ports = append(ports, port)
		i := slices.IndexFunc(ls, func(l tlscheck.Listener) bool { return int(l.Addr.Port()) == port })
		if i < 0 {
			t.Errorf("%s: no listener on port %d in /proc", ep.url, port)
			continue
		}
		if l := ls[i]; l.Addr.Addr().String() != "127.0.0.1" {
			t.Errorf("%s: listener %v", ep.url, l.Addr)
		} else if l.UID != 0 && ep.svc.Name != "postgres" {
			t.Errorf("%s: listener owned by uid %d", ep.url, l.UID)
		}
		checkOwner(t, fmt.Sprintf("discovered: %s (pid %d)", ls[i].Process, ls[i].PID), ep)
	}

	view := t.TempDir()
	if err := tlstest.ProcView(view, ports...); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	found, skipped, err := tlscheck.Discover(ctx, view, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("discovery of %d listeners in %v", len(found)+len(skipped), time.Since(start))
	if len(found) != len(eps) || len(skipped) != 0 {
		t.Errorf("%d targets, %d skipped %v; want %d and none", len(found), len(skipped), skipped, len(eps))
	}
	var targets []tlscheck.Target
	var want []endpoint
	for _, ep := range eps {
		i := slices.IndexFunc(found, func(tg tlscheck.Target) bool { return tg.Addr() == ep.addr() })
		if i < 0 {
			t.Errorf("%s (%s) not discovered", ep.addr(), ep.svc.Name)
			continue
		}
		tg := found[i]
		if tg.StartTLS != ep.proto || !tg.SkipHostname {
			t.Errorf("%s discovered as %+v, want protocol %q", ep.addr(), tg, ep.proto)
		}
		checkOwner(t, tg.Source, ep)
		targets = append(targets, tg)
		want = append(want, ep)
	}
	results := tlscheck.Run(ctx, targets, nil, opts)
	for i, ep := range want {
		t.Run(ep.url, func(t *testing.T) { checkServiceResult(t, ep, results[i]) })
	}
}

// checkOwner checks that source ("discovered: NAME (pid N)") names a
// process of the service that was started: one of its names, in its
// session.
func checkOwner(t *testing.T, source string, ep endpoint) {
	t.Helper()
	var comm string
	var pid int
	if _, err := fmt.Sscanf(source, "discovered: %s (pid %d)", &comm, &pid); err != nil {
		t.Errorf("%s: source %q does not name the owning process", ep.url, source)
		return
	}
	if !slices.Contains(ep.processes, comm) {
		t.Errorf("%s: owner %q, want one of %v", ep.url, comm, ep.processes)
	}
	if sid, err := tlstest.SessionID(pid); err != nil || sid != ep.svc.PID() {
		t.Errorf("%s: owner pid %d is in session %d (%v), not the %s started here (%d)", ep.url, pid, sid, err, ep.svc.Name, ep.svc.PID())
	}
}
