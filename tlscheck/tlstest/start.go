package tlstest

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/nhscrypt/nhscrypt/internal/testenv"
)

// Start generates the PKI for cases with openssl and serves each case
// from one nginx on its own 127.0.0.1 port; nginx is stopped when t ends.
// Without openssl or nginx the test is skipped (failed in CI, see
// internal/testenv).
func Start(t testing.TB, cases []Case) (*PKI, *Nginx) {
	t.Helper()
	testenv.Tool(t, "openssl")
	nginx := nginxPath(t)
	dir := t.TempDir()
	ports, err := FreePorts(len(cases) + 1)
	if err != nil {
		t.Fatal(err)
	}
	pki, err := Generate(filepath.Join(dir, "pki"), fmt.Sprintf("http://127.0.0.1:%d", ports[0]), cases)
	if err != nil {
		t.Fatal(err)
	}
	var servers []Server
	for i, c := range pki.Cases {
		servers = append(servers, Server{Port: ports[i+1], Case: c})
	}
	n, err := StartNginx(nginx, filepath.Join(dir, "nginx"), ports[0], filepath.Join(pki.Dir, "www"), servers)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Stop() })
	return pki, n
}

// nginxPath finds nginx, which Debian installs in /usr/sbin (not always
// in a user's PATH).
func nginxPath(t testing.TB) string {
	if p, err := exec.LookPath("nginx"); err == nil {
		return p
	}
	if p, err := exec.LookPath("/usr/sbin/nginx"); err == nil {
		return p
	}
	testenv.Missing(t, "nginx not installed (make test installs nginx-light)")
	return ""
}
