package cli

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"regexp"
	"testing"

	"github.com/nhscrypt/nhscrypt/backup"
	"github.com/nhscrypt/nhscrypt/filecrypt"
	"github.com/nhscrypt/nhscrypt/report"
)

func TestExitCode(t *testing.T) {
	_, notFound := os.Open("/nonexistent/nhscrypt")
	cases := []struct {
		err  error
		want int
	}{
		{nil, 0},
		{errors.New("boom"), 1},
		{usagef("bad"), 2},
		{&exitError{report.ExitWarnings}, 3},
		{&exitError{report.ExitFailures}, 4},
		{&filecrypt.WrongKeyError{Path: "f"}, 10},
		{fmt.Errorf("x: %w", &filecrypt.WrongKeyError{}), 10},
		{errors.Join(&filecrypt.FileError{Path: "a", Err: &filecrypt.WrongKeyError{}}), 10},
		{notFound, 11},
		{fmt.Errorf("s3: %w", backup.ErrAuth), 10},
		{fmt.Errorf("s3: %w", backup.ErrNotFound), 11},
		{fmt.Errorf("wrapped: %w", fs.ErrNotExist), 11},
		{context.Canceled, 130},
		{&filecrypt.CorruptError{Path: "f", Err: errors.New("bad")}, 1},
	}
	for _, c := range cases {
		if got := exitCode(c.err); got != c.want {
			t.Errorf("exitCode(%v) = %d, want %d", c.err, got, c.want)
		}
	}
}

// The report package yields check exit codes itself: they must be ours.
func TestReportExitCodesAgree(t *testing.T) {
	if report.ExitOK != ExitOK || report.ExitWarnings != ExitWarnings || report.ExitFailures != ExitFailures {
		t.Fatal("report exit codes differ from the CLI table")
	}
}

// docs/exit-codes.md must list every code of the table.
func TestExitCodesDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/exit-codes.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, code := range []int{ExitOK, ExitFailed, ExitUsage, ExitWarnings, ExitFailures, ExitAuth, ExitNotFound, ExitInterrupted} {
		if !regexp.MustCompile(fmt.Sprintf(`\|\s*%d\s*\|`, code)).Match(doc) {
			t.Errorf("exit code %d is not in docs/exit-codes.md's table", code)
		}
	}
}
