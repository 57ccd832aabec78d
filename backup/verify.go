package backup

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"sort"
	"strings"

	"filippo.io/age"

	"github.com/nhscrypt/nhscrypt/report"
)

// Finding IDs of Verify (documented in docs/backup.md).
const (
	IDSnapshotUntrusted = "BACKUP-SNAPSHOT-UNTRUSTED"
	IDSnapshotDamaged   = "BACKUP-SNAPSHOT-DAMAGED"
	IDObjectMissing     = "BACKUP-OBJECT-MISSING"
	IDObjectSize        = "BACKUP-OBJECT-SIZE"
	IDObjectDamaged     = "BACKUP-OBJECT-DAMAGED"
	IDManifestDamaged   = "BACKUP-MANIFEST-DAMAGED"
	IDFileDamaged       = "BACKUP-FILE-DAMAGED"
)

// VerifyOptions say how deep to check.
type VerifyOptions struct {
	// ReadData reads objects and checks each hashes to its name; with
	// Identities it also decrypts them and checks every file's SHA-256.
	ReadData bool
	// Sample, between 0 and 1, reads only that fraction of the objects
	// (chosen at random); 0 reads all.
	Sample     float64
	Identities []age.Identity
	Trust      Trust
	Progress   Progress
}

// Verify checks the repository and returns findings: every snapshot is
// trusted, and every object it names exists with the right size (and, with
// ReadData, the right content). Without identities it needs no secret.
// A finding about an object names the snapshots that need it, and, with
// identities, the files it holds.
func (r *Repository) Verify(ctx context.Context, opts VerifyOptions) ([]report.Finding, []string, error) {
	var out []report.Finding
	var checked []string
	add := func(id, subject, msg, remedy string, ev map[string]string) {
		out = append(out, report.Finding{ID: id, Severity: report.Fail, Subject: subject, Message: msg, Remedy: remedy, Evidence: ev})
	}
	ids, err := r.SnapshotIDs(ctx)
	if err != nil {
		return nil, nil, err
	}
	type need struct {
		size  int64
		snaps []string
		typ   FileType
	}
	needed := map[string]*need{}
	var snaps []*Snapshot
	for _, id := range ids {
		checked = append(checked, "snapshot "+short(id))
		s, err := r.LoadSnapshot(ctx, id, opts.Trust)
		if err != nil {
			if ctx.Err() != nil {
				return nil, nil, ctx.Err()
			}
			fid := IDSnapshotDamaged
			remedy := "remove it with `nhscrypt backup forget`-style tools only after finding out how it was damaged; restore from another snapshot"
			if strings.Contains(err.Error(), ErrUntrustedSignature.Error()) {
				fid = IDSnapshotUntrusted
				remedy = "do not restore from it: it was not signed by a trusted host key (forged, or from a host whose key you have not pinned)"
			}
			add(fid, "snapshot "+short(id), err.Error(), remedy, map[string]string{"snapshot": id})
			continue
		}
		snaps = append(snaps, s)
		refs := append([]ObjectRef{s.Manifest}, s.Objects...)
		for i, o := range refs {
			n := needed[o.Name]
			if n == nil {
				typ := DataFile
				if i == 0 {
					typ = ManifestFile
				}
				n = &need{size: o.Size, typ: typ}
				needed[o.Name] = n
			}
			n.snaps = append(n.snaps, short(s.ID))
		}
	}
	// Files held by each object, from the manifests (needs identities).
	files := map[string][]string{}
	manifests := map[string]*Manifest{}
	if len(opts.Identities) > 0 {
		for _, s := range snaps {
			m, err := r.LoadManifest(ctx, s, opts.Identities)
			if err != nil {
				if ctx.Err() != nil {
					return nil, nil, ctx.Err()
				}
				add(IDManifestDamaged, "snapshot "+short(s.ID), err.Error(), "restore from another snapshot", map[string]string{"manifest": s.Manifest.Name})
				continue
			}
			manifests[s.ID] = m
			for _, e := range m.Entries {
				if e.Object != "" {
					files[e.Object] = appendUniq(files[e.Object], e.Path)
				}
				for _, p := range e.Parts {
					files[p.Object] = appendUniq(files[p.Object], e.Path)
				}
			}
		}
	}
	names := make([]string, 0, len(needed))
	for n := range needed {
		names = append(names, n)
	}
	sort.Strings(names)
	describe := func(name string) (string, map[string]string) {
		n := needed[name]
		ev := map[string]string{"object": name, "snapshots": strings.Join(n.snaps, " ")}
		msg := fmt.Sprintf("needed by snapshot(s) %s", strings.Join(n.snaps, ", "))
		if fs := files[name]; len(fs) > 0 {
			shown := fs
			if len(shown) > 20 {
				shown = shown[:20]
			}
			msg += fmt.Sprintf("; holds %d file(s): %s", len(fs), strings.Join(shown, ", "))
			if len(fs) > 20 {
				msg += ", …"
			}
			ev["files"] = fmt.Sprint(len(fs))
		}
		return msg, ev
	}
	for _, name := range names {
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
		n := needed[name]
		subject := string(n.typ) + "/" + name
		fi, err := r.Backend.Stat(ctx, Handle{Type: n.typ, Name: name})
		if err != nil {
			msg, ev := describe(name)
			add(IDObjectMissing, subject, "missing: "+msg, "restore the object from another copy of the repository; the files it holds cannot be restored from these snapshots", ev)
			continue
		}
		if fi.Size != n.size {
			msg, ev := describe(name)
			add(IDObjectSize, subject, fmt.Sprintf("size %d, expected %d: %s", fi.Size, n.size, msg), "the object is damaged or truncated; restore it from another copy", ev)
			continue
		}
		if !opts.ReadData || (opts.Sample > 0 && rand.Float64() >= opts.Sample) {
			continue
		}
		if err := r.checkObject(ctx, name, n.typ, opts.Identities, manifests); err != nil {
			if ctx.Err() != nil {
				return nil, nil, ctx.Err()
			}
			msg, ev := describe(name)
			id := IDObjectDamaged
			if strings.Contains(err.Error(), "SHA-256 mismatch for") {
				id = IDFileDamaged
			}
			add(id, subject, err.Error()+"; "+msg, "restore the object from another copy of the repository", ev)
		}
		if opts.Progress != nil {
			opts.Progress.BackupEvent(Event{Kind: EventObject, Object: name, Bytes: n.size})
		}
	}
	return out, checked, nil
}

func appendUniq(s []string, v string) []string {
	for _, x := range s {
		if x == v {
			return s
		}
	}
	return append(s, v)
}

// checkObject reads an object and checks its hash; with identities it also
// decrypts a data object and checks every member against the manifests.
func (r *Repository) checkObject(ctx context.Context, name string, typ FileType, ids []age.Identity, manifests map[string]*Manifest) error {
	if typ != DataFile || len(ids) == 0 {
		rc, err := r.Backend.Open(ctx, Handle{Type: typ, Name: name}, 0, 0)
		if err != nil {
			return err
		}
		defer rc.Close()
		h := sha256.New()
		if _, err := io.Copy(h, rc); err != nil {
			return err
		}
		if hex.EncodeToString(h.Sum(nil)) != name {
			return fmt.Errorf("content does not match its name (damaged)")
		}
		return nil
	}
	want := map[string]string{}
	for _, m := range manifests {
		for _, e := range m.Entries {
			if e.Object == name {
				want[e.Member] = e.SHA256
			}
		}
	}
	or, err := r.openObject(ctx, name, ids)
	if err != nil {
		return err
	}
	defer or.close()
	for {
		hdr, err := or.tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("damaged: %v", err)
		}
		h := sha256.New()
		if _, err := io.Copy(h, or.tr); err != nil {
			return fmt.Errorf("damaged in %s: %v", hdr.Name, err)
		}
		if sum, ok := want[hdr.Name]; ok && hex.EncodeToString(h.Sum(nil)) != sum {
			return fmt.Errorf("SHA-256 mismatch for %s", hdr.Name)
		}
	}
	return or.finish()
}
