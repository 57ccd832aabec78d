// Package cli is the nhscrypt command line: it parses flags, calls the
// library packages and prints. It holds no logic of its own beyond that.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/nhscrypt/nhscrypt/internal/atomicfile"
	"github.com/nhscrypt/nhscrypt/keystore/lukskeys"
)

// globalOptions are the flags every command has.
type globalOptions struct {
	JSON  bool
	Quiet bool

	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
}

// Main runs nhscrypt with os.Args and returns the exit code.
func Main() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	done := make(chan struct{})
	defer close(done)
	go func() {
		// A command stops at its next read or write once ctx is cancelled.
		// One blocked for long (reading an idle pipe, say) is ended here,
		// after its partial outputs are removed.
		select {
		case <-done:
			return
		case <-ctx.Done():
		}
		select {
		case <-done:
		case <-time.After(interruptGrace):
			// A command undoing a half-done header change finishes it.
			for uninterruptible.Load() > 0 {
				select {
				case <-done:
					return
				case <-time.After(100 * time.Millisecond):
				}
			}
			atomicfile.RemovePending()
			fmt.Fprintln(os.Stderr, "nhscrypt: error: interrupted")
			os.Exit(ExitInterrupted)
		}
	}()
	return Run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
}

// uninterruptible counts running sections that an interrupt must let
// finish (an enrolment rolling back a keyslot): the grace below waits for
// them. They still see the cancelled context and stop as soon as they can.
var uninterruptible atomic.Int32

// interruptGrace is how long an interrupted command may take to stop by
// itself before it is ended.
const interruptGrace = 2 * time.Second

// Run runs nhscrypt with args and returns the exit code. Cancelling ctx
// interrupts the command, which removes its partial outputs and returns 130.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	g := &globalOptions{stdin: stdin, stdout: stdout, stderr: stderr}
	root := newRootCommand(g)
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	if err != nil && ctx.Err() != nil && !errors.Is(err, context.Canceled) {
		// A command interrupted mid-way may fail with some other error
		// (a closed pipe, say): interruption is what happened.
		err = errors.Join(context.Canceled, err)
	}
	code := exitCode(err)
	printError(stderr, err, code)
	return code
}

func printError(w io.Writer, err error, code int) {
	var ee *exitError
	if err == nil || errors.As(err, &ee) {
		return
	}
	var enr *lukskeys.EnrollError
	if code == ExitInterrupted && !errors.As(err, &enr) {
		// What an interrupted enrolment undid (or left) must be said.
		fmt.Fprintln(w, "nhscrypt: error: interrupted")
		return
	}
	fmt.Fprintf(w, "nhscrypt: error: %v\n", err)
	var he *hintError
	if errors.As(err, &he) {
		fmt.Fprintf(w, "nhscrypt: hint: %s\n", he.hint)
	}
	var ue *usageError
	if errors.As(err, &ue) && he == nil {
		fmt.Fprintln(w, "nhscrypt: hint: run 'nhscrypt --help' for usage")
	}
}

func newRootCommand(g *globalOptions) *cobra.Command {
	root := &cobra.Command{
		Use:   "nhscrypt",
		Short: "Encryption and key-management toolkit for Linux servers holding NHS patient data",
		Long: `nhscrypt encrypts files and trees with age, checks LUKS disk encryption
(verify-disk) and the TLS of local services and certificate files (check-tls).

Exit codes: 0 ok, 1 failed, 2 usage, 3 warnings found, 4 failures found,
10 auth/credentials/wrong key, 11 not found, 130 interrupted.`,
		SilenceUsage:      true,
		SilenceErrors:     true,
		CompletionOptions: cobra.CompletionOptions{DisableDefaultCmd: true},
	}
	root.PersistentFlags().BoolVar(&g.JSON, "json", false, "print machine-readable JSON (JSON Lines for progress) on stdout")
	root.PersistentFlags().BoolVarP(&g.Quiet, "quiet", "q", false, "print only errors")
	root.Args = func(cmd *cobra.Command, args []string) error {
		if len(args) > 0 {
			return usagef("unknown command %q", args[0])
		}
		return nil
	}
	root.RunE = func(cmd *cobra.Command, args []string) error { return cmd.Help() }
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err} })
	root.AddCommand(
		newVersionCommand(g),
		newCompletionCommand(g),
		newKeygenCommand(g),
		newEncryptCommand(g),
		newDecryptCommand(g),
		newVerifyDiskCommand(g),
		newLUKSCommand(g),
		newBackupCommand(g),
		newCheckTLSCommand(g),
		newEscrowCommand(g),
	)
	return root
}

// argsUsage wraps a cobra args validator so its errors are usage errors.
func argsUsage(v cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := v(cmd, args); err != nil {
			return &usageError{err}
		}
		return nil
	}
}

func usagef(format string, a ...any) error { return &usageError{fmt.Errorf(format, a...)} }

// warnf prints a warning to stderr unless --quiet.
func (g *globalOptions) warnf(format string, a ...any) {
	if !g.Quiet {
		fmt.Fprintf(g.stderr, "nhscrypt: warning: "+format+"\n", a...)
	}
}
