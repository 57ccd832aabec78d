package tlscheck

import (
	"bytes"
	"context"
	"crypto"
	//lint:ignore SA1019 only to recognise DSA keys as weak
	"crypto/dsa"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nhscrypt/nhscrypt/report"
)

// Finding IDs. They are stable: scripts and policies match on them. Each
// is documented, with its remedy, in docs/tls.md.
const (
	IDCertExpired      = "TLS-CERT-EXPIRED"
	IDCertNotYetValid  = "TLS-CERT-NOT-YET-VALID"
	IDCertExpiring     = "TLS-CERT-EXPIRING"
	IDChainUntrusted   = "TLS-CHAIN-UNTRUSTED"
	IDChainIncomplete  = "TLS-CHAIN-INCOMPLETE"
	IDHostnameMismatch = "TLS-HOSTNAME-MISMATCH"
	IDCertSelfSigned   = "TLS-CERT-SELF-SIGNED"
	IDKeyWeak          = "TLS-KEY-WEAK"
	IDSigWeak          = "TLS-SIG-WEAK"
	IDKeyMismatch      = "TLS-KEY-MISMATCH"
	IDProtoSSL3        = "TLS-PROTO-SSL3"
	IDProtoTLS10       = "TLS-PROTO-TLS10"
	IDProtoTLS11       = "TLS-PROTO-TLS11"
	IDCipherWeak       = "TLS-CIPHER-WEAK"
	IDCipherNoFS       = "TLS-CIPHER-NO-FS"
	IDCipherCBCOnly    = "TLS-CIPHER-CBC-ONLY"
	IDNoTLS13          = "TLS-NO-TLS13"
	IDOCSPNoStaple     = "TLS-OCSP-NO-STAPLE"
	IDOCSPRevoked      = "TLS-OCSP-REVOKED"
	IDStartTLSMissing  = "TLS-STARTTLS-MISSING"
)

// certInput is what the certificate checks look at.
type certInput struct {
	subject   string
	chain     []*x509.Certificate // leaf first, as presented or as in the file
	name      string              // name to check the leaf against; "" for none
	endpoint  bool                // an endpoint (else a file)
	verifyAll bool                // verify the chain (always for endpoints)
}

// checkCerts runs the certificate checks and returns their findings.
func checkCerts(ctx context.Context, in certInput, opts *Options) []report.Finding {
	var fs []report.Finding
	add := func(id string, sev report.Severity, msg, remedy string, ev map[string]string) {
		fs = append(fs, report.Finding{ID: id, Severity: sev, Subject: in.subject, Message: msg, Remedy: remedy, Evidence: ev})
	}
	leaf := in.chain[0]
	now := opts.now()
	ev := func(kv ...string) map[string]string {
		m := map[string]string{"certificate": certName(leaf)}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	renew := "renew the certificate and install it with its full chain, then reload the service"

	// Validity.
	switch {
	case now.After(leaf.NotAfter):
		add(IDCertExpired, report.Fail,
			fmt.Sprintf("certificate expired %s (%d days ago)", leaf.NotAfter.UTC().Format(time.DateOnly), int(now.Sub(leaf.NotAfter).Hours()/24)),
			renew, ev("not_after", leaf.NotAfter.UTC().Format(time.RFC3339)))
	case now.Before(leaf.NotBefore):
		add(IDCertNotYetValid, report.Fail,
			fmt.Sprintf("certificate is not valid until %s", leaf.NotBefore.UTC().Format(time.RFC3339)),
			"check the system clock of this host and of the CA; reissue the certificate with a correct start date",
			ev("not_before", leaf.NotBefore.UTC().Format(time.RFC3339)))
	default:
		left := leaf.NotAfter.Sub(now)
		days := int(left.Hours() / 24)
		msg := fmt.Sprintf("certificate expires %s (in %d days)", leaf.NotAfter.UTC().Format(time.DateOnly), days)
		e := ev("not_after", leaf.NotAfter.UTC().Format(time.RFC3339), "days_left", strconv.Itoa(days))
		if left < time.Duration(opts.failDays())*24*time.Hour {
			add(IDCertExpiring, report.Fail, msg, renew, e)
		} else if left < time.Duration(opts.warnDays())*24*time.Hour {
			add(IDCertExpiring, report.Warn, msg, renew, e)
		}
	}

	// Keys and signatures of the leaf and of the intermediates presented
	// with it (a self-signed root's own signature does not matter).
	for i, c := range in.chain {
		if i > 0 && !c.IsCA {
			continue
		}
		role := "certificate"
		if i > 0 {
			role = "intermediate " + certName(c)
		}
		if alg, bits, weak := weakKey(c); weak {
			add(IDKeyWeak, report.Fail, fmt.Sprintf("%s has a %d-bit %s key", role, bits, alg),
				"issue a new certificate with an RSA key of at least 2048 bits or an ECDSA P-256 key",
				map[string]string{"certificate": certName(c), "key": alg, "bits": strconv.Itoa(bits)})
		}
		if i > 0 && selfSigned(c) {
			continue
		}
		if weakSignature(c.SignatureAlgorithm) {
			add(IDSigWeak, report.Fail, fmt.Sprintf("%s is signed with %s", role, c.SignatureAlgorithm),
				"reissue the certificate signed with SHA-256 or better",
				map[string]string{"certificate": certName(c), "signature_algorithm": c.SignatureAlgorithm.String()})
		}
	}

	// Self-signed leaf and chain of trust.
	if !in.endpoint && !in.verifyAll && selfSigned(leaf) && !leaf.IsCA {
		{
			add(IDCertSelfSigned, report.Warn, "certificate is self-signed",
				"use a certificate issued by your organisation's CA or a public CA; if this file is unused, remove it", ev())
		}
	}
	if in.verifyAll {
		if f, ok := checkChain(ctx, in, opts, now); ok {
			add(f.ID, f.Severity, f.Message, f.Remedy, f.Evidence)
		}
	}

	if in.name != "" {
		if err := leaf.VerifyHostname(in.name); err != nil {
			names := append([]string{}, leaf.DNSNames...)
			for _, ip := range leaf.IPAddresses {
				names = append(names, ip.String())
			}
			add(IDHostnameMismatch, report.Fail,
				fmt.Sprintf("certificate is not valid for %q (valid for: %s)", in.name, strings.Join(names, ", ")),
				"issue a certificate whose subjectAltName includes the name clients use",
				ev("name", in.name, "certificate_names", strings.Join(names, ",")))
		}
	}
	return fs
}

// checkChain verifies the chain and returns the one chain finding, if
// any: a self-signed leaf, a missing intermediate, or an untrusted chain.
func checkChain(ctx context.Context, in certInput, opts *Options, now time.Time) (report.Finding, bool) {
	leaf := in.chain[0]
	f := report.Finding{Subject: in.subject, Evidence: map[string]string{"certificate": certName(leaf)}}
	// Verify at a time inside the leaf's validity, so that an expired or
	// not-yet-valid leaf is reported once, as such, and not again here.
	vt := now
	if vt.After(leaf.NotAfter) {
		vt = leaf.NotAfter
	}
	if vt.Before(leaf.NotBefore) {
		vt = leaf.NotBefore
	}
	inter := x509.NewCertPool()
	for _, c := range in.chain[1:] {
		inter.AddCert(c)
	}
	verifyAt := func(c *x509.Certificate, inter *x509.CertPool, t time.Time) error {
		_, err := c.Verify(x509.VerifyOptions{Roots: opts.Roots, Intermediates: inter, CurrentTime: t,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
		return err
	}
	verify := func(c *x509.Certificate, inter *x509.CertPool) error { return verifyAt(c, inter, vt) }
	self := selfSigned(leaf) && !leaf.IsCA
	var err error
	switch parent := issuerIn(leaf, in.chain[1:]); {
	case weakSignature(leaf.SignatureAlgorithm) && !self && parent == nil:
		// Go refuses to verify SHA-1 and MD5 signatures, and the issuer
		// is not at hand to check it another way. The weak signature is
		// reported already.
		return f, false
	case parent != nil && (weakSignature(leaf.SignatureAlgorithm) || !vt.Equal(now)):
		// A weak signature (reported already, and refused by Go) or a
		// leaf outside its validity (reported already): the leaf's
		// signature checked out against its issuer, so check the chain
		// from the issuer up, now.
		err = verifyAt(parent, inter, now)
	default:
		err = verify(leaf, inter)
	}
	switch {
	case err == nil && self:
		f.ID, f.Severity = IDCertSelfSigned, report.Info
		f.Message = "certificate is self-signed (trusted because it is in the given CA file)"
		return f, true
	case err == nil:
		return f, false
	case self:
		f.ID, f.Severity = IDCertSelfSigned, report.Fail
		f.Message = "certificate is self-signed: clients cannot verify it"
		f.Remedy = "use a certificate issued by your organisation's CA or a public CA"
		return f, true
	}
	// Could the chain be completed with an intermediate the server did
	// not send?
	extra := x509.NewCertPool()
	for _, c := range in.chain[1:] {
		extra.AddCert(c)
	}
	found := ""
	for _, c := range opts.Intermediates {
		extra.AddCert(c)
	}
	if opts.FetchIssuers {
		for _, c := range fetchIssuers(ctx, in.chain[len(in.chain)-1], opts.timeout()) {
			extra.AddCert(c)
			found = certName(c)
		}
	}
	if verify(leaf, extra) == nil {
		f.ID, f.Severity = IDChainIncomplete, report.Fail
		f.Message = "the chain is missing an intermediate certificate: clients that do not fetch it will refuse the connection"
		f.Remedy = "serve the full chain: leaf followed by its intermediates (for example fullchain.pem, or ssl_certificate with the intermediate appended)"
		if found != "" {
			f.Evidence["missing"] = found
		}
		return f, true
	}
	f.ID, f.Severity = IDChainUntrusted, report.Fail
	f.Message = "certificate chain does not verify: " + err.Error()
	f.Remedy = "use a certificate from a CA the clients trust and serve it with its intermediates; for a private CA pass its root with --ca-file"
	f.Evidence["error"] = err.Error()
	f.Evidence["issuer"] = leaf.Issuer.String()
	return f, true
}

// issuerIn returns the certificate in cands that signed c, or nil.
func issuerIn(c *x509.Certificate, cands []*x509.Certificate) *x509.Certificate {
	for _, p := range cands {
		if bytes.Equal(p.RawSubject, c.RawIssuer) && p.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature) == nil {
			return p
		}
	}
	return nil
}

// fetchIssuers follows the caIssuers URLs (http only, as RFC 5280 says) of
// c, and returns the certificates found. Failures are ignored: this only
// helps tell a missing intermediate from an untrusted chain.
func fetchIssuers(ctx context.Context, c *x509.Certificate, timeout time.Duration) []*x509.Certificate {
	var out []*x509.Certificate
	for _, u := range c.IssuingCertificateURL {
		if !strings.HasPrefix(u, "http://") {
			continue
		}
		certs, err := fetchCerts(ctx, u, timeout)
		if err == nil {
			out = append(out, certs...)
		}
	}
	return out
}

func fetchCerts(ctx context.Context, url string, timeout time.Duration) ([]*x509.Certificate, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return nil, err
	}
	certs, _, err := parseCertsAndKeys(b)
	return certs, err
}

// selfSigned reports whether c is issued by itself and its signature
// verifies with its own key.
func selfSigned(c *x509.Certificate) bool {
	return bytes.Equal(c.RawIssuer, c.RawSubject) &&
		c.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature) == nil
}

// weakKey reports RSA keys under 2048 bits, EC keys under 256 bits and
// any DSA key.
func weakKey(c *x509.Certificate) (alg string, bits int, weak bool) {
	switch k := c.PublicKey.(type) {
	case *rsa.PublicKey:
		return "RSA", k.N.BitLen(), k.N.BitLen() < 2048
	case *ecdsa.PublicKey:
		return "EC " + k.Curve.Params().Name, k.Curve.Params().BitSize, k.Curve.Params().BitSize < 256
	case *dsa.PublicKey:
		return "DSA", k.P.BitLen(), true
	}
	return "", 0, false
}

func weakSignature(a x509.SignatureAlgorithm) bool {
	switch a {
	case x509.MD2WithRSA, x509.MD5WithRSA, x509.SHA1WithRSA, x509.DSAWithSHA1, x509.ECDSAWithSHA1:
		return true
	}
	return false
}

// certName names a certificate in messages: its CN, or its first SAN, or
// its serial number.
func certName(c *x509.Certificate) string {
	switch {
	case c.Subject.CommonName != "":
		return c.Subject.CommonName
	case len(c.DNSNames) > 0:
		return c.DNSNames[0]
	}
	return "serial " + c.SerialNumber.String()
}

// ErrNoCertificate is returned (wrapped) for a file that holds no
// certificate.
var ErrNoCertificate = errors.New("no certificate found")

// parseCertsAndKeys reads PEM (any number of CERTIFICATE and private key
// blocks, with text between them) or DER (one or more concatenated
// certificates). Keys are returned as parsed crypto.Signer-like values.
func parseCertsAndKeys(data []byte) ([]*x509.Certificate, []any, error) {
	var certs []*x509.Certificate
	var keys []any
	rest := data
	sawPEM := false
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		sawPEM = true
		switch {
		case b.Type == "CERTIFICATE":
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return nil, nil, fmt.Errorf("certificate %d: %w", len(certs)+1, err)
			}
			certs = append(certs, c)
		case strings.HasSuffix(b.Type, "PRIVATE KEY") && !strings.Contains(b.Type, "ENCRYPTED"):
			if k, err := parsePrivateKey(b); err == nil {
				keys = append(keys, k)
			}
		}
	}
	if !sawPEM && len(data) > 0 {
		cs, err := x509.ParseCertificates(data)
		if err != nil {
			return nil, nil, fmt.Errorf("%w (neither PEM nor DER)", ErrNoCertificate)
		}
		certs = cs
	}
	return certs, keys, nil
}

func parsePrivateKey(b *pem.Block) (any, error) {
	switch b.Type {
	case "RSA PRIVATE KEY":
		return x509.ParsePKCS1PrivateKey(b.Bytes)
	case "EC PRIVATE KEY":
		return x509.ParseECPrivateKey(b.Bytes)
	}
	return x509.ParsePKCS8PrivateKey(b.Bytes)
}

// keyMatches reports whether the private key k belongs to c.
func keyMatches(k any, c *x509.Certificate) bool {
	s, ok := k.(crypto.Signer)
	if !ok {
		return false
	}
	pub, ok := s.Public().(interface{ Equal(crypto.PublicKey) bool })
	return ok && pub.Equal(c.PublicKey)
}
