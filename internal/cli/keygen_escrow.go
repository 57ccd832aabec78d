package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/spf13/pflag"

	"github.com/nhscrypt/nhscrypt/filecrypt"
	"github.com/nhscrypt/nhscrypt/internal/atomicfile"
	"github.com/nhscrypt/nhscrypt/keystore"
)

// addKeygenEscrowFlags adds the escrow store flags to keygen's flags f and
// returns the flags it added, so that keygen can refuse them without
// --escrow. Two of escrowOptions' flags would clash or mislead there:
// --identity (-i) is left out, as keygen only writes to the store and never
// needs an admin identity; --recipient (-r) is renamed --admin-recipient,
// as keygen's --recipient is -y (and "recipient" would be ambiguous next to
// the recipient keygen makes). Any other clash panics when the command is
// built, as pflag does for every redefined flag.
func addKeygenEscrowFlags(f *pflag.FlagSet, eo *escrowOptions) []*pflag.Flag {
	all := pflag.NewFlagSet("escrow", pflag.ContinueOnError)
	eo.addFlags(all)
	var added []*pflag.Flag
	all.VisitAll(func(fl *pflag.Flag) {
		switch fl.Name {
		case "identity":
			return
		case "recipient":
			fl.Name = "admin-recipient"
		}
		f.AddFlag(fl)
		added = append(added, fl)
	})
	return added
}

// runKeygenEscrow generates an identity in memory, escrows it as NAME and
// writes only its recipient, to opts.Output or stdout. The output is claimed
// before escrowing (so a refused output escrows nothing) and published after
// (so a failed escrow writes nothing).
func runKeygenEscrow(ctx context.Context, g *globalOptions, opts keygenOptions, eo *escrowOptions) error {
	name := opts.Escrow
	if name == "" {
		return usagef("--escrow needs a NAME")
	}
	if err := keystore.ValidName(name); err != nil {
		return &usageError{err}
	}
	toStdout := opts.Output == "" || opts.Output == "-"
	var out *atomicfile.File
	if !toStdout {
		f, err := atomicfile.Create(opts.Output, 0o644&^atomicfile.Umask(), false)
		if err != nil {
			if errors.Is(err, fs.ErrExist) {
				return withHint(fmt.Errorf("%q already exists; nothing was escrowed", opts.Output), "keygen never overwrites a file; choose another name")
			}
			return fmt.Errorf("writing public key file: %w; nothing was escrowed", err)
		}
		defer f.Abort()
		out = f
	}
	s, err := eo.open(ctx, g, true, false)
	if err != nil {
		return err
	}

	id, now, err := newIdentity(opts.PQ)
	if err != nil {
		return err
	}
	secret := filecrypt.MarshalIdentity(id, now)
	defer clear(secret)
	rcpt := id.RecipientString()
	k := keystore.Key{
		Name: name, Kind: keystore.KindAgeIdentity, Recipient: rcpt,
		State: keystore.StateActive, Created: now, NhscryptVersion: Version(),
	}
	k.Host, _ = os.Hostname()
	put, err := putEscrow(ctx, g, s, k, secret, " (nothing was written)")
	if err != nil {
		return err
	}

	// From here on the identity is escrowed: a failure must say so, and
	// must not lose the recipient.
	lost := func(dst string, err error) error {
		// %v, not %w: whatever the cause, this is exit 1 (failed), not
		// "not found" or "exists" about the escrow entry.
		return withHint(fmt.Errorf("the identity is escrowed as %s, but writing its public key to %s failed: %v", name, dst, err),
			fmt.Sprintf("its recipient is %s (`nhscrypt escrow list` shows it too)", rcpt))
	}
	file := ""
	if !toStdout {
		file = opts.Output
		pub := fmt.Sprintf("# created: %s\n# escrowed as %s\n%s\n", now.Format(time.RFC3339), name, rcpt)
		if _, err := out.Write([]byte(pub)); err != nil {
			return lost(fmt.Sprintf("%q", file), err)
		}
		if err := out.Commit(); err != nil {
			return lost(fmt.Sprintf("%q", file), err)
		}
	}
	if g.JSON {
		err := json.NewEncoder(g.stdout).Encode(struct {
			MessageType string `json:"message_type"`
			*keystore.Key
			Store string `json:"store"`
			File  string `json:"file,omitempty"`
		}{"keygen_escrow", put, eo.storeName(), file})
		if err != nil && toStdout {
			return lost("standard output", err)
		}
		return err
	}
	if toStdout {
		if _, err := fmt.Fprintln(g.stdout, rcpt); err != nil {
			return lost("standard output", err)
		}
	}
	if !g.Quiet && (!toStdout || !isTerminal(g.stdout)) {
		fmt.Fprintf(g.stderr, "Public key: %s\n", rcpt)
	}
	return nil
}
