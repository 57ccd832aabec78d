// Package keystore escrows keys: LUKS recovery passphrases, LUKS header
// backups and age identities, each stored once under a name, never
// overwritten and never deleted, with metadata that can be listed without
// reading any secret.
//
// An Escrow is implemented by keystore/vault (HashiCorp Vault's KV version 2
// engine, through github.com/hashicorp/vault/api) and by keystore/file (a
// folder of age-encrypted files for a single machine). Both pass the same
// conformance suite, keystore/escrowtest.
//
// Every entry has a lifecycle State (pending, active, retired, failed)
// changed only with check-and-set on the entry's current Revision, so two
// writers can never overwrite each other's change. Errors that callers
// branch on are ErrExists, ErrNotFound, ErrConflict, ErrPermission and
// ErrUnavailable, matched with errors.Is; ErrExists, ErrNotFound and
// ErrPermission also match fs.ErrExist, fs.ErrNotExist and fs.ErrPermission.
// No error, Key or Version ever holds a secret or a credential.
package keystore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"time"
)

// Escrow stores secrets under names. Implementations are safe for
// concurrent use, also by several processes or machines at once.
type Escrow interface {
	// Put stores a new entry k.Name holding secret (not empty), with
	// revision 1. It fails with an error matching ErrExists when the name
	// exists (in any state): an entry is never overwritten. It fills in
	// Fingerprint (always computed from secret), Created (if zero) and
	// State (StatePending if empty) and returns the stored Key.
	//
	// Put and SetState return a non-nil Key together with an error when
	// the change was made but something secondary failed (such as
	// vault.MetadataError): callers treat the change as done and report
	// the error as a warning.
	Put(ctx context.Context, k Key, secret []byte) (*Key, error)
	// Get returns the entry's current metadata and its secret. The
	// caller should clear the secret after use. It fails with ErrNotFound
	// when there is no such entry, and with *FingerprintError when the
	// secret does not match its recorded fingerprint.
	Get(ctx context.Context, name string) (*Key, []byte, error)
	// List returns the metadata of every entry, sorted by name, without
	// reading any secret.
	List(ctx context.Context) ([]Key, error)
	// History returns every revision of an entry, oldest first, without
	// reading any secret.
	History(ctx context.Context, name string) ([]Version, error)
	// SetState moves an entry from revision to a new revision in state to,
	// if revision is still the current one: otherwise it fails with an
	// error matching ErrConflict and changes nothing. The change must be
	// allowed by CanChangeState (else *StateChangeError).
	SetState(ctx context.Context, name string, revision int, to State) (*Key, error)
}

// Kind says what an escrowed secret is.
type Kind string

// Kinds of escrowed secrets.
const (
	KindLUKSRecovery Kind = "luks-recovery" // a LUKS recovery passphrase
	KindLUKSHeader   Kind = "luks-header"   // an (encrypted) LUKS header backup
	KindAgeIdentity  Kind = "age-identity"  // an age identity file
)

// Valid reports whether k is one of the kinds above.
func (k Kind) Valid() bool {
	switch k {
	case KindLUKSRecovery, KindLUKSHeader, KindAgeIdentity:
		return true
	}
	return false
}

// State is where an entry is in its lifecycle.
type State string

// States of an entry. A pending entry is escrowed but not yet proven to
// work (a LUKS recovery key not yet added to, or tested on, its keyslot);
// active is in use and proven; retired was replaced; failed never became
// active and is kept for the record. Entries are never deleted.
const (
	StatePending State = "pending"
	StateActive  State = "active"
	StateRetired State = "retired"
	StateFailed  State = "failed"
	// StateUnknown is reported by List when an entry's listed metadata
	// lags behind its stored state (a writer stopped between the two
	// updates); Get returns the stored state.
	StateUnknown State = "unknown"
)

// Valid reports whether s is a state an entry can be stored in.
func (s State) Valid() bool {
	switch s {
	case StatePending, StateActive, StateRetired, StateFailed:
		return true
	}
	return false
}

// CanChangeState reports whether an entry may move from one state to
// another: pending to active, retired or failed; active to retired or
// failed. Retired and failed are final.
func CanChangeState(from, to State) bool {
	switch from {
	case StatePending:
		return to == StateActive || to == StateRetired || to == StateFailed
	case StateActive:
		return to == StateRetired || to == StateFailed
	}
	return false
}

// Key is the metadata of an escrowed secret. It never holds the secret.
type Key struct {
	Name string `json:"name"`
	Kind Kind   `json:"kind"`
	// Host is the machine the secret belongs to.
	Host string `json:"host,omitempty"`
	// Device, LUKSUUID and Keyslot locate a LUKS recovery key or header.
	Device   string `json:"device,omitempty"`
	LUKSUUID string `json:"luks_uuid,omitempty"`
	Keyslot  *int   `json:"keyslot,omitempty"`
	// Recipient is the public age recipient of an age identity.
	Recipient string `json:"recipient,omitempty"`
	// Fingerprint is the lower-case hex SHA-256 of the secret (see
	// Fingerprint), never the secret.
	Fingerprint     string    `json:"fingerprint"`
	Created         time.Time `json:"created"`
	NhscryptVersion string    `json:"nhscrypt_version,omitempty"`
	State           State     `json:"state"`
	// Revision is the entry's current revision: 1 when put, one more at
	// each state change. SetState takes it for check-and-set.
	Revision int `json:"revision"`
}

// Slot returns a pointer to n, for Key.Keyslot.
func Slot(n int) *int { return &n }

// Version is one revision of an entry, as History returns it.
type Version struct {
	Revision int       `json:"revision"`
	State    State     `json:"state"`
	Created  time.Time `json:"created"`
	// Deleted and Destroyed are set when the store's own tools (not
	// nhscrypt) deleted or destroyed the revision.
	Deleted   bool `json:"deleted,omitempty"`
	Destroyed bool `json:"destroyed,omitempty"`
}

// Fingerprint returns the lower-case hex SHA-256 of secret.
func Fingerprint(secret []byte) string {
	s := sha256.Sum256(secret)
	return hex.EncodeToString(s[:])
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$`)

// ValidName reports an error unless name can name an entry: 1 to 128
// letters, digits and ._@+- not starting with a punctuation mark (so no
// path separators and no hidden or temporary names).
func ValidName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("invalid escrow name %q: use 1 to 128 letters, digits and ._@+- starting with a letter or digit", name)
	}
	return nil
}

// Check reports an error unless k can be put: a valid name and kind, a
// valid state (or none), and a keyslot only on LUKS kinds.
func (k *Key) Check() error {
	if err := ValidName(k.Name); err != nil {
		return err
	}
	if !k.Kind.Valid() {
		return fmt.Errorf("escrow %q: unknown kind %q", k.Name, k.Kind)
	}
	if k.State != "" && !k.State.Valid() {
		return fmt.Errorf("escrow %q: invalid state %q", k.Name, k.State)
	}
	if k.Keyslot != nil && (*k.Keyslot < 0 || k.Kind == KindAgeIdentity) {
		return fmt.Errorf("escrow %q: invalid keyslot for kind %s", k.Name, k.Kind)
	}
	return nil
}

// PrepareNew returns a copy of k as Put stores it: Fingerprint computed
// from secret, Created set (UTC, second precision) if zero, State pending
// if empty, Revision 1. Implementations call it after Check.
func PrepareNew(k Key, secret []byte, now time.Time) Key {
	k.Fingerprint = Fingerprint(secret)
	if k.Created.IsZero() {
		k.Created = now
	}
	k.Created = k.Created.UTC().Truncate(time.Second)
	if k.State == "" {
		k.State = StatePending
	}
	k.Revision = 1
	return k
}

// kindError is a sentinel that also matches a standard error.
type kindError struct {
	msg string
	is  error
}

func (e *kindError) Error() string        { return e.msg }
func (e *kindError) Is(target error) bool { return target == e.is }

// Errors that Escrow implementations return, wrapped with the name of the
// entry; match them with errors.Is.
var (
	// ErrExists: Put of a name that exists. Also matches fs.ErrExist.
	ErrExists error = &kindError{"escrow entry already exists", fs.ErrExist}
	// ErrNotFound: no such entry. Also matches fs.ErrNotExist.
	ErrNotFound error = &kindError{"no such escrow entry", fs.ErrNotExist}
	// ErrPermission: the credentials were refused (a bad or expired
	// token, or a policy that denies the operation). Also matches
	// fs.ErrPermission.
	ErrPermission error = &kindError{"permission denied", fs.ErrPermission}
	// ErrConflict: a check-and-set failed because the entry changed.
	ErrConflict = errors.New("the escrow entry changed meanwhile (check-and-set failed)")
	// ErrUnavailable: the store could not be reached or cannot serve
	// (Vault sealed, stopped or unreachable).
	ErrUnavailable = errors.New("escrow store unavailable")
)

// StateChangeError is returned by SetState for a change CanChangeState
// does not allow.
type StateChangeError struct {
	Name     string
	From, To State
}

func (e *StateChangeError) Error() string {
	return fmt.Sprintf("escrow %q: cannot change state from %s to %s", e.Name, e.From, e.To)
}

// FingerprintError is returned by Get when the stored secret does not
// match its recorded fingerprint (corruption or tampering).
type FingerprintError struct {
	Name string
}

func (e *FingerprintError) Error() string {
	return fmt.Sprintf("escrow %q: the stored secret does not match its recorded fingerprint", e.Name)
}
