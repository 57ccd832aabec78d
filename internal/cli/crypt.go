package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"filippo.io/age"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/nhscrypt/nhscrypt/filecrypt"
	"github.com/nhscrypt/nhscrypt/internal/atomicfile"
)

type cryptOptions struct {
	Recipients     []string
	RecipientFiles []string
	Identities     []string
	Passphrase     bool
	PassphraseFile string
	Armor          bool
	Output         string
	Force          bool
	Tree           string
	Out            string
	RemoveSource   bool
	Workers        int
}

func newEncryptCommand(g *globalOptions) *cobra.Command {
	var opts cryptOptions
	cmd := &cobra.Command{
		Use:   "encrypt [-r RECIPIENT]... [-R FILE]... [-p] [-a] [-o OUT] [IN]",
		Short: "Encrypt a file, stdin or a directory tree with age",
		Long: `Encrypt IN (or stdin) to OUT (or stdout), exactly as the age CLI does.

Recipients: -r age1… (X25519), age1pq1… (post-quantum hybrid), ssh-ed25519 or
ssh-rsa public keys; -R a file of recipients, one per line; -p a passphrase
(asked on the terminal, or read from --passphrase-file).

With --tree SRC --out DST every regular file under SRC is encrypted to
DST/PATH.age in parallel, keeping modes and times.

OUT is written to a temporary file in its folder, synced and renamed; an
existing OUT is never replaced without --force.`,
		Args: argsUsage(cobra.MaximumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runEncrypt(cmd.Context(), g, opts, args)
		},
	}
	f := cmd.Flags()
	f.StringArrayVarP(&opts.Recipients, "recipient", "r", nil, "encrypt to `RECIPIENT` (repeatable)")
	f.StringArrayVarP(&opts.RecipientFiles, "recipients-file", "R", nil, "encrypt to the recipients listed in `FILE` (repeatable)")
	f.BoolVarP(&opts.Passphrase, "passphrase", "p", false, "encrypt with a passphrase")
	f.StringVar(&opts.PassphraseFile, "passphrase-file", "", "read the passphrase from the first line of `FILE` (implies -p)")
	f.BoolVarP(&opts.Armor, "armor", "a", false, "write ASCII-armored (PEM) output")
	addCommonCryptFlags(f, &opts)
	f.BoolVar(&opts.RemoveSource, "remove-source", false, "with --tree: delete each plaintext file after its ciphertext was written, synced and decrypted back (does not erase data on SSDs or copy-on-write filesystems)")
	return cmd
}

func newDecryptCommand(g *globalOptions) *cobra.Command {
	var opts cryptOptions
	cmd := &cobra.Command{
		Use:   "decrypt [-i FILE]... [-o OUT] [IN]",
		Short: "Decrypt an age file, stdin or a directory tree",
		Long: `Decrypt IN (or stdin) to OUT (or stdout), exactly as the age CLI does.

Identities: -i an age identity file (X25519 or post-quantum hybrid), an SSH
private key (ed25519 or RSA), or a passphrase-encrypted identity file. A
passphrase-encrypted file asks for its passphrase on the terminal (or reads
--passphrase-file). Armored input is detected.

With -o, plaintext is written to a temporary file and renamed to OUT only
after the whole file authenticated: a truncated, tampered or wrongly-keyed
file leaves nothing behind. (To stdout, plaintext is released in
authenticated 64 KiB chunks; an error at the end means the output is
incomplete.)

With --tree SRC --out DST every PATH.age under SRC is decrypted to DST/PATH.`,
		Args: argsUsage(cobra.MaximumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runDecrypt(cmd.Context(), g, opts, args)
		},
	}
	f := cmd.Flags()
	f.StringArrayVarP(&opts.Identities, "identity", "i", nil, "use the identity `FILE` (repeatable)")
	f.StringVar(&opts.PassphraseFile, "passphrase-file", "", "read the passphrase of passphrase-encrypted files or keys from the first line of `FILE`")
	addCommonCryptFlags(f, &opts)
	f.BoolVar(&opts.RemoveSource, "remove-source", false, "with --tree: delete each .age file after its plaintext was written, synced and authenticated")
	return cmd
}

type flagSet interface {
	StringVarP(p *string, name, shorthand string, value string, usage string)
	StringVar(p *string, name string, value string, usage string)
	BoolVar(p *bool, name string, value bool, usage string)
	IntVar(p *int, name string, value int, usage string)
}

func addCommonCryptFlags(f flagSet, opts *cryptOptions) {
	f.StringVarP(&opts.Output, "output", "o", "", "write the result to `OUT` instead of stdout")
	f.BoolVar(&opts.Force, "force", false, "replace existing output files")
	f.StringVar(&opts.Tree, "tree", "", "process every file under the directory `SRC`")
	f.StringVar(&opts.Out, "out", "", "with --tree: the output directory `DST`")
	f.IntVar(&opts.Workers, "workers", 0, "with --tree: files processed at once (default: number of CPUs)")
}

func (o *cryptOptions) recipients(g *globalOptions) ([]age.Recipient, error) {
	var recs []age.Recipient
	for _, s := range o.Recipients {
		r, err := filecrypt.ParseRecipient(s)
		if err != nil {
			return nil, usagef("invalid recipient %s: %v", redactKeyish(s), err)
		}
		recs = append(recs, r)
	}
	for _, name := range o.RecipientFiles {
		var rs []age.Recipient
		var skipped []string
		var err error
		if name == "-" {
			rs, skipped, err = filecrypt.ParseRecipients(g.stdin)
			if err != nil {
				err = fmt.Errorf("recipients from standard input: %w", err)
			}
		} else {
			rs, skipped, err = filecrypt.ParseRecipientsFile(name)
		}
		if err != nil {
			return nil, err
		}
		for _, s := range skipped {
			g.warnf("recipients file %q: ignoring unsupported SSH key at %s", name, s)
		}
		recs = append(recs, rs...)
	}
	if o.Passphrase || o.PassphraseFile != "" {
		if len(recs) > 0 {
			return nil, usagef("-p can't be combined with -r or -R")
		}
		pass, err := newPassphrase(o.PassphraseFile)
		if err != nil {
			return nil, err
		}
		r, err := age.NewScryptRecipient(string(pass))
		if err != nil {
			return nil, err
		}
		recs = append(recs, r)
	}
	if len(recs) == 0 {
		return nil, usagef("missing recipients: give -r, -R or -p")
	}
	pq := 0
	for _, r := range recs {
		if filecrypt.IsPostQuantum(r) {
			pq++
		}
	}
	if pq > 0 && pq < len(recs) {
		return nil, usagef("post-quantum (age1pq1…) recipients can't be mixed with classic ones: the file would be no stronger than the classic key")
	}
	return recs, nil
}

// redactKeyish shows a mistyped recipient, unless it looks like a secret key.
func redactKeyish(s string) string {
	if strings.HasPrefix(strings.ToUpper(s), "AGE-SECRET-KEY") || strings.Contains(s, "PRIVATE KEY") {
		return "(a secret key, not shown)"
	}
	if len(s) > 80 {
		s = s[:80] + "…"
	}
	return fmt.Sprintf("%q", s)
}

func (o *cryptOptions) decryptOptions(g *globalOptions) (filecrypt.DecryptOptions, error) {
	prompt := passphrasePrompt(o.PassphraseFile)
	var ids []age.Identity
	for _, name := range o.Identities {
		var is []age.Identity
		var err error
		if name == "-" {
			is, err = filecrypt.ParseIdentities("standard input", g.stdin, prompt)
		} else {
			is, err = filecrypt.ParseIdentitiesFile(name, prompt)
		}
		if err != nil {
			return filecrypt.DecryptOptions{}, err
		}
		ids = append(ids, is...)
	}
	return filecrypt.DecryptOptions{Identities: ids, Passphrase: &filecrypt.PassphraseSource{Prompt: prompt}}, nil
}

// checkStdin refuses "-" (standard input) for more than one purpose.
func (o *cryptOptions) checkStdin(args []string) error {
	n := 0
	for _, l := range [][]string{o.RecipientFiles, o.Identities} {
		for _, v := range l {
			if v == "-" {
				n++
			}
		}
	}
	if o.Tree == "" && (len(args) == 0 || args[0] == "-") {
		n++
	}
	if n > 1 {
		return usagef("standard input is used for more than one purpose")
	}
	return nil
}

func (o *cryptOptions) checkTree(args []string) error {
	if err := o.checkStdin(args); err != nil {
		return err
	}
	if o.Tree == "" {
		if o.Out != "" || o.RemoveSource || o.Workers != 0 {
			return usagef("--out, --remove-source and --workers need --tree")
		}
		return nil
	}
	if o.Out == "" {
		o.Out = o.Output
	}
	if o.Out == "" {
		return usagef("--tree needs --out DST")
	}
	if len(args) > 0 {
		return usagef("--tree takes no input argument")
	}
	return nil
}

func runEncrypt(ctx context.Context, g *globalOptions, opts cryptOptions, args []string) error {
	if err := opts.checkTree(args); err != nil {
		return err
	}
	if opts.Tree == "" && opts.Output == "" && !opts.Armor && isTerminal(g.stdout) {
		return withHint(usagef("refusing to write binary ciphertext to a terminal"), "use -o FILE, or -a for armored output")
	}
	recs, err := opts.recipients(g)
	if err != nil {
		return err
	}
	enc := filecrypt.EncryptOptions{Recipients: recs, Armor: opts.Armor}
	if opts.Tree != "" {
		return runTree(g, "encrypt", func(p filecrypt.Progress) (*filecrypt.TreeResult, error) {
			return filecrypt.EncryptTree(ctx, opts.Tree, opts.Out, enc, opts.treeOptions(p))
		})
	}
	return runSingle(ctx, g, opts, args, "encrypt", func(w io.Writer, r io.Reader, name string) (int64, error) {
		return filecrypt.Encrypt(ctx, w, r, enc)
	}, 0o644)
}

func runDecrypt(ctx context.Context, g *globalOptions, opts cryptOptions, args []string) error {
	if err := opts.checkTree(args); err != nil {
		return err
	}
	dec, err := opts.decryptOptions(g)
	if err != nil {
		return err
	}
	if opts.Tree != "" {
		return runTree(g, "decrypt", func(p filecrypt.Progress) (*filecrypt.TreeResult, error) {
			return filecrypt.DecryptTree(ctx, opts.Tree, opts.Out, dec, opts.treeOptions(p))
		})
	}
	err = runSingle(ctx, g, opts, args, "decrypt", func(w io.Writer, r io.Reader, name string) (int64, error) {
		return filecrypt.Decrypt(ctx, w, r, name, dec)
	}, 0o600)
	var wk *filecrypt.WrongKeyError
	if errors.As(err, &wk) && len(opts.Identities) == 0 && !(len(wk.StanzaTypes) == 1 && wk.StanzaTypes[0] == "scrypt") {
		return withHint(err, "give the identity file with -i")
	}
	return err
}

func (o *cryptOptions) treeOptions(p filecrypt.Progress) filecrypt.TreeOptions {
	return filecrypt.TreeOptions{Workers: o.Workers, Overwrite: o.Force, RemoveSource: o.RemoveSource, Progress: p}
}

// runSingle runs one stream operation from IN or stdin to OUT or stdout. OUT
// is written atomically: it appears only if op succeeded.
func runSingle(ctx context.Context, g *globalOptions, opts cryptOptions, args []string, verb string,
	op func(w io.Writer, r io.Reader, name string) (int64, error), perm fs.FileMode) error {
	in, name := g.stdin, "standard input"
	if len(args) == 1 && args[0] != "-" {
		f, err := os.Open(args[0])
		if err != nil {
			return err
		}
		defer f.Close()
		in, name = f, args[0]
	}
	if opts.Output == "" || opts.Output == "-" {
		_, err := op(g.stdout, in, name)
		return err
	}
	out, err := atomicfile.Create(opts.Output, perm&^atomicfile.Umask(), opts.Force)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return withHint(fmt.Errorf("output %q already exists", opts.Output), "use --force to replace it")
		}
		if errors.Is(err, atomicfile.ErrNotRegular) {
			return withHint(err, "to write to a device or pipe, leave out -o and redirect stdout")
		}
		return err
	}
	defer out.Abort()
	n, err := op(out, in, name)
	if err == nil {
		// Interrupted while the input was ending: publish nothing.
		err = ctx.Err()
	}
	if err != nil {
		return err
	}
	if err := out.Commit(); err != nil {
		return err
	}
	if g.JSON {
		return json.NewEncoder(g.stdout).Encode(struct {
			MessageType string `json:"message_type"`
			Input       string `json:"input"`
			Output      string `json:"output"`
			Bytes       int64  `json:"bytes"`
		}{verb, name, opts.Output, n})
	}
	return nil
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
