package cli

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/nhscrypt/nhscrypt/filecrypt"
	"github.com/nhscrypt/nhscrypt/luks"
)

func newLUKSCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "luks",
		Short: "Inspect LUKS headers and back them up encrypted",
		Args:  argsUsage(cobra.NoArgs),
		RunE:  func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newLUKSInspectCommand(g), newLUKSBackupHeaderCommand(g))
	return cmd
}

func newLUKSInspectCommand(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "inspect PATH",
		Short: "Print everything in a LUKS header (like cryptsetup luksDump, as data with --json)",
		Args:  argsUsage(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			h, err := luks.ParseFile(args[0])
			if err != nil {
				return permissionHint(err)
			}
			if g.JSON {
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(h)
			}
			return writeInspect(g.stdout, h)
		},
	}
}

func permissionHint(err error) error {
	if errors.Is(err, fs.ErrPermission) {
		return withHint(&authError{err}, "reading LUKS headers needs root: run with sudo")
	}
	return err
}

func writeInspect(out io.Writer, h *luks.Header) error {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	p := func(k string, v any) { fmt.Fprintf(w, "%s:\t%v\n", k, v) }
	p("Device", h.Path)
	p("Version", h.Version)
	p("UUID", h.UUID())
	p("Header area (backup size)", fmt.Sprintf("%d bytes", luks.HeaderAreaSize(h)))
	if l := h.LUKS1; l != nil {
		p("Cipher", l.CipherName+"-"+l.CipherMode)
		p("Key", fmt.Sprintf("%d bits", l.KeyBytes*8))
		p("Hash", l.HashSpec)
		p("Payload offset", fmt.Sprintf("%d sectors", l.PayloadOffset))
		p("MK digest iterations", l.MKDigestIter)
		for i, ks := range l.KeySlots {
			if !ks.Enabled() {
				p(fmt.Sprintf("Keyslot %d", i), "disabled")
				continue
			}
			p(fmt.Sprintf("Keyslot %d", i), fmt.Sprintf("enabled, pbkdf2 %d iterations, %d stripes, key material at sector %d", ks.Iterations, ks.Stripes, ks.KeyMaterialOffset))
		}
		return w.Flush()
	}
	l := h.LUKS2
	for _, b := range []*luks.LUKS2BinaryHeader{l.Primary, l.Secondary} {
		if b == nil {
			continue
		}
		name := "Primary header"
		if b == l.Secondary {
			name = "Secondary header"
		}
		p(name, fmt.Sprintf("at %d, seqid %d, hdr_size %d, %s checksum %s, label %q, subsystem %q",
			b.Offset, b.SeqID, b.HdrSize, b.ChecksumAlg, map[bool]string{true: "valid", false: "INVALID"}[b.ChecksumValid], b.Label, b.Subsystem))
	}
	p("Metadata from", l.MetadataFrom)
	for _, s := range l.Problems {
		p("Problem", s)
	}
	for _, s := range l.Disagreements {
		p("Disagreement", s)
	}
	md := l.Metadata
	p("Keyslots area", fmt.Sprintf("%d bytes", uint64(md.Config.KeyslotsSize)))
	p("Flags", orDash(strings.Join(md.Config.Flags, " ")))
	if md.Config.Requirements != nil {
		p("Requirements", orDash(strings.Join(md.Config.Requirements.Mandatory, " ")))
	}
	for _, id := range luks.SortedIDs(md.Segments) {
		s := md.Segments[strconv.Itoa(id)]
		integ := ""
		if s.Integrity != nil {
			integ = ", integrity " + s.Integrity.Type
		}
		p(fmt.Sprintf("Segment %d", id), fmt.Sprintf("%s %s, offset %d, size %s, sector %d%s", s.Type, s.Encryption, uint64(s.Offset), s.Size, s.SectorSize, integ))
	}
	for _, id := range luks.SortedIDs(md.Keyslots) {
		ks := md.Keyslots[strconv.Itoa(id)]
		kdf := ks.KDF.Type
		if kdf == "pbkdf2" {
			kdf += fmt.Sprintf(" %s %d iterations", ks.KDF.Hash, ks.KDF.Iterations)
		} else {
			kdf += fmt.Sprintf(" time %d, memory %d KiB, %d cpus", ks.KDF.Time, ks.KDF.Memory, ks.KDF.CPUs)
		}
		prio := "normal"
		if ks.Priority != nil {
			prio = strconv.Itoa(*ks.Priority)
		}
		p(fmt.Sprintf("Keyslot %d", id), fmt.Sprintf("%s, %d-bit key, %s, area %s %d-bit at %d (%d bytes), AF %d stripes %s, priority %s",
			ks.Type, ks.KeySize*8, kdf, ks.Area.Encryption, ks.Area.KeySize*8, uint64(ks.Area.Offset), uint64(ks.Area.Size), ks.AF.Stripes, ks.AF.Hash, prio))
	}
	for _, id := range luks.SortedIDs(md.Tokens) {
		t := md.Tokens[strconv.Itoa(id)]
		p(fmt.Sprintf("Token %d", id), fmt.Sprintf("%s, keyslots %s", t.Type, strings.Join(t.Keyslots, " ")))
	}
	for _, id := range luks.SortedIDs(md.Digests) {
		d := md.Digests[strconv.Itoa(id)]
		p(fmt.Sprintf("Digest %d", id), fmt.Sprintf("%s %s %d iterations, keyslots %s, segments %s, digest %s…", d.Type, d.Hash, d.Iterations,
			strings.Join(d.Keyslots, " "), strings.Join(d.Segments, " "), hex.EncodeToString(d.Digest[:min(8, len(d.Digest))])))
	}
	return w.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

type backupHeaderOptions struct {
	Recipients     []string
	RecipientFiles []string
	Output         string
	Force          bool
	RecordDir      string
	NoRecord       bool
}

func newLUKSBackupHeaderCommand(g *globalOptions) *cobra.Command {
	var opts backupHeaderOptions
	cmd := &cobra.Command{
		Use:   "backup-header PATH -r RECIPIENT… -o FILE.age",
		Short: "Write an age-encrypted backup of a LUKS header",
		Long: `Write an age-encrypted copy of the LUKS header area of PATH (what
cryptsetup luksHeaderBackup saves) to FILE.age, and record it (no secret) in
--record-dir so verify-disk knows a backup exists.

Restore, with the identity, on the machine:
  age -d -i KEY FILE.age > hdr.img
  cryptsetup luksHeaderRestore PATH --header-backup-file hdr.img
  shred -u hdr.img`,
		Args: argsUsage(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			if opts.Output == "" {
				return usagef("-o FILE.age is required")
			}
			co := cryptOptions{Recipients: opts.Recipients, RecipientFiles: opts.RecipientFiles}
			recs, err := co.recipients(g)
			if err != nil {
				return err
			}
			h, err := luks.ParseFile(args[0])
			if err != nil {
				return permissionHint(err)
			}
			rec, err := luks.BackupHeader(cmd.Context(), args[0], h, opts.Output, filecrypt.EncryptOptions{Recipients: recs}, opts.Force)
			if err != nil {
				if errors.Is(err, fs.ErrExist) {
					return withHint(fmt.Errorf("output %q already exists", opts.Output), "use --force to replace it")
				}
				return permissionHint(err)
			}
			if !opts.NoRecord {
				if err := luks.WriteBackupRecord(opts.RecordDir, rec); err != nil {
					return fmt.Errorf("backup written to %q, but recording it failed: %w", opts.Output, err)
				}
			}
			if g.JSON {
				return json.NewEncoder(g.stdout).Encode(struct {
					MessageType string `json:"message_type"`
					*luks.BackupRecord
				}{"header_backup", rec})
			}
			if !g.Quiet {
				fmt.Fprintf(g.stdout, "backed up the LUKS%d header of %s (%d bytes, UUID %s) to %s\n", rec.Version, args[0], rec.Bytes, rec.UUID, opts.Output)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringArrayVarP(&opts.Recipients, "recipient", "r", nil, "encrypt to `RECIPIENT` (repeatable)")
	f.StringArrayVarP(&opts.RecipientFiles, "recipients-file", "R", nil, "encrypt to the recipients in `FILE` (repeatable)")
	f.StringVarP(&opts.Output, "output", "o", "", "write the encrypted backup to `FILE.age`")
	f.BoolVar(&opts.Force, "force", false, "replace an existing output")
	f.StringVar(&opts.RecordDir, "record-dir", luks.DefaultPolicy().HeaderBackupDir, "record the backup in `DIR` (checked by verify-disk)")
	f.BoolVar(&opts.NoRecord, "no-record", false, "do not record the backup")
	return cmd
}
