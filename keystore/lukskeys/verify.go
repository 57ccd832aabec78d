package lukskeys

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nhscrypt/nhscrypt/filecrypt"
	"github.com/nhscrypt/nhscrypt/keystore"
	"github.com/nhscrypt/nhscrypt/luks"
	"github.com/nhscrypt/nhscrypt/report"
)

// DefaultStaleAfter is how long an entry may stay pending before Verify
// calls it stale: an enrolment takes seconds.
const DefaultStaleAfter = time.Hour

// VerifyRequest says what Verify checks.
type VerifyRequest struct {
	// Devices are the LUKS volumes of this host: each must have an active
	// escrowed recovery key, and each of its keyslots is matched against
	// escrow. Escrowed keys of other devices are checked too.
	Devices []string
	// Recipients are the age recipients this host's backup repositories
	// encrypt to; every escrowed age identity must be one of them. Nil
	// means they are not known, and identities are only checked to be
	// well-formed and to match their recorded recipient.
	Recipients []string
	// StaleAfter: a pending entry older than this is stale (default
	// DefaultStaleAfter).
	StaleAfter time.Duration
	// Kinds, if set, limits the check to entries of these kinds.
	Kinds []keystore.Kind
	// Activate marks pending recovery keys that are proven to open their
	// keyslot active, and stale pending ones that open nothing failed.
	Activate bool
}

// Finding IDs of Verify, documented in docs/escrow.md.
const (
	FindKeyOK           = "ESCROW-KEY-OK"
	FindKeyBroken       = "ESCROW-KEY-BROKEN"
	FindUUIDMismatch    = "ESCROW-UUID-MISMATCH"
	FindDeviceMissing   = "ESCROW-DEVICE-MISSING"
	FindVolumeUnescrow  = "ESCROW-MISSING"
	FindSlotUnescrowed  = "ESCROW-SLOT-UNESCROWED"
	FindPending         = "ESCROW-PENDING"
	FindPendingStale    = "ESCROW-PENDING-STALE"
	FindActivated       = "ESCROW-ACTIVATED"
	FindMarkedFailed    = "ESCROW-MARKED-FAILED"
	FindHeaderMissing   = "ESCROW-HEADER-MISSING"
	FindIdentityOK      = "ESCROW-IDENTITY-OK"
	FindIdentityUnused  = "ESCROW-IDENTITY-UNUSED"
	FindIdentityBroken  = "ESCROW-IDENTITY-BROKEN"
	FindUnknownListing  = "ESCROW-STATE-UNKNOWN"
	findEvidenceKeyslot = "keyslot"
)

// volume is a LUKS volume Verify looked at.
type volume struct {
	path string
	hdr  *luks.Header
	err  error
}

// Verify proves that this host's escrowed keys work: every active or
// pending recovery key opens its keyslot of the volume with its UUID,
// every given volume has an active recovery key, every keyslot of those
// volumes is in escrow, and every age identity is well-formed and one the
// backups encrypt to. It reads secrets, so it needs a store credential
// that may read (a verifier's, not a create-only server's). Findings are
// data; an error means it could not check.
func (e *Enroller) Verify(ctx context.Context, req VerifyRequest) ([]report.Finding, error) {
	stale := req.StaleAfter
	if stale <= 0 {
		stale = DefaultStaleAfter
	}
	all, err := e.Store.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("listing escrowed keys: %w", err)
	}
	var keys []keystore.Key
	headers := map[string]bool{} // UUID → an active header backup exists
	for _, k := range all {
		if k.Kind == keystore.KindLUKSHeader && k.State == keystore.StateActive && (e.Host == "" || k.Host == "" || k.Host == e.Host) {
			headers[k.LUKSUUID] = true
		}
		if len(req.Kinds) > 0 && !slices.Contains(req.Kinds, k.Kind) {
			continue
		}
		if e.Host == "" || k.Host == "" || k.Host == e.Host {
			keys = append(keys, k)
		}
	}

	// Volumes: the given ones, then each key's recorded device.
	vols := map[string]*volume{}
	byUUID := map[string]*volume{}
	open := func(path string) *volume {
		if v, ok := vols[path]; ok {
			return v
		}
		v := &volume{path: path}
		v.hdr, v.err = luks.ParseFile(path)
		vols[path] = v
		if v.err == nil {
			if _, dup := byUUID[v.hdr.UUID()]; !dup {
				byUUID[v.hdr.UUID()] = v
			}
		}
		return v
	}
	for _, d := range req.Devices {
		if v := open(d); v.err != nil {
			return nil, fmt.Errorf("reading the LUKS header of %q: %w", d, v.err)
		}
	}

	var out []report.Finding
	add := func(f report.Finding) { out = append(out, f) }
	escrowed := map[string][]int{} // UUID → keyslots with an active or pending key that opens them
	covered := map[string]bool{}   // UUID → an active key opens it
	now := e.now()

	for _, k := range keys {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if k.State == keystore.StateUnknown {
			// The listing lags: take the stored metadata.
			if cur, secret, err := e.Store.Get(ctx, k.Name); err == nil {
				clear(secret)
				k = *cur
			}
			add(report.Finding{ID: FindUnknownListing, Severity: report.Warn, Subject: k.Name,
				Message: "the listed state lags behind the stored one (a writer stopped between two updates)",
				Remedy:  "the next state change repairs it; nhscrypt escrow history " + k.Name + " shows the stored states"})
		}
		switch k.Kind {
		case keystore.KindLUKSRecovery:
			if k.State != keystore.StateActive && k.State != keystore.StatePending && k.State != keystore.StateUnknown {
				continue
			}
			slot, ok, f, err := e.verifyRecovery(ctx, k, req, open, byUUID, now, stale)
			if err != nil {
				return nil, err
			}
			out = append(out, f...)
			if ok {
				escrowed[k.LUKSUUID] = append(escrowed[k.LUKSUUID], slot)
				if k.State == keystore.StateActive || hasID(f, FindActivated) {
					covered[k.LUKSUUID] = true
				}
			}
		case keystore.KindAgeIdentity:
			if k.State != keystore.StateActive {
				continue
			}
			f, err := e.verifyIdentity(ctx, k, req.Recipients)
			if err != nil {
				return nil, err
			}
			out = append(out, f...)
		}
	}

	// Every volume asked about: escrowed, every keyslot accounted for.
	devices := req.Devices
	if len(req.Kinds) > 0 && !slices.Contains(req.Kinds, keystore.KindLUKSRecovery) {
		devices = nil
	}
	for _, d := range devices {
		v := vols[d]
		uuid := v.hdr.UUID()
		slots := escrowed[uuid]
		if !covered[uuid] {
			add(report.Finding{ID: FindVolumeUnescrow, Severity: report.Warn, Subject: d,
				Message:  "no escrowed recovery key opens this LUKS volume",
				Remedy:   "nhscrypt escrow luks-enroll --device " + d + " --key-file KEYFILE",
				Evidence: map[string]string{"luks_uuid": uuid}})
		} else if !headers[uuid] {
			add(report.Finding{ID: FindHeaderMissing, Severity: report.Info, Subject: d,
				Message:  "no header backup of this volume is in escrow",
				Remedy:   "enrolling or rotating a recovery key escrows one; or keep one with nhscrypt luks backup-header",
				Evidence: map[string]string{"luks_uuid": uuid}})
		}
		for _, s := range v.hdr.ActiveSlots() {
			if !slices.Contains(slots, s) {
				add(report.Finding{ID: FindSlotUnescrowed, Severity: report.Info, Subject: d,
					Message:  fmt.Sprintf("keyslot %d holds a key that is in no escrow (a passphrase or key file kept elsewhere?)", s),
					Remedy:   fmt.Sprintf("if keyslot %d is not a known passphrase or key file, remove it: cryptsetup luksKillSlot %s %d", s, d, s),
					Evidence: map[string]string{"luks_uuid": uuid, findEvidenceKeyslot: strconv.Itoa(s)}})
			}
		}
	}
	return out, nil
}

// verifyRecovery checks one active or pending recovery key. It returns the
// keyslot it opens and whether it does.
func (e *Enroller) verifyRecovery(ctx context.Context, k keystore.Key, req VerifyRequest, open func(string) *volume,
	byUUID map[string]*volume, now time.Time, stale time.Duration) (int, bool, []report.Finding, error) {
	var out []report.Finding
	ev := map[string]string{"luks_uuid": k.LUKSUUID, "state": string(k.State)}
	slot := -1
	if k.Keyslot != nil {
		slot = *k.Keyslot
		ev[findEvidenceKeyslot] = strconv.Itoa(slot)
	}
	subject := k.Name
	// Find the volume: the recorded device if it still has the UUID,
	// else any given device that has it (device names change).
	var v *volume
	if k.Device != "" {
		ev["device"] = k.Device
		if cand := open(k.Device); cand.err == nil && cand.hdr.UUID() == k.LUKSUUID {
			v = cand
		}
	}
	if v == nil {
		v = byUUID[k.LUKSUUID]
	}
	if v == nil {
		var cand *volume
		if k.Device != "" {
			cand = open(k.Device) // cached: read above
		}
		switch {
		case cand != nil && cand.err == nil:
			out = append(out, report.Finding{ID: FindUUIDMismatch, Severity: report.Fail, Subject: subject,
				Message:  fmt.Sprintf("%s now holds LUKS volume %s, not %s: the escrowed key is for a volume that is gone or moved", k.Device, cand.hdr.UUID(), k.LUKSUUID),
				Remedy:   "if the volume was re-created, enrol a recovery key for it and retire this entry; if it moved, pass its device with --device",
				Evidence: ev})
		default:
			out = append(out, report.Finding{ID: FindDeviceMissing, Severity: report.Warn, Subject: subject,
				Message:  fmt.Sprintf("volume %s is not on this host (%s cannot be read)", k.LUKSUUID, k.Device),
				Remedy:   "pass the volume's device with --device, or retire this entry if the volume is gone",
				Evidence: ev})
		}
		return slot, false, out, nil
	}
	subject = v.path
	ev["device"] = v.path

	cur, secret, err := e.Store.Get(ctx, k.Name)
	if err != nil {
		var fe *keystore.FingerprintError
		if errors.As(err, &fe) {
			out = append(out, report.Finding{ID: FindKeyBroken, Severity: report.Fail, Subject: subject,
				Message: fmt.Sprintf("escrowed key %s does not match its recorded fingerprint (damaged or tampered with)", k.Name),
				Remedy:  "enrol a new recovery key (nhscrypt escrow luks-rotate) and investigate the escrow store", Evidence: ev})
			return slot, false, out, nil
		}
		return 0, false, nil, fmt.Errorf("reading escrowed key %s: %w", k.Name, err)
	}
	defer clear(secret)
	// The stored state and revision, not the listing's (which can lag).
	k.State, k.Revision = cur.State, cur.Revision
	ev["state"] = string(k.State)
	if k.State != keystore.StateActive && k.State != keystore.StatePending {
		return slot, false, nil, nil
	}
	opens := false
	var why string
	switch {
	case slot < 0:
		why = "the entry records no keyslot"
	case !slices.Contains(v.hdr.ActiveSlots(), slot):
		why = fmt.Sprintf("keyslot %d is no longer active", slot)
	default:
		if _, err := luks.TestKey(ctx, v.path, v.hdr, secret, slot); err == nil {
			opens = true
		} else if errors.Is(err, luks.ErrKeyMismatch) {
			why = fmt.Sprintf("it does not open keyslot %d", slot)
		} else {
			return 0, false, nil, fmt.Errorf("testing escrowed key %s on %q: %w", k.Name, v.path, err)
		}
	}
	old := now.Sub(k.Created) > stale
	switch {
	case opens && k.State == keystore.StatePending && req.Activate:
		if k2, err := e.Store.SetState(ctx, k.Name, k.Revision, keystore.StateActive); err != nil && k2 == nil {
			return 0, false, nil, fmt.Errorf("activating proven key %s: %w", k.Name, err)
		}
		out = append(out, report.Finding{ID: FindActivated, Severity: report.Info, Subject: subject,
			Message: fmt.Sprintf("pending key %s opens keyslot %d: marked active", k.Name, slot), Evidence: ev})
	case opens && k.State == keystore.StatePending:
		sev, id := report.Info, FindPending
		if old {
			sev, id = report.Warn, FindPendingStale
		}
		out = append(out, report.Finding{ID: id, Severity: sev, Subject: subject,
			Message:  fmt.Sprintf("key %s opens keyslot %d but is still pending (created %s)", k.Name, slot, k.Created.Format(time.RFC3339)),
			Remedy:   "nhscrypt escrow verify --activate (with a credential that may change entries) marks it active",
			Evidence: ev})
	case opens:
		out = append(out, report.Finding{ID: FindKeyOK, Severity: report.Info, Subject: subject,
			Message: fmt.Sprintf("escrowed key %s opens keyslot %d", k.Name, slot), Evidence: ev})
	case k.State == keystore.StatePending && !old:
		out = append(out, report.Finding{ID: FindPending, Severity: report.Info, Subject: subject,
			Message:  fmt.Sprintf("key %s is pending and does not open anything yet (%s): an enrolment may be in progress", k.Name, why),
			Evidence: ev})
		return slot, false, out, nil
	case k.State == keystore.StatePending && req.Activate:
		if k2, err := e.Store.SetState(ctx, k.Name, k.Revision, keystore.StateFailed); err != nil && k2 == nil {
			return 0, false, nil, fmt.Errorf("marking stale key %s failed: %w", k.Name, err)
		}
		out = append(out, report.Finding{ID: FindMarkedFailed, Severity: report.Info, Subject: subject,
			Message: fmt.Sprintf("stale pending key %s opens nothing (%s): marked failed", k.Name, why), Evidence: ev})
		return slot, false, out, nil
	case k.State == keystore.StatePending:
		out = append(out, report.Finding{ID: FindPendingStale, Severity: report.Warn, Subject: subject,
			Message:  fmt.Sprintf("key %s has been pending since %s and opens nothing (%s): an enrolment was interrupted", k.Name, k.Created.Format(time.RFC3339), why),
			Remedy:   "run nhscrypt escrow luks-enroll on the host again (it finishes or rolls back), or nhscrypt escrow verify --activate to mark it failed",
			Evidence: ev})
		return slot, false, out, nil
	default:
		out = append(out, report.Finding{ID: FindKeyBroken, Severity: report.Fail, Subject: subject,
			Message:  fmt.Sprintf("escrowed key %s no longer opens the volume: %s", k.Name, why),
			Remedy:   "enrol a new recovery key now (nhscrypt escrow luks-enroll), then retire this entry",
			Evidence: ev})
		return slot, false, out, nil
	}
	return slot, true, out, nil
}

func hasID(fs []report.Finding, id string) bool {
	return slices.ContainsFunc(fs, func(f report.Finding) bool { return f.ID == id })
}

// verifyIdentity checks one active age identity.
func (e *Enroller) verifyIdentity(ctx context.Context, k keystore.Key, recipients []string) ([]report.Finding, error) {
	_, secret, err := e.Store.Get(ctx, k.Name)
	var fe *keystore.FingerprintError
	if errors.As(err, &fe) {
		return []report.Finding{{ID: FindIdentityBroken, Severity: report.Fail, Subject: k.Name,
			Message: "the escrowed identity does not match its recorded fingerprint (damaged or tampered with)"}}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading escrowed identity %s: %w", k.Name, err)
	}
	defer clear(secret)
	ids, err := filecrypt.ParseIdentities(k.Name, strings.NewReader(string(secret)), nil)
	var got []string
	if err == nil {
		got, err = filecrypt.RecipientsOf(ids)
	}
	if err != nil || len(got) == 0 {
		return []report.Finding{{ID: FindIdentityBroken, Severity: report.Fail, Subject: k.Name,
			Message: "the escrowed secret is not a usable age identity"}}, nil
	}
	ev := map[string]string{"recipient": strings.Join(got, " ")}
	if k.Recipient != "" && !slices.Contains(got, k.Recipient) {
		return []report.Finding{{ID: FindIdentityBroken, Severity: report.Fail, Subject: k.Name,
			Message: fmt.Sprintf("the escrowed identity's recipient is not the recorded %s", k.Recipient), Evidence: ev}}, nil
	}
	if recipients == nil {
		return []report.Finding{{ID: FindIdentityOK, Severity: report.Info, Subject: k.Name,
			Message: "the escrowed identity is well-formed (no backup repository given to match it against)", Evidence: ev}}, nil
	}
	for _, r := range got {
		if slices.Contains(recipients, r) {
			return []report.Finding{{ID: FindIdentityOK, Severity: report.Info, Subject: k.Name,
				Message: "a backup repository of this host encrypts to this identity", Evidence: ev}}, nil
		}
	}
	return []report.Finding{{ID: FindIdentityUnused, Severity: report.Warn, Subject: k.Name,
		Message: "no backup repository of this host encrypts to this identity's recipient",
		Remedy:  "if the identity is for backups, check the repository's recipients (its config); else retire the entry", Evidence: ev}}, nil
}
