package backup

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"filippo.io/age"

	"github.com/nhscrypt/nhscrypt/filecrypt"
	"github.com/nhscrypt/nhscrypt/internal/atomicfile"
)

// DefaultObjectSize is the default target size of a data object.
const DefaultObjectSize = 64 << 20

// maxConfigSize and maxIndexSize bound what is read before parsing.
const (
	maxConfigSize   = 1 << 20
	maxIndexSize    = 64 << 20
	maxManifestSize = 4 << 30
)

// Repository is an opened repository.
type Repository struct {
	Backend    Backend
	Config     Config
	recipients []age.Recipient
}

// Errors callers branch on.
var (
	// ErrNoRepository: the location holds no repository config.
	ErrNoRepository = errors.New("no nhscrypt repository here")
	// ErrUntrustedSignature: a snapshot is unsigned, or signed by a key
	// that is not trusted, or the signature does not verify.
	ErrUntrustedSignature = errors.New("snapshot signature missing, invalid or from an untrusted key")
)

// Init creates a repository on b with the given recipients, and records
// the host's signing key as a signer.
func Init(ctx context.Context, b Backend, recipients []string, objectSize int64, host string, signer ed25519.PublicKey) (*Repository, error) {
	if len(recipients) == 0 {
		return nil, errors.New("a repository needs at least one recipient")
	}
	recs, err := parseRecipients(recipients)
	if err != nil {
		return nil, err
	}
	if _, err := b.Stat(ctx, Handle{Type: ConfigFile, Name: "config"}); err == nil {
		return nil, fmt.Errorf("%s already holds a repository", b.Location())
	}
	if objectSize <= 0 {
		objectSize = DefaultObjectSize
	}
	var id [32]byte
	rand.Read(id[:])
	cfg := Config{
		Version: FormatVersion, ID: hex.EncodeToString(id[:]), Created: time.Now().UTC(),
		Recipients: recipients, Compression: "zstd", CompressionLevel: "fastest", ObjectSize: objectSize,
	}
	if signer != nil {
		cfg.Signers = []Signer{{Host: host, PublicKey: base64.StdEncoding.EncodeToString(signer), Added: cfg.Created}}
	}
	r := &Repository{Backend: b, Config: cfg, recipients: recs}
	if err := r.saveConfig(ctx); err != nil {
		return nil, err
	}
	return r, nil
}

func parseRecipients(rs []string) ([]age.Recipient, error) {
	var out []age.Recipient
	for _, s := range rs {
		r, err := filecrypt.ParseRecipient(s)
		if err != nil {
			return nil, fmt.Errorf("recipient %q: %w", s, err)
		}
		out = append(out, r)
	}
	return out, nil
}

func (r *Repository) saveConfig(ctx context.Context) error {
	data, err := json.MarshalIndent(r.Config, "", "  ")
	if err != nil {
		return err
	}
	data = append(data, '\n')
	return r.Backend.Save(ctx, Handle{Type: ConfigFile, Name: "config"}, int64(len(data)), bytes.NewReader(data))
}

// Open opens the repository on b.
func Open(ctx context.Context, b Backend) (*Repository, error) {
	data, err := readAll(ctx, b, Handle{Type: ConfigFile, Name: "config"}, maxConfigSize)
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("%s: %w (no config object)", b.Location(), ErrNoRepository)
	}
	if err != nil {
		return nil, fmt.Errorf("reading the config of %s: %w", b.Location(), err)
	}
	cfg, err := ParseConfig(data)
	if err != nil {
		return nil, fmt.Errorf("config of %s: %w", b.Location(), err)
	}
	recs, err := parseRecipients(cfg.Recipients)
	if err != nil {
		return nil, fmt.Errorf("config of %s: %w", b.Location(), err)
	}
	return &Repository{Backend: b, Config: *cfg, recipients: recs}, nil
}

// ParseConfig parses and checks a config object.
func ParseConfig(data []byte) (*Config, error) {
	var cfg Config
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&cfg); err != nil {
		return nil, fmt.Errorf("invalid JSON: %w", err)
	}
	switch {
	case cfg.Version != FormatVersion:
		return nil, fmt.Errorf("format version %d is not supported (this nhscrypt reads %d)", cfg.Version, FormatVersion)
	case len(cfg.ID) != 64:
		return nil, errors.New("invalid repository ID")
	case len(cfg.Recipients) == 0:
		return nil, errors.New("no recipients")
	case cfg.Compression != "zstd":
		return nil, fmt.Errorf("unsupported compression %q", cfg.Compression)
	case cfg.CompressionLevel != "" && cfg.CompressionLevel != "fastest" && cfg.CompressionLevel != "default" &&
		cfg.CompressionLevel != "better" && cfg.CompressionLevel != "best":
		return nil, fmt.Errorf("unsupported compression level %q", cfg.CompressionLevel)
	case cfg.ObjectSize <= 0:
		return nil, errors.New("invalid object size")
	}
	for _, s := range cfg.Signers {
		if k, err := base64.StdEncoding.DecodeString(s.PublicKey); err != nil || len(k) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("invalid signer key for host %q", s.Host)
		}
	}
	return &cfg, nil
}

// AddSigner records a host's signing key in the config if it is not there.
func (r *Repository) AddSigner(ctx context.Context, host string, pub ed25519.PublicKey) error {
	k := base64.StdEncoding.EncodeToString(pub)
	for _, s := range r.Config.Signers {
		if s.PublicKey == k {
			return nil
		}
	}
	r.Config.Signers = append(r.Config.Signers, Signer{Host: host, PublicKey: k, Added: time.Now().UTC()})
	return r.saveConfig(ctx)
}

func readAll(ctx context.Context, b Backend, h Handle, limit int64) ([]byte, error) {
	rc, err := b.Open(ctx, h, 0, 0)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s/%s is larger than %d bytes", h.Type, h.Name, limit)
	}
	return data, nil
}

// Signing keys.

// GenerateSigningKey writes a new Ed25519 signing key to path (0600, never
// overwriting) and returns it.
func GenerateSigningKey(path string) (ed25519.PrivateKey, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	data := "# nhscrypt backup signing key: keep on this host only\n" + base64.StdEncoding.EncodeToString(priv.Seed()) + "\n"
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("writing signing key: %w", err)
	}
	if err := atomicfile.WriteFile(path, []byte(data), 0o600, false); err != nil {
		return nil, fmt.Errorf("writing signing key: %w", err)
	}
	return priv, nil
}

// LoadSigningKey reads a signing key written by GenerateSigningKey.
func LoadSigningKey(path string) (ed25519.PrivateKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading signing key: %w", err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		seed, err := base64.StdEncoding.DecodeString(line)
		if err != nil || len(seed) != ed25519.SeedSize {
			return nil, fmt.Errorf("signing key %q is malformed", path)
		}
		return ed25519.NewKeyFromSeed(seed), nil
	}
	return nil, fmt.Errorf("signing key %q is empty", path)
}

// LoadOrCreateSigningKey loads the key at path, creating it if missing.
func LoadOrCreateSigningKey(path string) (ed25519.PrivateKey, error) {
	k, err := LoadSigningKey(path)
	if errors.Is(err, os.ErrNotExist) {
		return GenerateSigningKey(path)
	}
	return k, err
}

// Snapshots.

// Snapshot is a loaded, verified snapshot index.
type Snapshot struct {
	ID string `json:"id"`
	SnapshotIndex
	// Signer is the base64 public key that signed it ("" if unsigned).
	Signer string `json:"signer"`
	// Trusted says the signature verified against a trusted key.
	Trusted bool `json:"trusted"`
}

// Trust says which signing keys a reader accepts.
type Trust struct {
	// Keys are pinned keys (base64). When empty, the config's signers are
	// trusted.
	Keys []string
	// AllowUnsigned accepts snapshots with a missing or bad signature (for
	// recovery only).
	AllowUnsigned bool
}

func (r *Repository) trusted(t Trust, key string) bool {
	keys := t.Keys
	if len(keys) == 0 {
		for _, s := range r.Config.Signers {
			keys = append(keys, s.PublicKey)
		}
	}
	for _, k := range keys {
		if k == key {
			return true
		}
	}
	return false
}

// ParseSignedIndex parses a stored snapshot object and verifies its
// signature (the key is not judged here). It returns the index, the signer
// and whether the signature verifies.
func ParseSignedIndex(data []byte) (*SnapshotIndex, string, bool, error) {
	var si SignedIndex
	if err := json.Unmarshal(data, &si); err != nil {
		return nil, "", false, fmt.Errorf("invalid snapshot JSON: %w", err)
	}
	var idx SnapshotIndex
	if err := json.Unmarshal(si.Index, &idx); err != nil {
		return nil, "", false, fmt.Errorf("invalid snapshot index: %w", err)
	}
	if idx.Version != FormatVersion {
		return nil, "", false, fmt.Errorf("snapshot format version %d is not supported", idx.Version)
	}
	if !validHash(idx.Manifest.Name) {
		return nil, "", false, errors.New("snapshot names an invalid manifest")
	}
	for _, o := range idx.Objects {
		if !validHash(o.Name) || o.Size < 0 {
			return nil, "", false, errors.New("snapshot names an invalid object")
		}
	}
	ok := false
	if pub, err := base64.StdEncoding.DecodeString(si.Signer); err == nil && len(pub) == ed25519.PublicKeySize {
		if sig, err := base64.StdEncoding.DecodeString(si.Signature); err == nil {
			ok = ed25519.Verify(pub, si.Index, sig)
		}
	}
	return &idx, si.Signer, ok, nil
}

func validHash(s string) bool {
	if len(s) != 64 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil && strings.ToLower(s) == s
}

// LoadSnapshot reads snapshot id and checks that its content matches its
// name and its signature is trusted (unless t.AllowUnsigned).
func (r *Repository) LoadSnapshot(ctx context.Context, id string, t Trust) (*Snapshot, error) {
	data, err := readAll(ctx, r.Backend, Handle{Type: SnapshotFile, Name: id}, maxIndexSize)
	if err != nil {
		return nil, fmt.Errorf("reading snapshot %s: %w", short(id), err)
	}
	if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != id {
		return nil, fmt.Errorf("snapshot %s: content does not match its name (damaged or replaced)", short(id))
	}
	idx, signer, ok, err := ParseSignedIndex(data)
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", short(id), err)
	}
	if idx.Repository != r.Config.ID {
		return nil, fmt.Errorf("snapshot %s belongs to another repository", short(id))
	}
	s := &Snapshot{ID: id, SnapshotIndex: *idx, Signer: signer, Trusted: ok && r.trusted(t, signer)}
	if !s.Trusted && !t.AllowUnsigned {
		return nil, fmt.Errorf("snapshot %s: %w", short(id), ErrUntrustedSignature)
	}
	return s, nil
}

// SnapshotIDs lists the IDs of all snapshots.
func (r *Repository) SnapshotIDs(ctx context.Context) ([]string, error) {
	var ids []string
	err := r.Backend.List(ctx, SnapshotFile, func(fi FileInfo) error {
		if validHash(fi.Name) {
			ids = append(ids, fi.Name)
		}
		return nil
	})
	sort.Strings(ids)
	return ids, err
}

// Snapshots loads every snapshot, oldest first. Snapshots that fail to
// load are returned as errors beside the rest.
func (r *Repository) Snapshots(ctx context.Context, t Trust) ([]*Snapshot, []error, error) {
	ids, err := r.SnapshotIDs(ctx)
	if err != nil {
		return nil, nil, err
	}
	var snaps []*Snapshot
	var errs []error
	for _, id := range ids {
		s, err := r.LoadSnapshot(ctx, id, t)
		if err != nil {
			if ctx.Err() != nil {
				return nil, nil, ctx.Err()
			}
			errs = append(errs, err)
			continue
		}
		snaps = append(snaps, s)
	}
	sort.SliceStable(snaps, func(i, j int) bool { return snaps[i].Time.Before(snaps[j].Time) })
	return snaps, errs, nil
}

// ErrAmbiguous: a snapshot prefix matches more than one snapshot.
var ErrAmbiguous = errors.New("ambiguous snapshot prefix")

// FindSnapshot resolves an ID, a unique prefix of one, or "latest" (the
// newest trusted snapshot, optionally of one host).
func (r *Repository) FindSnapshot(ctx context.Context, ref, host string, t Trust) (*Snapshot, error) {
	if ref == "latest" {
		snaps, errs, err := r.Snapshots(ctx, t)
		if err != nil {
			return nil, err
		}
		for i := len(snaps) - 1; i >= 0; i-- {
			if host == "" || snaps[i].Host == host {
				return snaps[i], nil
			}
		}
		untrusted := 0
		for _, e := range errs {
			if errors.Is(e, ErrUntrustedSignature) {
				untrusted++
			}
		}
		if untrusted > 0 {
			return nil, fmt.Errorf("no trusted snapshot in %s (%d not trusted): %w", r.Backend.Location(), untrusted, ErrUntrustedSignature)
		}
		return nil, fmt.Errorf("no snapshot in %s: %w", r.Backend.Location(), ErrNotFound)
	}
	ids, err := r.SnapshotIDs(ctx)
	if err != nil {
		return nil, err
	}
	var match []string
	for _, id := range ids {
		if strings.HasPrefix(id, strings.ToLower(ref)) {
			match = append(match, id)
		}
	}
	switch {
	case len(match) == 0 || ref == "":
		return nil, fmt.Errorf("snapshot %q: %w", ref, ErrNotFound)
	case len(match) > 1:
		return nil, fmt.Errorf("snapshot %q: %w (%d match)", ref, ErrAmbiguous, len(match))
	}
	return r.LoadSnapshot(ctx, match[0], t)
}

// LoadManifest reads, checks and decrypts a snapshot's manifest.
func (r *Repository) LoadManifest(ctx context.Context, s *Snapshot, ids []age.Identity) (*Manifest, error) {
	data, err := readAll(ctx, r.Backend, Handle{Type: ManifestFile, Name: s.Manifest.Name}, maxManifestSize)
	if err != nil {
		return nil, fmt.Errorf("reading the manifest of snapshot %s: %w", short(s.ID), err)
	}
	if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != s.Manifest.Name {
		return nil, fmt.Errorf("manifest %s of snapshot %s is damaged (hash mismatch)", short(s.Manifest.Name), short(s.ID))
	}
	var plain bytes.Buffer
	if _, err := filecrypt.Decrypt(ctx, &plain, bytes.NewReader(data), "manifest "+short(s.Manifest.Name), filecrypt.DecryptOptions{Identities: ids}); err != nil {
		return nil, err
	}
	m, err := ParseManifest(plain.Bytes())
	if err != nil {
		return nil, fmt.Errorf("manifest of snapshot %s: %w", short(s.ID), err)
	}
	if m.Repository != r.Config.ID {
		return nil, fmt.Errorf("manifest of snapshot %s belongs to another repository", short(s.ID))
	}
	return m, nil
}

// ParseManifest parses and checks a decrypted manifest.
func ParseManifest(data []byte) (*Manifest, error) {
	var m Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("invalid manifest JSON: %w", err)
	}
	if m.Version != FormatVersion {
		return nil, fmt.Errorf("manifest format version %d is not supported", m.Version)
	}
	for i, e := range m.Entries {
		if e.Path == "" || strings.Contains(e.Path, "\x00") {
			return nil, fmt.Errorf("entry %d: invalid path", i)
		}
		for _, part := range strings.Split(e.Path, "/") {
			if part == ".." {
				return nil, fmt.Errorf("entry %d: path with a .. element", i)
			}
		}
		switch e.Type {
		case TypeFile:
			if e.Size < 0 || !validHash(e.Object) || len(e.SHA256) != 64 || e.Member == "" {
				return nil, fmt.Errorf("entry %d (%q): file without a valid object, hash or member", i, e.Path)
			}
		case TypeStream:
			if e.Size < 0 || len(e.SHA256) != 64 || (e.Size > 0 && len(e.Parts) == 0) {
				return nil, fmt.Errorf("entry %d (%q): stream without a hash or parts", i, e.Path)
			}
			for _, p := range e.Parts {
				if !validHash(p.Object) || p.Member == "" || p.Size < 0 {
					return nil, fmt.Errorf("entry %d (%q): invalid stream part", i, e.Path)
				}
			}
		case TypeDir, TypeSymlink, TypeHardlink, TypeFIFO:
		default:
			return nil, fmt.Errorf("entry %d: unknown type %q", i, e.Type)
		}
	}
	return &m, nil
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
