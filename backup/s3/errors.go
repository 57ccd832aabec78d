package s3

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/nhscrypt/nhscrypt/backup"
)

// ErrLocked is matched (errors.Is) by a *LockedError.
var ErrLocked = errors.New("object is locked")

// LockedError is returned by Remove when the server refuses to delete an
// object version because of object lock (a retention date not yet passed,
// or a legal hold). It is not an authentication failure and is never
// retried: prune reports the object as not deletable yet.
type LockedError struct {
	// Object names the object (e.g. data/0123456789ab…), Location the
	// repository.
	Object, Location string
	// VersionID is the locked version.
	VersionID string
	// Mode and RetainUntil are the version's lock, when the server
	// reports it (a bucket-default retention is not always reported).
	Mode        RetentionMode
	RetainUntil time.Time
	// LegalHold is set when a legal hold is on.
	LegalHold bool
	// Err is the server's refusal.
	Err error
}

func (e *LockedError) Error() string {
	var why string
	switch {
	case !e.RetainUntil.IsZero() && e.Mode != "":
		why = fmt.Sprintf("object lock (%s mode) keeps it until %s", strings.ToLower(string(e.Mode)), e.RetainUntil.UTC().Format(time.RFC3339))
	case !e.RetainUntil.IsZero():
		why = fmt.Sprintf("object lock keeps it until %s", e.RetainUntil.UTC().Format(time.RFC3339))
	case e.LegalHold:
		why = "a legal hold keeps it"
	default:
		why = "object lock keeps it (a retention not reported by the server, such as the bucket's default)"
	}
	return fmt.Sprintf("removing %s from %s: %s, so it cannot be deleted yet: %v", e.Object, e.Location, why, e.Err)
}

// Unwrap returns the server's refusal.
func (e *LockedError) Unwrap() error { return e.Err }

// Is matches ErrLocked.
func (e *LockedError) Is(target error) bool {
	return target == ErrLocked || target == backup.ErrObjectLocked
}

// lockedError returns a *LockedError when err is the server refusing to
// delete a locked version, else nil.
func (b *Backend) lockedError(ctx context.Context, h backup.Handle, key, versionID string, err error) *LockedError {
	var er minio.ErrorResponse
	if !errors.As(err, &er) || (er.StatusCode != http.StatusForbidden && er.StatusCode != http.StatusBadRequest && er.StatusCode != http.StatusConflict) {
		return nil
	}
	le := &LockedError{Object: label(h), Location: b.loc, VersionID: versionID, Err: err}
	info, serr := b.core.StatObject(ctx, b.bucket, key, minio.StatObjectOptions{VersionID: versionID})
	if serr == nil {
		le.Mode = RetentionMode(strings.ToUpper(info.Metadata.Get("X-Amz-Object-Lock-Mode")))
		if t, perr := time.Parse(time.RFC3339, info.Metadata.Get("X-Amz-Object-Lock-Retain-Until-Date")); perr == nil {
			le.RetainUntil = t
		}
		le.LegalHold = strings.EqualFold(info.Metadata.Get("X-Amz-Object-Lock-Legal-Hold"), "ON")
	}
	locked := le.LegalHold || le.RetainUntil.After(time.Now()) ||
		strings.Contains(strings.ToLower(er.Message), "object lock") || strings.Contains(strings.ToLower(er.Message), "worm") ||
		er.Code == "ObjectLocked" || er.Code == "InvalidRequest" && strings.Contains(strings.ToLower(er.Message), "retention")
	if !locked {
		return nil
	}
	if !le.RetainUntil.After(time.Now()) {
		le.RetainUntil = time.Time{}
		le.Mode = ""
	}
	return le
}

// kind is how an error is handled.
type kind int

const (
	kindOther kind = iota
	kindCancelled
	kindNotFound
	kindAuth
	kindTransient
)

var authCodes = map[string]bool{
	"AccessDenied": true, "InvalidAccessKeyId": true, "SignatureDoesNotMatch": true,
	"ExpiredToken": true, "InvalidToken": true, "TokenRefreshRequired": true,
	"AllAccessDisabled": true, "AccountProblem": true, "InvalidSecurity": true,
	"InvalidClientTokenId": true, "MissingSecurityHeader": true, "UnauthorizedAccess": true,
	// versitygw answers an unknown access key with 404 XAdminUserNotFound.
	"XAdminUserNotFound": true,
}

var transientCodes = map[string]bool{
	"SlowDown": true, "RequestTimeout": true, "InternalError": true, "ServiceUnavailable": true,
	"Throttling": true, "ThrottlingException": true, "RequestThrottled": true, "TooManyRequests": true,
	"RequestLimitExceeded": true, "BandwidthLimitExceeded": true, "OperationAborted": true,
	"XMinioServerNotInitialized": true, "XMinioStorageFull": false,
}

func classify(ctx context.Context, err error) kind {
	if ctx.Err() != nil || errors.Is(err, context.Canceled) {
		return kindCancelled
	}
	if errors.Is(err, backup.ErrNotFound) {
		return kindNotFound
	}
	if errors.Is(err, backup.ErrAuth) {
		return kindAuth
	}
	var t backup.Transient
	if errors.As(err, &t) && t.Transient() {
		return kindTransient
	}
	var er minio.ErrorResponse
	if errors.As(err, &er) {
		switch {
		case er.Code == "NoSuchBucket" || er.Code == "NoSuchKey" || er.Code == "NoSuchVersion" || er.Code == "NotFound":
			return kindNotFound
		case authCodes[er.Code]:
			return kindAuth
		case transientCodes[er.Code]:
			return kindTransient
		case er.StatusCode == http.StatusNotFound:
			return kindNotFound
		case er.StatusCode == http.StatusUnauthorized || er.StatusCode == http.StatusForbidden:
			return kindAuth
		case er.StatusCode >= 500 || er.StatusCode == http.StatusTooManyRequests:
			return kindTransient
		}
		return kindOther
	}
	// A server certificate that does not verify: the server's identity is
	// unproven, an authentication failure like an unknown SSH host key.
	var ua x509.UnknownAuthorityError
	var ci x509.CertificateInvalidError
	var he x509.HostnameError
	var cv *tls.CertificateVerificationError
	if errors.As(err, &ua) || errors.As(err, &ci) || errors.As(err, &he) || errors.As(err, &cv) {
		return kindAuth
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return kindTransient // a request timeout (ctx itself is live)
	}
	var ue *url.Error
	var ne net.Error
	switch {
	case errors.As(err, &ue):
		if strings.Contains(ue.Err.Error(), "server gave HTTP response to HTTPS client") {
			return kindOther
		}
		return kindTransient // the request never got a reply
	case errors.As(err, &ne),
		errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNABORTED):
		return kindTransient
	}
	return kindOther
}

// transientError marks an error as worth retrying (backup.Transient).
type transientError struct{ err error }

func (e *transientError) Error() string   { return e.err.Error() }
func (e *transientError) Unwrap() error   { return e.err }
func (e *transientError) Transient() bool { return true }

// fail wraps err from op ("saving data/… to s3://…") by its kind.
func (b *Backend) fail(ctx context.Context, op string, err error) error {
	switch classify(ctx, err) {
	case kindCancelled:
		if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
			return fmt.Errorf("%s: %w (%v)", op, cerr, err)
		}
		return fmt.Errorf("%s: %w", op, err)
	case kindNotFound:
		if errors.Is(err, backup.ErrNotFound) {
			return fmt.Errorf("%s: %w", op, err)
		}
		var er minio.ErrorResponse
		if errors.As(err, &er) && er.Code == "NoSuchBucket" {
			return fmt.Errorf("%s: bucket %q does not exist: %w", op, b.bucket, backup.ErrNotFound)
		}
		return fmt.Errorf("%s: %w", op, backup.ErrNotFound)
	case kindAuth:
		if errors.Is(err, backup.ErrAuth) {
			return fmt.Errorf("%s: %w", op, err)
		}
		return fmt.Errorf("%s: %w: %s", op, backup.ErrAuth, describe(err))
	case kindTransient:
		var ue *url.Error
		if errors.As(err, &ue) && !errors.Is(err, backup.ErrAuth) {
			// "Put "http://…/key?partNumber=3&uploadId=…": dial tcp …":
			// the op already names the object.
			return &transientError{fmt.Errorf("%s: %w", op, &requestError{ue})}
		}
		return &transientError{fmt.Errorf("%s: %w", op, err)}
	}
	return fmt.Errorf("%s: %w", op, err)
}

// requestError is a failed HTTP request, told without its URL.
type requestError struct{ ue *url.Error }

func (e *requestError) Error() string { return "request failed: " + e.ue.Err.Error() }
func (e *requestError) Unwrap() error { return e.ue }

// describe is an S3 error with its code.
func describe(err error) string {
	var er minio.ErrorResponse
	if errors.As(err, &er) {
		msg := strings.TrimSuffix(er.Message, ".")
		if msg == "" {
			msg = http.StatusText(er.StatusCode)
		}
		if er.Code != "" {
			return fmt.Sprintf("%s (%s)", msg, er.Code)
		}
		return msg
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return err.Error()
}
