package tlscheck

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/nhscrypt/nhscrypt/report"
)

// Options configure the checks. The zero value checks against the system
// trust store with the default thresholds.
type Options struct {
	// Roots are the trusted CA certificates; nil means the system pool.
	Roots *x509.CertPool
	// Intermediates are intermediate certificates known locally. They are
	// never trusted; they only let a chain that the server sent without
	// its intermediate be reported as TLS-CHAIN-INCOMPLETE rather than
	// TLS-CHAIN-UNTRUSTED.
	Intermediates []*x509.Certificate
	// FetchIssuers lets the chain check download a missing intermediate
	// from the leaf's caIssuers URL (http only), for the same diagnosis.
	FetchIssuers bool
	// WarnDays and FailDays are the expiry thresholds: a certificate that
	// expires within FailDays days is a failure, within WarnDays a
	// warning. Zero means the default, 30 and 7; a negative value turns
	// that threshold off.
	WarnDays, FailDays int
	// ServerName, when set, is sent as SNI to every endpoint and checked
	// against its certificate instead of the name dialled.
	ServerName string
	// Timeout bounds each connection: dial, STARTTLS and handshake.
	// Default 5s.
	Timeout time.Duration
	// Workers is how many endpoints are checked at once. Default 16.
	Workers int
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
	// Progress, if set, is told as [Run] finishes each endpoint and file.
	Progress Progress
}

// Progress is told of each subject [Run] has checked. Calls come one at
// a time (never concurrently), from Run's workers: they must be quick.
type Progress interface {
	// TLSChecked reports that r is done, and that done of total subjects
	// are.
	TLSChecked(r *Result, done, total int)
}

func (o *Options) now() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}

func (o *Options) warnDays() int { return days(o.WarnDays, 30) }
func (o *Options) failDays() int { return days(o.FailDays, 7) }

func days(n, def int) int {
	switch {
	case n < 0:
		return 0
	case n == 0:
		return def
	}
	return n
}

func (o *Options) timeout() time.Duration {
	if o.Timeout > 0 {
		return o.Timeout
	}
	return 5 * time.Second
}

func (o *Options) workers() int {
	if o.Workers > 0 {
		return o.Workers
	}
	return 16
}

// A Result is the outcome of checking one endpoint or one certificate
// file.
type Result struct {
	// Subject names what was checked, as findings name it: "host:port",
	// "smtp://host:port" or a file path.
	Subject string `json:"subject"`
	// Findings are the problems found.
	Findings []report.Finding `json:"findings"`
	// Err is set when the subject could not be checked (or not fully:
	// Findings may still hold what was found before the error).
	Err error `json:"-"`

	// Endpoint details; empty for files.
	Negotiated Version                   `json:"negotiated,omitempty"`
	Protocols  []Version                 `json:"protocols,omitempty"`
	Weak       map[Version][]CipherClass `json:"weak,omitempty"`
	AEAD12     bool                      `json:"aead12,omitempty"`
	Chain      []*x509.Certificate       `json:"-"`
}

// A TargetError is an endpoint or file that could not be checked.
type TargetError struct {
	Subject string
	Err     error
}

func (e *TargetError) Error() string { return e.Subject + ": " + e.Err.Error() }
func (e *TargetError) Unwrap() error { return e.Err }

func (r *Result) add(id string, sev report.Severity, msg, remedy string, ev map[string]string) {
	r.Findings = append(r.Findings, report.Finding{ID: id, Severity: sev, Subject: r.Subject, Message: msg, Remedy: remedy, Evidence: ev})
}

// goSuites are all the cipher suites Go's crypto/tls implements, secure or
// not, so that the certificate handshake works with old servers too.
var goSuites = func() []uint16 {
	var ids []uint16
	for _, s := range append(tls.CipherSuites(), tls.InsecureCipherSuites()...) {
		ids = append(ids, s.ID)
	}
	return ids
}()

// CheckEndpoint checks one TLS endpoint: it fetches the certificate chain
// with a handshake, checks it, and probes which protocol versions and weak
// cipher classes the server accepts. Every connection is bounded by
// opts.Timeout and by ctx.
//
// An endpoint that cannot be reached, or that does not speak TLS, gives a
// Result with Err set (a *TargetError).
func CheckEndpoint(ctx context.Context, t Target, opts Options) Result {
	r := Result{Subject: t.String()}
	if opts.ServerName != "" {
		t.ServerName = opts.ServerName
		t.SkipHostname = false
	}
	err := checkEndpoint(ctx, t, &opts, &r)
	if err != nil {
		r.Err = &TargetError{Subject: r.Subject, Err: err}
	}
	return r
}

func checkEndpoint(ctx context.Context, t Target, opts *Options, r *Result) error {
	timeout := opts.timeout()
	cfg := &tls.Config{
		ServerName:         t.sni(),
		InsecureSkipVerify: true, // verified below, with findings instead of a failed handshake
		MinVersion:         tls.VersionTLS10,
		MaxVersion:         tls.VersionTLS13,
		CipherSuites:       goSuites,
	}
	var state tls.ConnectionState
	hsErr := withConn(ctx, t, timeout, func(c net.Conn) error {
		tc := tls.Client(c, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			return err
		}
		state = tc.ConnectionState()
		return nil
	})
	if errors.Is(hsErr, ErrStartTLSNotOffered) {
		r.add(IDStartTLSMissing, report.Fail, fmt.Sprintf("the %s service does not offer STARTTLS: traffic is in clear text", t.StartTLS),
			"enable TLS on the service (and require it), or close the port", map[string]string{"detail": hsErr.Error()})
		return nil
	}
	var tlsAlert tls.AlertError
	var recErr tls.RecordHeaderError
	switch {
	case hsErr == nil:
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.Is(hsErr, ErrTimeout):
		return hsErr
	case errors.As(hsErr, &recErr):
		return fmt.Errorf("does not speak TLS (%w)", hsErr)
	case errors.As(hsErr, &tlsAlert), strings.Contains(hsErr.Error(), "tls: "):
		// The server speaks TLS but not with Go's offer: the probes below
		// may still tell what it accepts.
	default:
		return hsErr
	}

	if hsErr == nil {
		r.Negotiated = Version(state.Version)
		r.Chain = state.PeerCertificates
		if len(r.Chain) == 0 {
			return errors.New("server sent no certificate")
		}
		name := ""
		if !t.SkipHostname {
			name = t.name()
		}
		r.Findings = append(r.Findings, checkCerts(ctx, certInput{subject: r.Subject, chain: r.Chain, name: name, endpoint: true, verifyAll: true}, opts)...)
		checkOCSP(r, state)
	}

	if err := probe(ctx, t, opts, r); err != nil {
		return err
	}
	if hsErr != nil {
		return fmt.Errorf("handshake failed, certificate not checked: %w", hsErr)
	}
	return nil
}

// checkOCSP reports a missing staple (when the certificate names an OCSP
// responder) and a staple that says the certificate is revoked.
func checkOCSP(r *Result, state tls.ConnectionState) {
	leaf := r.Chain[0]
	if len(state.OCSPResponse) == 0 {
		if len(leaf.OCSPServer) > 0 {
			r.add(IDOCSPNoStaple, report.Info, "no OCSP response is stapled: each client must ask the CA's responder itself",
				"enable OCSP stapling (nginx: ssl_stapling on; ssl_stapling_verify on; with a resolver)",
				map[string]string{"ocsp_server": strings.Join(leaf.OCSPServer, ",")})
		}
		return
	}
	var issuer *x509.Certificate
	if len(r.Chain) > 1 {
		issuer = r.Chain[1]
	}
	resp, err := ocsp.ParseResponseForCert(state.OCSPResponse, leaf, issuer)
	if err != nil {
		resp, err = ocsp.ParseResponse(state.OCSPResponse, nil)
	}
	if err == nil && resp.Status == ocsp.Revoked {
		r.add(IDOCSPRevoked, report.Fail, fmt.Sprintf("the stapled OCSP response says the certificate was revoked on %s", resp.RevokedAt.UTC().Format(time.DateOnly)),
			"install a new certificate; the revoked one must not be used", map[string]string{"revoked_at": resp.RevokedAt.UTC().Format(time.RFC3339)})
	}
}

// probe finds which protocol versions and weak cipher classes t accepts,
// with hand-built ClientHello offers, and adds the findings.
func probe(ctx context.Context, t Target, opts *Options, r *Result) error {
	timeout := opts.timeout()
	sni := t.sni()
	var (
		mu       sync.Mutex
		firstErr error
	)
	fail := func(err error) {
		mu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		mu.Unlock()
	}

	// Protocol versions. Go's handshake already told whether TLS 1.3 is
	// accepted when it succeeded.
	versions := []Version{SSL30, TLS10, TLS11, TLS12}
	accepted := map[Version]bool{}
	if r.Negotiated == TLS13 {
		accepted[TLS13] = true
	} else if r.Negotiated == 0 {
		versions = append(versions, TLS13)
	}
	var fns []func()
	for _, v := range versions {
		fns = append(fns, func() {
			suites := allSuiteIDs()
			if v == TLS13 {
				suites = suiteIDs(tls13Suites)
			}
			_, ok, err := offer(ctx, t, timeout, clientHello{version: v, suites: suites, serverName: sni})
			if err != nil {
				fail(fmt.Errorf("probing %s: %w", v, err))
				return
			}
			mu.Lock()
			accepted[v] = ok
			mu.Unlock()
		})
	}
	parallel(fns)
	if firstErr != nil {
		return firstErr
	}
	if r.Negotiated != 0 && r.Negotiated != TLS13 {
		accepted[TLS13] = false
	}
	for _, v := range []Version{SSL30, TLS10, TLS11, TLS12, TLS13} {
		if accepted[v] {
			r.Protocols = append(r.Protocols, v)
		}
	}
	if len(r.Protocols) == 0 {
		return errors.New("the server accepted no TLS version offered")
	}

	// Weak cipher classes, for each accepted version up to TLS 1.2.
	type hit struct {
		v     Version
		c     CipherClass
		suite uint16
	}
	var hits []hit
	fns = nil
	for _, v := range []Version{SSL30, TLS10, TLS11, TLS12} {
		if !accepted[v] {
			continue
		}
		for _, c := range append(slices.Clone(weakClasses), ClassNoFS) {
			fns = append(fns, func() {
				sh, ok, err := offer(ctx, t, timeout, clientHello{version: v, suites: suitesOf(c), serverName: sni})
				if err != nil {
					fail(fmt.Errorf("probing %s %s suites: %w", v, c, err))
					return
				}
				if ok {
					mu.Lock()
					hits = append(hits, hit{v, c, sh.Suite})
					mu.Unlock()
				}
			})
		}
	}
	if accepted[TLS12] && !accepted[TLS13] {
		fns = append(fns, func() {
			_, ok, err := offer(ctx, t, timeout, clientHello{version: TLS12, suites: aeadSuites(), serverName: sni})
			if err != nil {
				fail(fmt.Errorf("probing TLS1.2 AEAD suites: %w", err))
				return
			}
			mu.Lock()
			r.AEAD12 = ok
			mu.Unlock()
		})
	}
	parallel(fns)
	if firstErr != nil {
		return firstErr
	}
	slices.SortFunc(hits, func(a, b hit) int {
		if a.v != b.v {
			return int(a.v) - int(b.v)
		}
		return classOrder(a.c) - classOrder(b.c)
	})

	// Findings.
	protoFinding := map[Version]string{SSL30: IDProtoSSL3, TLS10: IDProtoTLS10, TLS11: IDProtoTLS11}
	for _, v := range []Version{SSL30, TLS10, TLS11} {
		if accepted[v] {
			r.add(protoFinding[v], report.Fail, fmt.Sprintf("the server accepts %s, which is obsolete (RFC 8996)", v),
				"allow only TLS 1.2 and 1.3 (nginx: ssl_protocols TLSv1.2 TLSv1.3;)", map[string]string{"protocol": v.String()})
		}
	}
	if !accepted[TLS13] {
		r.add(IDNoTLS13, report.Info, "the server does not accept TLS 1.3",
			"enable TLS 1.3 (nginx: ssl_protocols TLSv1.2 TLSv1.3;)", nil)
	}
	r.Weak = map[Version][]CipherClass{}
	weakEv := map[string]string{}
	var weakNames, noFS []string
	for _, h := range hits {
		r.Weak[h.v] = append(r.Weak[h.v], h.c)
		key := h.v.String()
		if h.c == ClassNoFS {
			noFS = appendUnique(noFS, key+" "+SuiteName(h.suite))
			continue
		}
		weakNames = appendUnique(weakNames, string(h.c))
		weakEv[key] = joinUnique(weakEv[key], SuiteName(h.suite))
	}
	if len(weakNames) > 0 {
		weakEv["classes"] = strings.Join(weakNames, ",")
		r.add(IDCipherWeak, report.Fail, "the server accepts weak cipher suites: "+strings.Join(weakNames, ", "),
			"allow only ECDHE with AES-GCM or ChaCha20-Poly1305 (nginx: ssl_ciphers ECDHE+AESGCM:ECDHE+CHACHA20; Mozilla \"intermediate\")", weakEv)
	}
	if len(noFS) > 0 {
		r.add(IDCipherNoFS, report.Warn, "the server accepts cipher suites without forward secrecy (RSA key exchange)",
			"remove the RSA key-exchange suites (kRSA) so that every connection uses ECDHE or DHE",
			map[string]string{"examples": strings.Join(noFS, ", ")})
	}
	if accepted[TLS12] && !accepted[TLS13] && !r.AEAD12 {
		r.add(IDCipherCBCOnly, report.Warn, "TLS 1.2 offers only CBC-mode cipher suites (no AES-GCM or ChaCha20-Poly1305)",
			"enable ECDHE-ECDSA/RSA-AES128-GCM-SHA256 and the other AEAD suites, and TLS 1.3", nil)
	}
	if len(r.Weak) == 0 {
		r.Weak = nil
	}
	return nil
}

func classOrder(c CipherClass) int {
	if i := slices.Index(weakClasses, c); i >= 0 {
		return i
	}
	return len(weakClasses)
}

func suiteIDs(l []suite) []uint16 {
	var ids []uint16
	for _, s := range l {
		ids = append(ids, s.ID)
	}
	return ids
}

func appendUnique(l []string, s string) []string {
	if slices.Contains(l, s) {
		return l
	}
	return append(l, s)
}

func joinUnique(list, s string) string {
	if list == "" {
		return s
	}
	if slices.Contains(strings.Split(list, ", "), s) {
		return list
	}
	return list + ", " + s
}

// parallel runs fns at once and waits for them.
func parallel(fns []func()) {
	var wg sync.WaitGroup
	for _, f := range fns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f()
		}()
	}
	wg.Wait()
}

// Run checks every target and every certificate file, at most
// opts.Workers at once, and returns one Result each, in the order given
// (targets first). One slow endpoint holds up only its own worker, for at
// most a few multiples of opts.Timeout.
func Run(ctx context.Context, targets []Target, files []CertFile, opts Options) []Result {
	results := make([]Result, len(targets)+len(files))
	jobs := make(chan int)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		done int
	)
	for range min(opts.workers(), len(results)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				if i < len(targets) {
					results[i] = CheckEndpoint(ctx, targets[i], opts)
				} else {
					results[i] = CheckFile(ctx, files[i-len(targets)], opts)
				}
				if opts.Progress != nil {
					mu.Lock()
					done++
					opts.Progress.TLSChecked(&results[i], done, len(results))
					mu.Unlock()
				}
			}
		}()
	}
	for i := range results {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	return results
}

// AddTo adds the results to rep: every finding, and every subject that
// was checked without error to rep.Checked. It returns the errors of the
// subjects that could not be checked.
func AddTo(rep *report.Report, results []Result) []error {
	var errs []error
	for _, r := range results {
		for _, f := range r.Findings {
			rep.Add(f)
		}
		if r.Err != nil {
			errs = append(errs, r.Err)
		} else {
			rep.Checked = append(rep.Checked, r.Subject)
		}
	}
	return errs
}
