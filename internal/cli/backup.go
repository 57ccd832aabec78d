package cli

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"filippo.io/age"
	"github.com/spf13/cobra"

	"github.com/nhscrypt/nhscrypt/backup"
	"github.com/nhscrypt/nhscrypt/filecrypt"
	"github.com/nhscrypt/nhscrypt/internal/atomicfile"
	"github.com/nhscrypt/nhscrypt/report"
)

// defaultBackupStateDir holds the host's signing key, state caches and locks.
const defaultBackupStateDir = "/var/lib/nhscrypt/backup"

type backupOptions struct {
	Repo           string
	StateDir       string
	SigningKey     string
	TrustedSigners []string
	AllowUnsigned  bool
	backend        backendOptions
}

func (o *backupOptions) addFlags(cmd *cobra.Command) {
	f := cmd.PersistentFlags()
	f.StringVar(&o.Repo, "repo", os.Getenv("NHSCRYPT_REPO"), "the repository: a folder, file://, sftp://user@host/path, s3://host/bucket/prefix (default $NHSCRYPT_REPO)")
	f.StringVar(&o.StateDir, "state-dir", defaultBackupStateDir, "this host's backup state: signing key, caches, locks")
	f.StringVar(&o.SigningKey, "signing-key", "", "this host's Ed25519 signing key (default STATE-DIR/signing.key)")
	f.StringArrayVar(&o.TrustedSigners, "trusted-signer", nil, "trust only snapshots signed by this base64 public key or key `FILE` (repeatable; default: the repository's signers)")
	f.BoolVar(&o.AllowUnsigned, "insecure-allow-unsigned", false, "accept unsigned or untrusted snapshots (recovery only)")
	o.backend.addFlags(cmd)
}

func (o *backupOptions) signingKeyPath() string {
	if o.SigningKey != "" {
		return o.SigningKey
	}
	return filepath.Join(o.StateDir, "signing.key")
}

func (o *backupOptions) open(ctx context.Context) (*backup.Repository, error) {
	b, _, err := openBackend(ctx, o.Repo, &o.backend)
	if err != nil {
		return nil, err
	}
	r, err := backup.Open(ctx, b)
	if errors.Is(err, backup.ErrNoRepository) {
		return nil, withHint(err, "create one with `nhscrypt backup init --repo "+o.Repo+" -r RECIPIENT`")
	}
	return r, err
}

// openTrusted opens the repository and reads the trust flags.
func (o *backupOptions) openTrusted(ctx context.Context) (*backup.Repository, backup.Trust, error) {
	t, err := o.trust()
	if err != nil {
		return nil, t, err
	}
	r, err := o.open(ctx)
	return r, t, err
}

func (o *backupOptions) trust() (backup.Trust, error) {
	t := backup.Trust{AllowUnsigned: o.AllowUnsigned}
	for _, s := range o.TrustedSigners {
		k := strings.TrimSpace(s)
		if data, err := os.ReadFile(s); err == nil {
			k = strings.TrimSpace(string(data))
		}
		if raw, err := base64.StdEncoding.DecodeString(k); err != nil || len(raw) != ed25519.PublicKeySize {
			return t, usagef("--trusted-signer %q is not a base64 Ed25519 public key or a file holding one", s)
		}
		t.Keys = append(t.Keys, k)
	}
	return t, nil
}

func newBackupCommand(g *globalOptions) *cobra.Command {
	var o backupOptions
	cmd := &cobra.Command{
		Use:   "backup",
		Short: "Encrypted backups to public keys: init, run, snapshots, ls, restore, verify, forget, prune",
		Long: `Back up to a repository encrypted with age to public keys: this host can
write new snapshots but holds no secret that reads any of them. See
docs/backup.md and docs/backup-format.md.`,
		Args: argsUsage(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	o.addFlags(cmd)
	cmd.AddCommand(newBackupInitCommand(g, &o), newBackupRunCommand(g, &o), newBackupSnapshotsCommand(g, &o),
		newBackupLsCommand(g, &o), newBackupRestoreCommand(g, &o), newBackupVerifyCommand(g, &o),
		newBackupForgetCommand(g, &o), newBackupPruneCommand(g, &o))
	return cmd
}

func newBackupInitCommand(g *globalOptions, o *backupOptions) *cobra.Command {
	var recipients, files []string
	var objectSize int64
	cmd := &cobra.Command{
		Use:   "init --repo PATH -r RECIPIENT… [-R FILE]…",
		Short: "Create a repository encrypted to the given recipients",
		Args:  argsUsage(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, args []string) error {
			rs, err := recipientStrings(recipients, files)
			if err != nil {
				return err
			}
			key, err := backup.LoadOrCreateSigningKey(o.signingKeyPath())
			if err != nil {
				return err
			}
			b, c, err := openBackend(cmd.Context(), o.Repo, &o.backend)
			if err != nil {
				return err
			}
			if err := c.Create(cmd.Context()); err != nil {
				return err
			}
			host, _ := os.Hostname()
			r, err := backup.Init(cmd.Context(), b, rs, objectSize, host, key.Public().(ed25519.PublicKey))
			if err != nil {
				return err
			}
			pub := base64.StdEncoding.EncodeToString(key.Public().(ed25519.PublicKey))
			if g.JSON {
				return json.NewEncoder(g.stdout).Encode(struct {
					MessageType string   `json:"message_type"`
					Repository  string   `json:"repository"`
					ID          string   `json:"id"`
					Recipients  []string `json:"recipients"`
					Signer      string   `json:"signer"`
				}{"init", o.Repo, r.Config.ID, rs, pub})
			}
			fmt.Fprintf(g.stdout, "created repository %s at %s\nencrypted to %d recipient(s); this host signs snapshots with %s\n", r.Config.ID[:12], o.Repo, len(rs), pub)
			fmt.Fprintf(g.stdout, "pin that key on the machines that restore: --trusted-signer %s\n", pub)
			return nil
		},
	}
	cmd.Flags().StringArrayVarP(&recipients, "recipient", "r", nil, "encrypt to `RECIPIENT` (repeatable)")
	cmd.Flags().StringArrayVarP(&files, "recipients-file", "R", nil, "encrypt to the recipients in `FILE` (repeatable)")
	cmd.Flags().Int64Var(&objectSize, "object-size", backup.DefaultObjectSize, "target size of data objects in `BYTES`")
	return cmd
}

// recipientStrings checks recipients and reads recipients files, keeping
// the strings (the config stores them).
func recipientStrings(rs, files []string) ([]string, error) {
	var out []string
	for _, s := range rs {
		if _, err := filecrypt.ParseRecipient(s); err != nil {
			return nil, usagef("invalid recipient %s: %v", redactKeyish(s), err)
		}
		out = append(out, s)
	}
	for _, name := range files {
		if _, _, err := filecrypt.ParseRecipientsFile(name); err != nil {
			return nil, err
		}
		f, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			if _, err := filecrypt.ParseRecipient(line); err == nil {
				out = append(out, line)
			}
		}
		f.Close()
	}
	if len(out) == 0 {
		return nil, usagef("missing recipients: give -r or -R")
	}
	return out, nil
}

type backupRunOptions struct {
	Tags            []string
	Excludes        []string
	OneFileSystem   bool
	StdinName       string
	Host            string
	VerifyUnchanged float64
	Prometheus      string
}

func newBackupRunCommand(g *globalOptions, o *backupOptions) *cobra.Command {
	var opts backupRunOptions
	cmd := &cobra.Command{
		Use:   "run [--tag T]… [--exclude GLOB]… [--one-file-system] PATH… | run --stdin-name NAME",
		Short: "Back up paths (or stdin) as a new signed snapshot",
		Long: `Back up PATHs, or standard input with --stdin-name (a database dump), as a
new snapshot. Unchanged files (same size, mtime, ctime and inode as in this
host's state cache) are not read again. The run needs no private key: only
this host's signing key. Files that change, vanish or cannot be read are
reported as warnings (exit 3); the rest is still backed up.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runBackupRun(cmd.Context(), g, o, opts, args)
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&opts.Tags, "tag", nil, "tag the snapshot (repeatable)")
	f.StringArrayVar(&opts.Excludes, "exclude", nil, "skip paths or names matching `GLOB` (repeatable)")
	f.BoolVar(&opts.OneFileSystem, "one-file-system", false, "do not cross filesystem boundaries")
	f.StringVar(&opts.StdinName, "stdin-name", "", "back up standard input as `NAME`")
	f.StringVar(&opts.Host, "host", "", "host name recorded in the snapshot (default: this host's name)")
	f.Float64Var(&opts.VerifyUnchanged, "verify-unchanged", 0, "re-read and hash this `PERCENT` of unchanged files")
	f.StringVar(&opts.Prometheus, "prometheus-textfile", "", "write metrics for node_exporter's textfile collector to `FILE`")
	return cmd
}

func runBackupRun(ctx context.Context, g *globalOptions, o *backupOptions, opts backupRunOptions, args []string) error {
	if (len(args) == 0) == (opts.StdinName == "") {
		return usagef("give PATHs to back up, or --stdin-name NAME for standard input")
	}
	r, err := o.open(ctx)
	if err != nil {
		return err
	}
	key, err := backup.LoadOrCreateSigningKey(o.signingKeyPath())
	if err != nil {
		return err
	}
	host := opts.Host
	if host == "" {
		host, _ = os.Hostname()
	}
	p := newBackupProgress(g, "backup")
	ro := backup.RunOptions{Paths: args, Tags: opts.Tags, Excludes: opts.Excludes, OneFileSystem: opts.OneFileSystem,
		Host: host, SigningKey: key, StateDir: o.StateDir, VerifyUnchanged: opts.VerifyUnchanged / 100, Progress: p, Version: Version()}
	if opts.StdinName != "" {
		ro.Paths, ro.Stdin, ro.StdinName = nil, g.stdin, opts.StdinName
	}
	start := time.Now()
	res, err := r.Run(ctx, ro)
	p.finish()
	if err != nil {
		if errors.Is(err, backup.ErrLocked) {
			return withHint(err, "wait for the other run to finish; runs from different hosts need no lock")
		}
		return err
	}
	s := res.Snapshot
	if opts.Prometheus != "" {
		if err := writePrometheus(opts.Prometheus, o.Repo, host, s, time.Since(start), len(res.Warnings)); err != nil {
			return fmt.Errorf("snapshot %s recorded, but writing %q failed: %w", s.ID[:12], opts.Prometheus, err)
		}
	}
	for _, w := range res.Warnings {
		g.warnf("%q: %s", w.Path, w.Message)
	}
	if g.JSON {
		p.emit(struct {
			MessageType string           `json:"message_type"`
			Snapshot    string           `json:"snapshot_id"`
			Time        time.Time        `json:"time"`
			Totals      backup.Totals    `json:"totals"`
			Warnings    []backup.Warning `json:"warnings"`
			Seconds     float64          `json:"seconds"`
		}{"summary", s.ID, s.Time, s.Totals, orEmpty(res.Warnings), time.Since(start).Seconds()})
	} else if !g.Quiet {
		fmt.Fprintf(g.stdout, "snapshot %s saved: %d files, %s; new: %d files, %s in %d objects (%s stored) in %.2fs; %d warnings\n",
			s.ID[:12], s.Totals.Files, humanBytes(s.Totals.Bytes), s.Totals.NewFiles, humanBytes(s.Totals.NewBytes),
			s.Totals.NewObjects, humanBytes(s.Totals.StoredBytes), time.Since(start).Seconds(), len(res.Warnings))
	}
	if len(res.Warnings) > 0 {
		return &exitError{ExitWarnings}
	}
	return nil
}

func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// writePrometheus writes node_exporter textfile metrics atomically.
func writePrometheus(path, repo, host string, s *backup.Snapshot, d time.Duration, warnings int) error {
	l := fmt.Sprintf(`{repo=%q,host=%q}`, repo, host)
	var b strings.Builder
	metric := func(name, help string, v any) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s gauge\n%s%s %v\n", name, help, name, name, l, v)
	}
	metric("nhscrypt_backup_last_success_timestamp_seconds", "Time the last successful backup run finished.", time.Now().Unix())
	metric("nhscrypt_backup_duration_seconds", "Duration of the last successful backup run.", fmt.Sprintf("%.3f", d.Seconds()))
	metric("nhscrypt_backup_files", "Files in the last snapshot.", s.Totals.Files)
	metric("nhscrypt_backup_bytes", "Bytes of file content in the last snapshot.", s.Totals.Bytes)
	metric("nhscrypt_backup_new_bytes", "Bytes of new or changed content stored by the last run.", s.Totals.NewBytes)
	metric("nhscrypt_backup_stored_bytes", "Encrypted bytes uploaded by the last run.", s.Totals.StoredBytes)
	metric("nhscrypt_backup_warnings", "Files that could not be backed up as they were in the last run.", warnings)
	return atomicfile.WriteFile(path, []byte(b.String()), 0o644, true)
}

func newBackupSnapshotsCommand(g *globalOptions, o *backupOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "snapshots",
		Short: "List snapshots (no key needed)",
		Args:  argsUsage(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, t, err := o.openTrusted(cmd.Context())
			if err != nil {
				return err
			}
			t.AllowUnsigned = true // list everything, marking trust
			snaps, errs, err := r.Snapshots(cmd.Context(), t)
			if err != nil {
				return err
			}
			if g.JSON {
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(orEmpty(snaps)); err != nil {
					return err
				}
			} else {
				w := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "ID\tTIME\tHOST\tTAGS\tFILES\tSIZE\tTRUSTED\tPATHS")
				for _, s := range snaps {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%s\t%v\t%s\n", s.ID[:12], s.Time.Local().Format("2006-01-02 15:04:05"), s.Host,
						strings.Join(s.Tags, ","), s.Totals.Files, humanBytes(s.Totals.Bytes), s.Trusted, strings.Join(s.Paths, " "))
				}
				w.Flush()
				fmt.Fprintf(g.stdout, "%d snapshots\n", len(snaps))
			}
			for _, e := range errs {
				fmt.Fprintf(g.stderr, "nhscrypt: error: %v\n", e)
			}
			if len(errs) > 0 {
				return &exitError{ExitFailed}
			}
			return nil
		},
	}
}

func identities(paths []string, passFile string) ([]age.Identity, error) {
	if len(paths) == 0 {
		return nil, usagef("an identity is needed to read the backup: give -i FILE")
	}
	var ids []age.Identity
	for _, p := range paths {
		is, err := filecrypt.ParseIdentitiesFile(p, passphrasePrompt(passFile))
		if err != nil {
			return nil, err
		}
		ids = append(ids, is...)
	}
	return ids, nil
}

// loadSnapshotManifest resolves a SNAPSHOT argument and decrypts its manifest.
func (o *backupOptions) loadSnapshotManifest(ctx context.Context, ref string, ids []age.Identity) (*backup.Repository, *backup.Snapshot, *backup.Manifest, error) {
	r, t, err := o.openTrusted(ctx)
	if err != nil {
		return nil, nil, nil, err
	}
	s, err := r.FindSnapshot(ctx, ref, "", t)
	if err != nil {
		if errors.Is(err, backup.ErrUntrustedSignature) {
			return nil, nil, nil, withHint(err, "the snapshot was not signed by a trusted host key; --insecure-allow-unsigned only for recovery")
		}
		return nil, nil, nil, err
	}
	m, err := r.LoadManifest(ctx, s, ids)
	if err != nil {
		return nil, nil, nil, err
	}
	return r, s, m, nil
}

func newBackupLsCommand(g *globalOptions, o *backupOptions) *cobra.Command {
	var ids []string
	var passFile string
	cmd := &cobra.Command{
		Use:   "ls SNAPSHOT [PATH] -i IDENTITY",
		Short: "List the files of a snapshot (ID, unique prefix, or latest)",
		Args:  argsUsage(cobra.RangeArgs(1, 2)),
		RunE: func(cmd *cobra.Command, args []string) error {
			is, err := identities(ids, passFile)
			if err != nil {
				return err
			}
			_, _, m, err := o.loadSnapshotManifest(cmd.Context(), args[0], is)
			if err != nil {
				return err
			}
			var inc []string
			if len(args) == 2 {
				inc = []string{args[1]}
			}
			enc := json.NewEncoder(g.stdout)
			w := tabwriter.NewWriter(g.stdout, 0, 4, 1, ' ', 0)
			for _, e := range m.Entries {
				if len(inc) > 0 && !strings.HasPrefix(e.Path, strings.TrimSuffix(inc[0], "/")) {
					continue
				}
				if g.JSON {
					enc.Encode(e)
					continue
				}
				link := ""
				if e.Link != "" {
					link = " -> " + e.Link
				}
				fmt.Fprintf(w, "%s\t%d:%d\t%d\t%s\t%q%s\n", e.Type, e.UID, e.GID, e.Size, e.MTime.Local().Format("2006-01-02 15:04:05"), e.Path, link)
			}
			return w.Flush()
		},
	}
	cmd.Flags().StringArrayVarP(&ids, "identity", "i", nil, "identity `FILE` (repeatable)")
	cmd.Flags().StringVar(&passFile, "passphrase-file", "", "passphrase of a protected identity file")
	return cmd
}

func newBackupRestoreCommand(g *globalOptions, o *backupOptions) *cobra.Command {
	var ids, includes []string
	var target, passFile string
	var overwrite bool
	cmd := &cobra.Command{
		Use:   "restore SNAPSHOT --target DIR [--include PATH]… -i IDENTITY",
		Short: "Restore a snapshot (or part of it) into a folder",
		Args:  argsUsage(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			if target == "" {
				return usagef("--target DIR is required")
			}
			is, err := identities(ids, passFile)
			if err != nil {
				return err
			}
			r, s, m, err := o.loadSnapshotManifest(cmd.Context(), args[0], is)
			if err != nil {
				return err
			}
			p := newBackupProgress(g, "restore")
			start := time.Now()
			res, err := r.Restore(cmd.Context(), m, backup.RestoreOptions{Target: target, Includes: includes, Identities: is, Overwrite: overwrite, Progress: p})
			p.finish()
			if err != nil {
				return err
			}
			for _, f := range res.Failed {
				fmt.Fprintf(g.stderr, "nhscrypt: error: %q: %s\n", f.Path, f.Message)
			}
			if g.JSON {
				p.emit(struct {
					MessageType string           `json:"message_type"`
					Snapshot    string           `json:"snapshot_id"`
					Files       int              `json:"files"`
					Dirs        int              `json:"dirs"`
					Bytes       int64            `json:"bytes"`
					Failed      []backup.Warning `json:"failed"`
					Seconds     float64          `json:"seconds"`
				}{"summary", s.ID, res.Files, res.Dirs, res.Bytes, orEmpty(res.Failed), time.Since(start).Seconds()})
			} else if !g.Quiet {
				fmt.Fprintf(g.stdout, "restored %s (%s) and %d folders from snapshot %s into %s in %.2fs; %d failed\n",
					plural(res.Files, "file"), humanBytes(res.Bytes), res.Dirs, s.ID[:12], target, time.Since(start).Seconds(), len(res.Failed))
			}
			if len(res.Failed) > 0 {
				return &exitError{ExitFailed}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringArrayVarP(&ids, "identity", "i", nil, "identity `FILE` (repeatable)")
	f.StringVar(&passFile, "passphrase-file", "", "passphrase of a protected identity file")
	f.StringVar(&target, "target", "", "restore into `DIR`")
	f.StringArrayVar(&includes, "include", nil, "restore only `PATH` and what is under it (repeatable)")
	f.BoolVar(&overwrite, "overwrite", false, "replace existing files")
	return cmd
}

func newBackupVerifyCommand(g *globalOptions, o *backupOptions) *cobra.Command {
	var ids []string
	var passFile string
	var readData bool
	var sample float64
	cmd := &cobra.Command{
		Use:   "verify [--read-data [--sample PCT]] [-i IDENTITY]",
		Short: "Check that every snapshot is trusted and every object it needs is intact",
		Long: `Without -i (no key needed): every snapshot is signed by a trusted key and
every object it names exists with the right size; with --read-data, every
object's content hashes to its name. With -i and --read-data: objects are
decrypted and every file checked against its SHA-256.
Exit 0 all intact, 4 damage found (named, with the snapshots and files
concerned).`,
		Args: argsUsage(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, t, err := o.openTrusted(cmd.Context())
			if err != nil {
				return err
			}
			var is []age.Identity
			if len(ids) > 0 {
				if is, err = identities(ids, passFile); err != nil {
					return err
				}
			}
			if sample < 0 || sample > 100 {
				return usagef("--sample must be between 0 and 100")
			}
			host, _ := os.Hostname()
			rep := &report.Report{Tool: "nhscrypt", Command: "backup verify", Host: host, Started: time.Now().UTC()}
			p := newBackupProgress(g, "verify")
			p.enc = nil // the report is the JSON output
			findings, checked, err := r.Verify(cmd.Context(), backup.VerifyOptions{ReadData: readData, Sample: sample / 100, Identities: is, Trust: t, Progress: p})
			p.finish()
			if err != nil {
				return err
			}
			for _, f := range findings {
				rep.Add(f)
			}
			rep.Checked = checked
			if g.JSON {
				err = rep.WriteJSON(g.stdout)
			} else {
				err = rep.WriteText(g.stdout)
			}
			if err != nil {
				return err
			}
			if c := rep.ExitCode(); c != 0 {
				return &exitError{c}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringArrayVarP(&ids, "identity", "i", nil, "identity `FILE`: decrypt objects and check every file (repeatable)")
	f.StringVar(&passFile, "passphrase-file", "", "passphrase of a protected identity file")
	f.BoolVar(&readData, "read-data", false, "read every object (not only its size)")
	f.Float64Var(&sample, "sample", 0, "with --read-data, read only this `PERCENT` of the objects, chosen at random")
	return cmd
}

func newBackupForgetCommand(g *globalOptions, o *backupOptions) *cobra.Command {
	var p backup.RetentionPolicy
	var prune, dryRun bool
	var grace time.Duration
	cmd := &cobra.Command{
		Use:   "forget --keep-last N --keep-daily N --keep-weekly N --keep-monthly N [--prune] [--dry-run]",
		Short: "Remove snapshots a retention policy does not keep (restic's semantics)",
		Args:  argsUsage(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, args []string) error {
			if p.Empty() {
				return usagef("no retention policy given: nothing would be kept, so nothing is removed")
			}
			r, t, err := o.openTrusted(cmd.Context())
			if err != nil {
				return err
			}
			decisions, locked, err := r.Forget(cmd.Context(), p, t, dryRun)
			if err != nil {
				return err
			}
			for _, l := range locked {
				g.warnf("%s not removed yet: %s", l.Path, l.Message)
			}
			verb := "removed"
			if dryRun {
				verb = "would remove"
			}
			removed := 0
			if g.JSON {
				enc := json.NewEncoder(g.stdout)
				for _, d := range decisions {
					enc.Encode(struct {
						MessageType string    `json:"message_type"`
						ID          string    `json:"snapshot_id"`
						Time        time.Time `json:"time"`
						Host        string    `json:"host"`
						Keep        bool      `json:"keep"`
						Reasons     []string  `json:"reasons"`
					}{"forget", d.Snapshot.ID, d.Snapshot.Time, d.Snapshot.Host, d.Keep, orEmpty(d.Reasons)})
				}
			} else {
				w := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "ID\tTIME\tHOST\tDECISION\tREASONS")
				for _, d := range decisions {
					dec := "keep"
					if !d.Keep {
						dec = verb
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", d.Snapshot.ID[:12], d.Snapshot.Time.Local().Format("2006-01-02 15:04:05"), d.Snapshot.Host, dec, strings.Join(d.Reasons, ", "))
				}
				w.Flush()
			}
			for _, d := range decisions {
				if !d.Keep {
					removed++
				}
			}
			if !g.JSON && !g.Quiet {
				fmt.Fprintf(g.stdout, "%s %d of %d snapshots\n", verb, removed, len(decisions))
			}
			if prune {
				if err := runPrune(cmd.Context(), g, r, grace, dryRun); err != nil {
					return err
				}
			}
			if len(locked) > 0 {
				return &exitError{ExitWarnings}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&p.Last, "keep-last", 0, "keep the last `N` snapshots")
	f.IntVar(&p.Hourly, "keep-hourly", 0, "keep the last snapshot of each of the last `N` hours")
	f.IntVar(&p.Daily, "keep-daily", 0, "keep the last snapshot of each of the last `N` days")
	f.IntVar(&p.Weekly, "keep-weekly", 0, "keep the last snapshot of each of the last `N` weeks")
	f.IntVar(&p.Monthly, "keep-monthly", 0, "keep the last snapshot of each of the last `N` months")
	f.IntVar(&p.Yearly, "keep-yearly", 0, "keep the last snapshot of each of the last `N` years")
	f.DurationVar(&p.Within, "keep-within", 0, "keep snapshots within `DURATION` of the newest")
	f.StringArrayVar(&p.Tags, "keep-tag", nil, "keep snapshots with `TAG`")
	f.BoolVar(&prune, "prune", false, "then remove the objects no snapshot needs")
	f.BoolVar(&dryRun, "dry-run", false, "only say what would be removed")
	f.DurationVar(&grace, "grace", time.Hour, "with --prune: keep unreferenced objects younger than this (a run elsewhere may be writing them)")
	return cmd
}

func newBackupPruneCommand(g *globalOptions, o *backupOptions) *cobra.Command {
	var dryRun bool
	var grace time.Duration
	cmd := &cobra.Command{
		Use:   "prune [--dry-run]",
		Short: "Remove objects no snapshot needs (no key needed)",
		Args:  argsUsage(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := o.open(cmd.Context())
			if err != nil {
				return err
			}
			return runPrune(cmd.Context(), g, r, grace, dryRun)
		},
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "only say what would be removed")
	cmd.Flags().DurationVar(&grace, "grace", time.Hour, "keep unreferenced objects younger than this (a run elsewhere may be writing them)")
	return cmd
}

func runPrune(ctx context.Context, g *globalOptions, r *backup.Repository, grace time.Duration, dryRun bool) error {
	res, err := r.Prune(ctx, grace, dryRun)
	if err != nil {
		return err
	}
	if g.JSON {
		return json.NewEncoder(g.stdout).Encode(struct {
			MessageType string `json:"message_type"`
			*backup.PruneResult
			DryRun bool `json:"dry_run"`
		}{"prune", res, dryRun})
	}
	verb := "removed"
	if dryRun {
		verb = "would remove"
	}
	fmt.Fprintf(g.stdout, "prune: %s %d unreferenced objects (%s); %d referenced; %d young kept\n", verb, len(res.Removed), humanBytes(res.RemovedBytes), res.Referenced, res.Young)
	for _, n := range res.NotRemoved {
		g.warnf("%s not removed: %s", n.Path, n.Message)
	}
	if len(res.NotRemoved) > 0 {
		return &exitError{ExitWarnings}
	}
	return nil
}

// backupProgress renders backup events: a bar on a terminal (bytes, files,
// rate, ETA), JSON Lines with --json.
type backupProgress struct {
	g     *globalOptions
	verb  string
	mu    sync.Mutex
	enc   *json.Encoder
	bar   bool
	start time.Time
	last  time.Time
	total backup.Event
	files int
	bytes int64
}

func newBackupProgress(g *globalOptions, verb string) *backupProgress {
	p := &backupProgress{g: g, verb: verb, start: time.Now(), bar: !g.JSON && !g.Quiet && isTerminal(g.stderr)}
	if g.JSON {
		p.enc = json.NewEncoder(g.stdout)
	}
	return p
}

func (p *backupProgress) BackupEvent(e backup.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch e.Kind {
	case backup.EventStart:
		p.total = e
	case backup.EventFile:
		p.files++
		p.bytes += e.Bytes
	case backup.EventObject:
		if p.verb != "verify" {
			return
		}
		p.files++ // objects checked
		p.bytes += e.Bytes
	case backup.EventWarning:
		if p.enc != nil {
			p.enc.Encode(struct {
				MessageType string `json:"message_type"`
				Path        string `json:"path"`
				Message     string `json:"message"`
			}{"warning", e.Path, e.Message})
		}
		return
	default:
		return
	}
	now := time.Now()
	if now.Sub(p.last) < 200*time.Millisecond {
		return
	}
	p.last = now
	p.render(now)
}

func (p *backupProgress) render(now time.Time) {
	elapsed := now.Sub(p.start).Seconds()
	rate := float64(p.bytes) / max(elapsed, 0.001)
	eta := ""
	if p.total.Bytes > p.bytes && rate > 0 {
		eta = (time.Duration(float64(p.total.Bytes-p.bytes)/rate) * time.Second).Round(time.Second).String()
	}
	if p.enc != nil {
		p.enc.Encode(struct {
			MessageType string  `json:"message_type"`
			FilesDone   int     `json:"files_done"`
			FilesTotal  int     `json:"files_total"`
			BytesDone   int64   `json:"bytes_done"`
			BytesTotal  int64   `json:"bytes_total"`
			Seconds     float64 `json:"seconds"`
		}{"status", p.files, p.total.Files, p.bytes, p.total.Bytes, elapsed})
	}
	if p.bar {
		fmt.Fprintf(p.g.stderr, "\r\x1b[K%s: %d/%d files  %s/%s  %s/s  ETA %s", p.verb, p.files, p.total.Files,
			humanBytes(p.bytes), humanBytes(p.total.Bytes), humanBytes(int64(rate)), orDash(eta))
	}
}

func (p *backupProgress) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar {
		fmt.Fprint(p.g.stderr, "\r\x1b[K")
	}
}

func (p *backupProgress) emit(v any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.enc != nil {
		p.enc.Encode(v)
	}
}
