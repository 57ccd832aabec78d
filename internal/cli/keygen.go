package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/nhscrypt/nhscrypt/filecrypt"
)

type keygenOptions struct {
	Output  string
	PQ      bool
	Convert bool
	Escrow  string
}

func newKeygenCommand(g *globalOptions) *cobra.Command {
	var opts keygenOptions
	var eo escrowOptions
	var escrowFlags []*pflag.Flag
	cmd := &cobra.Command{
		Use:   "keygen [-o FILE] [--pq] [--escrow NAME] | keygen -y [FILE]",
		Short: "Generate an age identity, or print the recipient of one (-y)",
		Long: `Generate a new age identity (secret key) and print its public recipient to
stderr, as age-keygen does. With -o the identity is written to FILE with
mode 0600; an existing FILE is never overwritten.

--pq makes a post-quantum hybrid identity (ML-KEM-768 + X25519, age v1.3);
its recipients start age1pq1. See docs/filecrypt.md for when to choose it.

With --escrow NAME the identity is generated in memory and escrowed under
NAME (kind age-identity, state active) in the store nhscrypt escrow would
use (see docs/escrow.md); the secret key is never written to disk or
printed. Only the public recipient is written: to -o FILE (0644, never
overwritten, and checked before anything is escrowed), else to stdout.
The store flags are escrow's, except that the file store's admin
recipient is -r/--admin-recipient (--recipient is -y here) and -i is not
taken (keygen never reads the store).

With -y, read an identity file (or stdin) and print its recipients.`,
		Args: argsUsage(cobra.MaximumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			escrow := cmd.Flags().Changed("escrow")
			if !escrow {
				for _, f := range escrowFlags {
					if f.Changed {
						n := "--" + f.Name
						if f.Shorthand != "" {
							n = "-" + f.Shorthand + "/" + n
						}
						return usagef("%s is an escrow store flag: it needs --escrow NAME", n)
					}
				}
			}
			if opts.Convert {
				if escrow {
					return usagef("-y cannot be combined with --escrow")
				}
				return runKeygenY(g, opts, args)
			}
			if len(args) > 0 {
				return usagef("keygen takes no arguments (did you mean -o %s?)", args[0])
			}
			if escrow {
				return escrowError(runKeygenEscrow(cmd.Context(), g, opts, &eo))
			}
			return runKeygen(g, opts)
		},
	}
	cmd.Flags().StringVarP(&opts.Output, "output", "o", "", "write the identity to `FILE` (0600, never overwritten); with --escrow, only its recipient (0644)")
	cmd.Flags().BoolVar(&opts.PQ, "pq", false, "generate a post-quantum hybrid (ML-KEM-768 + X25519) identity")
	cmd.Flags().BoolVarP(&opts.Convert, "recipient", "y", false, "print the recipients of an identity file")
	cmd.Flags().StringVar(&opts.Escrow, "escrow", "", "escrow the new identity under `NAME` and write only its recipient")
	escrowFlags = addKeygenEscrowFlags(cmd.Flags(), &eo)
	return cmd
}

// newIdentity generates an X25519 identity, or with pq a hybrid
// post-quantum one, and the creation time its file records.
func newIdentity(pq bool) (filecrypt.Identity, time.Time, error) {
	t := filecrypt.X25519
	if pq {
		t = filecrypt.Hybrid
	}
	id, err := filecrypt.GenerateIdentity(t)
	return id, time.Now().UTC().Truncate(time.Second), err
}

func runKeygen(g *globalOptions, opts keygenOptions) error {
	id, now, err := newIdentity(opts.PQ)
	if err != nil {
		return err
	}
	if opts.Output == "" {
		if g.JSON {
			return usagef("--json needs -o FILE: the secret key is never put in JSON")
		}
		if !g.Quiet && !isTerminal(g.stdout) {
			fmt.Fprintf(g.stderr, "Public key: %s\n", id.RecipientString())
		}
		_, err := g.stdout.Write(filecrypt.MarshalIdentity(id, now))
		return err
	}
	if err := filecrypt.WriteIdentityFile(opts.Output, id, now); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return withHint(fmt.Errorf("%q already exists", opts.Output), "keygen never overwrites a key file; choose another name or remove the old key once it is no longer needed")
		}
		return err
	}
	if g.JSON {
		return json.NewEncoder(g.stdout).Encode(struct {
			MessageType string `json:"message_type"`
			File        string `json:"file"`
			Recipient   string `json:"recipient"`
		}{"keygen", opts.Output, id.RecipientString()})
	}
	if !g.Quiet {
		fmt.Fprintf(g.stderr, "Public key: %s\n", id.RecipientString())
	}
	return nil
}

func runKeygenY(g *globalOptions, opts keygenOptions, args []string) error {
	if opts.PQ || opts.Output != "" {
		return usagef("-y cannot be combined with --pq or -o")
	}
	name, in := "standard input", g.stdin
	if len(args) == 1 && args[0] != "-" {
		f, err := os.Open(args[0])
		if err != nil {
			return err
		}
		defer f.Close()
		name, in = args[0], f
	}
	ids, err := filecrypt.ParseIdentities(name, in, passphrasePrompt(""))
	if err != nil {
		return err
	}
	recs, err := filecrypt.RecipientsOf(ids)
	if err != nil {
		return fmt.Errorf("%q: %w", name, err)
	}
	if g.JSON {
		return json.NewEncoder(g.stdout).Encode(struct {
			MessageType string   `json:"message_type"`
			Recipients  []string `json:"recipients"`
		}{"recipients", recs})
	}
	for _, r := range recs {
		fmt.Fprintln(g.stdout, r)
	}
	return nil
}
