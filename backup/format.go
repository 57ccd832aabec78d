package backup

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"time"
	"unicode/utf8"
)

// FormatVersion is the repository format this package writes and reads
// (docs/backup-format.md).
const FormatVersion = 1

// Config is the repository's config object: plaintext JSON, holding no
// secret.
type Config struct {
	// Version is the format version (1).
	Version int `json:"version"`
	// ID is the repository ID: 32 random bytes, hex.
	ID string `json:"id"`
	// Created is when the repository was initialised.
	Created time.Time `json:"created"`
	// Recipients are the age recipients every object is encrypted to.
	Recipients []string `json:"recipients"`
	// Compression is the compression of data objects: "zstd".
	Compression string `json:"compression"`
	// CompressionLevel is the zstd level writers use: "fastest" (about
	// zstd -1; the default), "default" (-3), "better" (-7) or "best"
	// (-11). Readers need not know it.
	CompressionLevel string `json:"compression_level,omitempty"`
	// ObjectSize is the target size of a data object before compression,
	// in bytes; objects are split at file boundaries.
	ObjectSize int64 `json:"object_size"`
	// Signers are the Ed25519 public keys of the hosts that write
	// snapshots. Verification trusts these unless keys are pinned
	// locally (see docs/backup-format.md: a storage provider can edit
	// this list).
	Signers []Signer `json:"signers"`
}

// Signer is a host's signing public key.
type Signer struct {
	Host      string    `json:"host"`
	PublicKey string    `json:"public_key"` // base64 Ed25519 public key
	Added     time.Time `json:"added"`
}

// ObjectRef names a stored object and its size.
type ObjectRef struct {
	Name string `json:"name"`
	Size int64  `json:"size"`
}

// Totals count what a snapshot holds and what a run stored.
type Totals struct {
	Files       int   `json:"files"`
	Dirs        int   `json:"dirs"`
	Bytes       int64 `json:"bytes"`
	NewFiles    int   `json:"new_files"`
	NewBytes    int64 `json:"new_bytes"`
	NewObjects  int   `json:"new_objects"`
	StoredBytes int64 `json:"stored_bytes"` // ciphertext bytes of new objects
}

// SnapshotIndex is the plaintext part of a snapshot: what a host needs to
// apply retention and prune without any private key. It names the
// encrypted manifest and every data object by hash, so its signature
// covers them all.
type SnapshotIndex struct {
	Version         int         `json:"version"`
	Repository      string      `json:"repository"`
	Time            time.Time   `json:"time"`
	EndTime         time.Time   `json:"end_time"`
	Host            string      `json:"host"`
	Paths           []string    `json:"paths"`
	Tags            []string    `json:"tags,omitempty"`
	Manifest        ObjectRef   `json:"manifest"`
	Objects         []ObjectRef `json:"objects"`
	Totals          Totals      `json:"totals"`
	NhscryptVersion string      `json:"nhscrypt_version"`
}

// SignedIndex is the stored snapshot object: the index bytes exactly as
// signed, the signer's public key and the Ed25519 signature over Index.
type SignedIndex struct {
	Index     json.RawMessage `json:"index"`
	Signer    string          `json:"signer,omitempty"`    // base64 Ed25519 public key
	Signature string          `json:"signature,omitempty"` // base64
}

// Manifest is the encrypted part of a snapshot: every file.
type Manifest struct {
	Version         int       `json:"version"`
	Repository      string    `json:"repository"`
	Host            string    `json:"host"`
	Paths           []string  `json:"paths"`
	Tags            []string  `json:"tags,omitempty"`
	Start           time.Time `json:"start"`
	End             time.Time `json:"end"`
	Totals          Totals    `json:"totals"`
	NhscryptVersion string    `json:"nhscrypt_version"`
	Entries         []Entry   `json:"entries"`
}

// Entry types.
const (
	TypeFile     = "file"
	TypeDir      = "dir"
	TypeSymlink  = "symlink"
	TypeHardlink = "hardlink" // another path of a file stored once; Link names it
	TypeFIFO     = "fifo"
	TypeStream   = "stream" // a backed-up stream (--stdin-name)
)

// Entry is one file in a manifest.
type Entry struct {
	// Path is the absolute path as backed up (bytes; see MarshalJSON).
	Path  string    `json:"-"`
	Type  string    `json:"type"`
	Mode  uint32    `json:"mode"` // permission bits plus setuid/setgid/sticky
	UID   int       `json:"uid"`
	GID   int       `json:"gid"`
	MTime time.Time `json:"mtime"`
	Size  int64     `json:"size"`
	// SHA256 is the hex SHA-256 of the content (files and streams).
	SHA256 string `json:"sha256,omitempty"`
	// Link is a symlink's target or a hard link's first path.
	Link string `json:"-"`
	// Object is the data object holding the content; Offset is the offset
	// of the file's tar header in the object's uncompressed tar stream and
	// Member its name in the tar.
	Object string `json:"object,omitempty"`
	Offset int64  `json:"offset,omitempty"`
	Member string `json:"-"`
	// Sparse is set when the file had holes; restore recreates them.
	Sparse bool `json:"sparse,omitempty"`
	// Parts hold a stream's content, in order, when it is stored in
	// several tar members (a stream's size is not known in advance).
	Parts []Part `json:"parts,omitempty"`
}

// Part is one stored piece of a stream.
type Part struct {
	Object string `json:"object"`
	Offset int64  `json:"offset"`
	Member string `json:"member"`
	Size   int64  `json:"size"`
}

// plainEntry is Entry without its JSON methods. Paths, links and member
// names are written as strings, or as base64 (path_b64, link_b64,
// member_b64) when they are not UTF-8: JSON strings must be, Linux paths
// need not be.
type plainEntry Entry

// MarshalJSON writes paths as strings, or base64 when not valid UTF-8.
func (e Entry) MarshalJSON() ([]byte, error) {
	j := struct {
		plainEntry
		Path      string `json:"path,omitempty"`
		PathB64   string `json:"path_b64,omitempty"`
		Link      string `json:"link,omitempty"`
		LinkB64   string `json:"link_b64,omitempty"`
		Member    string `json:"member,omitempty"`
		MemberB64 string `json:"member_b64,omitempty"`
	}{plainEntry: plainEntry(e)}
	j.Path, j.PathB64 = splitUTF8(e.Path)
	j.Link, j.LinkB64 = splitUTF8(e.Link)
	j.Member, j.MemberB64 = splitUTF8(e.Member)
	return json.Marshal(j)
}

// UnmarshalJSON reads what MarshalJSON writes.
func (e *Entry) UnmarshalJSON(b []byte) error {
	var j struct {
		plainEntry
		Path      string `json:"path"`
		PathB64   string `json:"path_b64"`
		Link      string `json:"link"`
		LinkB64   string `json:"link_b64"`
		Member    string `json:"member"`
		MemberB64 string `json:"member_b64"`
	}
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*e = Entry(j.plainEntry)
	var err error
	if e.Path, err = joinUTF8(j.Path, j.PathB64); err != nil {
		return fmt.Errorf("path: %w", err)
	}
	if e.Link, err = joinUTF8(j.Link, j.LinkB64); err != nil {
		return fmt.Errorf("link: %w", err)
	}
	if e.Member, err = joinUTF8(j.Member, j.MemberB64); err != nil {
		return fmt.Errorf("member: %w", err)
	}
	return nil
}

func splitUTF8(s string) (plain, b64 string) {
	if utf8.ValidString(s) {
		return s, ""
	}
	return "", base64.StdEncoding.EncodeToString([]byte(s))
}

func joinUTF8(plain, b64 string) (string, error) {
	if b64 == "" {
		return plain, nil
	}
	if plain != "" {
		return "", fmt.Errorf("both plain and base64 forms given")
	}
	b, err := base64.StdEncoding.DecodeString(b64)
	return string(b), err
}
