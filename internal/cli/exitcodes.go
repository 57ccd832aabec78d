package cli

import (
	"context"
	"errors"
	"io/fs"

	"github.com/nhscrypt/nhscrypt/backup"
	"github.com/nhscrypt/nhscrypt/filecrypt"
)

// The exit-code table: the only place exit codes are defined. It is
// documented in docs/exit-codes.md; keep the two in step.
const (
	ExitOK          = 0   // success, nothing found
	ExitFailed      = 1   // the command failed (I/O, corrupt input, …)
	ExitUsage       = 2   // bad flags or arguments
	ExitWarnings    = 3   // a check found warnings (and no failures)
	ExitFailures    = 4   // a check found failures
	ExitAuth        = 10  // authentication, credentials or wrong key
	ExitNotFound    = 11  // a named file, device, key or object does not exist
	ExitInterrupted = 130 // interrupted by SIGINT or SIGTERM
)

// usageError marks bad command-line usage (exit 2).
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// exitError carries an explicit exit code with no message (for example a
// check that found warnings, already printed as a report).
type exitError struct{ code int }

func (e *exitError) Error() string { return "exit status" }

// hintError adds a hint printed after the error.
type hintError struct {
	err  error
	hint string
}

func (e *hintError) Error() string { return e.err.Error() }
func (e *hintError) Unwrap() error { return e.err }

func withHint(err error, hint string) error {
	if err == nil {
		return nil
	}
	return &hintError{err: err, hint: hint}
}

// exitCode maps an error to its exit code.
func exitCode(err error) int {
	var ee *exitError
	var ue *usageError
	var wk *filecrypt.WrongKeyError
	var pe *filecrypt.PromptError
	var ae *authError
	var bwk *backup.WrongKeyError
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &ee):
		return ee.code
	case errors.Is(err, context.Canceled):
		return ExitInterrupted
	case errors.As(err, &ue):
		return ExitUsage
	case errors.As(err, &wk), errors.As(err, &pe), errors.As(err, &ae), errors.As(err, &bwk), errors.Is(err, backup.ErrUntrustedSignature), errors.Is(err, backup.ErrAuth):
		return ExitAuth
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, backup.ErrNotFound), errors.Is(err, backup.ErrNoRepository):
		return ExitNotFound
	}
	return ExitFailed
}
