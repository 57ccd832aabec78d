package cli

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/nhscrypt/nhscrypt/report"
	"github.com/nhscrypt/nhscrypt/tlscheck"
)

type checkTLSOptions struct {
	Discover     bool
	CertFiles    []string
	CAFile       string
	WarnDays     int
	FailDays     int
	ServerName   string
	Timeout      time.Duration
	Workers      int
	FetchIssuers bool

	// Hidden, for tests: where discovery looks.
	ProcRoot string
	FSRoot   string
}

func newCheckTLSCommand(g *globalOptions) *cobra.Command {
	var opts checkTLSOptions
	cmd := &cobra.Command{
		Use:   "check-tls [TARGET]... [--discover] [--cert-file PATH]... [--ca-file FILE] [--warn-days N] [--fail-days N] [--servername NAME]",
		Short: "Check the TLS certificates, protocols and ciphers of services and certificate files",
		Long: `Check TLS endpoints and certificate files, in parallel, and report what to fix.

TARGET is host:port, or a URL whose scheme says how TLS starts and gives the
default port: https, smtps, imaps, pop3s, ldaps, ftps (TLS at once) or smtp,
submission, imap, pop3, ftp, postgres, mysql, ldap (STARTTLS). For example
https://intranet.example.nhs.uk, smtp://127.0.0.1:25, postgres://db1:5432.

For each endpoint: certificate validity and expiry, chain of trust (system
roots, or --ca-file), missing intermediates, hostname, key size, signature
algorithm, self-signed certificates; protocol versions (SSLv3 to TLS 1.3),
weak cipher suites, OCSP stapling. For each --cert-file (PEM, DER or a
bundle): the certificate checks, and whether the private key beside it
matches.

--discover adds every local TCP listener that speaks TLS or STARTTLS (from
/proc/net/tcp, as root to see the owning processes) and every certificate
file in /etc/ssl, /etc/pki, /etc/letsencrypt/live and the nginx, Apache,
Postfix and Dovecot configurations. A listener that cannot be probed (refused,
silent) is named in a warning on stderr. See docs/tls.md for the finding IDs.

Exit codes: 0 nothing found, 3 warnings, 4 failures, 1 when a target could
not be checked (the others are still checked and reported), 2 usage.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runCheckTLS(cmd.Context(), g, opts, args)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&opts.Discover, "discover", false, "check every local TLS listener and certificate file")
	f.StringArrayVar(&opts.CertFiles, "cert-file", nil, "check the certificate file `PATH` (repeatable)")
	f.StringVar(&opts.CAFile, "ca-file", "", "trust only the CA certificates in `FILE` (PEM) instead of the system roots")
	f.IntVar(&opts.WarnDays, "warn-days", 30, "warn about certificates that expire within `N` days")
	f.IntVar(&opts.FailDays, "fail-days", 7, "fail certificates that expire within `N` days")
	f.StringVar(&opts.ServerName, "servername", "", "send `NAME` as SNI and check certificates against it")
	f.DurationVar(&opts.Timeout, "timeout", 5*time.Second, "limit for each connection (dial, STARTTLS, handshake)")
	f.IntVar(&opts.Workers, "workers", 16, "endpoints checked at once")
	f.BoolVar(&opts.FetchIssuers, "fetch-issuers", true, "download a missing intermediate from the certificate's caIssuers URL to diagnose an incomplete chain")
	f.StringVar(&opts.ProcRoot, "proc-root", "/proc", "where --discover reads the listeners")
	f.StringVar(&opts.FSRoot, "fs-root", "/", "where --discover looks for certificate files and configurations")
	f.MarkHidden("proc-root")
	f.MarkHidden("fs-root")
	return cmd
}

func runCheckTLS(ctx context.Context, g *globalOptions, opts checkTLSOptions, args []string) error {
	if len(args) == 0 && !opts.Discover && len(opts.CertFiles) == 0 {
		return usagef("nothing to check: give a TARGET, --cert-file PATH or --discover")
	}
	if opts.WarnDays < 0 || opts.FailDays < 0 || opts.FailDays > opts.WarnDays {
		return usagef("--fail-days (%d) and --warn-days (%d) must be 0 or more, and --fail-days no more than --warn-days", opts.FailDays, opts.WarnDays)
	}
	if opts.Timeout <= 0 || opts.Workers < 1 {
		return usagef("--timeout and --workers must be positive")
	}
	var targets []tlscheck.Target
	for _, a := range args {
		t, err := tlscheck.ParseTarget(a)
		if err != nil {
			return &usageError{err}
		}
		targets = append(targets, t)
	}
	var files []tlscheck.CertFile
	for _, p := range opts.CertFiles {
		files = append(files, tlscheck.CertFile{Path: p})
	}
	o := tlscheck.Options{
		WarnDays:     opts.WarnDays,
		FailDays:     opts.FailDays,
		ServerName:   opts.ServerName,
		Timeout:      opts.Timeout,
		Workers:      opts.Workers,
		FetchIssuers: opts.FetchIssuers,
	}
	if o.FailDays == 0 {
		o.FailDays = -1 // 0 means "never fail on expiry", not the default
	}
	if o.WarnDays == 0 {
		o.WarnDays = -1
	}
	if opts.CAFile != "" {
		b, err := os.ReadFile(opts.CAFile)
		if err != nil {
			return fmt.Errorf("reading --ca-file: %w", err)
		}
		o.Roots = x509.NewCertPool()
		if !o.Roots.AppendCertsFromPEM(b) {
			return fmt.Errorf("--ca-file %q holds no PEM certificate", opts.CAFile)
		}
	}
	started := time.Now()
	if opts.Discover {
		found, skipped, err := tlscheck.Discover(ctx, opts.ProcRoot, o)
		if err != nil {
			return fmt.Errorf("discovering listeners: %w", err)
		}
		// Plaintext listeners (ssh, http…) are left out silently; one
		// that could not be probed may be a TLS service left unchecked.
		for _, s := range skipped {
			if !s.Plaintext {
				g.warnf("listener %s not checked: %s", listenerName(s.Listener), s.Reason)
			}
		}
		targets = append(targets, found...)
		cfs, err := tlscheck.DiscoverCertFiles(opts.FSRoot)
		if err != nil {
			return fmt.Errorf("discovering certificate files: %w", err)
		}
		files = append(files, cfs...)
	}
	var bar *checkBar
	if !g.JSON && !g.Quiet && isTerminal(g.stderr) {
		bar = &checkBar{w: g.stderr}
		o.Progress = bar
	}
	results := tlscheck.Run(ctx, targets, files, o)
	if bar != nil {
		bar.clear()
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	host, _ := os.Hostname()
	rep := &report.Report{Tool: "nhscrypt", Command: "check-tls", Host: host, Started: started}
	errs := tlscheck.AddTo(rep, results)
	var err error
	if g.JSON {
		err = rep.WriteJSON(g.stdout)
	} else if !g.Quiet || len(rep.Findings) > 0 {
		err = rep.WriteText(g.stdout)
	}
	if err != nil {
		return err
	}
	for _, e := range errs {
		fmt.Fprintf(g.stderr, "nhscrypt: error: %v\n", e)
	}
	if len(errs) > 0 {
		fmt.Fprintf(g.stderr, "nhscrypt: error: %d of %d targets could not be checked\n", len(errs), len(results))
		return &exitError{ExitFailed}
	}
	if code := rep.ExitCode(); code != ExitOK {
		return &exitError{code}
	}
	return nil
}

// listenerName names a discovered listener in messages: its address, and
// its process when known.
func listenerName(l tlscheck.Listener) string {
	if l.Process != "" {
		return fmt.Sprintf("%s (%s, pid %d)", l.Addr, l.Process, l.PID)
	}
	return l.Addr.String()
}

// checkBar draws "[=====     ] 12/50 checked" on a terminal while Run
// works, at most ten times a second.
type checkBar struct {
	w    io.Writer
	last time.Time
}

func (b *checkBar) TLSChecked(_ *tlscheck.Result, done, total int) {
	if now := time.Now(); done == total || now.Sub(b.last) >= 100*time.Millisecond {
		b.last = now
		const width = 30
		n := done * width / total
		fmt.Fprintf(b.w, "\r\x1b[K[%s%s] %d/%d checked", strings.Repeat("=", n), strings.Repeat(" ", width-n), done, total)
	}
}

func (b *checkBar) clear() { fmt.Fprint(b.w, "\r\x1b[K") }
