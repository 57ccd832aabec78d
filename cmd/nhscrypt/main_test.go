package main

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/nhscrypt/nhscrypt/internal/atomicfile"
	"github.com/nhscrypt/nhscrypt/internal/cli"
	"github.com/nhscrypt/nhscrypt/internal/testenv"
)

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"nhscrypt": func() { os.Exit(cli.Main()) },
	})
}

// TestScripts runs every testdata/*.txtar script. Extra commands:
//
//	status N PROG ARGS…  run PROG (as exec does) and require exit code N
//
// and the condition [missing:TOOL], for "[missing:age] skip": it fails the
// script instead when NHSCRYPT_TEST_REQUIRE_SERVICES=1.
//
//	mode FILE PERM       FILE has permission bits PERM (octal)
//	notemp DIR           no nhscrypt temporary file anywhere under DIR
//	randfile FILE SIZE   write SIZE random bytes to FILE
func TestScripts(t *testing.T) {
	testscript.Run(t, scriptParams(t, "testdata", func(e *testscript.Env) error {
		// Fixture trees of real /sys, /proc and /etc layouts.
		systems, err := filepath.Abs("../../luks/testdata/systems")
		if err != nil {
			return err
		}
		e.Setenv("SYSTEMS", systems)
		return nil
	}))
}

// scriptParams are the Params of the scripts in dir: the commands and
// condition above, a work root other users can traverse (so scripts can run
// nhscrypt as an unprivileged user with setpriv on files they make
// readable), cryptsetup's /usr/sbin on PATH, then setup.
func scriptParams(t *testing.T, dir string, setup func(*testscript.Env) error) testscript.Params {
	root, err := os.MkdirTemp("", "nhscrypt-scripts")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(root, 0o755)
	t.Cleanup(func() { os.RemoveAll(root) })
	return testscript.Params{
		Dir:                 dir,
		WorkdirRoot:         root,
		RequireExplicitExec: true,
		Setup: func(e *testscript.Env) error {
			e.Setenv(testenv.RequireEnv, os.Getenv(testenv.RequireEnv))
			e.Setenv("PATH", e.Getenv("PATH")+string(filepath.ListSeparator)+"/usr/sbin:/sbin")
			return setup(e)
		},
		Condition: missingCondition,
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"mode":     cmdMode,
			"notemp":   cmdNoTemp,
			"randfile": cmdRandFile,
			"status":   cmdStatus,
		},
	}
}

// missingCondition implements [missing:TOOL]: true when TOOL is not
// installed, so the script can skip; when services are required (CI) a
// missing tool is an error that fails the script instead.
func missingCondition(cond string) (bool, error) {
	tool, ok := strings.CutPrefix(cond, "missing:")
	if !ok {
		return false, fmt.Errorf("unknown condition %q", cond)
	}
	if _, err := lookPath(tool); err != nil {
		if testenv.Required() {
			return false, fmt.Errorf("%s is required (%s=1) but not installed", tool, testenv.RequireEnv)
		}
		return true, nil
	}
	return false, nil
}

func lookPath(name string) (string, error) {
	for _, dir := range filepath.SplitList(os.Getenv("PATH")) {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fs.ErrNotExist
}

func cmdMode(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 {
		ts.Fatalf("usage: mode FILE PERM")
	}
	want, err := strconv.ParseUint(args[1], 8, 32)
	ts.Check(err)
	st, err := os.Stat(ts.MkAbs(args[0]))
	ts.Check(err)
	got := st.Mode().Perm()
	if (got == fs.FileMode(want)) == neg {
		ts.Fatalf("%s has mode %04o, want %s%04o", args[0], got, map[bool]string{true: "not ", false: ""}[neg], want)
	}
}

func cmdNoTemp(ts *testscript.TestScript, neg bool, args []string) {
	for _, dir := range args {
		var found []string
		filepath.WalkDir(ts.MkAbs(dir), func(p string, d fs.DirEntry, err error) error {
			if err == nil && atomicfile.IsTemp(d.Name()) {
				found = append(found, p)
			}
			return nil
		})
		if len(found) > 0 {
			ts.Fatalf("temporary files left behind: %s", strings.Join(found, ", "))
		}
	}
}

func cmdRandFile(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 {
		ts.Fatalf("usage: randfile FILE SIZE")
	}
	n, err := strconv.Atoi(args[1])
	ts.Check(err)
	b := make([]byte, n)
	rand.Read(b)
	ts.Check(os.WriteFile(ts.MkAbs(args[0]), b, 0o644))
}

func cmdStatus(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: status N PROG [ARGS…]")
	}
	want, err := strconv.Atoi(args[0])
	ts.Check(err)
	got := 0
	if err := ts.Exec(args[1], args[2:]...); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			ts.Fatalf("running %s: %v", args[1], err)
		}
		got = ee.ExitCode()
	}
	if got != want {
		ts.Fatalf("%s exited with %d, want %d", args[1], got, want)
	}
}
