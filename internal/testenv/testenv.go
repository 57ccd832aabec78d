// Package testenv lets tests that need a real tool or service skip when it
// is missing on a developer's machine, and fail instead in CI, where
// NHSCRYPT_TEST_REQUIRE_SERVICES=1 is set.
package testenv

import (
	"os"
	"os/exec"
	"testing"
)

// RequireEnv is the variable that turns skips into failures.
const RequireEnv = "NHSCRYPT_TEST_REQUIRE_SERVICES"

// Required reports whether missing tools and services must fail tests.
func Required() bool { return os.Getenv(RequireEnv) == "1" }

// Missing skips t, or fails it when services are required.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	if Required() {
		t.Fatalf("required by %s=1: "+format, append([]any{RequireEnv}, args...)...)
	}
	t.Skipf(format, args...)
}

// Tool returns the path of an executable, or skips/fails t without it.
func Tool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Missing(t, "%s not installed (make test installs it)", name)
	}
	return p
}
