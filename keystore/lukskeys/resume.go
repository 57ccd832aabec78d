package lukskeys

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/nhscrypt/nhscrypt/keystore"
	"github.com/nhscrypt/nhscrypt/luks"
)

// resume finishes or rolls back the interrupted enrolment j. It returns a
// Result with Resumed "finished" (and the key) or "rolled-back", or an
// error if it could do neither; then the journal stays for the next run.
func (e *Enroller) resume(ctx context.Context, j *journal, req EnrollRequest) (*Result, []byte, error) {
	res := &Result{Name: j.Name, Device: j.Device, UUID: j.UUID, Keyslot: j.Keyslot, ResumedName: j.Name}
	if j.Device != req.Device {
		// Follow a renamed device only if the old name is gone: two
		// devices can share a UUID (a clone, a snapshot).
		if h, err := luks.ParseFile(j.Device); err == nil && h.UUID() == j.UUID {
			return nil, nil, fmt.Errorf("an interrupted enrolment (%s) of volume %s on %s must be finished first: run again with --device %s", j.Name, j.UUID, j.Device, j.Device)
		}
		res.Warnings = append(res.Warnings, fmt.Sprintf("the interrupted enrolment %s was of %s, now %s", j.Name, j.Device, req.Device))
		j.Device = req.Device
		res.Device = req.Device
	}
	hdr, err := luks.ParseFile(j.Device)
	if err != nil {
		return nil, nil, err
	}
	slotActive := hdr.UUID() == j.UUID && slices.Contains(hdr.ActiveSlots(), j.Keyslot)

	k, key, err := e.Store.Get(ctx, j.Name)
	switch {
	case errors.Is(err, keystore.ErrNotFound):
		// The put never landed, so nothing else happened either.
		if j.Phase != phaseEscrow {
			return nil, nil, fmt.Errorf("the interrupted enrolment %s is not in escrow although its journal says it was escrowed; check the escrow store, then remove %s", j.Name, journalPath(e.StateDir, j.UUID))
		}
		if err := e.removeJournal(j.UUID); err != nil {
			return nil, nil, err
		}
		res.Resumed = "rolled-back"
		return res, nil, nil
	case errors.Is(err, keystore.ErrPermission):
		// A create-only host cannot read the key back, so cannot prove
		// anything: leave it all to the verifier.
		return e.resumeBlind(j, res, slotActive)
	case err != nil:
		return nil, nil, fmt.Errorf("finishing the interrupted enrolment %s: %w", j.Name, err)
	}

	opens := false
	if slotActive {
		_, terr := luks.TestKey(ctx, j.Device, hdr, key, j.Keyslot)
		if terr != nil && !errors.Is(terr, luks.ErrKeyMismatch) {
			clear(key)
			return nil, nil, fmt.Errorf("finishing the interrupted enrolment %s: testing keyslot %d: %w", j.Name, j.Keyslot, terr)
		}
		opens = terr == nil
	}
	switch {
	case opens && (k.State == keystore.StatePending || k.State == keystore.StateActive):
		// Proven: finish.
		res.PBKDF = PBKDFFor(hdr, j.Keyslot, e.policy())
		if err := e.finish(ctx, res, k, hdr); err != nil {
			clear(key)
			return nil, nil, fmt.Errorf("finishing the interrupted enrolment %s: %w", j.Name, err)
		}
		if err := e.removeJournal(j.UUID); err != nil {
			return nil, nil, err
		}
		res.Resumed = "finished"
		return res, key, nil
	case opens:
		// Marked failed or retired, but the key is still in its
		// keyslot: a rollback was interrupted.
		if err := e.kill(ctx, j.Device, j.Keyslot, req.KeyFile, nil); err != nil {
			clear(key)
			return nil, nil, fmt.Errorf("rolling back the interrupted enrolment %s: removing keyslot %d: %w", j.Name, j.Keyslot, err)
		}
	}
	clear(key)
	if err := e.markFailed(ctx, k); err != nil {
		return nil, nil, fmt.Errorf("rolling back the interrupted enrolment %s: %w", j.Name, err)
	}
	if err := e.removeJournal(j.UUID); err != nil {
		return nil, nil, err
	}
	res.Resumed = "rolled-back"
	return res, nil, nil
}

// resumeBlind handles an interrupted enrolment whose key this host cannot
// read back (a create-only Vault policy, the file store without an
// identity). Without the key nothing can be proven, so no keyslot is
// touched: if the journalled keyslot is filled, the key in it is most
// likely the escrowed pending one, which a verifier proves and activates
// (escrow verify --activate); if it is not, nothing was added, and the
// verifier will mark the stale entry failed.
func (e *Enroller) resumeBlind(j *journal, res *Result, slotActive bool) (*Result, []byte, error) {
	if err := e.removeJournal(j.UUID); err != nil {
		return nil, nil, err
	}
	if slotActive && j.Phase != phaseEscrow {
		res.Resumed, res.State = "left-pending", keystore.StatePending
		res.Warnings = append(res.Warnings, fmt.Sprintf("the interrupted enrolment %s filled keyslot %d, but this host may not read the key back to prove it: the entry stays pending, and a verifier proves and activates it (or marks it failed) with nhscrypt escrow verify --activate", j.Name, j.Keyslot))
		return res, nil, nil
	}
	res.Resumed = "rolled-back"
	res.Warnings = append(res.Warnings, fmt.Sprintf("the interrupted enrolment %s added no keyslot; this host may not change its escrow entry, so a verifier will find it pending and mark it failed (nhscrypt escrow verify --activate)", j.Name))
	return res, nil, nil
}
