package tlscheck_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"log"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/nhscrypt/nhscrypt/report"
	"github.com/nhscrypt/nhscrypt/tlscheck"
)

// A URL's scheme says how TLS starts and gives the default port.
func ExampleParseTarget() {
	for _, s := range []string{
		"intranet.example.nhs.uk:8443",
		"https://intranet.example.nhs.uk",
		"smtp://mail1.example.nhs.uk",
		"submission://mail1.example.nhs.uk",
		"imaps://[2001:db8::25]",
		"postgres://db1:6432",
		"ldap://dc1",
	} {
		t, err := tlscheck.ParseTarget(s)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%-36s host %-26s port %-4d starttls %q\n", s, t.Host, t.Port, t.StartTLS)
	}
	// Output:
	// intranet.example.nhs.uk:8443         host intranet.example.nhs.uk    port 8443 starttls ""
	// https://intranet.example.nhs.uk      host intranet.example.nhs.uk    port 443  starttls ""
	// smtp://mail1.example.nhs.uk          host mail1.example.nhs.uk       port 25   starttls "smtp"
	// submission://mail1.example.nhs.uk    host mail1.example.nhs.uk       port 587  starttls "smtp"
	// imaps://[2001:db8::25]               host 2001:db8::25               port 993  starttls ""
	// postgres://db1:6432                  host db1                        port 6432 starttls "postgres"
	// ldap://dc1                           host dc1                        port 389  starttls "ldap"
}

// The scheme→default-port table: every scheme ParseTarget knows.
func ExampleSchemes() {
	for _, s := range tlscheck.Schemes() {
		t, _ := tlscheck.ParseTarget(s + "://host")
		how := "TLS at once"
		if t.StartTLS != tlscheck.Direct {
			how = "STARTTLS (" + string(t.StartTLS) + ")"
		}
		fmt.Printf("%-10s %4d  %s\n", s, t.Port, how)
	}
	// Output:
	// https       443  TLS at once
	// tls         443  TLS at once
	// smtps       465  TLS at once
	// imaps       993  TLS at once
	// pop3s       995  TLS at once
	// ldaps       636  TLS at once
	// ftps        990  TLS at once
	// smtp         25  STARTTLS (smtp)
	// submission  587  STARTTLS (smtp)
	// imap        143  STARTTLS (imap)
	// pop3        110  STARTTLS (pop3)
	// ftp          21  STARTTLS (ftp)
	// postgres   5432  STARTTLS (postgres)
	// postgresql 5432  STARTTLS (postgres)
	// mysql      3306  STARTTLS (mysql)
	// ldap        389  STARTTLS (ldap)
}

// newCert makes an ECDSA P-256 certificate for 127.0.0.1 valid until
// notAfter, signed by parent (self-signed when parent is nil), and
// returns it with its key.
func newCert(cn string, isCA bool, notAfter time.Time, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		log.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: notAfter,
		IsCA: isCA, BasicConstraintsValid: true, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		log.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c, key
}

// Check a certificate file, with the private key found beside it: this
// one is self-signed and expires in 20 days.
func ExampleCheckFile() {
	dir, err := os.MkdirTemp("", "tlscheck-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	cert, key := newCert("portal.example.nhs.uk", false, time.Now().Add(20*24*time.Hour+time.Hour), nil, nil)
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	os.WriteFile(filepath.Join(dir, "portal.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o644)
	os.WriteFile(filepath.Join(dir, "portal.key"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)

	r := tlscheck.CheckFile(context.Background(), tlscheck.CertFile{Path: filepath.Join(dir, "portal.pem")}, tlscheck.Options{})
	if r.Err != nil {
		log.Fatal(r.Err)
	}
	for _, f := range r.Findings {
		fmt.Println(f.Severity, f.ID, f.Evidence["days_left"])
	}
	// Output:
	// warn TLS-CERT-EXPIRING 20
	// warn TLS-CERT-SELF-SIGNED
}

// Check an endpoint (here a local TLS 1.2 server with a certificate from
// a private CA) and add the results to a report.
func ExampleCheckEndpoint() {
	caCert, caKey := newCert("Example Trust CA", true, time.Now().AddDate(1, 0, 0), nil, nil)
	leaf, leafKey := newCert("127.0.0.1", false, time.Now().AddDate(0, 6, 0), caCert, caKey)
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{leaf.Raw, caCert.Raw}, PrivateKey: leafKey}},
		MinVersion:   tls.VersionTLS12,
		MaxVersion:   tls.VersionTLS12,
		CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { c.(*tls.Conn).Handshake(); c.Close() }()
		}
	}()

	roots := x509.NewCertPool()
	roots.AddCert(caCert)
	target, _ := tlscheck.ParseTarget(l.Addr().String())
	r := tlscheck.CheckEndpoint(context.Background(), target, tlscheck.Options{Roots: roots, Timeout: 5 * time.Second})
	if r.Err != nil {
		log.Fatal(r.Err)
	}
	fmt.Println("protocols:", r.Protocols)
	var rep report.Report
	if errs := tlscheck.AddTo(&rep, []tlscheck.Result{r}); len(errs) > 0 {
		log.Fatal(errs)
	}
	for _, f := range rep.Findings {
		fmt.Println(f.Severity, f.ID)
	}
	fmt.Println("exit code:", rep.ExitCode())
	// Output:
	// protocols: [TLS1.2]
	// info TLS-NO-TLS13
	// exit code: 0
}
