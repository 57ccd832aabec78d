package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/nhscrypt/nhscrypt/luks"
	"github.com/nhscrypt/nhscrypt/report"
)

type verifyDiskOptions struct {
	Devices        []string
	PolicyFile     string
	Root           string
	TestKeyFile    string
	TestPassphrase bool
	Slot           int
}

func newVerifyDiskCommand(g *globalOptions) *cobra.Command {
	var opts verifyDiskOptions
	cmd := &cobra.Command{
		Use:   "verify-disk [--device PATH]… [--policy FILE] [--root DIR]",
		Short: "Check that data at rest is on LUKS, and that every LUKS header is strong and healthy",
		Long: `Check which mounted filesystems and swap sit on LUKS and which do not, and
check every LUKS header (LUKS1/LUKS2, cipher, key derivation, header
checksums and agreement, keyslots, header backups) against the policy
(docs/policy.md). With --device, check only those devices.

Exit codes: 0 all pass, 3 warnings, 4 failures, 10 a device could not be
read for lack of permission (run as root), 11 a device does not exist.

With --test-key-file FILE or --test-passphrase (asked on the terminal, or
read from stdin), prove that the key opens a keyslot of the one --device,
in-process, without creating a mapping: exit 0 when it opens, 10 when not.`,
		Args: argsUsage(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, args []string) error {
			if opts.TestKeyFile != "" || opts.TestPassphrase {
				return runKeyTest(cmd.Context(), g, opts)
			}
			return runVerifyDisk(cmd.Context(), g, opts)
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&opts.Devices, "device", nil, "check the LUKS device or image `PATH` (repeatable); default: discover the whole system")
	f.StringVar(&opts.PolicyFile, "policy", "", "read policy overrides from the TOML `FILE` (docs/policy.md)")
	f.StringVar(&opts.Root, "root", "/", "the filesystem root to discover from (for tests and chroots)")
	f.StringVar(&opts.TestKeyFile, "test-key-file", "", "prove that the key in `FILE` opens a keyslot of --device")
	f.BoolVar(&opts.TestPassphrase, "test-passphrase", false, "prove that a passphrase (terminal or stdin) opens a keyslot of --device")
	f.IntVar(&opts.Slot, "slot", -1, "with a key test: try only keyslot `N`")
	return cmd
}

func loadPolicy(path string) (luks.Policy, error) {
	if path == "" {
		return luks.DefaultPolicy(), nil
	}
	f, err := os.Open(path)
	if err != nil {
		return luks.Policy{}, fmt.Errorf("opening policy: %w", err)
	}
	defer f.Close()
	p, err := luks.LoadPolicy(f)
	if err != nil {
		return luks.Policy{}, fmt.Errorf("policy %q: %w", path, err)
	}
	return p, nil
}

// deviceError is a device that could not be checked.
type deviceError struct {
	Device string `json:"device"`
	Error  string `json:"error"`
	err    error
}

func runVerifyDisk(ctx context.Context, g *globalOptions, opts verifyDiskOptions) error {
	p, err := loadPolicy(opts.PolicyFile)
	if err != nil {
		return err
	}
	host, _ := os.Hostname()
	rep := &report.Report{Tool: "nhscrypt", Command: "verify-disk", Host: host, Started: time.Now().UTC()}
	devices := opts.Devices
	if len(devices) == 0 {
		sys, err := luks.Discover(ctx, opts.Root)
		if err != nil {
			return permissionHint(fmt.Errorf("discovering disks under %q: %w", opts.Root, err))
		}
		for _, f := range luks.CheckSystem(sys, p) {
			rep.Add(f)
		}
		rep.Checked = append(rep.Checked, sys.Checked(p)...)
		for _, d := range sys.LUKSDevices() {
			devices = append(devices, filepath.Join(opts.Root, d))
		}
	}
	var derrs []deviceError
	for _, dev := range devices {
		if err := ctx.Err(); err != nil {
			return err
		}
		h, err := luks.ParseFile(dev)
		if errors.Is(err, luks.ErrNotLUKS) {
			rep.Add(luks.NotLUKSFinding(dev))
			rep.Checked = append(rep.Checked, dev)
			continue
		}
		if err != nil {
			derrs = append(derrs, deviceError{Device: dev, Error: err.Error(), err: err})
			continue
		}
		rep.Checked = append(rep.Checked, dev)
		for _, f := range luks.CheckHeader(h, dev, p) {
			rep.Add(f)
		}
	}
	if g.JSON {
		if err := writeReportJSON(g.stdout, rep, derrs); err != nil {
			return err
		}
	} else if !g.Quiet || rep.ExitCode() != 0 {
		if err := rep.WriteText(g.stdout); err != nil {
			return err
		}
	}
	if len(derrs) > 0 {
		return deviceErrors(g, derrs)
	}
	if code := rep.ExitCode(); code != ExitOK {
		return &exitError{code}
	}
	return nil
}

// writeReportJSON writes the report with the devices that could not be read.
func writeReportJSON(w io.Writer, rep *report.Report, derrs []deviceError) error {
	doc, err := json.Marshal(rep)
	if err != nil {
		return err
	}
	var m map[string]any
	json.Unmarshal(doc, &m)
	if derrs == nil {
		derrs = []deviceError{}
	}
	m["errors"] = derrs
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(m)
}

// deviceErrors prints the devices that could not be checked and returns
// the error that sets the exit code: 10 for permission, 11 for missing.
func deviceErrors(g *globalOptions, derrs []deviceError) error {
	var errs []error
	for i, d := range derrs {
		if i < len(derrs)-1 {
			fmt.Fprintf(g.stderr, "nhscrypt: error: %v\n", d.err)
		}
		errs = append(errs, d.err)
	}
	last := derrs[len(derrs)-1].err
	joined := errors.Join(errs...)
	switch {
	case errors.Is(joined, fs.ErrPermission):
		return withHint(&authError{last}, "reading LUKS headers needs root: run with sudo")
	case errors.Is(joined, fs.ErrNotExist):
		return fmt.Errorf("%w", last)
	}
	return last
}

// authError marks an error that exits 10 (auth, credentials, permission).
type authError struct{ err error }

func (e *authError) Error() string { return e.err.Error() }
func (e *authError) Unwrap() error { return e.err }

func runKeyTest(ctx context.Context, g *globalOptions, opts verifyDiskOptions) error {
	if len(opts.Devices) != 1 {
		return usagef("a key test needs exactly one --device")
	}
	if opts.TestKeyFile != "" && opts.TestPassphrase {
		return usagef("--test-key-file and --test-passphrase are exclusive")
	}
	dev := opts.Devices[0]
	h, err := luks.ParseFile(dev)
	if err != nil {
		if errors.Is(err, fs.ErrPermission) {
			return withHint(&authError{err}, "reading LUKS headers needs root: run with sudo")
		}
		return err
	}
	var key []byte
	if opts.TestKeyFile != "" {
		// As cryptsetup --key-file: the whole file is the key.
		key, err = os.ReadFile(opts.TestKeyFile)
		if err != nil {
			return fmt.Errorf("reading key file: %w", err)
		}
	} else {
		key, err = readTestPassphrase(g)
		if err != nil {
			return err
		}
	}
	defer clear(key)
	res, err := luks.TestKey(ctx, dev, h, key, opts.Slot)
	if errors.Is(err, luks.ErrKeyMismatch) {
		what := "the key"
		if opts.Slot >= 0 {
			what = fmt.Sprintf("the key does not open keyslot %d", opts.Slot)
			return &authError{fmt.Errorf("%q: %s", dev, what)}
		}
		return &authError{fmt.Errorf("%q: %s does not open any active keyslot", dev, what)}
	}
	if err != nil {
		return err
	}
	if g.JSON {
		return json.NewEncoder(g.stdout).Encode(struct {
			MessageType string      `json:"message_type"`
			Device      string      `json:"device"`
			UUID        string      `json:"uuid"`
			Opened      bool        `json:"opened"`
			Keyslot     int         `json:"keyslot"`
			Method      luks.Method `json:"method"`
		}{"key_test", dev, h.UUID(), true, res.Keyslot, res.Method})
	}
	if !g.Quiet {
		fmt.Fprintf(g.stdout, "%s: the key opens keyslot %d (checked in-process by %s; no mapping created)\n", dev, res.Keyslot, res.Method)
	}
	return nil
}

// readTestPassphrase asks on the terminal, or reads one line from stdin
// when stdin is not a terminal.
func readTestPassphrase(g *globalOptions) ([]byte, error) {
	if f, ok := g.stdin.(*os.File); ok && !isTerminal(f) {
		line, err := bufio.NewReader(f).ReadString('\n')
		if err != nil && (err != io.EOF || line == "") {
			return nil, errors.New("no passphrase on standard input")
		}
		return []byte(strings.TrimRight(line, "\r\n")), nil
	}
	if _, ok := g.stdin.(*os.File); !ok {
		line, _ := bufio.NewReader(g.stdin).ReadString('\n')
		return []byte(strings.TrimRight(line, "\r\n")), nil
	}
	return readSecretFromTTY("Enter passphrase to test:")
}
