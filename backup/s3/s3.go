// Package s3 is the backup backend for a repository in S3-compatible object
// storage (AWS S3, or an on-premises store such as MinIO, Ceph RGW or
// versitygw), named by a URL:
//
//	s3://host[:port]/bucket[/prefix]       HTTPS
//	s3+http://host[:port]/bucket[/prefix]  plain HTTP (test servers only)
//
// Objects live under the prefix as config, snapshots/ID, manifests/ID and
// data/XX/ID (XX: the first two characters of ID), the same layout as a
// local repository, so `aws s3 sync` of a repository gives a folder that
// the local backend opens.
//
// # Uploads and integrity
//
// Save streams any object, of known or unknown size, through at most
// Options.Concurrency buffers of Options.PartSize bytes shared by the whole
// Backend, so memory stays bounded however large the object and however
// many Saves run at once. An object that fits in one part is one PUT; a
// larger one is a multipart upload whose parts go up in parallel. A failed
// or cancelled Save aborts its multipart upload, so nothing appears under
// the name (a bucket lifecycle rule AbortIncompleteMultipartUpload cleans
// the parts of uploads that could not be aborted, such as when the server
// went away).
//
// What is checked, for every PUT and part: the request is signed over the
// SHA-256 of its body (x-amz-content-sha256, SigV4 signed payload, never
// UNSIGNED-PAYLOAD or streaming chunks) and carries the same SHA-256 as
// x-amz-checksum-sha256, so the server refuses a body that changed on the
// way. The SHA-256 the server reports for what it stored (the object's
// checksum for a single PUT; each part's, and the composite
// SHA-256-of-part-SHA-256s, for a multipart upload) must equal the one
// computed locally, or Save fails. Data and manifest objects (and
// snapshots) are named by the SHA-256 of their ciphertext: for a name of
// 64 hex digits Save also checks the whole stream hashes to the name
// before it completes the upload, so a spool file that changed between
// hashing and upload is never stored under the wrong name. Servers that
// do not implement S3 checksums (they report none) get the signed-payload
// check only.
//
// # Object lock
//
// With Options.Retention every object written carries an object lock
// (x-amz-object-lock-mode and -retain-until-date) in governance or
// compliance mode. The bucket must have been created with object lock
// enabled (which also enables versioning); Open checks this. Until the
// retention date the server refuses to delete or overwrite the stored
// version, whoever asks: ransomware holding the server's S3 credentials
// cannot destroy recent backups. Remove deletes every version of an
// object and returns a *LockedError (matching ErrLocked) while one is
// still locked, which backup.Repository.Prune reports in
// PruneResult.NotRemoved ("could not delete yet") rather than failing.
//
// # Errors
//
// Every error names the object and the repository URL (never with
// credentials). Missing buckets and objects wrap backup.ErrNotFound;
// refused credentials, access denied and an untrusted TLS certificate wrap
// backup.ErrAuth; 5xx replies, throttling, timeouts and broken
// connections implement backup.Transient, so the retry decorator
// (backup/retry) retries them.
package s3

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/nhscrypt/nhscrypt/backup"
)

// Defaults for Options.
const (
	DefaultPartSize    = 16 << 20
	DefaultConcurrency = 4
	DefaultTimeout     = 2 * time.Minute
	// MinPartSize is S3's smallest part (but the last).
	MinPartSize = 5 << 20
)

// RetentionMode is an object-lock mode.
type RetentionMode string

// Object-lock modes. In governance mode a user granted
// s3:BypassGovernanceRetention can still delete early (nhscrypt never
// asks to); in compliance mode nobody can, the root account included,
// until the date passes.
const (
	Governance RetentionMode = "GOVERNANCE"
	Compliance RetentionMode = "COMPLIANCE"
)

// ParseRetentionMode parses "governance" or "compliance" (any case).
func ParseRetentionMode(s string) (RetentionMode, error) {
	switch m := RetentionMode(strings.ToUpper(s)); m {
	case Governance, Compliance:
		return m, nil
	}
	return "", fmt.Errorf("unknown object-lock mode %q (want governance or compliance)", s)
}

// Retention is the object lock set on every object written. Set exactly
// one of Until and Days.
type Retention struct {
	Mode RetentionMode
	// Until is a fixed date every object is kept until (--retain-until).
	Until time.Time
	// Days keeps each object for this many days from its upload
	// (--retain-days).
	Days int
}

func (r *Retention) validate() error {
	if r.Mode != Governance && r.Mode != Compliance {
		return fmt.Errorf("unknown object-lock mode %q (want governance or compliance)", r.Mode)
	}
	switch {
	case r.Days < 0:
		return fmt.Errorf("retention of %d days", r.Days)
	case r.Days > 0 && !r.Until.IsZero():
		return errors.New("retention needs a date or a number of days, not both")
	case r.Days == 0 && r.Until.IsZero():
		return errors.New("retention needs a date or a number of days")
	case !r.Until.IsZero() && !r.Until.After(time.Now()):
		return fmt.Errorf("retention date %s is in the past", r.Until.UTC().Format(time.RFC3339))
	}
	return nil
}

// until is the retain-until date for an object written now.
func (r *Retention) until(now time.Time) time.Time {
	if r.Days > 0 {
		return now.Add(time.Duration(r.Days) * 24 * time.Hour).UTC().Truncate(time.Second)
	}
	return r.Until.UTC()
}

// Options configure a Backend. The zero value is usable apart from
// Credentials.
type Options struct {
	// Credentials sign every request. Build them with DefaultCredentials
	// (the environment, ~/.aws/credentials and the EC2/ECS/EKS role, the
	// way every S3 tool reads them) or, in tests, with
	// credentials.NewStaticV4. Nil sends anonymous requests.
	Credentials *credentials.Credentials
	// Region is the bucket's region; empty asks the server (AWS) or uses
	// us-east-1 (most other servers).
	Region string
	// StorageClass, if set, is sent with every object (STANDARD,
	// STANDARD_IA, GLACIER_IR, …; what a server accepts is its own).
	StorageClass string
	// Retention, if set, locks every object written (object lock).
	Retention *Retention
	// PartSize is the size of each part of a multipart upload, and of the
	// buffers uploads go through (default 16 MiB, at least 5 MiB). Objects
	// up to this size go up in one PUT.
	PartSize uint64
	// Concurrency bounds the parts (and single PUTs) uploading at once
	// across all Saves of the Backend (default 4). Memory for uploads is
	// at most Concurrency × PartSize.
	Concurrency int
	// Timeout bounds connecting and waiting for each reply (default 2
	// minutes); it does not cut off a long transfer that is making
	// progress.
	Timeout time.Duration
	// Transport, if set, replaces the HTTP transport (for a custom CA
	// pool, say); Timeout then does not apply to it.
	Transport http.RoundTripper
}

// Backend is a repository in an S3 bucket. It is safe for concurrent use.
type Backend struct {
	core     *minio.Core
	bucket   string
	prefix   string // "" or ending in "/"
	loc      string
	opts     Options
	slots    chan struct{}
	free     chan []byte
	partSize int
	tr       http.RoundTripper
}

var _ backup.Backend = (*Backend)(nil)

// Open returns the backend for the repository at u, an s3:// (HTTPS) or
// s3+http:// (plain HTTP) URL. It checks, with one request, that the
// bucket exists and the credentials may use it (errors wrap
// backup.ErrNotFound or backup.ErrAuth), and with Options.Retention that
// the bucket has object lock enabled. It never creates buckets: a bucket
// for backups is created once by an administrator, with object lock
// chosen at creation, and the server's credentials need not be allowed to
// create buckets.
func Open(ctx context.Context, u *url.URL, opts Options) (*Backend, error) {
	secure, bucket, prefix, err := parseURL(u)
	if err != nil {
		return nil, err
	}
	loc := location(u.Scheme, u.Host, bucket, prefix)
	if opts.PartSize == 0 {
		opts.PartSize = DefaultPartSize
	}
	if opts.PartSize < MinPartSize || opts.PartSize > 5<<30 {
		return nil, fmt.Errorf("S3 part size %d is outside 5 MiB to 5 GiB", opts.PartSize)
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = DefaultConcurrency
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.Retention != nil {
		if err := opts.Retention.validate(); err != nil {
			return nil, err
		}
	}
	tr := opts.Transport
	if tr == nil {
		t, err := minio.DefaultTransport(secure)
		if err != nil {
			return nil, err
		}
		t.DialContext = (&net.Dialer{Timeout: min(opts.Timeout, 30*time.Second), KeepAlive: 30 * time.Second}).DialContext
		t.TLSHandshakeTimeout = min(opts.Timeout, 30*time.Second)
		t.ResponseHeaderTimeout = opts.Timeout
		t.MaxIdleConnsPerHost = opts.Concurrency + 16
		tr = t
	}
	creds := opts.Credentials
	if creds == nil {
		creds = credentials.New(&credentials.Static{Value: credentials.Value{SignerType: credentials.SignatureAnonymous}})
	}
	core, err := minio.NewCore(u.Host, &minio.Options{
		Creds:        creds,
		Secure:       secure,
		Region:       opts.Region,
		Transport:    tr,
		BucketLookup: minio.BucketLookupAuto,
		// A few quick retries of one request (a part, a HEAD) inside
		// minio-go; longer outages are for the retry decorator.
		MaxRetries: 3,
	})
	if err != nil {
		return nil, fmt.Errorf("S3 repository %s: %w", loc, err)
	}
	b := &Backend{
		core: core, bucket: bucket, prefix: prefix, loc: loc, opts: opts,
		slots:    make(chan struct{}, opts.Concurrency),
		free:     make(chan []byte, opts.Concurrency),
		partSize: int(opts.PartSize),
		tr:       tr,
	}
	if err := b.checkBucket(ctx); err != nil {
		return nil, err
	}
	return b, nil
}

func parseURL(u *url.URL) (secure bool, bucket, prefix string, err error) {
	switch u.Scheme {
	case "s3":
		secure = true
	case "s3+http":
	default:
		return false, "", "", fmt.Errorf("%q is not an s3:// or s3+http:// URL", u.Redacted())
	}
	if u.User != nil {
		return false, "", "", fmt.Errorf("S3 URL %q holds credentials: give them in the environment or ~/.aws/credentials", u.Redacted())
	}
	if u.Host == "" || u.Hostname() == "" {
		return false, "", "", fmt.Errorf("S3 URL %q has no host", u.Redacted())
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return false, "", "", fmt.Errorf("S3 URL %q: unexpected query or fragment", u.Redacted())
	}
	p := strings.TrimPrefix(u.Path, "/")
	bucket, prefix, _ = strings.Cut(p, "/")
	if bucket == "" {
		return false, "", "", fmt.Errorf("S3 URL %q names no bucket (s3://host/bucket[/prefix])", u.Redacted())
	}
	prefix = strings.Trim(prefix, "/")
	if prefix != "" {
		for _, seg := range strings.Split(prefix, "/") {
			if seg == "" || seg == "." || seg == ".." {
				return false, "", "", fmt.Errorf("S3 URL %q: bad prefix %q", u.Redacted(), prefix)
			}
		}
		prefix += "/"
	}
	return secure, bucket, prefix, nil
}

func location(scheme, host, bucket, prefix string) string {
	l := scheme + "://" + host + "/" + bucket
	if prefix != "" {
		l += "/" + strings.TrimSuffix(prefix, "/")
	}
	return l
}

// checkBucket checks the bucket exists, and has object lock when
// retention is asked for.
func (b *Backend) checkBucket(ctx context.Context) error {
	ok, err := b.core.BucketExists(ctx, b.bucket)
	if err != nil {
		return b.fail(ctx, fmt.Sprintf("opening S3 repository %s", b.loc), err)
	}
	if !ok {
		return fmt.Errorf("opening S3 repository %s: bucket %q does not exist (create it first, with object lock for retention): %w", b.loc, b.bucket, backup.ErrNotFound)
	}
	if b.opts.Retention != nil {
		status, _, _, _, err := b.core.GetObjectLockConfig(ctx, b.bucket)
		if err != nil {
			var er minio.ErrorResponse
			if errors.As(err, &er) && (er.Code == "ObjectLockConfigurationNotFoundError" || er.StatusCode == http.StatusNotFound) {
				return fmt.Errorf("S3 repository %s: retention needs object lock, and bucket %q was not created with object lock enabled", b.loc, b.bucket)
			}
			return b.fail(ctx, fmt.Sprintf("reading the object-lock configuration of %s", b.loc), err)
		}
		if status != "Enabled" {
			return fmt.Errorf("S3 repository %s: retention needs object lock, and bucket %q does not have it enabled", b.loc, b.bucket)
		}
	}
	return nil
}

// Create readies a new repository: the bucket exists (Open checked) and
// holds no config under the prefix yet. There are no folders to make in
// S3. It fails, wrapping fs.ErrExist, if a repository is already there.
func (b *Backend) Create(ctx context.Context) error {
	_, err := b.Stat(ctx, backup.Handle{Type: backup.ConfigFile, Name: "config"})
	if err == nil {
		return fmt.Errorf("%s already holds a repository: %w", b.loc, fs.ErrExist)
	}
	if !errors.Is(err, backup.ErrNotFound) {
		return err
	}
	return nil
}

// Location is the repository URL, without credentials.
func (b *Backend) Location() string { return b.loc }

// Bucket is the bucket name.
func (b *Backend) Bucket() string { return b.bucket }

// Key is the object key that holds h (for messages and tools).
func (b *Backend) Key(h backup.Handle) string {
	switch {
	case h.Type == backup.ConfigFile:
		return b.prefix + "config"
	case h.Type == backup.DataFile && len(h.Name) > 2:
		return b.prefix + "data/" + h.Name[:2] + "/" + h.Name
	}
	return b.prefix + string(h.Type) + "/" + h.Name
}

func validName(h backup.Handle) error {
	switch h.Type {
	case backup.ConfigFile:
		return nil
	case backup.SnapshotFile, backup.ManifestFile, backup.DataFile:
	default:
		return fmt.Errorf("unknown object type %q", h.Type)
	}
	if h.Name == "" || h.Name == "." || h.Name == ".." || strings.ContainsAny(h.Name, "/\\") {
		return fmt.Errorf("invalid object name %q", h.Name)
	}
	if !utf8.ValidString(h.Name) || len(h.Name) > 255 {
		return fmt.Errorf("invalid object name %q", h.Name)
	}
	for _, r := range h.Name {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("invalid object name %q", h.Name)
		}
	}
	return nil
}

// label names an object in messages: data/0123456789ab….
func label(h backup.Handle) string {
	if h.Type == backup.ConfigFile {
		return "config"
	}
	n := h.Name
	if len(n) == 64 {
		n = n[:12] + "…"
	}
	return string(h.Type) + "/" + n
}

// contentNamed reports whether h is named by the SHA-256 of its content.
func contentNamed(h backup.Handle) bool {
	if h.Type == backup.ConfigFile || len(h.Name) != 64 {
		return false
	}
	_, err := hex.DecodeString(h.Name)
	return err == nil && strings.ToLower(h.Name) == h.Name
}

// Save stores the object read from r: size bytes, or -1 for a stream of
// unknown size. A content-named object already stored with the same size
// is not uploaded again. See the package documentation for what is
// checked.
func (b *Backend) Save(ctx context.Context, h backup.Handle, size int64, r io.Reader) error {
	if err := validName(h); err != nil {
		return err
	}
	op := fmt.Sprintf("saving %s to %s", label(h), b.loc)
	if h.Type != backup.ConfigFile && size >= 0 {
		info, err := b.core.StatObject(ctx, b.bucket, b.Key(h), minio.StatObjectOptions{})
		if err == nil && info.Size == size {
			return nil
		}
		if err != nil && classify(ctx, err) != kindNotFound {
			return b.fail(ctx, op, err)
		}
	}
	if err := b.upload(ctx, h, size, r); err != nil {
		return b.fail(ctx, op, err)
	}
	return nil
}

// Open reads length bytes of the object from offset (length 0: to the
// end).
func (b *Backend) Open(ctx context.Context, h backup.Handle, offset, length int64) (io.ReadCloser, error) {
	if err := validName(h); err != nil {
		return nil, err
	}
	if offset < 0 || length < 0 {
		return nil, fmt.Errorf("reading %s: invalid range %d+%d", label(h), offset, length)
	}
	var opts minio.GetObjectOptions
	switch {
	case length > 0:
		opts.SetRange(offset, offset+length-1)
	case offset > 0:
		opts.SetRange(offset, 0)
	}
	op := fmt.Sprintf("reading %s from %s", label(h), b.loc)
	rc, _, _, err := b.core.GetObject(ctx, b.bucket, b.Key(h), opts)
	if err != nil {
		return nil, b.fail(ctx, op, err)
	}
	return &objectReader{rc: rc, b: b, ctx: ctx, op: op}, nil
}

// objectReader names the object in errors from the body.
type objectReader struct {
	rc  io.ReadCloser
	b   *Backend
	ctx context.Context
	op  string
}

func (o *objectReader) Read(p []byte) (int, error) {
	n, err := o.rc.Read(p)
	if err != nil && err != io.EOF {
		err = o.b.fail(o.ctx, o.op, err)
	}
	return n, err
}

func (o *objectReader) Close() error { return o.rc.Close() }

// Stat describes the object.
func (b *Backend) Stat(ctx context.Context, h backup.Handle) (backup.FileInfo, error) {
	if err := validName(h); err != nil {
		return backup.FileInfo{}, err
	}
	info, err := b.core.StatObject(ctx, b.bucket, b.Key(h), minio.StatObjectOptions{})
	if err != nil {
		return backup.FileInfo{}, b.fail(ctx, fmt.Sprintf("reading the size of %s in %s", label(h), b.loc), err)
	}
	return backup.FileInfo{Name: h.Name, Size: info.Size, ModTime: info.LastModified}, nil
}

// List calls fn for every object of type t.
func (b *Backend) List(ctx context.Context, t backup.FileType, fn func(backup.FileInfo) error) error {
	if err := validName(backup.Handle{Type: t, Name: "x"}); err != nil {
		return err
	}
	dir := b.prefix + string(t) + "/"
	if t == backup.ConfigFile {
		dir = b.prefix
	}
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	op := fmt.Sprintf("listing %s in %s", t, b.loc)
	for obj := range b.core.Client.ListObjects(lctx, b.bucket, minio.ListObjectsOptions{Prefix: dir, Recursive: t != backup.ConfigFile}) {
		if obj.Err != nil {
			return b.fail(ctx, op, obj.Err)
		}
		rel := strings.TrimPrefix(obj.Key, dir)
		if rel == "" || strings.HasSuffix(rel, "/") {
			continue
		}
		name := path.Base(rel)
		switch {
		case t == backup.ConfigFile:
			if rel != "config" {
				continue
			}
		case t == backup.DataFile && len(name) > 2:
			if rel != name[:2]+"/"+name {
				continue // not where Save puts it
			}
		case rel != name:
			continue
		}
		if err := fn(backup.FileInfo{Name: name, Size: obj.Size, ModTime: obj.LastModified}); err != nil {
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

// Remove deletes the object: every version of it, in a versioned bucket.
// It returns an error wrapping backup.ErrNotFound when there is none, and
// a *LockedError (matching ErrLocked) when the server refuses because a
// version is under object lock or legal hold.
func (b *Backend) Remove(ctx context.Context, h backup.Handle) error {
	if err := validName(h); err != nil {
		return err
	}
	key := b.Key(h)
	op := fmt.Sprintf("removing %s from %s", label(h), b.loc)
	info, err := b.core.StatObject(ctx, b.bucket, key, minio.StatObjectOptions{})
	if err != nil {
		return b.fail(ctx, op, err)
	}
	versions := []string{info.VersionID}
	if info.VersionID != "" && info.VersionID != "null" {
		// A versioned bucket: delete every version (and delete marker)
		// of exactly this key, newest first.
		versions = versions[:0]
		lctx, cancel := context.WithCancel(ctx)
		defer cancel()
		for obj := range b.core.Client.ListObjects(lctx, b.bucket, minio.ListObjectsOptions{Prefix: key, WithVersions: true}) {
			if obj.Err != nil {
				return b.fail(ctx, op, obj.Err)
			}
			if obj.Key == key {
				versions = append(versions, obj.VersionID)
			}
		}
		if len(versions) == 0 {
			versions = []string{info.VersionID}
		}
	}
	for _, v := range versions {
		err := b.core.RemoveObject(ctx, b.bucket, key, minio.RemoveObjectOptions{VersionID: v})
		if err == nil {
			continue
		}
		if le := b.lockedError(ctx, h, key, v, err); le != nil {
			return le
		}
		return b.fail(ctx, op, err)
	}
	return nil
}

// Close releases idle connections and upload buffers.
func (b *Backend) Close() error {
	for {
		select {
		case <-b.free:
		default:
			if t, ok := b.tr.(interface{ CloseIdleConnections() }); ok {
				t.CloseIdleConnections()
			}
			return nil
		}
	}
}

// ExtendRetention makes the current version of h locked at least until an
// object written now would be (Options.Retention), never shortening a
// lock or weakening compliance mode to governance. Objects a new snapshot
// reuses from earlier runs keep the lock of their upload, which may end
// before the snapshot's; calling ExtendRetention for each object a
// snapshot names keeps the whole snapshot locked. Without retention it
// does nothing. It needs s3:PutObjectRetention.
func (b *Backend) ExtendRetention(ctx context.Context, h backup.Handle) error {
	rt := b.opts.Retention
	if rt == nil {
		return nil
	}
	if err := validName(h); err != nil {
		return err
	}
	key := b.Key(h)
	op := fmt.Sprintf("extending the lock of %s in %s", label(h), b.loc)
	info, err := b.core.StatObject(ctx, b.bucket, key, minio.StatObjectOptions{})
	if err != nil {
		return b.fail(ctx, op, err)
	}
	want := rt.until(time.Now())
	mode := minio.RetentionMode(rt.Mode)
	if cur, err := time.Parse(time.RFC3339, info.Metadata.Get("X-Amz-Object-Lock-Retain-Until-Date")); err == nil {
		if !cur.Before(want) {
			return nil
		}
		if strings.EqualFold(info.Metadata.Get("X-Amz-Object-Lock-Mode"), string(Compliance)) {
			mode = minio.Compliance
		}
	}
	err = b.core.PutObjectRetention(ctx, b.bucket, key, minio.PutObjectRetentionOptions{Mode: &mode, RetainUntilDate: &want, VersionID: info.VersionID})
	if err != nil {
		return b.fail(ctx, op, err)
	}
	return nil
}
