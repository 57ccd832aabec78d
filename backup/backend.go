package backup

import (
	"context"
	"errors"
	"io"
	"time"
)

// FileType is the kind of object in a repository; each lives in its own
// folder (or key prefix).
type FileType string

// Object kinds.
const (
	ConfigFile   FileType = "config"    // the repository config (one object, "config")
	SnapshotFile FileType = "snapshots" // signed plaintext snapshot indexes
	ManifestFile FileType = "manifests" // age-encrypted manifests
	DataFile     FileType = "data"      // age(zstd(tar)) data objects
)

// Handle names one object.
type Handle struct {
	Type FileType
	Name string
}

// FileInfo describes a stored object.
type FileInfo struct {
	Name    string
	Size    int64
	ModTime time.Time
}

// Backend stores a repository's objects. It is the only thing that differs
// between a local folder, SFTP and S3. Implementations are safe for
// concurrent use. Every method takes ctx first and stops when it is
// cancelled.
type Backend interface {
	// Location names the backend for messages (never with credentials).
	Location() string
	// Save stores an object of the given size read from r. The object
	// becomes visible under its name only once complete and durable; a
	// failed or cancelled Save leaves nothing under the name. Saving a name
	// that exists replaces it only for the config; for content-named
	// objects it is a no-op success if the size matches.
	Save(ctx context.Context, h Handle, size int64, r io.Reader) error
	// Open reads length bytes at offset (length 0: to the end). It returns
	// an error wrapping ErrNotFound for a missing object.
	Open(ctx context.Context, h Handle, offset, length int64) (io.ReadCloser, error)
	// Stat describes an object, or returns an error wrapping ErrNotFound.
	Stat(ctx context.Context, h Handle) (FileInfo, error)
	// List calls fn for every object of type t, in no particular order.
	List(ctx context.Context, t FileType, fn func(FileInfo) error) error
	// Remove deletes an object; removing a missing one wraps ErrNotFound.
	Remove(ctx context.Context, h Handle) error
	// Close releases the backend.
	Close() error
}

// ErrNotFound is wrapped by backends for missing objects and repositories.
var ErrNotFound = errors.New("not found")

// ErrAuth is wrapped by backends for authentication and authorisation
// failures (bad credentials, unknown host key, access denied): never
// retried, exit 10.
var ErrAuth = errors.New("authentication failed")

// Transient is implemented by errors a backend knows to be temporary (a
// server's 5xx, a throttling response).
type Transient interface{ Transient() bool }

// ErrObjectLocked is wrapped by backends when an object cannot be deleted
// because of an object lock (retention) that has not ended: prune and
// forget report it and carry on.
var ErrObjectLocked = errors.New("object is under an object lock and cannot be deleted yet")

// RetentionExtender is implemented by backends with object lock: a new
// snapshot extends the lock of every object it reuses, so a recent
// snapshot never points at objects whose lock has run out.
type RetentionExtender interface {
	ExtendRetention(ctx context.Context, h Handle) error
}
