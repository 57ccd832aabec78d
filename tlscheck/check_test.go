package tlscheck_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nhscrypt/nhscrypt/tlscheck"
)

// hangingListener accepts connections and never answers.
func hangingListener(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
		for _, c := range conns {
			c.Close()
		}
	})
	return l.Addr().String()
}

// closedPort returns an address nothing listens on.
func closedPort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// A hanging endpoint and a closed port are errors for those targets; the
// others are still checked, and the run ends within the timeout.
func TestUnreachableAndHanging(t *testing.T) {
	pki, ngx := startNginx(t)
	hang, closed := hangingListener(t), closedPort(t)
	var targets []tlscheck.Target
	for _, a := range []string{hang, closed, ngx.Addr("valid"), ngx.Addr("expired")} {
		tg, err := tlscheck.ParseTarget(a)
		if err != nil {
			t.Fatal(err)
		}
		targets = append(targets, tg)
	}
	start := time.Now()
	res := tlscheck.Run(context.Background(), targets, nil, tlscheck.Options{Roots: rootPool(t, pki), Timeout: time.Second, Workers: 2})
	if el := time.Since(start); el > 2500*time.Millisecond {
		t.Errorf("run took %v with a 1s timeout", el)
	}
	if !errors.Is(res[0].Err, tlscheck.ErrTimeout) {
		t.Errorf("hanging listener: err = %v, want a timeout", res[0].Err)
	}
	var te *tlscheck.TargetError
	if !errors.As(res[0].Err, &te) || te.Subject != hang {
		t.Errorf("hanging listener: err %v does not name %s", res[0].Err, hang)
	}
	if !errors.Is(res[1].Err, syscall.ECONNREFUSED) {
		t.Errorf("closed port: err = %v, want connection refused", res[1].Err)
	}
	if res[2].Err != nil || len(res[2].Findings) != 0 {
		t.Errorf("valid: %v %v", res[2].Err, ids(res[2]))
	}
	if res[3].Err != nil || !slices.Equal(ids(res[3]), []string{tlscheck.IDCertExpired}) {
		t.Errorf("expired: %v %v", res[3].Err, ids(res[3]))
	}
}

// Cancelling the context stops a check at once, whatever the timeout.
func TestContextCancel(t *testing.T) {
	hang := hangingListener(t)
	tg, _ := tlscheck.ParseTarget(hang)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	r := tlscheck.CheckEndpoint(ctx, tg, tlscheck.Options{Timeout: time.Minute})
	if el := time.Since(start); el > time.Second {
		t.Errorf("cancelled check took %v", el)
	}
	if !errors.Is(r.Err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want the context's error", r.Err)
	}
}

// A plaintext HTTP server is "does not speak TLS", an error.
func TestPlaintextEndpoint(t *testing.T) {
	_, ngx := startNginx(t)
	tg, _ := tlscheck.ParseTarget("127.0.0.1:" + itoa(ngx.HTTPPort))
	r := tlscheck.CheckEndpoint(context.Background(), tg, tlscheck.Options{Timeout: 2 * time.Second})
	if r.Err == nil || !strings.Contains(r.Err.Error(), "does not speak TLS") {
		t.Errorf("plaintext HTTP: err = %v, findings %v", r.Err, ids(r))
	}
}

func itoa(n int) string { return big.NewInt(int64(n)).String() }

// Certificate files: a PEM bundle with its key beside it, DER, a key that
// does not match, a key inside the file, garbage and a missing file.
func TestCertFiles(t *testing.T) {
	pki, _ := startNginx(t)
	dir := t.TempDir()
	cp := func(src, dst string) string {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, dst)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	valid, expired := pki.Case("valid"), pki.Case("expired")
	bundle := cp(valid.CertFile, "bundle.pem")
	cp(valid.KeyFile, "bundle.key") // found beside it
	wrong := cp(valid.CertFile, "wrong.pem")
	cp(expired.KeyFile, "wrong.key")
	der := filepath.Join(dir, "cert.der")
	if out, err := exec.Command("openssl", "x509", "-in", expired.CertFile, "-outform", "DER", "-out", der).CombinedOutput(); err != nil {
		t.Fatalf("openssl: %v %s", err, out)
	}
	withKey := filepath.Join(dir, "combined.pem")
	kb, _ := os.ReadFile(valid.KeyFile)
	cb, _ := os.ReadFile(valid.CertFile)
	os.WriteFile(withKey, append(append([]byte("# server\n"), kb...), cb...), 0o600)
	garbage := cp("/dev/null", "garbage.pem")
	os.WriteFile(garbage, []byte("this is not a certificate\n"), 0o600)
	letsencrypt := filepath.Join(dir, "live", "example")
	os.MkdirAll(letsencrypt, 0o755)
	os.WriteFile(filepath.Join(letsencrypt, "fullchain.pem"), cb, 0o644)
	os.WriteFile(filepath.Join(letsencrypt, "privkey.pem"), kb, 0o600)

	opts := tlscheck.Options{Roots: rootPool(t, pki)}
	for _, tc := range []struct {
		name string
		cf   tlscheck.CertFile
		want []string
		err  error
	}{
		{"bundle", tlscheck.CertFile{Path: bundle}, nil, nil},
		{"mismatch", tlscheck.CertFile{Path: wrong}, []string{tlscheck.IDKeyMismatch}, nil},
		{"explicit key mismatch", tlscheck.CertFile{Path: bundle, KeyPath: filepath.Join(dir, "wrong.key")}, []string{tlscheck.IDKeyMismatch}, nil},
		{"der", tlscheck.CertFile{Path: der}, []string{tlscheck.IDCertExpired}, nil},
		{"key inside", tlscheck.CertFile{Path: withKey}, nil, nil},
		{"letsencrypt", tlscheck.CertFile{Path: filepath.Join(letsencrypt, "fullchain.pem")}, nil, nil},
		{"letsencrypt untrusted", tlscheck.CertFile{Path: filepath.Join(letsencrypt, "fullchain.pem")}, []string{tlscheck.IDChainUntrusted}, nil},
		{"garbage", tlscheck.CertFile{Path: garbage}, nil, tlscheck.ErrNoCertificate},
		{"missing", tlscheck.CertFile{Path: filepath.Join(dir, "nope.pem")}, nil, os.ErrNotExist},
		{"missing key", tlscheck.CertFile{Path: bundle, KeyPath: filepath.Join(dir, "nope.key")}, nil, os.ErrNotExist},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := opts
			if strings.HasSuffix(tc.name, "untrusted") {
				o.Roots = x509.NewCertPool()
			}
			r := tlscheck.CheckFile(context.Background(), tc.cf, o)
			if !errors.Is(r.Err, tc.err) || (tc.err != nil) != (r.Err != nil) {
				t.Fatalf("err = %v, want %v", r.Err, tc.err)
			}
			if got := ids(r); !slices.Equal(got, tc.want) {
				t.Errorf("findings %v, want %v", got, tc.want)
			}
			for _, f := range r.Findings {
				for k, v := range f.Evidence {
					if strings.Contains(v, "PRIVATE") {
						t.Errorf("evidence %s holds key material", k)
					}
				}
			}
		})
	}
}

// Keys and signatures checked on files made here: EC P-224 is weak, a
// self-signed leaf is a warning, a CA certificate alone is not
// "self-signed".
func TestCertFileKeys(t *testing.T) {
	dir := t.TempDir()
	mk := func(name string, curve elliptic.Curve, isCA bool) string {
		k, err := ecdsa.GenerateKey(curve, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(1, 0, 0),
			IsCA: isCA, BasicConstraintsValid: true, DNSNames: []string{name}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name+".pem")
		os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
		return p
	}
	for _, tc := range []struct {
		path string
		want []string
	}{
		{mk("p224", elliptic.P224(), false), []string{tlscheck.IDCertSelfSigned, tlscheck.IDKeyWeak}},
		{mk("p256", elliptic.P256(), false), []string{tlscheck.IDCertSelfSigned}},
		{mk("ca", elliptic.P384(), true), nil},
	} {
		r := tlscheck.CheckFile(context.Background(), tlscheck.CertFile{Path: tc.path}, tlscheck.Options{})
		if r.Err != nil {
			t.Fatal(r.Err)
		}
		if got := ids(r); !slices.Equal(got, tc.want) {
			t.Errorf("%s: findings %v, want %v", filepath.Base(tc.path), got, tc.want)
		}
	}
}

// progressLog records what Run reports.
type progressLog struct {
	mu       sync.Mutex
	subjects []string
	done     []int
	total    int
	overlap  bool
}

func (p *progressLog) TLSChecked(r *tlscheck.Result, done, total int) {
	if !p.mu.TryLock() {
		p.overlap = true // called concurrently
		p.mu.Lock()
	}
	defer p.mu.Unlock()
	p.subjects = append(p.subjects, r.Subject)
	p.done = append(p.done, done)
	p.total = total
	time.Sleep(time.Millisecond)
}

// Run reports each endpoint and file once as it finishes, one call at a
// time, counting up to the total.
func TestRunProgress(t *testing.T) {
	pki, ngx := startNginx(t)
	var targets []tlscheck.Target
	for _, name := range []string{"valid", "expired", "weak", "sha1"} {
		tg, _ := tlscheck.ParseTarget(ngx.Addr(name))
		targets = append(targets, tg)
	}
	files := []tlscheck.CertFile{{Path: pki.Case("valid").CertFile}, {Path: pki.RootFile}}
	var p progressLog
	res := tlscheck.Run(context.Background(), targets, files, tlscheck.Options{Roots: rootPool(t, pki), Workers: 3, Progress: &p})
	var want []string
	for _, r := range res {
		want = append(want, r.Subject)
	}
	slices.Sort(want)
	got := slices.Sorted(slices.Values(p.subjects))
	if !slices.Equal(got, want) || p.total != len(res) || p.overlap {
		t.Errorf("progress: subjects %v (want %v), total %d, concurrent calls %v", got, want, p.total, p.overlap)
	}
	for i, d := range p.done {
		if d != i+1 {
			t.Errorf("call %d: done %d, want %d", i, d, i+1)
		}
	}
}
