// Package tlstest makes real TLS servers for tests and benchmarks of
// tlscheck: certificates generated with the openssl command (a test root,
// an intermediate, and one leaf per certificate case); an nginx started
// with its own prefix, configuration and logs on 127.0.0.1 high ports,
// serving each case on its own port; and Postfix, Dovecot, PostgreSQL,
// slapd, MariaDB and vsftpd, each in its own folder on a 127.0.0.1 port,
// with STARTTLS or (for a zero Cert) without TLS. ProcView gives
// discovery a view of /proc limited to the ports a test started.
//
// Nothing here touches system services or files outside the directory
// it is given (except that the services' folders, and the folders above
// them inside the temporary folder, are opened to their unprivileged
// users with o+x).
package tlstest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// A Case is one kind of server certificate (and TLS configuration) with
// the finding IDs tlscheck must report for it, and nothing else.
type Case struct {
	Name string
	// Expect lists the finding IDs expected when checking the endpoint
	// dialled as 127.0.0.1 with the test root as the only trusted CA and
	// the default thresholds (warn 30 days, fail 7).
	Expect []string

	// Set by Generate.
	CertFile string // what the server sends: leaf, then intermediates
	KeyFile  string
	OCSPFile string // a DER OCSP response to staple, or ""

	// nginx settings.
	Protocols string // ssl_protocols
	Ciphers   string // ssl_ciphers

	key     string // openssl genpkey arguments
	md      string
	start   string // openssl ca -startdate, or "" for now
	end     string // -enddate
	san     string
	aia     bool // caIssuers URL
	ocspURL bool // OCSP responder URL in the certificate
	staple  bool
	noChain bool // serve the leaf only
	self    bool // self-signed
}

const (
	good      = "TLSv1.2 TLSv1.3"
	goodSuite = "ECDHE+AESGCM:ECDHE+CHACHA20"
	ecKey     = "-algorithm EC -pkeyopt ec_paramgen_curve:P-256"
	localSAN  = "DNS:localhost,IP:127.0.0.1"
)

// Cases returns the certificate cases the issue asks for, with the
// findings each must give.
func Cases() []Case {
	now := time.Now().UTC()
	ts := func(t time.Time) string { return t.Format("20060102150405Z") }
	return []Case{
		{Name: "valid", Expect: nil, ocspURL: true, staple: true},
		{Name: "expired", Expect: []string{"TLS-CERT-EXPIRED"},
			start: ts(now.AddDate(0, 0, -60)), end: ts(now.AddDate(0, 0, -2))},
		{Name: "notyetvalid", Expect: []string{"TLS-CERT-NOT-YET-VALID"},
			start: ts(now.AddDate(0, 0, 3)), end: ts(now.AddDate(0, 0, 90))},
		{Name: "expiring", Expect: []string{"TLS-CERT-EXPIRING", "TLS-OCSP-NO-STAPLE"},
			start: ts(now.AddDate(0, 0, -30)), end: ts(now.Add(5*24*time.Hour + time.Hour)), ocspURL: true},
		{Name: "selfsigned", Expect: []string{"TLS-CERT-SELF-SIGNED"}, self: true},
		{Name: "rsa1024", Expect: []string{"TLS-KEY-WEAK"},
			key: "-algorithm RSA -pkeyopt rsa_keygen_bits:1024", Ciphers: goodSuite + ":@SECLEVEL=0"},
		{Name: "sha1", Expect: []string{"TLS-SIG-WEAK"}, md: "sha1", Ciphers: goodSuite + ":@SECLEVEL=0"},
		{Name: "nointermediate", Expect: []string{"TLS-CHAIN-INCOMPLETE"}, noChain: true, aia: true},
		{Name: "wronghost", Expect: []string{"TLS-HOSTNAME-MISMATCH"}, san: "DNS:wrong.example"},
		{Name: "weak", Expect: []string{"TLS-PROTO-TLS10", "TLS-PROTO-TLS11", "TLS-CIPHER-WEAK", "TLS-CIPHER-NO-FS"},
			key:       "-algorithm RSA -pkeyopt rsa_keygen_bits:2048",
			Protocols: "TLSv1 TLSv1.1 TLSv1.2 TLSv1.3", Ciphers: "ALL:eNULL:@SECLEVEL=0"},
		{Name: "tls12only", Expect: []string{"TLS-NO-TLS13"}, Protocols: "TLSv1.2"},
		{Name: "cbconly", Expect: []string{"TLS-NO-TLS13", "TLS-CIPHER-CBC-ONLY"},
			Protocols: "TLSv1.2", Ciphers: "ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA"},
	}
}

// A PKI is a generated test CA with its cases.
type PKI struct {
	Dir      string
	RootFile string // the test root CA certificate (PEM): trust it
	IntFile  string // the intermediate (PEM)
	IntDER   string // the intermediate (DER), served for caIssuers URLs
	Cases    []Case
}

// Case returns the case called name; it panics if there is none.
func (p *PKI) Case(name string) Case {
	for _, c := range p.Cases {
		if c.Name == name {
			return c
		}
	}
	panic("tlstest: no case " + name)
}

const caConfig = `[ req ]
distinguished_name = dn
prompt = no
[ dn ]
CN = unused
[ ca ]
default_ca = CA_default
[ CA_default ]
database = {{DIR}}/index.txt
new_certs_dir = {{DIR}}/newcerts
serial = {{DIR}}/serial
default_md = sha256
policy = policy_any
unique_subject = no
email_in_dn = no
copy_extensions = none
[ policy_any ]
commonName = supplied
[ v3_ca ]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[ v3_int ]
basicConstraints = critical,CA:TRUE,pathlen:0
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
`

// Generate makes the test PKI in dir with openssl: a root, an
// intermediate and a certificate for each case. aiaBase is the http URL
// under which IntDER will be served (its file name is appended) for
// certificates with a caIssuers URL.
func Generate(dir, aiaBase string, cases []Case) (*PKI, error) {
	g := &gen{dir: dir}
	ts := func(t time.Time) string { return t.Format("20060102150405Z") }
	for _, d := range []string{"newcerts", "www"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	cnf := strings.ReplaceAll(caConfig, "{{DIR}}", dir)
	for _, c := range cases {
		if c.self {
			continue
		}
		cnf += fmt.Sprintf("[ ext_%s ]\nbasicConstraints = CA:FALSE\nkeyUsage = critical,digitalSignature,keyEncipherment\n"+
			"extendedKeyUsage = serverAuth\nsubjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\nsubjectAltName = %s\n",
			c.Name, or(c.san, localSAN))
		var aia []string
		if c.aia {
			aia = append(aia, "caIssuers;URI:"+aiaBase+"/int.der")
		}
		if c.ocspURL {
			aia = append(aia, "OCSP;URI:http://127.0.0.1:9/ocsp")
		}
		if len(aia) > 0 {
			cnf += "authorityInfoAccess = " + strings.Join(aia, ",") + "\n"
		}
	}
	g.write("ca.cnf", cnf)
	g.write("index.txt", "")
	g.write("index.txt.attr", "unique_subject = no\n")
	g.write("serial", "1000\n")
	p := &PKI{Dir: dir, RootFile: g.path("root.pem"), IntFile: g.path("int.pem"), IntDER: g.path("www/int.der")}

	g.openssl("genpkey " + ecKey + " -out root.key")
	g.openssl(`req -x509 -new -key root.key -subj /CN=nhscrypt\ test\ root -days 3650 -config ca.cnf -extensions v3_ca -out root.pem`)
	g.openssl("genpkey " + ecKey + " -out int.key")
	g.openssl(`req -new -key int.key -subj /CN=nhscrypt\ test\ intermediate -config ca.cnf -out int.csr`)
	g.openssl("ca -batch -notext -config ca.cnf -cert root.pem -keyfile root.key -extensions v3_int -startdate " + ts(time.Now().UTC().AddDate(-1, 0, 0)) + " -enddate " + ts(time.Now().UTC().AddDate(10, 0, 0)) + " -in int.csr -out int.pem")
	g.openssl("x509 -in int.pem -outform DER -out www/int.der")

	for _, c := range cases {
		key, cert, csr := c.Name+".key", c.Name+".crt", c.Name+".csr"
		g.openssl("genpkey " + or(c.key, ecKey) + " -out " + key)
		if c.self {
			g.openssl("req -x509 -new -key " + key + ` -subj /CN=localhost -config ca.cnf -days 365 -addext subjectAltName=` + localSAN + " -out " + cert)
		} else {
			g.openssl("req -new -key " + key + " -subj /CN=" + c.Name + ".test -config ca.cnf -out " + csr)
			args := "ca -batch -notext -config ca.cnf -cert int.pem -keyfile int.key -extensions ext_" + c.Name +
				" -md " + or(c.md, "sha256") + " -in " + csr + " -out " + cert
			if c.start != "" {
				args += " -startdate " + c.start + " -enddate " + c.end
			} else {
				args += " -days 365"
			}
			g.openssl(args)
		}
		c.KeyFile = g.path(key)
		c.CertFile = g.path(cert)
		if !c.self && !c.noChain {
			c.CertFile = g.path(c.Name + ".chain.pem")
			g.concat(c.CertFile, cert, "int.pem")
		}
		if c.staple {
			g.openssl("ocsp -no_nonce -issuer int.pem -cert " + cert + " -reqout " + c.Name + ".ocspreq")
			g.openssl("ocsp -index index.txt -rsigner int.pem -rkey int.key -CA int.pem -ndays 7 -reqin " + c.Name + ".ocspreq -respout " + c.Name + ".ocsp")
			c.OCSPFile = g.path(c.Name + ".ocsp")
		}
		if c.Protocols == "" {
			c.Protocols = good
		}
		if c.Ciphers == "" {
			c.Ciphers = goodSuite
		}
		p.Cases = append(p.Cases, c)
	}
	if g.err != nil {
		return nil, g.err
	}
	return p, nil
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// gen runs openssl in dir and keeps the first error.
type gen struct {
	dir string
	err error
}

func (g *gen) path(name string) string { return filepath.Join(g.dir, name) }

func (g *gen) write(name, data string) {
	if g.err == nil {
		g.err = os.WriteFile(g.path(name), []byte(data), 0o644)
	}
}

func (g *gen) concat(out string, files ...string) {
	var b bytes.Buffer
	for _, f := range files {
		d, err := os.ReadFile(g.path(f))
		if err != nil && g.err == nil {
			g.err = err
		}
		b.Write(d)
	}
	if g.err == nil {
		g.err = os.WriteFile(out, b.Bytes(), 0o644)
	}
}

// openssl runs "openssl ARGS" in dir; ARGS is split on spaces, and "\ "
// is a space inside an argument.
func (g *gen) openssl(args string) {
	if g.err != nil {
		return
	}
	fields := strings.Fields(strings.ReplaceAll(args, `\ `, "\x00"))
	for i := range fields {
		fields[i] = strings.ReplaceAll(fields[i], "\x00", " ")
	}
	cmd := exec.Command("openssl", fields...)
	cmd.Dir = g.dir
	cmd.Env = append(os.Environ(), "OPENSSL_CONF="+g.path("ca.cnf"))
	if out, err := cmd.CombinedOutput(); err != nil {
		g.err = fmt.Errorf("openssl %s: %v\n%s", args, err, out)
	}
}

// FreePorts returns n TCP ports on 127.0.0.1 that were free a moment
// ago.
func FreePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
