package lukskeys

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/nhscrypt/nhscrypt/keystore"
	"github.com/nhscrypt/nhscrypt/luks"
)

// Enroller enrols, rotates and verifies the LUKS recovery keys of one host.
type Enroller struct {
	// Store is where keys and header backups are escrowed.
	Store keystore.Escrow
	// Host names this machine in escrow metadata.
	Host string
	// StateDir holds the enrolment journals and locks (required).
	StateDir string
	// Cryptsetup is the cryptsetup binary (default: "cryptsetup" on PATH).
	Cryptsetup string
	// Policy gives the minimum PBKDF costs of a new keyslot; the zero
	// value means luks.DefaultPolicy().
	Policy *luks.Policy
	// NoHeaderBackup leaves out escrowing a header backup after an
	// enrolment.
	NoHeaderBackup bool
	// MaxHeaderBytes bounds an escrowed header backup (default
	// DefaultMaxHeaderBytes); a larger one is left out with a warning.
	MaxHeaderBytes int
	// Version is recorded in escrow metadata.
	Version string
	// Now returns the time (default time.Now).
	Now func() time.Time
	// Progress, if set, is told each step as it completes.
	Progress func(step Step, detail string)

	// hook, in tests, runs after each step; an error from it is a failure
	// of that step.
	hook func(Step) error
}

// Step names a step of an enrolment.
type Step string

// Steps of an enrolment, in order, and of a rollback.
const (
	StepEscrowPending Step = "escrow-pending" // the key is escrowed as pending
	StepAddKeyslot    Step = "add-keyslot"    // cryptsetup luksAddKey added it
	StepProveKeyslot  Step = "prove-keyslot"  // it opened its keyslot in-process
	StepActivate      Step = "activate"       // the entry is active
	StepEscrowHeader  Step = "escrow-header"  // a header backup is escrowed
	StepKillKeyslot   Step = "kill-keyslot"   // a keyslot was removed
	StepMarkFailed    Step = "mark-failed"    // an entry was marked failed
	StepRetire        Step = "retire"         // an old entry was retired
)

// EnrollRequest says which volume gets a recovery key.
type EnrollRequest struct {
	// Device is the LUKS block device or image file.
	Device string
	// KeyFile holds an existing key of the volume (a passphrase file or a
	// key file, used whole as by cryptsetup --key-file).
	KeyFile string
	// Keyslot is the keyslot to use; negative means the first free one.
	Keyslot int
	// Name is the escrow entry's name (default
	// luks-recovery.UUID.TIMESTAMP).
	Name string
}

// Result says what an enrolment or rotation did.
type Result struct {
	Name    string         `json:"name"`
	Device  string         `json:"device"`
	UUID    string         `json:"luks_uuid"`
	Keyslot int            `json:"keyslot"`
	State   keystore.State `json:"state"`
	PBKDF   PBKDF          `json:"pbkdf"`
	// Header is the escrowed header backup's entry, if one was made.
	Header string `json:"header,omitempty"`
	// Resumed says what became of an earlier interrupted enrolment of the
	// volume: "finished" (then this result is that enrolment),
	// "left-pending" (its keyslot is filled but this host cannot read the
	// key back to prove it: this result is that enrolment, pending, for a
	// verifier to activate) or "rolled-back" (then a new one was made).
	Resumed     string `json:"resumed,omitempty"`
	ResumedName string `json:"resumed_name,omitempty"`
	// Retired lists the entries a rotation retired, and Removed the
	// keyslots it removed.
	Retired []string `json:"retired,omitempty"`
	Removed []int    `json:"removed_keyslots,omitempty"`
	// Warnings are things the caller must be told: the run did its job
	// but something needs attention.
	Warnings []string `json:"warnings,omitempty"`
}

// EnrollError is a failed enrolment. RolledBack says whether everything it
// did was undone (the keyslot removed, the entry marked failed); if not,
// Pending says what is left, and running the enrolment again finishes the
// rollback.
type EnrollError struct {
	Step       Step
	Name       string
	Err        error
	RolledBack bool
	Undone     []string
	Pending    []string
}

func (e *EnrollError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "enrolling recovery key %s failed at %s: %v", e.Name, e.Step, e.Err)
	if len(e.Undone) > 0 {
		fmt.Fprintf(&b, "; rolled back: %s", strings.Join(e.Undone, ", "))
	}
	if len(e.Pending) > 0 {
		fmt.Fprintf(&b, "; NOT yet rolled back: %s (run the enrolment again to finish)", strings.Join(e.Pending, ", "))
	}
	return b.String()
}

func (e *EnrollError) Unwrap() error { return e.Err }

func (e *Enroller) now() time.Time {
	if e.Now != nil {
		return e.Now().UTC()
	}
	return time.Now().UTC()
}

func (e *Enroller) policy() luks.Policy {
	if e.Policy != nil {
		return *e.Policy
	}
	return luks.DefaultPolicy()
}

func (e *Enroller) step(s Step, detail string) error {
	if e.Progress != nil {
		e.Progress(s, detail)
	}
	if e.hook != nil {
		return e.hook(s)
	}
	return nil
}

// DefaultName is the default escrow name of a recovery key:
// luks-recovery.UUID.TIME, TIME in UTC to the millisecond.
func DefaultName(uuid string, t time.Time) string {
	return "luks-recovery." + uuid + "." + t.UTC().Format("20060102T150405.000Z")
}

// HeaderName is the escrow name of the header backup made with the
// recovery key called name.
func HeaderName(name string) string {
	return strings.Replace(name, "luks-recovery.", "luks-header.", 1) + ".header"
}

// Enroll adds a new recovery key to a volume, escrowed and proven: see the
// package documentation. An earlier enrolment of the volume that was
// interrupted is finished or rolled back first; if it is finished, its
// result is returned and no new key is made. A failure is an *EnrollError.
// If the store lets this host create entries but not change them (a
// create-only policy), the proven key stays pending, with a warning, until
// a verifier with more rights activates it (Verify with Activate).
func (e *Enroller) Enroll(ctx context.Context, req EnrollRequest) (*Result, error) {
	res, key, err := e.enroll(ctx, req)
	clear(key)
	return res, err
}

func (e *Enroller) enroll(ctx context.Context, req EnrollRequest) (*Result, []byte, error) {
	if e.Store == nil || e.StateDir == "" {
		return nil, nil, errors.New("lukskeys: Enroller needs a Store and a StateDir")
	}
	existing, err := os.ReadFile(req.KeyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the existing key: %w", err)
	}
	defer clear(existing)
	hdr, err := luks.ParseFile(req.Device)
	if err != nil {
		return nil, nil, err
	}
	uuid := hdr.UUID()
	unlock, err := e.lockVolume(uuid)
	if err != nil {
		return nil, nil, err
	}
	defer unlock()

	res := &Result{}
	j, err := e.loadJournal(uuid)
	if err != nil {
		return nil, nil, err
	}
	if j != nil {
		prev, key, err := e.resume(ctx, j, req)
		if err != nil {
			return nil, nil, err
		}
		if prev.Resumed == "finished" || prev.Resumed == "left-pending" {
			return prev, key, nil
		}
		clear(key)
		res.Resumed, res.ResumedName, res.Warnings = prev.Resumed, prev.ResumedName, prev.Warnings
		if hdr, err = luks.ParseFile(req.Device); err != nil {
			return nil, nil, err
		}
	}

	kt, err := luks.TestKey(ctx, req.Device, hdr, existing, -1)
	if err != nil {
		if errors.Is(err, luks.ErrKeyMismatch) {
			return nil, nil, fmt.Errorf("the key in %q opens no keyslot of %q: %w", req.KeyFile, req.Device, err)
		}
		return nil, nil, err
	}
	slot, err := freeKeyslot(hdr, req.Keyslot)
	if err != nil {
		return nil, nil, fmt.Errorf("%q: %w", req.Device, err)
	}
	pbkdf := PBKDFFor(hdr, kt.Keyslot, e.policy())
	key, err := NewRecoveryKey()
	if err != nil {
		return nil, nil, err
	}
	ok := false
	defer func() {
		if !ok {
			clear(key)
		}
	}()
	name := req.Name
	if name == "" {
		name = DefaultName(uuid, e.now())
	}
	if err := keystore.ValidName(name); err != nil {
		return nil, nil, err
	}
	res.Name, res.Device, res.UUID, res.Keyslot, res.PBKDF = name, req.Device, uuid, slot, pbkdf

	// 1. Escrow, pending. The journal is written first, so a crash in
	// the middle of the put is found by the next run.
	j = &journal{Name: name, Device: req.Device, UUID: uuid, Keyslot: slot, Phase: phaseEscrow, Started: e.now()}
	if err := e.writeJournal(j); err != nil {
		return nil, nil, err
	}
	k, err := e.Store.Put(ctx, keystore.Key{
		Name: name, Kind: keystore.KindLUKSRecovery, Host: e.Host, Device: req.Device, LUKSUUID: uuid,
		Keyslot: keystore.Slot(slot), NhscryptVersion: e.Version, State: keystore.StatePending,
	}, key)
	if k != nil && err != nil { // stored; something secondary failed
		res.Warnings = append(res.Warnings, err.Error())
		err = nil
	}
	if err != nil {
		if errors.Is(err, keystore.ErrExists) || errors.Is(err, keystore.ErrPermission) {
			// Certainly not written by us: nothing to undo.
			e.removeJournal(uuid)
			return nil, nil, &EnrollError{Step: StepEscrowPending, Name: name, Err: err, RolledBack: true}
		}
		// The put may have landed: the next run looks.
		return nil, nil, &EnrollError{Step: StepEscrowPending, Name: name, Err: err,
			Pending: []string{fmt.Sprintf("check whether escrow entry %s was stored (no keyslot was added)", name)}}
	}
	fail := func(s Step, err error) (*Result, []byte, error) {
		return nil, nil, e.rollback(ctx, j, k, key, req.KeyFile, s, err)
	}
	if err := e.step(StepEscrowPending, name); err != nil {
		return fail(StepEscrowPending, err)
	}

	// 2. Add the keyslot.
	j.Phase = phaseAdd
	if err := e.writeJournal(j); err != nil {
		return fail(StepAddKeyslot, err)
	}
	if err := addKey(ctx, e.Cryptsetup, req.Device, req.KeyFile, key, slot, pbkdf); err != nil {
		return fail(StepAddKeyslot, err)
	}
	if err := e.step(StepAddKeyslot, fmt.Sprintf("keyslot %d", slot)); err != nil {
		return fail(StepAddKeyslot, err)
	}

	// 3. Prove it, in-process, on a fresh read of the header.
	hdr2, err := e.prove(ctx, req.Device, uuid, key, slot)
	if err != nil {
		return fail(StepProveKeyslot, err)
	}
	j.Phase = phaseActivate
	if err := e.writeJournal(j); err != nil {
		return fail(StepProveKeyslot, err)
	}
	if err := e.step(StepProveKeyslot, fmt.Sprintf("keyslot %d", slot)); err != nil {
		return fail(StepProveKeyslot, err)
	}

	// 4. Activate, and escrow a header backup.
	if err := e.finish(ctx, res, k, hdr2); err != nil {
		return fail(StepActivate, err)
	}
	if err := e.removeJournal(uuid); err != nil {
		res.Warnings = append(res.Warnings, fmt.Sprintf("removing the enrolment journal: %v", err))
	}
	ok = true
	return res, key, nil
}

// prove re-reads the header of device and tests key on slot.
func (e *Enroller) prove(ctx context.Context, device, uuid string, key []byte, slot int) (*luks.Header, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	hdr, err := luks.ParseFile(device)
	if err != nil {
		return nil, err
	}
	if hdr.UUID() != uuid {
		return nil, fmt.Errorf("%q now has LUKS UUID %s, not %s", device, hdr.UUID(), uuid)
	}
	if !slices.Contains(hdr.ActiveSlots(), slot) {
		return nil, fmt.Errorf("%q has no active keyslot %d", device, slot)
	}
	if _, err := luks.TestKey(ctx, device, hdr, key, slot); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("the new recovery key does not open keyslot %d of %q: %w", slot, device, err)
	}
	return hdr, nil
}

// finish activates a proven entry and escrows the header backup. Only a
// failure to activate that leaves the entry unchanged is an error; a
// create-only store (permission denied) leaves it pending with a warning.
func (e *Enroller) finish(ctx context.Context, res *Result, k *keystore.Key, hdr *luks.Header) error {
	res.State = k.State
	if k.State == keystore.StatePending {
		k2, err := e.Store.SetState(ctx, k.Name, k.Revision, keystore.StateActive)
		if k2 != nil && err != nil { // changed; something secondary failed
			res.Warnings = append(res.Warnings, err.Error())
			err = nil
		}
		if errors.Is(err, keystore.ErrConflict) {
			// Changed meanwhile: a verifier may have activated it.
			if cur, cerr := e.current(ctx, k.Name); cerr == nil && cur.State == keystore.StateActive {
				k2, err = cur, nil
			}
		}
		switch {
		case errors.Is(err, keystore.ErrPermission):
			res.Warnings = append(res.Warnings, fmt.Sprintf("the key is proven but this host may not change escrow entries, so %s stays pending until a verifier activates it (nhscrypt escrow verify --activate)", k.Name))
		case err != nil:
			return err
		default:
			*k = *k2
			res.State = k.State
		}
	}
	if err := e.step(StepActivate, k.Name); err != nil {
		return err
	}
	if !e.NoHeaderBackup {
		name, err := e.escrowHeader(ctx, res.Device, hdr, k.Name, res.Keyslot)
		if err != nil {
			res.Warnings = append(res.Warnings, fmt.Sprintf("the header backup was not escrowed: %v", err))
		} else {
			res.Header = name
			if err := e.step(StepEscrowHeader, name); err != nil {
				return err
			}
		}
	}
	return nil
}

// escrowHeader escrows a header backup of device beside the key name,
// keeping the key material of its keyslot only (see HeaderBackup).
func (e *Enroller) escrowHeader(ctx context.Context, device string, hdr *luks.Header, keyName string, slot int) (string, error) {
	b, _, err := HeaderBackup(device, hdr, []int{slot})
	if err != nil {
		return "", err
	}
	limit := e.MaxHeaderBytes
	if limit <= 0 {
		limit = DefaultMaxHeaderBytes
	}
	if len(b) > limit {
		return "", fmt.Errorf("it is %d bytes compressed, more than the %d an escrow entry may hold; keep one with nhscrypt luks backup-header", len(b), limit)
	}
	name := HeaderName(keyName)
	hk, err := e.Store.Put(ctx, keystore.Key{
		Name: name, Kind: keystore.KindLUKSHeader, Host: e.Host, Device: device, LUKSUUID: hdr.UUID(),
		NhscryptVersion: e.Version, State: keystore.StateActive,
	}, b)
	if errors.Is(err, keystore.ErrExists) || hk != nil {
		return name, nil // a resumed run escrowed it before, or it is stored
	}
	return name, err
}

// freeKeyslot returns want if it is free, or the first free keyslot.
func freeKeyslot(hdr *luks.Header, want int) (int, error) {
	n := 32
	if hdr.LUKS1 != nil {
		n = luks.LUKS1NumKeys
	}
	active := hdr.ActiveSlots()
	if want >= 0 {
		if want >= n {
			return 0, fmt.Errorf("keyslot %d does not exist (LUKS%d has %d)", want, hdr.Version, n)
		}
		if slices.Contains(active, want) {
			return 0, fmt.Errorf("keyslot %d is in use", want)
		}
		return want, nil
	}
	for i := range n {
		if !slices.Contains(active, i) {
			return i, nil
		}
	}
	return 0, errors.New("every keyslot is in use")
}

// rollback undoes an enrolment that failed at step s with cause: the
// keyslot is removed if the new key is in it, and the entry is marked
// failed. What could not be undone stays in the journal for the next run.
func (e *Enroller) rollback(ctx context.Context, j *journal, k *keystore.Key, key []byte, keyFile string, s Step, cause error) error {
	ee := &EnrollError{Step: s, Name: j.Name, Err: cause}
	if errors.Is(cause, context.Canceled) || ctx.Err() != nil {
		// Undo what we can even after an interrupt, within a bound.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
	}
	j.Phase = phaseRollback
	journalErr := e.writeJournal(j)

	if hdr, err := luks.ParseFile(j.Device); err != nil {
		ee.Pending = append(ee.Pending, fmt.Sprintf("check keyslot %d (reading the header: %v)", j.Keyslot, err))
	} else if hdr.UUID() == j.UUID && slices.Contains(hdr.ActiveSlots(), j.Keyslot) {
		if _, err := luks.TestKey(ctx, j.Device, hdr, key, j.Keyslot); errors.Is(err, luks.ErrKeyMismatch) {
			ee.Undone = append(ee.Undone, fmt.Sprintf("keyslot %d left alone (it does not hold the new key)", j.Keyslot))
		} else if err != nil {
			ee.Pending = append(ee.Pending, fmt.Sprintf("check keyslot %d (testing it: %v)", j.Keyslot, err))
		} else if err := e.kill(ctx, j.Device, j.Keyslot, keyFile, nil); err != nil {
			ee.Pending = append(ee.Pending, fmt.Sprintf("remove keyslot %d (%v)", j.Keyslot, err))
		} else {
			ee.Undone = append(ee.Undone, fmt.Sprintf("keyslot %d removed", j.Keyslot))
		}
	}
	if err := e.markFailed(ctx, k); errors.Is(err, keystore.ErrPermission) {
		// A create-only host: the verifier marks it failed (a stale
		// pending entry that opens nothing).
		ee.Undone = append(ee.Undone, fmt.Sprintf("escrow entry %s left pending for a verifier to mark failed (this host may not change it)", j.Name))
	} else if err != nil {
		ee.Pending = append(ee.Pending, fmt.Sprintf("mark escrow entry %s failed (%v)", j.Name, err))
	} else {
		ee.Undone = append(ee.Undone, fmt.Sprintf("escrow entry %s marked failed", j.Name))
	}
	if len(ee.Pending) == 0 && journalErr == nil {
		ee.RolledBack = true
		e.removeJournal(j.UUID)
	}
	return ee
}

// kill removes keyslot slot, authorised by the key in keyFile or auth.
func (e *Enroller) kill(ctx context.Context, device string, slot int, keyFile string, auth []byte) error {
	if auth == nil {
		data, err := os.ReadFile(keyFile)
		if err != nil {
			return err
		}
		defer clear(data)
		auth = data
	}
	if err := killSlot(ctx, e.Cryptsetup, device, slot, auth); err != nil {
		return err
	}
	return e.step(StepKillKeyslot, fmt.Sprintf("keyslot %d", slot))
}

// markFailed marks a pending or active entry failed (a no-op if it is
// failed or retired already).
func (e *Enroller) markFailed(ctx context.Context, k *keystore.Key) error {
	for range 3 {
		if k.State == keystore.StateFailed || k.State == keystore.StateRetired {
			return nil
		}
		k2, err := e.Store.SetState(ctx, k.Name, k.Revision, keystore.StateFailed)
		if err == nil || k2 != nil {
			return e.step(StepMarkFailed, k.Name)
		}
		if !errors.Is(err, keystore.ErrConflict) {
			return err
		}
		cur, err := e.current(ctx, k.Name)
		if err != nil {
			return err
		}
		k = cur
	}
	return keystore.ErrConflict
}

// current returns an entry's current metadata (reading, and at once
// clearing, its secret: Get is the one call that returns the stored state).
func (e *Enroller) current(ctx context.Context, name string) (*keystore.Key, error) {
	k, secret, err := e.Store.Get(ctx, name)
	clear(secret)
	return k, err
}
