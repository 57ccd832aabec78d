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
		res.Warnings = append(res.Warnings, fmt.Sprintf("the interrupted enrolment %s was of %s, now %s", j.Name, j.Device, req.Device))
		j.Device = req.Device
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
		// it: undo the keyslot (the journal says we chose it free and
		// added it) and leave the entry to the verifier.
		return e.resumeBlind(ctx, j, req, res, slotActive)
	case err != nil:
		return nil, nil, fmt.Errorf("finishing the interrupted enrolment %s: %w", j.Name, err)
	}

	opens := false
	if slotActive {
		_, terr := luks.TestKey(ctx, j.Device, hdr, key, j.Keyslot)
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

func (e *Enroller) resumeBlind(ctx context.Context, j *journal, req EnrollRequest, res *Result, slotActive bool) (*Result, []byte, error) {
	if slotActive && j.Phase != phaseEscrow {
		if err := e.kill(ctx, j.Device, j.Keyslot, req.KeyFile, nil); err != nil {
			return nil, nil, fmt.Errorf("rolling back the interrupted enrolment %s: removing keyslot %d: %w", j.Name, j.Keyslot, err)
		}
	}
	k := &keystore.Key{Name: j.Name, State: keystore.StatePending}
	if hist, err := e.Store.History(ctx, j.Name); err == nil && len(hist) > 0 {
		k.Revision, k.State = hist[len(hist)-1].Revision, hist[len(hist)-1].State
	}
	if k.Revision == 0 || e.markFailed(ctx, k) != nil {
		res.Warnings = append(res.Warnings, fmt.Sprintf("the interrupted enrolment %s was rolled back, but this host may not change its escrow entry: a verifier will find it pending and mark it failed (nhscrypt escrow verify --activate)", j.Name))
	}
	if err := e.removeJournal(j.UUID); err != nil {
		return nil, nil, err
	}
	res.Resumed = "rolled-back"
	return res, nil, nil
}
