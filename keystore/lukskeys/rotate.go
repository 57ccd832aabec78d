package lukskeys

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/nhscrypt/nhscrypt/keystore"
	"github.com/nhscrypt/nhscrypt/luks"
)

// RotateRequest says which volume's recovery key to replace.
type RotateRequest struct {
	EnrollRequest
	// Old names the entries to replace; empty means every active
	// recovery key of the volume in escrow.
	Old []string
}

// Rotate enrols a new recovery key (as Enroll) and, only once it is proven
// and active, removes the keyslots of the old recovery keys and marks their
// entries retired. An old keyslot is removed only if the old escrowed key
// is proven to be what it holds; otherwise it is left, with a warning.
func (e *Enroller) Rotate(ctx context.Context, req RotateRequest) (*Result, error) {
	hdr, err := luks.ParseFile(req.Device)
	if err != nil {
		return nil, err
	}
	uuid := hdr.UUID()
	keys, err := e.Store.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("listing escrowed keys: %w", err)
	}
	var old []keystore.Key
	for _, k := range keys {
		if k.Kind != keystore.KindLUKSRecovery || k.LUKSUUID != uuid {
			continue
		}
		if len(req.Old) > 0 {
			if slices.Contains(req.Old, k.Name) {
				old = append(old, k)
			}
		} else if k.State == keystore.StateActive {
			old = append(old, k)
		}
	}
	for _, n := range req.Old {
		if !slices.ContainsFunc(old, func(k keystore.Key) bool { return k.Name == n }) {
			return nil, fmt.Errorf("escrow entry %q is not a recovery key of volume %s: %w", n, uuid, keystore.ErrNotFound)
		}
	}
	if len(old) == 0 {
		return nil, fmt.Errorf("volume %s has no active escrowed recovery key to rotate (enrol one with luks-enroll): %w", uuid, keystore.ErrNotFound)
	}

	res, newKey, err := e.enroll(ctx, req.EnrollRequest)
	if err != nil {
		return nil, err
	}
	defer clear(newKey)
	if res.State != keystore.StateActive {
		res.Warnings = append(res.Warnings, "the old recovery keys are kept until the new one is active")
		return res, nil
	}
	for _, k := range old {
		if k.Name == res.Name {
			continue
		}
		if err := e.retire(ctx, req.Device, uuid, k, newKey, res); err != nil {
			res.Warnings = append(res.Warnings, fmt.Sprintf("old key %s: %v", k.Name, err))
		}
	}
	return res, nil
}

// retire removes the keyslot of old (if it still holds old's key) and
// marks old retired.
func (e *Enroller) retire(ctx context.Context, device, uuid string, old keystore.Key, auth []byte, res *Result) error {
	cur, secret, err := e.Store.Get(ctx, old.Name)
	if err != nil {
		if errors.Is(err, keystore.ErrPermission) {
			return fmt.Errorf("cannot read it to prove which keyslot holds it, so its keyslot is kept: remove it with cryptsetup luksKillSlot once checked, then mark it retired")
		}
		return err
	}
	defer clear(secret)
	hdr, err := luks.ParseFile(device)
	if err != nil {
		return err
	}
	if old.Keyslot != nil && slices.Contains(hdr.ActiveSlots(), *old.Keyslot) && *old.Keyslot != res.Keyslot {
		if _, err := luks.TestKey(ctx, device, hdr, secret, *old.Keyslot); err != nil {
			return fmt.Errorf("keyslot %d does not hold it, so it is kept (%v)", *old.Keyslot, err)
		}
		if err := e.kill(ctx, device, *old.Keyslot, "", auth); err != nil {
			return fmt.Errorf("removing keyslot %d: %w", *old.Keyslot, err)
		}
		res.Removed = append(res.Removed, *old.Keyslot)
	}
	// Nothing else may open the volume with this key either.
	if hdr, err = luks.ParseFile(device); err == nil {
		if kt, err := luks.TestKey(ctx, device, hdr, secret, -1); err == nil {
			return fmt.Errorf("it still opens keyslot %d, so it is not retired", kt.Keyslot)
		}
	}
	if k, err := e.Store.SetState(ctx, old.Name, cur.Revision, keystore.StateRetired); err != nil && k == nil {
		return fmt.Errorf("marking it retired: %w", err)
	}
	res.Retired = append(res.Retired, old.Name)
	return e.step(StepRetire, old.Name)
}
