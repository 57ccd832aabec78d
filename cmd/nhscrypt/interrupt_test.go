package main

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nhscrypt/nhscrypt/internal/atomicfile"
	"github.com/nhscrypt/nhscrypt/internal/cli"
)

// nhscryptBin returns a path that runs this test binary as nhscrypt
// (testscript.Main dispatches on the program name).
func nhscryptBin(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "nhscrypt")
	if err := os.Symlink(exe, bin); err != nil {
		t.Fatal(err)
	}
	return bin
}

func tempFiles(t *testing.T, dir string) []string {
	t.Helper()
	var found []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && atomicfile.IsTemp(d.Name()) {
			found = append(found, p)
		}
		return nil
	})
	return found
}

// TestInterrupt sends a real SIGINT to nhscrypt mid-encryption, while it
// waits on an idle pipe: it must exit 130 and leave neither the output nor a
// temporary file.
func TestInterrupt(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			bin := nhscryptBin(t)
			dir := t.TempDir()
			out := filepath.Join(dir, "out.age")
			cmd := exec.Command(bin, "encrypt", "-r", "age1zvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwj", "-o", out)
			stdin, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer stdin.Close()
			stdin.Write(make([]byte, 1<<20))
			deadline := time.Now().Add(10 * time.Second)
			for len(tempFiles(t, dir)) == 0 {
				if time.Now().After(deadline) {
					cmd.Process.Kill()
					t.Fatal("no temporary output appeared")
				}
				time.Sleep(10 * time.Millisecond)
			}
			cmd.Process.Signal(sig)
			err = cmd.Wait()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != cli.ExitInterrupted {
				t.Fatalf("exit: %v, want %d; stderr: %s", err, cli.ExitInterrupted, stderr.String())
			}
			if !strings.Contains(stderr.String(), "nhscrypt: error: interrupted") {
				t.Errorf("stderr = %q", stderr.String())
			}
			if _, err := os.Stat(out); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("output exists after interrupt: %v", err)
			}
			if tf := tempFiles(t, dir); len(tf) > 0 {
				t.Errorf("temporary files left: %v", tf)
			}
		})
	}
}
