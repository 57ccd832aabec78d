// Package vault escrows keys in HashiCorp Vault's KV version 2 secrets
// engine (https://developer.hashicorp.com/vault/api-docs/secret/kv/kv-v2),
// through github.com/hashicorp/vault/api.
//
// Each entry is one KV secret at MOUNT/data/PREFIX/NAME (by default
// secret/data/nhscrypt/HOST/NAME) whose data holds the secret (base64) and
// its keystore.Key metadata. A new entry is written with check-and-set 0, so
// of two writers of one name exactly one succeeds and nothing is
// overwritten. A state change is a JSON merge patch of the current version
// with check-and-set on that version, so the secret is never re-sent and a
// concurrent change is refused; each revision is a KV version. The metadata
// is mirrored into the secret's KV custom metadata, so List and History
// read MOUNT/metadata/… only and need no permission to read any secret.
//
// The capabilities each operation needs (see docs/escrow.md for policies):
//
//	Put       create on data/PREFIX/*, update on metadata/PREFIX/* (custom_metadata only)
//	Get       read on data/PREFIX/*
//	List      list and read on metadata/PREFIX/*
//	History   read on metadata/PREFIX/*
//	SetState  read and update on metadata/PREFIX/*, patch on data/PREFIX/*
//
// With Options.TransitKey, Put also needs update on transit/encrypt/KEY
// and Get update on transit/decrypt/KEY.
//
// A server token with only the Put capabilities can escrow a new key but
// cannot read, change, overwrite or delete any escrowed one. Note that such
// a token is refused (keystore.ErrPermission) also when the name exists,
// since Vault checks the policy before the check-and-set.
package vault

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/nhscrypt/nhscrypt/keystore"
)

// DefaultMount is the KV version 2 mount used when Options.Mount is empty.
const DefaultMount = "secret"

// DefaultPrefix returns the default path prefix for a host's entries.
func DefaultPrefix(host string) string { return "nhscrypt/" + host }

// Options locate the entries in Vault.
type Options struct {
	// Mount is the KV version 2 mount (DefaultMount if empty).
	Mount string
	// Prefix is the path under the mount that holds the entries, such as
	// DefaultPrefix(host). Required.
	Prefix string
	// TransitKey, if set, wraps new secrets with this key of Vault's
	// transit engine: the KV entry then holds only the transit ciphertext,
	// and reading the secret needs the key's decrypt permission as well as
	// read on the entry. Get unwraps with the key an entry records,
	// whatever TransitKey is.
	TransitKey string
	// TransitMount is the transit engine's mount ("transit" if empty).
	TransitMount string
}

// Store is a Vault KV v2 escrow. It implements keystore.Escrow.
type Store struct {
	c            *api.Client
	mount        string
	prefix       string
	transitKey   string
	transitMount string
	now          func() time.Time
}

var _ keystore.Escrow = (*Store)(nil)

// New returns a store that uses client, which must already be logged in
// (see NewClient).
func New(client *api.Client, opts Options) (*Store, error) {
	mount := opts.Mount
	if mount == "" {
		mount = DefaultMount
	}
	if err := checkPath(mount); err != nil {
		return nil, fmt.Errorf("vault mount %q: %w", mount, err)
	}
	if err := checkPath(opts.Prefix); err != nil {
		return nil, fmt.Errorf("vault path prefix %q: %w", opts.Prefix, err)
	}
	tm := opts.TransitMount
	if tm == "" {
		tm = "transit"
	}
	if err := checkPath(tm); err != nil {
		return nil, fmt.Errorf("vault transit mount %q: %w", tm, err)
	}
	if opts.TransitKey != "" && (strings.Contains(opts.TransitKey, "/") || checkPath(opts.TransitKey) != nil) {
		return nil, fmt.Errorf("invalid vault transit key name %q", opts.TransitKey)
	}
	return &Store{c: client, mount: mount, prefix: opts.Prefix, transitKey: opts.TransitKey, transitMount: tm, now: time.Now}, nil
}

func checkPath(p string) error {
	if p == "" {
		return errors.New("empty")
	}
	for _, seg := range strings.Split(p, "/") {
		if seg == "" || seg == "." || seg == ".." || strings.ContainsAny(seg, "*+?#%\\ \t\n") {
			return errors.New("use non-empty path segments separated by single slashes")
		}
	}
	return nil
}

func (s *Store) path(name string) string { return s.prefix + "/" + name }
func (s *Store) dataPath(name string) string {
	return s.mount + "/data/" + s.path(name)
}
func (s *Store) metaPath(name string) string {
	return s.mount + "/metadata/" + s.path(name)
}

// schema marks nhscrypt's entries, in data and in custom metadata.
const schema = "nhscrypt-escrow/1"

// MetadataError is returned by Put and SetState when the secret or state
// change was stored but mirroring its metadata into the KV custom metadata
// failed: the change is made (and Key is returned with the error), but List
// shows the entry's state as keystore.StateUnknown until a later SetState
// rewrites the metadata.
type MetadataError struct {
	Name string
	Err  error
}

func (e *MetadataError) Error() string {
	return fmt.Sprintf("escrow %q: stored, but its listed metadata was not updated: %v", e.Name, e.Err)
}

func (e *MetadataError) Unwrap() error { return e.Err }

// listConcurrency is how many metadata reads List has in flight.
const listConcurrency = 8

// Put implements keystore.Escrow. See MetadataError.
func (s *Store) Put(ctx context.Context, k keystore.Key, secret []byte) (*keystore.Key, error) {
	if err := k.Check(); err != nil {
		return nil, err
	}
	if len(secret) == 0 {
		return nil, fmt.Errorf("escrow %q: empty secret", k.Name)
	}
	nk := keystore.PrepareNew(k, secret, s.now())
	stored := nk
	stored.Revision = 0
	data := map[string]any{
		"schema":  schema,
		"key":     stored,
		"changed": nk.Created.Format(time.RFC3339),
	}
	if s.transitKey == "" {
		data["secret"] = base64.StdEncoding.EncodeToString(secret)
	} else {
		ct, err := s.transit(ctx, "encrypt", s.transitMount, s.transitKey, "plaintext", base64.StdEncoding.EncodeToString(secret), "ciphertext")
		if err != nil {
			return nil, fmt.Errorf("escrow %q: %w", k.Name, err)
		}
		data["transit"] = map[string]any{"mount": s.transitMount, "key": s.transitKey, "ciphertext": ct}
	}
	_, err := s.c.KVv2(s.mount).Put(ctx, s.path(k.Name), data, api.WithCheckAndSet(0))
	if err != nil {
		err = classify(err)
		switch {
		case errors.Is(err, keystore.ErrConflict):
			return nil, fmt.Errorf("escrow %q: %w", k.Name, keystore.ErrExists)
		case errors.Is(err, keystore.ErrPermission):
			return nil, fmt.Errorf("escrow %q: writing %s: %w (a create-only token is also refused when the entry exists)", k.Name, s.dataPath(k.Name), err)
		}
		return nil, fmt.Errorf("escrow %q: writing %s: %w", k.Name, s.dataPath(k.Name), err)
	}
	if err := s.writeCustom(ctx, &nk, map[int]keystore.State{1: nk.State}); err != nil {
		return &nk, &MetadataError{Name: k.Name, Err: err}
	}
	return &nk, nil
}

// Get implements keystore.Escrow.
func (s *Store) Get(ctx context.Context, name string) (*keystore.Key, []byte, error) {
	if err := keystore.ValidName(name); err != nil {
		return nil, nil, err
	}
	sec, err := s.c.KVv2(s.mount).Get(ctx, s.path(name))
	if err != nil {
		return nil, nil, fmt.Errorf("escrow %q: reading %s: %w", name, s.dataPath(name), classify(err))
	}
	k, err := decodeKey(name, sec)
	if err != nil {
		return nil, nil, err
	}
	secret, err := s.decodeSecret(ctx, name, sec)
	if err != nil {
		return nil, nil, err
	}
	if keystore.Fingerprint(secret) != k.Fingerprint {
		clear(secret)
		return nil, nil, &keystore.FingerprintError{Name: name}
	}
	return k, secret, nil
}

// transit calls transit/OP/KEY with {in: value} and returns the out field.
func (s *Store) transit(ctx context.Context, op, mount, key, in, value, out string) (string, error) {
	p := mount + "/" + op + "/" + key
	sec, err := s.c.Logical().WriteWithContext(ctx, p, map[string]any{in: value})
	if err != nil {
		return "", fmt.Errorf("transit %s with %s: %w", op, p, classify(err))
	}
	var v string
	if sec != nil {
		v, _ = sec.Data[out].(string)
	}
	if v == "" {
		return "", fmt.Errorf("transit %s with %s: no %s in the response", op, p, out)
	}
	return v, nil
}

// decodeKey returns the metadata of a KV version read.
func decodeKey(name string, sec *api.KVSecret) (*keystore.Key, error) {
	if sec.Data == nil {
		return nil, fmt.Errorf("escrow %q: its current version was deleted in Vault (undelete it with the vault CLI): %w", name, keystore.ErrNotFound)
	}
	if sec.Data["schema"] != schema {
		return nil, fmt.Errorf("escrow %q: not an nhscrypt escrow entry", name)
	}
	raw, err := json.Marshal(sec.Data["key"])
	if err != nil {
		return nil, fmt.Errorf("escrow %q: %w", name, err)
	}
	var k keystore.Key
	if err := json.Unmarshal(raw, &k); err != nil {
		return nil, fmt.Errorf("escrow %q: reading its metadata: %w", name, err)
	}
	if k.Name != name {
		return nil, fmt.Errorf("escrow %q: the entry names another key", name)
	}
	if sec.VersionMetadata != nil {
		k.Revision = sec.VersionMetadata.Version
	}
	return &k, nil
}

// decodeSecret returns the secret of a KV version read, unwrapping it with
// transit if it is wrapped.
func (s *Store) decodeSecret(ctx context.Context, name string, sec *api.KVSecret) ([]byte, error) {
	b64, _ := sec.Data["secret"].(string)
	if tr, ok := sec.Data["transit"].(map[string]any); ok {
		mount, _ := tr["mount"].(string)
		key, _ := tr["key"].(string)
		ct, _ := tr["ciphertext"].(string)
		if checkPath(mount) != nil || checkPath(key) != nil || strings.Contains(key, "/") || ct == "" {
			return nil, fmt.Errorf("escrow %q: malformed transit wrapping", name)
		}
		pt, err := s.transit(ctx, "decrypt", mount, key, "ciphertext", ct, "plaintext")
		if err != nil {
			return nil, fmt.Errorf("escrow %q: %w", name, err)
		}
		b64 = pt
	}
	secret, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || b64 == "" {
		return nil, fmt.Errorf("escrow %q: malformed entry", name)
	}
	return secret, nil
}

// List implements keystore.Escrow. It reads only KV metadata.
func (s *Store) List(ctx context.Context) ([]keystore.Key, error) {
	listPath := s.mount + "/metadata/" + s.prefix
	sec, err := s.c.Logical().ListWithContext(ctx, listPath)
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", listPath, classify(err))
	}
	var keys []keystore.Key
	if sec == nil || sec.Data == nil {
		return keys, nil
	}
	raw, _ := sec.Data["keys"].([]any)
	var names []string
	for _, r := range raw {
		name, _ := r.(string)
		if strings.HasSuffix(name, "/") || keystore.ValidName(name) != nil {
			continue // a sub-folder, or not one of ours
		}
		names = append(names, name)
	}
	// One metadata read per entry, listConcurrency at a time.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	found := make([]*keystore.Key, len(names))
	errs := make([]error, len(names))
	sem := make(chan struct{}, listConcurrency)
	var wg sync.WaitGroup
	for i, name := range names {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			md, err := s.c.KVv2(s.mount).GetMetadata(ctx, s.path(name))
			if err != nil {
				err = classify(err)
				if !errors.Is(err, keystore.ErrNotFound) { // else removed meanwhile by Vault's own tools
					errs[i] = fmt.Errorf("escrow %q: reading %s: %w", name, s.metaPath(name), err)
					cancel()
				}
				return
			}
			k, _ := keyFromCustom(name, md)
			found[i] = &k
		}()
	}
	wg.Wait()
	for i := range names {
		if errs[i] != nil && !errors.Is(errs[i], context.Canceled) {
			return nil, errs[i]
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	for _, k := range found {
		if k != nil {
			keys = append(keys, *k)
		}
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].Name < keys[j].Name })
	return keys, nil
}

// History implements keystore.Escrow. It reads only KV metadata; the
// state of a revision whose metadata was never mirrored is
// keystore.StateUnknown.
func (s *Store) History(ctx context.Context, name string) ([]keystore.Version, error) {
	if err := keystore.ValidName(name); err != nil {
		return nil, err
	}
	md, err := s.c.KVv2(s.mount).GetMetadata(ctx, s.path(name))
	if err != nil {
		return nil, fmt.Errorf("escrow %q: reading %s: %w", name, s.metaPath(name), classify(err))
	}
	states := statesFromCustom(md.CustomMetadata)
	var vs []keystore.Version
	for key, v := range md.Versions {
		if n, err := strconv.Atoi(key); err == nil {
			v.Version = n
		}
		st, ok := states[v.Version]
		if !ok {
			st = keystore.StateUnknown
		}
		vs = append(vs, keystore.Version{
			Revision: v.Version, State: st, Created: v.CreatedTime.UTC(),
			Deleted: !v.DeletionTime.IsZero(), Destroyed: v.Destroyed,
		})
	}
	sort.Slice(vs, func(i, j int) bool { return vs[i].Revision < vs[j].Revision })
	return vs, nil
}

// SetState implements keystore.Escrow. See MetadataError.
func (s *Store) SetState(ctx context.Context, name string, revision int, to keystore.State) (*keystore.Key, error) {
	if err := keystore.ValidName(name); err != nil {
		return nil, err
	}
	kv := s.c.KVv2(s.mount)
	md, err := kv.GetMetadata(ctx, s.path(name))
	if err != nil {
		return nil, fmt.Errorf("escrow %q: reading %s: %w", name, s.metaPath(name), classify(err))
	}
	if md.CurrentVersion != revision {
		return nil, fmt.Errorf("escrow %q: revision %d is not the current one (%d): %w", name, revision, md.CurrentVersion, keystore.ErrConflict)
	}
	cur, ok := keyFromCustom(name, md)
	if !ok {
		// The mirror lags: take the state from the data (this needs
		// read on data/…).
		sec, err := kv.GetVersion(ctx, s.path(name), revision)
		if err != nil {
			return nil, fmt.Errorf("escrow %q: reading %s: %w", name, s.dataPath(name), classify(err))
		}
		k, err := decodeKey(name, sec)
		if err != nil {
			return nil, err
		}
		cur = *k
	}
	if !keystore.CanChangeState(cur.State, to) {
		return nil, &keystore.StateChangeError{Name: name, From: cur.State, To: to}
	}
	patch := map[string]any{
		"data": map[string]any{
			"key":     map[string]any{"state": to},
			"changed": s.now().UTC().Format(time.RFC3339),
		},
		"options": map[string]any{"cas": revision},
	}
	// Not KVv2.Patch: on an old Vault it falls back to read-then-write
	// without check-and-set.
	sec, err := s.c.Logical().JSONMergePatch(ctx, s.dataPath(name), patch)
	if err != nil {
		err = classify(err)
		if errors.Is(err, keystore.ErrConflict) {
			return nil, fmt.Errorf("escrow %q: revision %d was changed meanwhile: %w", name, revision, err)
		}
		return nil, fmt.Errorf("escrow %q: patching %s: %w", name, s.dataPath(name), err)
	}
	nk := cur
	nk.State = to
	nk.Revision = revision + 1
	if sec != nil {
		if v, err := jsonInt(sec.Data["version"]); err == nil {
			nk.Revision = v
		}
	}
	states := statesFromCustom(md.CustomMetadata)
	states[nk.Revision] = to
	if err := s.writeCustom(ctx, &nk, states); err != nil {
		return &nk, &MetadataError{Name: name, Err: err}
	}
	return &nk, nil
}

// Custom metadata keys. Values must be non-empty and printable, at most
// 512 bytes; at most 64 keys.
const (
	cmSchema      = "nhscrypt-schema"
	cmKind        = "kind"
	cmHost        = "host"
	cmDevice      = "device"
	cmUUID        = "luks-uuid"
	cmKeyslot     = "keyslot"
	cmRecipient   = "recipient"
	cmFingerprint = "fingerprint"
	cmCreated     = "created"
	cmVersion     = "nhscrypt-version"
	cmState       = "state"
	cmRevision    = "revision"
	cmStatePrefix = "state-r" // state-r1, state-r2, …: each revision's state
)

// writeCustom replaces the entry's custom metadata with k and the states of
// its revisions. It sends only custom_metadata, so the other metadata
// (max_versions, delete_version_after, cas_required) is left alone and a
// policy can allow only this parameter.
func (s *Store) writeCustom(ctx context.Context, k *keystore.Key, states map[int]keystore.State) error {
	cm := map[string]any{
		cmSchema:      schema,
		cmKind:        string(k.Kind),
		cmFingerprint: k.Fingerprint,
		cmCreated:     k.Created.UTC().Format(time.RFC3339),
		cmState:       string(k.State),
		cmRevision:    strconv.Itoa(k.Revision),
	}
	set := func(key, v string) {
		if v != "" {
			cm[key] = v
		}
	}
	set(cmHost, k.Host)
	set(cmDevice, k.Device)
	set(cmUUID, k.LUKSUUID)
	set(cmRecipient, k.Recipient)
	set(cmVersion, k.NhscryptVersion)
	if k.Keyslot != nil {
		cm[cmKeyslot] = strconv.Itoa(*k.Keyslot)
	}
	for rev, st := range states {
		cm[cmStatePrefix+strconv.Itoa(rev)] = string(st)
	}
	_, err := s.c.Logical().WriteWithContext(ctx, s.metaPath(k.Name), map[string]any{"custom_metadata": cm})
	if err != nil {
		return fmt.Errorf("writing %s: %w", s.metaPath(k.Name), classify(err))
	}
	return nil
}

// keyFromCustom builds a Key from KV metadata. ok is false when the custom
// metadata is missing or is not for the current version; the Key then
// holds the name and revision only, in keystore.StateUnknown.
func keyFromCustom(name string, md *api.KVMetadata) (k keystore.Key, ok bool) {
	cm := md.CustomMetadata
	k = keystore.Key{Name: name, Revision: md.CurrentVersion, State: keystore.StateUnknown}
	str := func(key string) string { s, _ := cm[key].(string); return s }
	if str(cmSchema) != schema {
		return k, false
	}
	k.Kind = keystore.Kind(str(cmKind))
	k.Host = str(cmHost)
	k.Device = str(cmDevice)
	k.LUKSUUID = str(cmUUID)
	k.Recipient = str(cmRecipient)
	k.Fingerprint = str(cmFingerprint)
	k.NhscryptVersion = str(cmVersion)
	if v, err := strconv.Atoi(str(cmKeyslot)); err == nil {
		k.Keyslot = keystore.Slot(v)
	}
	if t, err := time.Parse(time.RFC3339, str(cmCreated)); err == nil {
		k.Created = t
	}
	if rev, err := strconv.Atoi(str(cmRevision)); err == nil && rev == md.CurrentVersion {
		k.State = keystore.State(str(cmState))
		return k, k.State.Valid()
	}
	return k, false
}

func statesFromCustom(cm map[string]any) map[int]keystore.State {
	states := map[int]keystore.State{}
	if s, _ := cm[cmSchema].(string); s != schema {
		return states
	}
	for key, v := range cm {
		if r, ok := strings.CutPrefix(key, cmStatePrefix); ok {
			if n, err := strconv.Atoi(r); err == nil {
				if st, _ := v.(string); keystore.State(st).Valid() {
					states[n] = keystore.State(st)
				}
			}
		}
	}
	return states
}

func jsonInt(v any) (int, error) {
	switch n := v.(type) {
	case json.Number:
		i, err := n.Int64()
		return int(i), err
	case float64:
		return int(n), nil
	case int:
		return n, nil
	}
	return 0, fmt.Errorf("not a number: %T", v)
}

// vaultError is a failed Vault request, classified as one of keystore's
// errors. It holds Vault's messages (which never include a token), not the
// request.
type vaultError struct {
	kind   error
	status int
	msgs   []string
}

func (e *vaultError) Error() string {
	msg := strings.Join(e.msgs, "; ")
	if msg == "" {
		msg = http.StatusText(e.status)
	}
	if e.kind == nil {
		return fmt.Sprintf("vault: %s (HTTP %d)", msg, e.status)
	}
	return fmt.Sprintf("%v (vault: %s, HTTP %d)", e.kind, msg, e.status)
}

func (e *vaultError) Unwrap() error { return e.kind }

// classify maps an error of the api package to keystore's errors: 401 and
// 403 to ErrPermission, 404 to ErrNotFound, a failed check-and-set to
// ErrConflict, 5xx (sealed, standby, stopped) and network errors to
// ErrUnavailable. Context errors pass through.
func classify(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if errors.Is(err, api.ErrSecretNotFound) {
		return keystore.ErrNotFound
	}
	var re *api.ResponseError
	if !errors.As(err, &re) {
		// No response: connection refused, TLS or DNS failure.
		return fmt.Errorf("%w: %v", keystore.ErrUnavailable, err)
	}
	ve := &vaultError{status: re.StatusCode, msgs: re.Errors}
	switch {
	case re.StatusCode == http.StatusUnauthorized || re.StatusCode == http.StatusForbidden:
		ve.kind = keystore.ErrPermission
	case re.StatusCode == http.StatusNotFound:
		ve.kind = keystore.ErrNotFound
	case re.StatusCode == http.StatusBadRequest && containsAny(re.Errors, "check-and-set parameter did not match"):
		ve.kind = keystore.ErrConflict
	case re.StatusCode >= 500:
		ve.kind = keystore.ErrUnavailable
	}
	return ve
}

func containsAny(msgs []string, sub string) bool {
	for _, m := range msgs {
		if strings.Contains(m, sub) {
			return true
		}
	}
	return false
}
