package lukskeys

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nhscrypt/nhscrypt/internal/atomicfile"
)

// A journal records an enrolment in progress on this machine, so that a
// run interrupted at any point (a crash, kill -9, power loss) can be
// finished or rolled back by the next. It holds no secret: the recovery
// key exists only in memory and in escrow.
type journal struct {
	Name    string    `json:"name"`
	Device  string    `json:"device"`
	UUID    string    `json:"luks_uuid"`
	Keyslot int       `json:"keyslot"`
	Phase   phase     `json:"phase"`
	Started time.Time `json:"started"`
	// Retire names the entries a rotation replaces.
	Retire []string `json:"retire,omitempty"`
}

type phase string

const (
	phaseEscrow   phase = "escrow"   // putting the pending entry
	phaseAdd      phase = "add"      // entry escrowed; adding the keyslot
	phaseActivate phase = "activate" // keyslot proven; marking active
	phaseRollback phase = "rollback" // undoing
)

func journalPath(dir, uuid string) string { return filepath.Join(dir, "enroll-"+uuid+".json") }

func (e *Enroller) writeJournal(j *journal) error {
	if err := os.MkdirAll(e.StateDir, 0o700); err != nil {
		return err
	}
	data, err := json.MarshalIndent(j, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(journalPath(e.StateDir, j.UUID), append(data, '\n'), 0o600, true); err != nil {
		return fmt.Errorf("writing the enrolment journal: %w", err)
	}
	return nil
}

// loadJournal returns the journal of an earlier enrolment on the volume, or
// nil.
func (e *Enroller) loadJournal(uuid string) (*journal, error) {
	data, err := os.ReadFile(journalPath(e.StateDir, uuid))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the enrolment journal: %w", err)
	}
	var j journal
	valid := func() bool {
		switch j.Phase {
		case phaseEscrow, phaseAdd, phaseActivate, phaseRollback:
		default:
			return false
		}
		return j.Name != "" && j.UUID == uuid && j.Keyslot >= 0 && j.Keyslot < 32 && j.Device != ""
	}
	if err := json.Unmarshal(data, &j); err != nil || !valid() {
		return nil, fmt.Errorf("the enrolment journal %q is damaged; check the escrow entries of this volume and remove it", journalPath(e.StateDir, uuid))
	}
	return &j, nil
}

func (e *Enroller) removeJournal(uuid string) error {
	err := os.Remove(journalPath(e.StateDir, uuid))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if d, err := os.Open(e.StateDir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// lockVolume takes this machine's lock for enrolments on the volume, so two
// runs never work on one volume at once.
func (e *Enroller) lockVolume(uuid string) (func(), error) {
	if err := os.MkdirAll(e.StateDir, 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(e.StateDir, "enroll-"+uuid+".lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("another nhscrypt run is enrolling a key on volume %s", uuid)
	}
	return func() { f.Close() }, nil
}
