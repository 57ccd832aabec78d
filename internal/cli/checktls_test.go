package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"maps"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nhscrypt/nhscrypt/internal/testenv"
	"github.com/nhscrypt/nhscrypt/report"
	"github.com/nhscrypt/nhscrypt/tlscheck/tlstest"
)

func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Run(context.Background(), args, strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

// check-tls against a real nginx: exit codes 0, 3, 4 and 1, text and JSON.
func TestCheckTLSCommand(t *testing.T) {
	pki, ngx := tlstest.Start(t, tlstest.Cases())
	ca := "--ca-file=" + pki.RootFile
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()

	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stdout []string
		stderr []string
	}{
		{"valid", []string{ngx.Addr("valid"), ca}, 0, []string{"no findings (1 subject checked)"}, nil},
		{"expiring is a failure by default", []string{ngx.Addr("expiring"), ca}, 4, []string{"fail      TLS-CERT-EXPIRING"}, nil},
		{"expiring is a warning under --fail-days", []string{ngx.Addr("expiring"), ca, "--fail-days=3"}, 3, []string{"warn      TLS-CERT-EXPIRING", "info      TLS-OCSP-NO-STAPLE"}, nil},
		{"no TLS 1.3 is information only", []string{ngx.Addr("tls12only"), ca}, 0, []string{"info      TLS-NO-TLS13"}, nil},
		{"weak", []string{ngx.Addr("weak"), ca}, 4, []string{"TLS-PROTO-TLS10", "TLS-PROTO-TLS11", "TLS-CIPHER-WEAK", "TLS-CIPHER-NO-FS", "remedy: "}, nil},
		{"system roots", []string{ngx.Addr("valid")}, 4, []string{"TLS-CHAIN-UNTRUSTED"}, nil},
		{"servername", []string{ngx.Addr("valid"), ca, "--servername=other.example"}, 4, []string{"TLS-HOSTNAME-MISMATCH", `"other.example"`}, nil},
		{"unreachable target: exit 1, others reported", []string{closed, ngx.Addr("expired"), ca}, 1,
			[]string{"TLS-CERT-EXPIRED"}, []string{"nhscrypt: error: " + closed + ": ", "connection refused", "1 of 2 targets could not be checked"}},
		{"cert file", []string{"--cert-file=" + pki.Case("sha1").CertFile, ca}, 4, []string{"TLS-SIG-WEAK"}, nil},
		{"url target", []string{"https://" + ngx.Addr("valid"), ca}, 0, nil, nil},
		{"nothing to check", nil, 2, nil, []string{"nothing to check"}},
		{"bad target", []string{"gopher://x"}, 2, nil, []string{"unknown scheme"}},
		{"fail above warn", []string{ngx.Addr("valid"), "--warn-days=5", "--fail-days=10"}, 2, nil, []string{"--fail-days"}},
		{"missing ca file", []string{ngx.Addr("valid"), "--ca-file=/nonexistent/ca.pem"}, 11, nil, []string{"--ca-file"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := runCLI(t, append([]string{"check-tls", "--timeout=3s"}, tc.args...)...)
			if code != tc.code {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.code, out, errs)
			}
			for _, s := range tc.stdout {
				if !strings.Contains(out, s) {
					t.Errorf("stdout lacks %q:\n%s", s, out)
				}
			}
			for _, s := range tc.stderr {
				if !strings.Contains(errs, s) {
					t.Errorf("stderr lacks %q:\n%s", s, errs)
				}
			}
		})
	}

	// --json: one report document whose exit_code matches the exit code.
	start := time.Now()
	var args []string
	for _, c := range pki.Cases {
		args = append(args, ngx.Addr(c.Name))
	}
	code, out, errs := runCLI(t, append([]string{"--json", "check-tls", ca}, args...)...)
	if code != 4 {
		t.Errorf("all cases: exit %d, want 4; stderr %s", code, errs)
	}
	var rep report.Report
	var extra struct {
		ExitCode int `json:"exit_code"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("JSON: %v\n%s", err, out)
	}
	json.Unmarshal([]byte(out), &extra)
	if rep.Command != "check-tls" || len(rep.Checked) != len(pki.Cases) || extra.ExitCode != 4 {
		t.Errorf("report: command %q, %d checked, exit_code %d", rep.Command, len(rep.Checked), extra.ExitCode)
	}
	want := 0
	for _, c := range pki.Cases {
		want += len(c.Expect)
	}
	if len(rep.Findings) != want {
		t.Errorf("%d findings for all cases, want %d", len(rep.Findings), want)
	}
	t.Logf("all %d cases through the CLI in %v", len(pki.Cases), time.Since(start))
}

// check-tls --discover on real services: nginx (direct TLS, found by
// probing), Postfix with STARTTLS and vsftpd without TLS (found by their
// process names), nginx's plaintext HTTP port, and a listener that never
// answers; plus certificate files under --fs-root.
//
// Discovery runs on a view of the real /proc that shows only those ports
// (tlstest.ProcView: the kernel's lines for them, and every real process),
// so the report is exact whatever else listens on the machine, and the
// test connects to nothing it did not start: every TLS listener and file
// checked with exactly its findings, the plaintext port left out quietly,
// the silent one named in a warning without failing the run.
func TestCheckTLSDiscover(t *testing.T) {
	testenv.Tool(t, "/usr/lib/postfix/sbin/master")
	testenv.Tool(t, "/usr/sbin/vsftpd")
	if os.Geteuid() != 0 {
		testenv.Missing(t, "check-tls --discover is tested as root (to see the listeners' processes)")
	}
	var cases []tlstest.Case
	for _, c := range tlstest.Cases() {
		if c.Name == "valid" || c.Name == "expired" {
			cases = append(cases, c)
		}
	}
	pki, ngx := tlstest.Start(t, cases)
	ports, err := tlstest.FreePorts(2)
	if err != nil {
		t.Fatal(err)
	}
	valid := pki.Case("valid")
	dir := t.TempDir()
	postfix, err := tlstest.StartPostfix(filepath.Join(dir, "postfix"), ports[0], tlstest.Cert{CertFile: valid.CertFile, KeyFile: valid.KeyFile})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(postfix.Stop)
	ftp, err := tlstest.StartVsftpd(filepath.Join(dir, "vsftpd"), ports[1], tlstest.Cert{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ftp.Stop)
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close() // accepted by the kernel, never answered

	// Certificate files: the expired leaf (with its chain), and the valid
	// one with its key beside it.
	fsRoot := t.TempDir()
	cp := func(src, rel string) {
		t.Helper()
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(fsRoot, rel)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cp(pki.Case("expired").CertFile, "etc/ssl/certs/old.pem")
	cp(valid.CertFile, "etc/ssl/private/site.crt")
	cp(valid.KeyFile, "etc/ssl/private/site.key")

	addr := func(p int) string { return "127.0.0.1:" + strconv.Itoa(p) }
	smtp, ftpURL := "smtp://"+addr(ports[0]), "ftp://"+addr(ports[1])
	want := map[string][]string{
		ngx.Addr("valid"):   nil,
		ngx.Addr("expired"): {"TLS-CERT-EXPIRED"},
		// Postfix's defaults: see tlscheck's TestStartTLSServices.
		smtp:   {"TLS-CIPHER-WEAK", "TLS-OCSP-NO-STAPLE", "TLS-PROTO-TLS10", "TLS-PROTO-TLS11"},
		ftpURL: {"TLS-STARTTLS-MISSING"},
		filepath.Join(fsRoot, "etc/ssl/certs/old.pem"):    {"TLS-CERT-EXPIRED"},
		filepath.Join(fsRoot, "etc/ssl/private/site.crt"): nil,
	}
	silentAddr := silent.Addr().String()
	httpAddr := addr(ngx.HTTPPort)
	view := t.TempDir()
	if err := tlstest.ProcView(view, ngx.HTTPPort, ngx.Servers[0].Port, ngx.Servers[1].Port, ports[0], ports[1], silent.Addr().(*net.TCPAddr).Port); err != nil {
		t.Fatal(err)
	}

	findings := func(t *testing.T, out string) (map[string][]string, []string) {
		t.Helper()
		var rep report.Report
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("JSON: %v\n%s", err, out)
		}
		got := map[string][]string{}
		for _, s := range rep.Checked {
			got[s] = nil
		}
		for _, f := range rep.Findings {
			got[f.Subject] = append(got[f.Subject], f.ID)
		}
		for _, ids := range got {
			slices.Sort(ids)
		}
		return got, rep.Checked
	}
	base := []string{"--json", "check-tls", "--discover", "--timeout=1s", "--ca-file=" + pki.RootFile, "--fs-root=" + fsRoot}

	t.Run("json", func(t *testing.T) {
		start := time.Now()
		code, out, errs := runCLI(t, append(base, "--proc-root="+view)...)
		t.Logf("check-tls --discover on the view in %v", time.Since(start))
		if code != ExitFailures {
			t.Errorf("exit %d, want %d\nstderr:\n%s", code, ExitFailures, errs)
		}
		got, checked := findings(t, out)
		if !maps.EqualFunc(got, want, slices.Equal) || len(checked) != len(want) {
			t.Errorf("findings by subject:\n got %v\nwant %v", got, want)
		}
		// The plaintext HTTP port is left out quietly; the silent one is
		// named, since it may be a TLS service that went unchecked.
		if slices.Contains(checked, httpAddr) || strings.Contains(errs, httpAddr) {
			t.Errorf("plaintext %s checked or reported:\n%s", httpAddr, errs)
		}
		if !strings.Contains(errs, "nhscrypt: warning: listener "+silentAddr+" (") || !strings.Contains(errs, "not checked: timed out") ||
			strings.Count(errs, "\n") != 1 {
			t.Errorf("stderr: want one warning naming %s:\n%s", silentAddr, errs)
		}

		// Text output, and --quiet drops the warning.
		code, out, errs = runCLI(t, "-q", "check-tls", "--discover", "--timeout=1s", "--ca-file="+pki.RootFile, "--fs-root="+fsRoot, "--proc-root="+view)
		if code != ExitFailures || errs != "" || !regexp.MustCompile(`(?m)^fail +TLS-STARTTLS-MISSING +`+regexp.QuoteMeta(ftpURL)+` `).MatchString(out) {
			t.Errorf("text: exit %d, stderr %q, stdout:\n%s", code, errs, out)
		}
	})
}

// The terminal progress bar: drawn at most every 100 ms, always at the
// end, and cleared.
func TestCheckBar(t *testing.T) {
	var b bytes.Buffer
	bar := &checkBar{w: &b}
	bar.TLSChecked(nil, 1, 4)
	bar.TLSChecked(nil, 2, 4) // within 100 ms: not drawn
	bar.TLSChecked(nil, 4, 4)
	bar.clear()
	want := "\r\x1b[K[=======                       ] 1/4 checked" +
		"\r\x1b[K[==============================] 4/4 checked" + "\r\x1b[K"
	if b.String() != want {
		t.Errorf("bar output %q, want %q", b.String(), want)
	}
}
