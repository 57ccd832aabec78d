package tlscheck_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nhscrypt/nhscrypt/tlscheck"
	"github.com/nhscrypt/nhscrypt/tlscheck/tlstest"
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

// Discovery on the real /proc, seen through a view that shows only the
// test nginx's ports and a silent listener (the test must not probe the
// machine's other listeners), finds nginx's TLS ports as TLS endpoints,
// and leaves out its plaintext HTTP port and the silent one.
func TestDiscoverReal(t *testing.T) {
	_, ngx := startNginx(t)
	hang := hangingListener(t)
	ports := []int{ngx.HTTPPort, int(netip.MustParseAddrPort(hang).Port())}
	for _, s := range ngx.Servers {
		ports = append(ports, s.Port)
	}
	view := t.TempDir()
	if err := tlstest.ProcView(view, ports...); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	targets, skipped, err := tlscheck.Discover(ctx, view, tlscheck.Options{Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if len(targets) != len(ngx.Servers) || len(skipped) != 2 {
		t.Errorf("%d targets and %d skipped, want %d and 2", len(targets), len(skipped), len(ngx.Servers))
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

// greeter listens on 127.0.0.1 and sends greeting to every connection
// (nothing when it is nil), then waits for the client to hang up.
func greeter(t *testing.T, greeting []byte) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				c.Write(greeting)
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				io.Copy(io.Discard, c)
			}()
		}
	}()
	t.Cleanup(func() { l.Close(); wg.Wait() })
	return l.Addr().(*net.TCPAddr).Port
}

// Listeners of a process discovery does not know (this test binary) are
// told apart by what they send first: SMTP and FTP banners (also an SMTP
// server whose host name holds "ftp"), IMAP, POP3, a MySQL handshake,
// and plaintext that is none of those. A listener that sends nothing and
// answers no ClientHello is skipped as not probed, not as plaintext.
func TestDiscoverSniff(t *testing.T) {
	if _, err := os.Stat("/proc/net/tcp"); err != nil {
		t.Skip("no /proc/net/tcp")
	}
	mysql := []byte("\x4a\x00\x00\x00\x0a10.11.19-MariaDB\x00\x05\x00\x00\x00abcdefgh\x00\xfe\xf7")
	cases := []struct {
		greeting []byte
		proto    tlscheck.Protocol // "-" for skipped
		plain    bool
	}{
		{[]byte("220 mail.example.org ESMTP Postfix (Debian/GNU)\r\n"), tlscheck.SMTP, false},
		{[]byte("220 ftp.example.org ESMTP Exim 4.96\r\n"), tlscheck.SMTP, false},
		{[]byte("220 ProFTPD Server (Debian) [127.0.0.1]\r\n"), tlscheck.FTP, false},
		{[]byte("220 (vsFTPd 3.0.3)\r\n"), tlscheck.FTP, false},
		{[]byte("* OK [CAPABILITY IMAP4rev1 STARTTLS] Dovecot ready.\r\n"), tlscheck.IMAP, false},
		{[]byte("* PREAUTH IMAP4rev1 server logged in\r\n"), tlscheck.IMAP, false},
		{[]byte("+OK Dovecot ready.\r\n"), tlscheck.POP3, false},
		{mysql, tlscheck.MySQL, false},
		{[]byte("SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"), "-", true},
		{nil, "-", false},
	}
	var ports []int
	for _, c := range cases {
		ports = append(ports, greeter(t, c.greeting))
	}
	view := t.TempDir()
	if err := tlstest.ProcView(view, ports...); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	targets, skipped, err := tlscheck.Discover(context.Background(), view, tlscheck.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Errorf("discovery took %v with a 1s timeout", el)
	}
	if len(targets)+len(skipped) != len(cases) {
		t.Errorf("%d targets and %d skipped for %d listeners", len(targets), len(skipped), len(cases))
	}
	for i, c := range cases {
		addr := "127.0.0.1:" + itoa(ports[i])
		ti := slices.IndexFunc(targets, func(tg tlscheck.Target) bool { return tg.Addr() == addr })
		si := slices.IndexFunc(skipped, func(s tlscheck.Skipped) bool { return s.Listener.Addr.String() == addr })
		switch {
		case c.proto == "-" && si < 0:
			t.Errorf("%.30q: not skipped (target %v)", c.greeting, ti >= 0)
		case c.proto == "-" && skipped[si].Plaintext != c.plain:
			t.Errorf("%.30q: skipped with plaintext %v (%s), want %v", c.greeting, skipped[si].Plaintext, skipped[si].Reason, c.plain)
		case c.proto == "-" && skipped[si].Listener.PID != os.Getpid():
			t.Errorf("%.30q: skipped listener's pid %d, want %d", c.greeting, skipped[si].Listener.PID, os.Getpid())
		case c.proto != "-" && ti < 0:
			t.Errorf("%.30q: not discovered (skipped: %v)", c.greeting, si >= 0 && skipped[si].Reason != "")
		case c.proto != "-" && targets[ti].StartTLS != c.proto:
			t.Errorf("%.30q: discovered as %q, want %q", c.greeting, targets[ti].StartTLS, c.proto)
		}
	}
}
