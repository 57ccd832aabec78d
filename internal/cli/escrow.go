package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/nhscrypt/nhscrypt/filecrypt"
	"github.com/nhscrypt/nhscrypt/internal/atomicfile"
	"github.com/nhscrypt/nhscrypt/keystore"
	"github.com/nhscrypt/nhscrypt/keystore/file"
	"github.com/nhscrypt/nhscrypt/keystore/vault"
)

// defaultEscrowDir is the file store's folder when --dir is not given.
const defaultEscrowDir = "/var/lib/nhscrypt/escrow"

// escrowOptions select and open the escrow store; every escrow command
// has them.
type escrowOptions struct {
	Store string // "vault" or "file"

	// file store
	Dir            string
	Recipients     []string
	RecipientFiles []string
	Identities     []string

	// vault store
	Mount             string
	Prefix            string
	AppRoleRoleID     string
	AppRoleSecretFile string
	AppRoleMount      string
	CertAuthRole      string
	CertAuthMount     string
	CertAuth          bool
	TransitKey        string
	TransitMount      string
}

func (o *escrowOptions) addFlags(f *pflag.FlagSet) {
	f.StringVar(&o.Store, "store", "", "escrow store: `vault` or file (default: vault when VAULT_ADDR is set, else file)")
	f.StringVar(&o.Dir, "dir", defaultEscrowDir, "file store: the escrow `FOLDER`")
	f.StringArrayVarP(&o.Recipients, "recipient", "r", nil, "file store: encrypt new secrets to the admin `RECIPIENT` (repeatable)")
	f.StringArrayVarP(&o.RecipientFiles, "recipients-file", "R", nil, "file store: encrypt new secrets to the admin recipients in `FILE` (repeatable)")
	f.StringArrayVarP(&o.Identities, "identity", "i", nil, "file store: decrypt with the admin identity `FILE` (repeatable)")
	f.StringVar(&o.Mount, "vault-mount", vault.DefaultMount, "Vault: the KV version 2 `MOUNT`")
	f.StringVar(&o.Prefix, "vault-prefix", "", "Vault: the `PATH` under the mount (default nhscrypt/HOSTNAME)")
	f.StringVar(&o.AppRoleRoleID, "approle-role-id", "", "Vault: log in with AppRole `ROLE_ID` (with --approle-secret-id-file)")
	f.StringVar(&o.AppRoleSecretFile, "approle-secret-id-file", "", "Vault: read the AppRole secret ID from `FILE`")
	f.StringVar(&o.AppRoleMount, "approle-mount", "approle", "Vault: the AppRole auth `MOUNT`")
	f.BoolVar(&o.CertAuth, "cert-auth", false, "Vault: log in with TLS certificate auth (VAULT_CLIENT_CERT, VAULT_CLIENT_KEY)")
	f.StringVar(&o.CertAuthRole, "cert-auth-role", "", "Vault: the certificate `ROLE` to log in against")
	f.StringVar(&o.CertAuthMount, "cert-auth-mount", "cert", "Vault: the certificate auth `MOUNT`")
	f.StringVar(&o.TransitKey, "transit-key", "", "Vault: wrap new secrets with the transit `KEY` (reading them then needs decrypt on it)")
	f.StringVar(&o.TransitMount, "transit-mount", "transit", "Vault: the transit engine's `MOUNT`")
}

// storeName is the store open picks: --store, else vault when VAULT_ADDR
// is set, else file.
func (o *escrowOptions) storeName() string {
	switch {
	case o.Store != "":
		return o.Store
	case os.Getenv("VAULT_ADDR") != "":
		return "vault"
	}
	return "file"
}

// open returns the store. forPut says whether recipients are needed (file
// store), forGet whether identities are.
func (o *escrowOptions) open(ctx context.Context, g *globalOptions, forPut, forGet bool) (keystore.Escrow, error) {
	switch o.storeName() {
	case "file":
		fo := file.Options{}
		if forPut {
			co := cryptOptions{Recipients: o.Recipients, RecipientFiles: o.RecipientFiles}
			if len(co.Recipients)+len(co.RecipientFiles) == 0 {
				return nil, usagef("the file store needs the admin recipients to encrypt to: give -r or -R")
			}
			recs, err := co.recipients(g)
			if err != nil {
				return nil, err
			}
			fo.Recipients = recs
		}
		if forGet {
			if len(o.Identities) == 0 {
				return nil, usagef("the file store needs an admin identity to decrypt with: give -i")
			}
			ids, err := identities(o.Identities, "")
			if err != nil {
				return nil, err
			}
			fo.Identities = ids
		}
		return file.Open(o.Dir, fo)
	case "vault":
		return o.openVault(ctx)
	}
	return nil, usagef("unknown --store %q: use vault or file", o.Store)
}

func (o *escrowOptions) openVault(ctx context.Context) (keystore.Escrow, error) {
	c := vault.Config{
		Address:       os.Getenv("VAULT_ADDR"),
		Namespace:     os.Getenv("VAULT_NAMESPACE"),
		CACert:        os.Getenv("VAULT_CACERT"),
		CAPath:        os.Getenv("VAULT_CAPATH"),
		ClientCert:    os.Getenv("VAULT_CLIENT_CERT"),
		ClientKey:     os.Getenv("VAULT_CLIENT_KEY"),
		TLSServerName: os.Getenv("VAULT_TLS_SERVER_NAME"),
		MaxRetries:    -1,
	}
	if c.Address == "" {
		return nil, withHint(usagef("no Vault address"), "set VAULT_ADDR, or use --store file")
	}
	switch {
	case o.AppRoleRoleID != "" || o.AppRoleSecretFile != "":
		if o.AppRoleRoleID == "" || o.AppRoleSecretFile == "" {
			return nil, usagef("AppRole login needs both --approle-role-id and --approle-secret-id-file")
		}
		c.AppRole = &vault.AppRole{RoleID: o.AppRoleRoleID, SecretIDFile: o.AppRoleSecretFile, Mount: o.AppRoleMount}
	case o.CertAuth || o.CertAuthRole != "":
		c.Cert = &vault.CertAuth{Role: o.CertAuthRole, Mount: o.CertAuthMount}
	default:
		tok, err := vaultToken()
		if err != nil {
			return nil, err
		}
		c.Token = tok
	}
	client, err := vault.NewClient(ctx, c)
	if err != nil {
		return nil, escrowError(err)
	}
	prefix := o.Prefix
	if prefix == "" {
		host, err := os.Hostname()
		if err != nil {
			return nil, err
		}
		prefix = vault.DefaultPrefix(host)
	}
	s, err := vault.New(client, vault.Options{Mount: o.Mount, Prefix: prefix, TransitKey: o.TransitKey, TransitMount: o.TransitMount})
	if err != nil {
		return nil, usagef("%v", err)
	}
	return s, nil
}

// vaultToken returns VAULT_TOKEN, else the token the vault CLI keeps in
// ~/.vault-token.
func vaultToken() (string, error) {
	if t := os.Getenv("VAULT_TOKEN"); t != "" {
		return t, nil
	}
	home, err := os.UserHomeDir()
	if err == nil {
		data, err := os.ReadFile(filepath.Join(home, ".vault-token"))
		if err == nil && strings.TrimSpace(string(data)) != "" {
			return strings.TrimSpace(string(data)), nil
		}
	}
	return "", &authError{withHint(errors.New("no Vault credentials"),
		"set VAULT_TOKEN, run `vault login`, or give --approle-role-id and --approle-secret-id-file, or --cert-auth")}
}

// escrowError maps keystore's errors to the CLI's: refused credentials
// exit 10 (ErrNotFound already matches fs.ErrNotExist, exit 11).
func escrowError(err error) error {
	if errors.Is(err, keystore.ErrPermission) {
		return &authError{err}
	}
	if errors.Is(err, keystore.ErrUnavailable) {
		return withHint(err, "check VAULT_ADDR, and that Vault is running and unsealed")
	}
	return err
}

func newEscrowCommand(g *globalOptions) *cobra.Command {
	var opts escrowOptions
	cmd := &cobra.Command{
		Use:   "escrow",
		Short: "Escrow keys in HashiCorp Vault or an age-encrypted folder",
		Long: `Escrow LUKS recovery keys, LUKS header backups and age identities, in
HashiCorp Vault (KV version 2, --store vault) or in a folder of
age-encrypted files (--store file). An escrowed key is never overwritten
or deleted; its state (pending, active, retired, failed) changes with
check-and-set. Listing reads no secret. See docs/escrow.md.

Vault is reached as the vault CLI is: VAULT_ADDR, VAULT_TOKEN or
~/.vault-token, VAULT_CACERT, VAULT_CAPATH, VAULT_NAMESPACE,
VAULT_CLIENT_CERT and VAULT_CLIENT_KEY; or --approle-role-id with
--approle-secret-id-file; or --cert-auth.`,
		Args: argsUsage(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	opts.addFlags(cmd.PersistentFlags())
	cmd.AddCommand(
		newEscrowPutCommand(g, &opts),
		newEscrowGetCommand(g, &opts),
		newEscrowListCommand(g, &opts),
		newEscrowHistoryCommand(g, &opts),
		newEscrowStateCommand(g, &opts),
		newEscrowLUKSEnrollCommand(g, &opts),
		newEscrowLUKSRotateCommand(g, &opts),
		newEscrowVerifyCommand(g, &opts),
	)
	return cmd
}

type escrowPutOptions struct {
	Kind      string
	Name      string
	Device    string
	LUKSUUID  string
	Keyslot   int
	Recipient string
	State     string
}

func newEscrowPutCommand(g *globalOptions, eo *escrowOptions) *cobra.Command {
	var opts escrowPutOptions
	cmd := &cobra.Command{
		Use:   "put --kind KIND --name NAME [flags] FILE",
		Short: "Escrow the secret in FILE (or - for stdin) under a new name",
		Long: `Escrow the secret in FILE (- reads stdin) under NAME. It fails if NAME is
already escrowed: nothing is ever overwritten. For an age identity the
recipient is read from the identity itself.`,
		Args: argsUsage(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			return escrowError(runEscrowPut(cmd.Context(), g, eo, opts, args[0]))
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.Kind, "kind", "", "what the secret is: `KIND` luks-recovery, luks-header or age-identity")
	f.StringVar(&opts.Name, "name", "", "escrow the secret under `NAME`")
	f.StringVar(&opts.Device, "device", "", "the LUKS `DEVICE` the key or header belongs to")
	f.StringVar(&opts.LUKSUUID, "luks-uuid", "", "the LUKS `UUID` of that device")
	f.IntVar(&opts.Keyslot, "keyslot", -1, "the `N`th LUKS keyslot the key opens")
	f.StringVar(&opts.Recipient, "recipient-of", "", "the public age `RECIPIENT` of an age identity (default: read from it)")
	f.StringVar(&opts.State, "state", "", "initial `STATE`: pending (default) or active")
	return cmd
}

const maxEscrowSecret = 64 << 20

func runEscrowPut(ctx context.Context, g *globalOptions, eo *escrowOptions, opts escrowPutOptions, src string) error {
	if opts.Name == "" || opts.Kind == "" {
		return usagef("put needs --kind and --name")
	}
	k := keystore.Key{
		Name: opts.Name, Kind: keystore.Kind(opts.Kind), Device: opts.Device, LUKSUUID: opts.LUKSUUID,
		Recipient: opts.Recipient, State: keystore.State(opts.State), NhscryptVersion: Version(),
	}
	k.Host, _ = os.Hostname()
	if opts.Keyslot >= 0 {
		k.Keyslot = keystore.Slot(opts.Keyslot)
	}
	if opts.State != "" && k.State != keystore.StatePending && k.State != keystore.StateActive {
		return usagef("--state must be pending or active")
	}
	if err := k.Check(); err != nil {
		return &usageError{err}
	}
	in := g.stdin
	if src != "-" {
		f, err := os.Open(src)
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	}
	secret, err := io.ReadAll(io.LimitReader(in, maxEscrowSecret+1))
	if err != nil {
		return err
	}
	defer clear(secret)
	if len(secret) > maxEscrowSecret {
		return fmt.Errorf("%q is larger than %d bytes", src, maxEscrowSecret)
	}
	if len(secret) == 0 {
		return fmt.Errorf("%q is empty: nothing to escrow", src)
	}
	if k.Kind == keystore.KindAgeIdentity && k.Recipient == "" {
		ids, err := filecrypt.ParseIdentities(src, bytes.NewReader(secret), nil)
		if err != nil {
			return fmt.Errorf("%q is not an age identity: %w", src, err)
		}
		recs, err := filecrypt.RecipientsOf(ids)
		if err != nil {
			return fmt.Errorf("%q: %w", src, err)
		}
		k.Recipient = strings.Join(recs, ",")
	}
	s, err := eo.open(ctx, g, true, false)
	if err != nil {
		return err
	}
	put, err := putEscrow(ctx, g, s, k, secret, "")
	if err != nil {
		return err
	}
	if g.JSON {
		return printEscrowJSON(g.stdout, "escrow_put", put)
	}
	return nil
}

// putEscrow escrows secret as k and says so on stderr (unless --json or
// --quiet). A put the store made with a secondary error (see
// keystore.Escrow) is done, with a warning; a taken name gets a hint,
// with more added to it.
func putEscrow(ctx context.Context, g *globalOptions, s keystore.Escrow, k keystore.Key, secret []byte, more string) (*keystore.Key, error) {
	put, err := s.Put(ctx, k, secret)
	if put != nil && err != nil {
		g.warnf("%v", err)
		err = nil
	}
	if err != nil {
		if errors.Is(err, keystore.ErrExists) {
			return nil, withHint(err, "escrowed keys are never overwritten; choose another name"+more)
		}
		return nil, err
	}
	if !g.JSON && !g.Quiet {
		fmt.Fprintf(g.stderr, "escrowed %s (%s, %s, revision %d, sha256 %s)\n", put.Name, put.Kind, put.State, put.Revision, put.Fingerprint)
	}
	return put, nil
}

func newEscrowGetCommand(g *globalOptions, eo *escrowOptions) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "get NAME -o FILE",
		Short: "Write an escrowed secret to FILE (0600, never overwritten)",
		Args:  argsUsage(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			return escrowError(runEscrowGet(cmd.Context(), g, eo, args[0], output))
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "write the secret to `FILE` (- for stdout)")
	return cmd
}

func runEscrowGet(ctx context.Context, g *globalOptions, eo *escrowOptions, name, output string) error {
	if output == "" {
		return usagef("get needs -o FILE (or -o - for stdout)")
	}
	if output != "-" {
		if _, err := os.Lstat(output); err == nil {
			return withHint(fmt.Errorf("%q already exists", output), "get never overwrites a file; choose another name")
		}
	}
	s, err := eo.open(ctx, g, false, true)
	if err != nil {
		return err
	}
	k, secret, err := s.Get(ctx, name)
	if err != nil {
		return err
	}
	defer clear(secret)
	if output == "-" {
		_, err = g.stdout.Write(secret)
		return err
	}
	if err := atomicfile.WriteFile(output, secret, 0o600, false); err != nil {
		return err
	}
	if g.JSON {
		return printEscrowJSON(g.stdout, "escrow_get", k)
	}
	if !g.Quiet {
		fmt.Fprintf(g.stderr, "wrote %s (%s, %s, revision %d) to %s\n", k.Name, k.Kind, k.State, k.Revision, output)
	}
	return nil
}

func newEscrowListCommand(g *globalOptions, eo *escrowOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List escrowed keys and their states (reads no secret)",
		Args:  argsUsage(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, args []string) error {
			return escrowError(runEscrowList(cmd.Context(), g, eo))
		},
	}
}

func runEscrowList(ctx context.Context, g *globalOptions, eo *escrowOptions) error {
	s, err := eo.open(ctx, g, false, false)
	if err != nil {
		return err
	}
	keys, err := s.List(ctx)
	if err != nil {
		return err
	}
	if g.JSON {
		for i := range keys {
			if err := printEscrowJSON(g.stdout, "escrow_entry", &keys[i]); err != nil {
				return err
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tKIND\tSTATE\tREV\tFOR\tCREATED")
	for _, k := range keys {
		created := ""
		if !k.Created.IsZero() {
			created = k.Created.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", k.Name, orDash(string(k.Kind)), k.State, k.Revision, orDash(escrowSubject(&k)), orDash(created))
	}
	return tw.Flush()
}

func escrowSubject(k *keystore.Key) string {
	switch {
	case k.Device != "" && k.Keyslot != nil:
		return fmt.Sprintf("%s keyslot %d", k.Device, *k.Keyslot)
	case k.Device != "":
		return k.Device
	case k.LUKSUUID != "":
		return "UUID=" + k.LUKSUUID
	}
	return k.Recipient
}

func newEscrowHistoryCommand(g *globalOptions, eo *escrowOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "history NAME",
		Short: "Show every revision of an escrowed key (reads no secret)",
		Args:  argsUsage(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			return escrowError(runEscrowHistory(cmd.Context(), g, eo, args[0]))
		},
	}
}

func runEscrowHistory(ctx context.Context, g *globalOptions, eo *escrowOptions, name string) error {
	s, err := eo.open(ctx, g, false, false)
	if err != nil {
		return err
	}
	vs, err := s.History(ctx, name)
	if err != nil {
		return err
	}
	if g.JSON {
		enc := json.NewEncoder(g.stdout)
		for _, v := range vs {
			if err := enc.Encode(struct {
				MessageType string `json:"message_type"`
				Name        string `json:"name"`
				keystore.Version
			}{"escrow_revision", name, v}); err != nil {
				return err
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REV\tSTATE\tWRITTEN\tNOTE")
	for _, v := range vs {
		note := ""
		switch {
		case v.Destroyed:
			note = "destroyed in Vault"
		case v.Deleted:
			note = "deleted in Vault"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", v.Revision, v.State, v.Created.UTC().Format(time.RFC3339), orDash(note))
	}
	return tw.Flush()
}

func newEscrowStateCommand(g *globalOptions, eo *escrowOptions) *cobra.Command {
	var revision int
	cmd := &cobra.Command{
		Use:   "state NAME STATE [--revision N]",
		Short: "Change an escrowed key's state (active, retired or failed), with check-and-set",
		Long: `Change the state of NAME to STATE. With --revision N the change is made only
if N is still the current revision; without it, from the current revision
as read just before. A change made meanwhile by someone else is refused.
Allowed: pending to active, retired or failed; active to retired or failed.`,
		Args: argsUsage(cobra.ExactArgs(2)),
		RunE: func(cmd *cobra.Command, args []string) error {
			return escrowError(runEscrowState(cmd.Context(), g, eo, args[0], keystore.State(args[1]), revision))
		},
	}
	cmd.Flags().IntVar(&revision, "revision", 0, "change only if `N` is the current revision")
	return cmd
}

func runEscrowState(ctx context.Context, g *globalOptions, eo *escrowOptions, name string, to keystore.State, revision int) error {
	if !to.Valid() || to == keystore.StatePending {
		return usagef("invalid state %q: use active, retired or failed", to)
	}
	s, err := eo.open(ctx, g, false, false)
	if err != nil {
		return err
	}
	if revision <= 0 {
		vs, err := s.History(ctx, name)
		if err != nil {
			return err
		}
		if len(vs) == 0 {
			return fmt.Errorf("escrow %q: no revisions", name)
		}
		revision = vs[len(vs)-1].Revision
	}
	k, err := s.SetState(ctx, name, revision, to)
	if k != nil && err != nil { // changed; something secondary failed (see keystore.Escrow)
		g.warnf("%v", err)
		err = nil
	}
	if err != nil {
		return err
	}
	if g.JSON {
		return printEscrowJSON(g.stdout, "escrow_state", k)
	}
	if !g.Quiet {
		fmt.Fprintf(g.stderr, "%s is %s (revision %s)\n", k.Name, k.State, strconv.Itoa(k.Revision))
	}
	return nil
}

func printEscrowJSON(w io.Writer, messageType string, k *keystore.Key) error {
	return json.NewEncoder(w).Encode(struct {
		MessageType string `json:"message_type"`
		*keystore.Key
	}{messageType, k})
}
