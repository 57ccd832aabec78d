// Package sftp is the backup backend for a repository in a folder on an
// SFTP server, named by a URL sftp://user@host[:port]/path. It speaks SFTP
// version 3 (draft-ietf-secsh-filexfer-02) with the OpenSSH extensions
// posix-rename@openssh.com and fsync@openssh.com, using
// github.com/pkg/sftp over SSH (golang.org/x/crypto/ssh).
//
// The repository layout is the local backend's: config, snapshots/,
// manifests/ and data/ with a two-hex-digit fan-out (data/ab/ab…), made on
// demand. Every object is uploaded to a temporary name in its final folder
// (.nhscrypt-tmp-…), flushed to the server's disk with fsync@openssh.com
// when the server offers it, and renamed into place with
// posix-rename@openssh.com, so the final name appears only when the whole
// object is there. A failed or cancelled upload removes its temporary file;
// if the connection died first, the temporary file stays on the server and
// List ignores it.
//
// Host keys are checked against an OpenSSH known_hosts file: an unknown
// host is refused unless Options.AcceptNew is set (OpenSSH's
// StrictHostKeyChecking=accept-new), and a host whose key changed is always
// refused. Both are *HostKeyError, which wraps backup.ErrAuth.
//
// One SSH connection carries every operation, over a few SFTP sessions (see
// Options.Connections). A connection that drops (the server restarted, the
// network failed, an SSH keepalive went unanswered) fails the operations in
// flight with a transient error (see backup.Transient), and the next
// operation dials again: a Backend opened once survives a server restart,
// and the retry decorator (backup/retry) turns a dropped upload into a
// retried one. Errors name the backend (sftp://user@host:port/path), the
// operation and the object; a missing object or folder wraps
// backup.ErrNotFound, a refused key or a permission denied by the server
// wraps backup.ErrAuth.
//
// SFTP has no way to fsync a folder: if the server itself crashes just
// after an upload, the rename may not have reached its disk although the
// data had (Linux filesystems such as ext4 and XFS journal renames in
// order, so a snapshot saved later is lost with it); verify finds any
// object missing.
package sftp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os/user"
	"path"
	"strings"
	"time"

	"github.com/pkg/sftp"

	"github.com/nhscrypt/nhscrypt/backup"
)

// Options say how to reach and trust the server. The zero Options are
// OpenSSH's defaults for an interactive user.
type Options struct {
	// KnownHostsFile holds the trusted host keys, in OpenSSH's known_hosts
	// format; default ~/.ssh/known_hosts.
	KnownHostsFile string
	// AcceptNew trusts a host that is not in KnownHostsFile on first use
	// and records its key there (created 0600 if missing), like OpenSSH's
	// StrictHostKeyChecking=accept-new. A host whose recorded key differs
	// is refused all the same.
	AcceptNew bool
	// IdentityFiles are private keys (OpenSSH, PKCS#1/#8 PEM) to log in
	// with. Without a passphrase they are used directly; one with a
	// passphrase is used only if ssh-agent holds it. When none are given,
	// ~/.ssh/id_ed25519, ~/.ssh/id_ecdsa and ~/.ssh/id_rsa are tried if
	// they exist. The keys of the ssh-agent at $SSH_AUTH_SOCK, if set, are
	// always tried after them.
	IdentityFiles []string
	// Connections bounds the number of uploads (Save) in progress at once;
	// default 4. They share one SSH connection, over one SFTP session per
	// allowed upload (at most 8, under OpenSSH's default MaxSessions of
	// 10), each upload with up to 64 pipelined 32 KiB writes.
	Connections int
	// Timeout bounds dialling, the SSH handshake and starting SFTP. It is
	// also the SSH keepalive interval: a connection whose keepalive goes
	// unanswered for 2×Timeout is given up, failing the operations
	// waiting on it. Default 30s.
	Timeout time.Duration
}

// Defaults.
const (
	DefaultConnections = 4
	DefaultTimeout     = 30 * time.Second
)

// ParseURL checks an sftp://user@host[:port]/path URL and returns the user
// (the current user's name if the URL has none), host:port (port 22 by
// default) and the absolute folder path on the server. Relative paths and
// ~ are not supported; passwords in the URL are refused (log in with keys).
func ParseURL(u *url.URL) (usr, addr, dir string, err error) {
	if u == nil {
		return "", "", "", errors.New("no SFTP URL")
	}
	bad := func(why string) (string, string, string, error) {
		return "", "", "", fmt.Errorf("SFTP URL %q: %s", u.Redacted(), why)
	}
	if u.Scheme != "sftp" {
		return bad("the scheme must be sftp://")
	}
	if u.Opaque != "" || u.Host == "" {
		return bad("expected sftp://user@host[:port]/path")
	}
	if _, ok := u.User.Password(); ok {
		return bad("passwords are not supported: log in with an SSH key")
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return bad("query and fragment are not supported")
	}
	usr = u.User.Username()
	if usr == "" {
		cur, err := user.Current()
		if err != nil {
			return bad("no user given and the current user is unknown")
		}
		usr = cur.Username
	}
	host := u.Hostname()
	if host == "" {
		return bad("no host")
	}
	port := u.Port()
	if port == "" {
		port = "22"
	}
	dir = u.Path
	if dir == "" || dir == "/" {
		return bad("no folder: give the repository's absolute path on the server, sftp://user@host/srv/backup/repo")
	}
	if strings.HasPrefix(dir, "/~") {
		return bad("~ is not supported: give the absolute path on the server")
	}
	return usr, net.JoinHostPort(host, port), path.Clean(dir), nil
}

// Open connects to the server named by u (sftp://user@host[:port]/path),
// checks its host key and logs in, and returns the backend for the
// repository folder path.
//
// Errors: a *HostKeyError (wrapping backup.ErrAuth) for an unknown or
// changed host key; backup.ErrAuth when no key is accepted or the folder
// is not readable; backup.ErrNotFound when neither the folder nor the
// folder above it exists (a mistyped path). If only the repository folder
// itself is missing, Open succeeds so that Create can make it, and every
// other method returns an error wrapping backup.ErrNotFound. Network
// errors are transient (worth retrying).
func Open(ctx context.Context, u *url.URL, opts Options) (*Backend, error) {
	usr, addr, dir, err := ParseURL(u)
	if err != nil {
		return nil, err
	}
	if opts.Connections <= 0 {
		opts.Connections = DefaultConnections
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.KnownHostsFile == "" {
		home, err := homeDir()
		if err != nil {
			return nil, fmt.Errorf("finding known_hosts: %w", err)
		}
		opts.KnownHostsFile = home + "/.ssh/known_hosts"
	}
	b := &Backend{
		loc:  "sftp://" + usr + "@" + addr + dir,
		addr: addr, user: usr, dir: dir, opts: opts,
		sem:  make(chan struct{}, opts.Connections),
		dial: make(chan struct{}, 1),
	}
	if err := b.checkDir(ctx); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

// checkDir connects and looks at the repository folder (see Open).
func (b *Backend) checkDir(ctx context.Context) error {
	c, err := b.client(ctx)
	if err != nil {
		return b.wrap("connecting", "", err)
	}
	st, err := b.stat(ctx, c, b.dir)
	switch {
	case err == nil && !st.IsDir():
		return fmt.Errorf("%s: %s is not a folder", b.loc, b.dir)
	case err == nil:
		return nil
	case !errors.Is(err, errNotExist):
		return b.fail(c, "looking at", b.dir, err)
	}
	if _, err := b.stat(ctx, c, path.Dir(b.dir)); err != nil {
		if errors.Is(err, errNotExist) {
			return fmt.Errorf("%s: neither %s nor the folder above it exist on the server: %w", b.loc, b.dir, backup.ErrNotFound)
		}
		return b.fail(c, "looking at", path.Dir(b.dir), err)
	}
	return nil
}

// connError is a failed or lost connection: transient, so the retry
// decorator tries again (on a new connection).
type connError struct {
	addr string
	err  error
}

func (e *connError) Error() string {
	var oe *net.OpError
	switch {
	case errors.Is(e.err, sftp.ErrSSHFxConnectionLost):
		return "lost the connection to " + e.addr
	case errors.As(e.err, &oe) && oe.Op == "dial" && oe.Err != nil:
		return "cannot connect to " + e.addr + ": " + oe.Err.Error()
	case errors.Is(e.err, io.EOF), errors.Is(e.err, io.ErrUnexpectedEOF), errors.Is(e.err, net.ErrClosed):
		return "lost the connection to " + e.addr + " (" + e.err.Error() + ")"
	}
	return "connection to " + e.addr + ": " + e.err.Error()
}

func (e *connError) Unwrap() error   { return e.err }
func (e *connError) Transient() bool { return true }

var _ backup.Transient = (*connError)(nil)
