// Package file is the embedded escrow for a single machine without Vault:
// a folder holding one sub-folder per entry, each with the secret
// age-encrypted to one or more admin recipients (secret.age) and one
// plain-text metadata file per revision (r1.json, r2.json, …) that holds
// no secret, so listing needs no key.
//
// Nothing is ever overwritten or deleted. A new entry is assembled in a
// temporary folder, fsynced, and renamed into place with RENAME_NOREPLACE,
// so it appears whole or not at all and two writers of one name cannot
// both succeed. A state change creates the next revision's file exclusively
// (temporary file, fsync, rename without replace): of two writers changing
// the same revision, exactly one wins. Files are 0600, folders 0700.
package file

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"filippo.io/age"
	"golang.org/x/sys/unix"

	"github.com/nhscrypt/nhscrypt/filecrypt"
	"github.com/nhscrypt/nhscrypt/internal/atomicfile"
	"github.com/nhscrypt/nhscrypt/keystore"
)

const (
	secretFile = "secret.age"
	// maxSecret bounds what Get decrypts (a LUKS2 header area is 16 MiB).
	maxSecret = 64 << 20
	// maxRecord bounds a metadata file.
	maxRecord = 64 << 10
)

// Store is a folder of escrowed keys. It implements keystore.Escrow.
type Store struct {
	dir        string
	recipients []age.Recipient
	identities []age.Identity
	now        func() time.Time
}

var _ keystore.Escrow = (*Store)(nil)

// Options configure a Store.
type Options struct {
	// Recipients (the admins' public keys) encrypt new secrets; Put
	// fails without one.
	Recipients []age.Recipient
	// Identities decrypt secrets for Get; Get fails with an error
	// matching keystore.ErrPermission without a matching one. A machine
	// that only escrows needs none.
	Identities []age.Identity
}

// Open returns the store in dir, creating the folder (0700) if missing.
func Open(dir string, opts Options) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("opening escrow folder: %w", err)
	}
	return &Store{dir: dir, recipients: opts.Recipients, identities: opts.Identities, now: time.Now}, nil
}

// record is one revision's metadata file.
type record struct {
	keystore.Key
	// Changed is when this revision was written.
	Changed time.Time `json:"changed"`
}

// Put implements keystore.Escrow.
func (s *Store) Put(ctx context.Context, k keystore.Key, secret []byte) (*keystore.Key, error) {
	if err := k.Check(); err != nil {
		return nil, err
	}
	if len(secret) == 0 {
		return nil, fmt.Errorf("escrow %q: empty secret", k.Name)
	}
	if len(s.recipients) == 0 {
		return nil, fmt.Errorf("escrow %q: no admin recipient to encrypt to", k.Name)
	}
	if len(secret) > maxSecret {
		return nil, fmt.Errorf("escrow %q: secret larger than %d bytes", k.Name, maxSecret)
	}
	final := filepath.Join(s.dir, k.Name)
	if _, err := os.Lstat(final); err == nil {
		return nil, fmt.Errorf("escrow %q: %w", k.Name, keystore.ErrExists)
	}
	now := s.now()
	nk := keystore.PrepareNew(k, secret, now)
	tmp, err := os.MkdirTemp(s.dir, atomicfile.TempPrefix+"*")
	if err != nil {
		return nil, fmt.Errorf("escrow %q: %w", k.Name, err)
	}
	defer os.RemoveAll(tmp) // a no-op once renamed
	var enc bytes.Buffer
	if _, err := filecrypt.Encrypt(ctx, &enc, bytes.NewReader(secret), filecrypt.EncryptOptions{Recipients: s.recipients}); err != nil {
		return nil, fmt.Errorf("escrow %q: encrypting: %w", k.Name, err)
	}
	if err := atomicfile.WriteFile(filepath.Join(tmp, secretFile), enc.Bytes(), 0o600, false); err != nil {
		return nil, fmt.Errorf("escrow %q: %w", k.Name, err)
	}
	if err := writeRecord(tmp, record{Key: nk, Changed: nk.Created}); err != nil {
		return nil, fmt.Errorf("escrow %q: %w", k.Name, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := os.Chmod(tmp, 0o700); err != nil {
		return nil, fmt.Errorf("escrow %q: %w", k.Name, err)
	}
	if err := renameNoReplace(tmp, final); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("escrow %q: %w", k.Name, keystore.ErrExists)
		}
		return nil, fmt.Errorf("escrow %q: %w", k.Name, err)
	}
	if err := syncDir(s.dir); err != nil {
		return nil, fmt.Errorf("escrow %q: %w", k.Name, err)
	}
	return &nk, nil
}

// Get implements keystore.Escrow.
func (s *Store) Get(ctx context.Context, name string) (*keystore.Key, []byte, error) {
	if err := keystore.ValidName(name); err != nil {
		return nil, nil, err
	}
	recs, err := s.records(name)
	if err != nil {
		return nil, nil, err
	}
	k := recs[len(recs)-1].Key
	data, err := readLimited(filepath.Join(s.dir, name, secretFile), maxSecret*2)
	if err != nil {
		return nil, nil, fmt.Errorf("escrow %q: %w", name, err)
	}
	if len(s.identities) == 0 {
		return nil, nil, fmt.Errorf("escrow %q: no identity given to decrypt it: %w", name, keystore.ErrPermission)
	}
	var out bytes.Buffer
	if _, err := filecrypt.Decrypt(ctx, &out, bytes.NewReader(data), filepath.Join(s.dir, name, secretFile), filecrypt.DecryptOptions{Identities: s.identities}); err != nil {
		var wk *filecrypt.WrongKeyError
		if errors.As(err, &wk) {
			return nil, nil, fmt.Errorf("escrow %q: %w: %w", name, keystore.ErrPermission, err)
		}
		return nil, nil, fmt.Errorf("escrow %q: %w", name, err)
	}
	secret := out.Bytes()
	if keystore.Fingerprint(secret) != k.Fingerprint {
		clear(secret)
		return nil, nil, &keystore.FingerprintError{Name: name}
	}
	return &k, secret, nil
}

// List implements keystore.Escrow.
func (s *Store) List(ctx context.Context) ([]keystore.Key, error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("listing escrow folder: %w", err)
	}
	var keys []keystore.Key
	for _, e := range ents {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if !e.IsDir() || keystore.ValidName(e.Name()) != nil {
			continue // temporary folders and anything not ours
		}
		recs, err := s.records(e.Name())
		if err != nil {
			return nil, err
		}
		keys = append(keys, recs[len(recs)-1].Key)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].Name < keys[j].Name })
	return keys, nil
}

// History implements keystore.Escrow.
func (s *Store) History(ctx context.Context, name string) ([]keystore.Version, error) {
	if err := keystore.ValidName(name); err != nil {
		return nil, err
	}
	recs, err := s.records(name)
	if err != nil {
		return nil, err
	}
	vs := make([]keystore.Version, len(recs))
	for i, r := range recs {
		vs[i] = keystore.Version{Revision: r.Revision, State: r.State, Created: r.Changed}
	}
	return vs, nil
}

// SetState implements keystore.Escrow.
func (s *Store) SetState(ctx context.Context, name string, revision int, to keystore.State) (*keystore.Key, error) {
	if err := keystore.ValidName(name); err != nil {
		return nil, err
	}
	recs, err := s.records(name)
	if err != nil {
		return nil, err
	}
	cur := recs[len(recs)-1].Key
	if cur.Revision != revision {
		return nil, fmt.Errorf("escrow %q: revision %d is not the current one (%d): %w", name, revision, cur.Revision, keystore.ErrConflict)
	}
	if !keystore.CanChangeState(cur.State, to) {
		return nil, &keystore.StateChangeError{Name: name, From: cur.State, To: to}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	nk := cur
	nk.State = to
	nk.Revision = revision + 1
	if err := writeRecord(filepath.Join(s.dir, name), record{Key: nk, Changed: s.now().UTC().Truncate(time.Second)}); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("escrow %q: revision %d was changed meanwhile: %w", name, revision, keystore.ErrConflict)
		}
		return nil, fmt.Errorf("escrow %q: %w", name, err)
	}
	return &nk, nil
}

func recordName(rev int) string { return "r" + strconv.Itoa(rev) + ".json" }

// writeRecord creates dir/rN.json for r's revision; it fails with an error
// matching fs.ErrExist if that revision exists.
func writeRecord(dir string, r record) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(dir, recordName(r.Revision)), append(data, '\n'), 0o600, false)
}

// records reads an entry's revisions, oldest first. They must run 1…N
// without gaps.
func (s *Store) records(name string) ([]record, error) {
	dir := filepath.Join(s.dir, name)
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("escrow %q: %w", name, keystore.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("escrow %q: %w", name, err)
	}
	var revs []int
	for _, e := range ents {
		v, ok := strings.CutPrefix(e.Name(), "r")
		if v, ok2 := strings.CutSuffix(v, ".json"); ok && ok2 {
			if n, err := strconv.Atoi(v); err == nil && n > 0 && recordName(n) == e.Name() {
				revs = append(revs, n)
			}
		}
	}
	sort.Ints(revs)
	if len(revs) == 0 {
		return nil, fmt.Errorf("escrow %q: no metadata file in %q", name, dir)
	}
	recs := make([]record, 0, len(revs))
	for i, n := range revs {
		if n != i+1 {
			return nil, fmt.Errorf("escrow %q: revision %d is missing in %q", name, i+1, dir)
		}
		data, err := readLimited(filepath.Join(dir, recordName(n)), maxRecord)
		if err != nil {
			return nil, fmt.Errorf("escrow %q: %w", name, err)
		}
		var r record
		if err := json.Unmarshal(data, &r); err != nil {
			return nil, fmt.Errorf("escrow %q: revision %d: %w", name, n, err)
		}
		if r.Name != name || r.Revision != n {
			return nil, fmt.Errorf("escrow %q: revision %d: the file names another entry or revision", name, n)
		}
		recs = append(recs, r)
	}
	return recs, nil
}

func readLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%q is larger than %d bytes", path, limit)
	}
	return data, nil
}

// renameNoReplace renames the folder tmp to final unless final exists.
func renameNoReplace(tmp, final string) error {
	err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, final, unix.RENAME_NOREPLACE)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EEXIST), errors.Is(err, unix.ENOTEMPTY):
		return fs.ErrExist
	case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOSYS), errors.Is(err, unix.ENOTSUP):
		// No RENAME_NOREPLACE here: rename(2) of a folder onto an
		// existing non-empty folder fails, and entries are never empty.
		if err := os.Rename(tmp, final); err != nil {
			if errors.Is(err, unix.EEXIST) || errors.Is(err, unix.ENOTEMPTY) {
				return fs.ErrExist
			}
			return err
		}
		return nil
	}
	return err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("syncing folder %q: %w", dir, err)
	}
	return nil
}
