package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"

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
