package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"github.com/nhscrypt/nhscrypt/backup"
	"github.com/nhscrypt/nhscrypt/keystore"
	"github.com/nhscrypt/nhscrypt/keystore/lukskeys"
	"github.com/nhscrypt/nhscrypt/luks"
	"github.com/nhscrypt/nhscrypt/report"
)

// defaultEnrollStateDir holds the journals of LUKS enrolments in progress.
const defaultEnrollStateDir = "/var/lib/nhscrypt/enroll"

type luksEnrollOptions struct {
	Device         string
	KeyFile        string
	Keyslot        int
	Name           string
	PolicyFile     string
	StateDir       string
	Cryptsetup     string
	NoHeaderBackup bool
	Old            []string
}

func (o *luksEnrollOptions) addFlags(cmd *cobra.Command, rotate bool) {
	f := cmd.Flags()
	f.StringVar(&o.Device, "device", "", "the LUKS `DEVICE` (or image file)")
	f.StringVar(&o.KeyFile, "key-file", "", "`FILE` holding an existing key of the volume (used whole, as by cryptsetup --key-file)")
	f.IntVar(&o.Keyslot, "slot", -1, "put the recovery key in keyslot `N` (default: the first free one)")
	f.StringVar(&o.Name, "name", "", "escrow the key as `NAME` (default luks-recovery.UUID.TIME)")
	f.StringVar(&o.PolicyFile, "policy", "", "the disk policy `FILE` whose minimum PBKDF costs the new keyslot meets (default: built-in)")
	f.StringVar(&o.StateDir, "state-dir", defaultEnrollStateDir, "`FOLDER` for the journals that let an interrupted enrolment be finished")
	f.StringVar(&o.Cryptsetup, "cryptsetup", "cryptsetup", "the cryptsetup `PROGRAM` that adds and removes keyslots")
	f.BoolVar(&o.NoHeaderBackup, "no-header-backup", false, "do not escrow a header backup beside the key")
	if rotate {
		f.StringArrayVar(&o.Old, "old", nil, "replace the escrowed key `NAME` (repeatable; default: every active recovery key of the volume)")
	}
}

// enroller opens the store and makes the lukskeys.Enroller of a command.
func (o *luksEnrollOptions) enroller(ctx context.Context, eo *escrowOptions, forPut bool, g *globalOptions) (*lukskeys.Enroller, error) {
	p, err := loadPolicy(o.PolicyFile)
	if err != nil {
		return nil, err
	}
	store, err := eo.open(ctx, g, forPut, len(eo.Identities) > 0)
	if err != nil {
		return nil, escrowError(err)
	}
	host, _ := os.Hostname()
	e := &lukskeys.Enroller{Store: store, Host: host, StateDir: o.StateDir, Cryptsetup: o.Cryptsetup, Policy: &p,
		NoHeaderBackup: o.NoHeaderBackup, Version: Version()}
	if !g.Quiet && !g.JSON {
		e.Progress = func(s lukskeys.Step, detail string) {
			fmt.Fprintf(g.stderr, "nhscrypt: %s: %s\n", s, detail)
		}
	}
	return e, nil
}

func (o *luksEnrollOptions) request() (lukskeys.EnrollRequest, error) {
	if o.Device == "" || o.KeyFile == "" {
		return lukskeys.EnrollRequest{}, usagef("give the volume with --device and an existing key of it with --key-file")
	}
	if o.Name != "" {
		if err := keystore.ValidName(o.Name); err != nil {
			return lukskeys.EnrollRequest{}, usagef("%v", err)
		}
	}
	return lukskeys.EnrollRequest{Device: o.Device, KeyFile: o.KeyFile, Keyslot: o.Keyslot, Name: o.Name}, nil
}

func newEscrowLUKSEnrollCommand(g *globalOptions, eo *escrowOptions) *cobra.Command {
	var opts luksEnrollOptions
	cmd := &cobra.Command{
		Use:   "luks-enroll --device DEV --key-file EXISTING [--slot N]",
		Short: "Add an escrowed, proven recovery key to a LUKS volume",
		Long: `Add a new recovery key to a LUKS volume, in two phases, so that no key is
ever in a keyslot without being in escrow:

  1. generate a recovery key (256 bits, systemd-cryptenroll's format);
  2. escrow it as pending (never overwriting an entry);
  3. add it to a free keyslot with cryptsetup luksAddKey, with a PBKDF as
     strong as the keyslot of --key-file and the policy's minimum;
  4. prove, in-process, that it opens that keyslot;
  5. mark it active, and escrow a header backup beside it.

A failure rolls back what was done (the keyslot is removed, the entry
marked failed, never deleted) and exits non-zero. If the run is
interrupted, running the command again finds the unfinished enrolment and
finishes it or rolls it back. The recovery key is never printed or written
to disk: get it from escrow (nhscrypt escrow get NAME).`,
		Args: argsUsage(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, args []string) error {
			return opts.run(cmd.Context(), g, eo, false)
		},
	}
	opts.addFlags(cmd, false)
	return cmd
}

func newEscrowLUKSRotateCommand(g *globalOptions, eo *escrowOptions) *cobra.Command {
	var opts luksEnrollOptions
	cmd := &cobra.Command{
		Use:   "luks-rotate --device DEV --key-file EXISTING [--old NAME]…",
		Short: "Replace a LUKS volume's escrowed recovery key",
		Long: `Enrol a new recovery key exactly as luks-enroll does, and only once it is
proven and active, remove the keyslots of the old recovery keys (each only
after proving the old escrowed key is what it holds) and mark their
entries retired. Reading the old keys needs a credential that may read
escrow (with the file store, -i).`,
		Args: argsUsage(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, args []string) error {
			return opts.run(cmd.Context(), g, eo, true)
		},
	}
	opts.addFlags(cmd, true)
	return cmd
}

// run enrols (or with rotate, rotates) a recovery key and reports it. An
// interrupt lets it finish undoing what it did (see uninterruptible).
func (o *luksEnrollOptions) run(ctx context.Context, g *globalOptions, eo *escrowOptions, rotate bool) error {
	req, err := o.request()
	if err != nil {
		return err
	}
	e, err := o.enroller(ctx, eo, true, g)
	if err != nil {
		return err
	}
	uninterruptible.Add(1)
	defer uninterruptible.Add(-1)
	if rotate {
		res, err := e.Rotate(ctx, lukskeys.RotateRequest{EnrollRequest: req, Old: o.Old})
		return printEnrollResult(g, "rotated", res, err)
	}
	res, err := e.Enroll(ctx, req)
	return printEnrollResult(g, "enrolled", res, err)
}

// printEnrollResult reports an enrolment or rotation.
func printEnrollResult(g *globalOptions, verb string, res *lukskeys.Result, err error) error {
	if err != nil {
		var ee *lukskeys.EnrollError
		if errors.As(err, &ee) && !ee.RolledBack {
			err = withHint(err, "run the same command again: it finishes the rollback")
		}
		if errors.Is(err, luks.ErrKeyMismatch) {
			return &authError{err}
		}
		return escrowError(err)
	}
	if g.JSON {
		return json.NewEncoder(g.stdout).Encode(struct {
			MessageType string `json:"message_type"`
			*lukskeys.Result
		}{map[string]string{"enrolled": "luks_enroll_result", "rotated": "luks_rotate_result"}[verb], res})
	}
	switch res.Resumed {
	case "finished":
		fmt.Fprintf(g.stderr, "nhscrypt: finished the interrupted enrolment %s\n", res.ResumedName)
	case "left-pending":
		fmt.Fprintf(g.stderr, "nhscrypt: left the interrupted enrolment %s pending for a verifier\n", res.ResumedName)
	case "rolled-back":
		fmt.Fprintf(g.stderr, "nhscrypt: rolled back the interrupted enrolment %s\n", res.ResumedName)
	}
	for _, w := range res.Warnings {
		g.warnf("%s", w)
	}
	if !g.Quiet {
		fmt.Fprintf(g.stdout, "%s recovery key %s in keyslot %d of %s (LUKS UUID %s): %s\n", verb, res.Name, res.Keyslot, res.Device, res.UUID, res.State)
		if res.Header != "" {
			fmt.Fprintf(g.stdout, "header backup escrowed as %s\n", res.Header)
		}
		for i, n := range res.Retired {
			if i < len(res.Removed) {
				fmt.Fprintf(g.stdout, "retired %s (keyslot %d removed)\n", n, res.Removed[i])
			} else {
				fmt.Fprintf(g.stdout, "retired %s\n", n)
			}
		}
	}
	return nil
}

type escrowVerifyOptions struct {
	Devices    []string
	Repos      []string
	Activate   bool
	StaleAfter time.Duration
	Root       string
	Kinds      []string
	backend    backendOptions
}

func newEscrowVerifyCommand(g *globalOptions, eo *escrowOptions) *cobra.Command {
	var opts escrowVerifyOptions
	cmd := &cobra.Command{
		Use:   "verify [--device DEV]… [--repo URL]…",
		Short: "Prove that this host's escrowed keys still work",
		Long: `Check, in-process and read-only, that every escrowed LUKS recovery key of
this host opens its keyslot of the volume with its UUID; that every LUKS
volume (--device, default: every LUKS device found on this host) has an
escrowed recovery key; that every keyslot is accounted for; and that every
escrowed age identity is one the backup repositories (--repo) encrypt to.

It reads escrowed secrets, so it needs a verifier's credential, not a
create-only server token. With --activate (and a credential that may
change entries) it marks pending keys that are proven active, and stale
pending keys that open nothing failed.

Exit 0: all good; 3: warnings (a volume without escrow, a stale pending
key, an identity no backup uses); 4: failures (an escrowed key that no
longer opens its volume, a volume that changed UUID).`,
		Args: argsUsage(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runEscrowVerify(cmd.Context(), g, eo, opts)
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&opts.Devices, "device", nil, "check the LUKS `DEVICE` (repeatable; default: every LUKS device found)")
	f.StringArrayVar(&opts.Repos, "repo", nil, "backup repository `URL` whose recipients the escrowed identities must match (repeatable; default $NHSCRYPT_REPO)")
	f.BoolVar(&opts.Activate, "activate", false, "mark proven pending keys active, and stale pending ones that open nothing failed")
	f.DurationVar(&opts.StaleAfter, "stale-after", lukskeys.DefaultStaleAfter, "a pending key older than `DURATION` is stale")
	f.StringArrayVar(&opts.Kinds, "kind", nil, "check only entries of `KIND` (luks-recovery, luks-header, age-identity; repeatable)")
	f.StringVar(&opts.Root, "root", "/", "discover devices under `DIR` (for tests and rescue systems)")
	opts.backend.addFlags(cmd)
	// Only reading a repository's config: the upload options do not apply.
	for _, name := range []string{"connections", "storage-class", "retain-until", "retain-days", "retain-mode"} {
		cmd.PersistentFlags().MarkHidden(name)
	}
	return cmd
}

func runEscrowVerify(ctx context.Context, g *globalOptions, eo *escrowOptions, opts escrowVerifyOptions) error {
	host, _ := os.Hostname()
	store, err := eo.open(ctx, g, false, true)
	if err != nil {
		return escrowError(err)
	}
	rep := &report.Report{Tool: "nhscrypt", Command: "escrow verify", Host: host, Started: time.Now().UTC()}
	var kinds []keystore.Kind
	for _, k := range opts.Kinds {
		if !keystore.Kind(k).Valid() {
			return usagef("unknown --kind %q: use luks-recovery, luks-header or age-identity", k)
		}
		kinds = append(kinds, keystore.Kind(k))
	}
	devices := opts.Devices
	if len(devices) == 0 && (len(kinds) == 0 || slices.Contains(kinds, keystore.KindLUKSRecovery)) {
		sys, err := luks.Discover(ctx, opts.Root)
		if err != nil {
			return permissionHint(fmt.Errorf("discovering disks under %q: %w", opts.Root, err))
		}
		for _, d := range sys.LUKSDevices() {
			devices = append(devices, filepath.Join(opts.Root, d))
		}
	}
	repos := opts.Repos
	if len(repos) == 0 && os.Getenv("NHSCRYPT_REPO") != "" {
		repos = []string{os.Getenv("NHSCRYPT_REPO")}
	}
	var recipients []string
	for _, u := range repos {
		b, _, err := openBackend(ctx, u, &opts.backend)
		if err != nil {
			return err
		}
		r, err := backup.Open(ctx, b)
		if err != nil {
			return fmt.Errorf("opening backup repository %s: %w", u, err)
		}
		recipients = append(recipients, r.Config.Recipients...)
	}
	if recipients != nil {
		slices.Sort(recipients)
		recipients = slices.Compact(recipients)
	}
	e := &lukskeys.Enroller{Store: store, Host: host, Version: Version()}
	fs, err := e.Verify(ctx, lukskeys.VerifyRequest{Devices: devices, Recipients: recipients, Kinds: kinds, Activate: opts.Activate, StaleAfter: opts.StaleAfter})
	if err != nil {
		return permissionHint(escrowError(err))
	}
	rep.Checked = devices
	for _, f := range fs {
		rep.Add(f)
	}
	if g.JSON {
		if err := rep.WriteJSON(g.stdout); err != nil {
			return err
		}
	} else if !g.Quiet || rep.ExitCode() != 0 {
		if err := rep.WriteText(g.stdout); err != nil {
			return err
		}
	}
	if code := rep.ExitCode(); code != ExitOK {
		return &exitError{code}
	}
	return nil
}
