package tlscheck_test

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nhscrypt/nhscrypt/tlscheck"
)

// copyTree copies testdata/src to a temporary folder (symbolic links
// can't be kept in testdata portably, so tests add them).
func copyTree(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	err := filepath.WalkDir(src, func(p string, e os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if e.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

func TestListenersFixture(t *testing.T) {
	proc := copyTree(t, "testdata/proc")
	for pid, links := range map[string][]string{"812": {"socket:[1001]", "socket:[1004]", "/dev/null"}, "900": {"socket:[1002]"}} {
		os.MkdirAll(filepath.Join(proc, pid, "fd"), 0o755)
		for i, l := range links {
			if err := os.Symlink(l, filepath.Join(proc, pid, "fd", string(rune('3'+i)))); err != nil {
				t.Fatal(err)
			}
		}
	}
	ls, err := tlscheck.Listeners(proc)
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		addr    string
		uid     int
		pid     int
		process string
	}
	var got []row
	for _, l := range ls {
		got = append(got, row{l.Addr.String(), l.UID, l.PID, l.Process})
	}
	want := []row{
		{"0.0.0.0:443", 0, 812, "nginx"},
		{"127.0.0.1:5432", 104, 900, "postgres"},
		{"10.0.2.15:25", 0, 0, ""},
		{"[::]:443", 0, 812, "nginx"},
		{"[::1]:389", 101, 0, ""},
		{"127.0.0.1:8888", 0, 0, ""},
	}
	if !slices.Equal(got, want) {
		t.Errorf("listeners:\n got %v\nwant %v", got, want)
	}

	if _, err := tlscheck.Listeners(t.TempDir()); err == nil {
		t.Error("Listeners of an empty folder succeeded")
	}
}

func TestParseProcNetTCPErrors(t *testing.T) {
	for _, in := range []string{
		"   0: 0100007F:1538 00000000:0000 0A 0 0 0 0\n",                                     // too few fields
		"   0: 0100007F:15 00000000:0000 0A 0:0 0:0 0 0 0 5\n",                               // short port
		"   0: 0100007:1538 00000000:0000 0A 0:0 0:0 0 0 0 5\n",                              // odd address
		"   0: 0100007F:1538 00000000:0000 ZZ 0:0 0:0 0 0 0 5\n",                             // state
		"   0: 0100007F:1538 00000000:0000 0A 0:0 0:0 0 x 0 5\n",                             // uid
		"   0: 0100007F:1538 00000000:0000 0A 0:0 0:0 0 0 0 -5\n",                            // inode
		"   0: 0100007F0100007F:1538 00000000:0000 0A 0:0 0:0 0 0 0 5\n",                     // 8-byte address
		"   0: 0100007F:1538 00000000:0000 0A 0:0 0:0 0 0 0 5\n" + strings.Repeat("x", 5000), // long line
	} {
		if ls, err := tlscheck.ParseProcNetTCP(strings.NewReader(in)); err == nil {
			t.Errorf("ParseProcNetTCP(%.60q) = %v, nil; want an error", in, ls)
		}
	}
}

// The real /proc: a listener of this process is found, with its PID.
func TestListenersReal(t *testing.T) {
	if _, err := os.Stat("/proc/net/tcp"); err != nil {
		t.Skip("no /proc/net/tcp")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	want := netip.MustParseAddrPort(l.Addr().String())
	ls, err := tlscheck.Listeners("/proc")
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(ls, func(x tlscheck.Listener) bool { return x.Addr == want })
	if i < 0 {
		t.Fatalf("listener %v not found among %d", want, len(ls))
	}
	if ls[i].PID != os.Getpid() || ls[i].Process == "" {
		t.Errorf("listener %v: pid %d process %q, want pid %d", want, ls[i].PID, ls[i].Process, os.Getpid())
	}
}

// Discovery on the real /proc finds the test nginx's TLS ports as TLS
// endpoints, and leaves out its plaintext HTTP port and a silent one.
func TestDiscoverReal(t *testing.T) {
	_, ngx := startNginx(t)
	hang := hangingListener(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	targets, skipped, err := tlscheck.Discover(ctx, "/proc", tlscheck.Options{Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	has := func(addr string) *tlscheck.Target {
		for i := range targets {
			if targets[i].Addr() == addr {
				return &targets[i]
			}
		}
		return nil
	}
	for _, name := range []string{"valid", "weak"} {
		tg := has(ngx.Addr(name))
		if tg == nil {
			t.Fatalf("nginx %s endpoint %s not discovered; got %v", name, ngx.Addr(name), targets)
		}
		if tg.StartTLS != tlscheck.Direct || !tg.SkipHostname || !strings.Contains(tg.Source, "nginx") {
			t.Errorf("discovered %+v", *tg)
		}
	}
	for _, a := range []string{"127.0.0.1:" + itoa(ngx.HTTPPort), hang} {
		if has(a) != nil {
			t.Errorf("%s (not TLS) was discovered as a TLS endpoint", a)
		}
		if !slices.ContainsFunc(skipped, func(s tlscheck.Skipped) bool { return s.Listener.Addr.String() == a }) {
			t.Errorf("%s not among the skipped listeners", a)
		}
	}
}

func TestScanConfig(t *testing.T) {
	for _, tc := range []struct {
		file string
		kind tlscheck.ConfigKind
		want []tlscheck.CertFile
	}{
		{"nginx.conf", tlscheck.NginxConfig, []tlscheck.CertFile{
			{Path: "/etc/ssl/site/fullchain.pem", KeyPath: "/etc/ssl/site/privkey.pem"},
			{Path: "certs/other.pem", KeyPath: "keys/other.key"},
		}},
		{"apache.conf", tlscheck.ApacheConfig, []tlscheck.CertFile{
			{Path: "/etc/ssl/certs/apache.pem", KeyPath: "/etc/ssl/private/apache.key"},
		}},
		{"main.cf", tlscheck.PostfixConfig, []tlscheck.CertFile{
			{Path: "/etc/ssl/certs/ssl-cert-snakeoil.pem", KeyPath: "/etc/ssl/private/ssl-cert-snakeoil.key"},
			{Path: "/etc/postfix/rsa.pem", KeyPath: "/etc/postfix/rsa.key"},
		}},
		{"dovecot.conf", tlscheck.DovecotConfig, []tlscheck.CertFile{
			{Path: "/etc/dovecot/private/dovecot.pem", KeyPath: "/etc/dovecot/private/dovecot.key"},
		}},
	} {
		b, err := os.ReadFile(filepath.Join("testdata/etc", tc.file))
		if err != nil {
			t.Fatal(err)
		}
		if got := tlscheck.ScanConfig(tc.kind, bytes.NewReader(b)); !slices.Equal(got, tc.want) {
			t.Errorf("%s:\n got %+v\nwant %+v", tc.file, got, tc.want)
		}
	}
}

// Certificate files are found in /etc/ssl and through an nginx config,
// keys beside them are paired, and CA-only files and keys are left out.
func TestDiscoverCertFiles(t *testing.T) {
	pki, _ := startNginx(t)
	root := t.TempDir()
	put := func(rel, src string) {
		t.Helper()
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(root, rel)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	valid, expired := pki.Case("valid"), pki.Case("expired")
	put("etc/ssl/certs/ca.pem", pki.RootFile)      // CA only: left out
	put("etc/ssl/private/site.pem", valid.KeyFile) // a key: left out
	put("etc/ssl/certs/site.pem", valid.CertFile)  // found by walking
	put("srv/tls/web.crt", expired.CertFile)       // found through nginx
	put("srv/tls/web.key", expired.KeyFile)        //
	put("etc/letsencrypt/live/example/fullchain.pem", valid.CertFile)
	os.WriteFile(filepath.Join(root, "etc/nginx.conf"), nil, 0o644)
	os.MkdirAll(filepath.Join(root, "etc/nginx/sites-enabled"), 0o755)
	os.WriteFile(filepath.Join(root, "etc/nginx/sites-enabled/default"),
		[]byte("server {\n ssl_certificate /srv/tls/web.crt;\n ssl_certificate_key /srv/tls/web.key;\n ssl_certificate /srv/tls/missing.crt;\n}\n"), 0o644)

	files, err := tlscheck.DiscoverCertFiles(root)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range files {
		got = append(got, strings.TrimPrefix(f.Path, root)+" key="+strings.TrimPrefix(f.KeyPath, root))
	}
	want := []string{
		"/srv/tls/web.crt key=/srv/tls/web.key",
		"/etc/ssl/certs/site.pem key=",
		"/etc/letsencrypt/live/example/fullchain.pem key=",
	}
	if !slices.Equal(got, want) {
		t.Errorf("discovered:\n got %q\nwant %q", got, want)
	}
}

func FuzzParseProcNetTCP(f *testing.F) {
	for _, p := range []string{"testdata/proc/net/tcp", "testdata/proc/net/tcp6"} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("0: 0100007F:1538 00000000:0000 0A 0:0 0:0 0 0 0 5\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ls, err := tlscheck.ParseProcNetTCP(bytes.NewReader(b))
		if err != nil && ls != nil {
			t.Fatalf("error %v with listeners %v", err, ls)
		}
		for _, l := range ls {
			if !l.Addr.IsValid() {
				t.Fatalf("invalid address in %+v", l)
			}
		}
	})
}

func FuzzScanConfig(f *testing.F) {
	for _, n := range []string{"nginx.conf", "apache.conf", "main.cf", "dovecot.conf"} {
		b, err := os.ReadFile(filepath.Join("testdata/etc", n))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	kinds := []tlscheck.ConfigKind{tlscheck.NginxConfig, tlscheck.ApacheConfig, tlscheck.PostfixConfig, tlscheck.DovecotConfig}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, k := range kinds {
			for _, cf := range tlscheck.ScanConfig(k, bytes.NewReader(b)) {
				if cf.Path == "" || strings.ContainsAny(cf.Path, "$\x00\n") || strings.ContainsAny(cf.KeyPath, "$\x00\n") {
					t.Fatalf("%s: bad path in %+v", k, cf)
				}
			}
		}
	})
}
