package sftp

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/nhscrypt/nhscrypt/backup"
)

// HostKeyError is a host key that is not trusted: unknown (not in
// known_hosts) or changed (known_hosts holds other keys for the host). It
// wraps backup.ErrAuth. An unknown host can be trusted by checking
// Fingerprint with the server's administrator and opening with AcceptNew;
// a changed key is never accepted automatically.
type HostKeyError struct {
	Host        string // as in known_hosts: host, or [host]:port
	KeyType     string // e.g. ssh-ed25519
	Fingerprint string // SHA256:… as ssh-keygen -l prints it ("" if no key of a known type was offered)
	KnownHosts  string // the known_hosts file consulted
	Changed     bool   // the host is known with different keys
	// Err is set when AcceptNew could not record the key.
	Err error
}

func (e *HostKeyError) Error() string {
	switch {
	case e.Changed:
		offered := fmt.Sprintf("the server offered %s key %s, which does not match the key(s) recorded in %s", e.KeyType, e.Fingerprint, e.KnownHosts)
		if e.Fingerprint == "" {
			offered = fmt.Sprintf("the server offers only %s host keys, none of the type(s) recorded in %s", e.KeyType, e.KnownHosts)
		}
		return fmt.Sprintf("HOST KEY CHANGED for %s: %s; "+
			"this may be an attack (someone intercepting the connection) or a reinstalled server: check with its administrator, "+
			"and only then remove the old key (ssh-keygen -R '%s' -f %s)", e.Host, offered, e.Host, e.KnownHosts)
	case e.Err != nil:
		return fmt.Sprintf("recording the host key of %s (%s %s) in %s: %v", e.Host, e.KeyType, e.Fingerprint, e.KnownHosts, e.Err)
	}
	return fmt.Sprintf("unknown host %s: its %s host key %s is not in %s; verify that fingerprint with the server's administrator "+
		"(ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub on the server), then connect once with --ssh-accept-new to record it",
		e.Host, e.KeyType, e.Fingerprint, e.KnownHosts)
}

// Unwrap returns backup.ErrAuth (and the recording error, if any).
func (e *HostKeyError) Unwrap() []error {
	if e.Err != nil {
		return []error{backup.ErrAuth, e.Err}
	}
	return []error{backup.ErrAuth}
}

// conn is one SSH connection with its SFTP sessions.
type conn struct {
	ssh         *ssh.Client
	sessions    []*sftp.Client
	next        atomic.Uint32
	fsync       atomic.Bool // fsync@openssh.com offered (and not refused)
	posixRename atomic.Bool // posix-rename@openssh.com offered (and not refused)
	done        chan struct{}
	once        sync.Once
}

// close ends the connection; operations in flight fail.
func (c *conn) close() {
	c.once.Do(func() {
		close(c.done)
		c.ssh.Close()
	})
}

// session returns the next SFTP session, round robin.
func (c *conn) session() *sftp.Client {
	return c.sessions[int(c.next.Add(1))%len(c.sessions)]
}

func (c *conn) dead() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// client returns the live connection, dialling a new one if there is none
// or it died.
func (b *Backend) client(ctx context.Context) (*conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b.mu.Lock()
	gen := b.dials
	b.mu.Unlock()
	// b.dial is a lock that a cancelled ctx can give up waiting for.
	select {
	case b.dial <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-b.dial }()
	b.mu.Lock()
	c, closed, dials, dialErr := b.cur, b.closed, b.dials, b.dialErr
	b.mu.Unlock()
	if closed {
		return nil, fmt.Errorf("backend closed: %w", net.ErrClosed)
	}
	if c != nil && !c.dead() {
		return c, nil
	}
	if dials != gen && dialErr != nil {
		// A dial failed while we waited for it: do not try again at
		// once (each try may take Timeout); the caller may retry.
		return nil, dialErr
	}
	c, err := b.connect(ctx)
	b.mu.Lock()
	defer b.mu.Unlock()
	if ctx.Err() == nil { // a cancelled dial says nothing of the server
		b.dials++
		b.dialErr = err
	}
	if err != nil {
		return nil, err
	}
	if b.closed { // Close was called meanwhile
		c.close()
		return nil, fmt.Errorf("backend closed: %w", net.ErrClosed)
	}
	b.cur = c
	return c, nil
}

// connect dials, checks the host key, logs in and starts SFTP.
func (b *Backend) connect(ctx context.Context) (*conn, error) {
	auth, cleanup, err := b.authMethods()
	if err != nil {
		return nil, err
	}
	defer cleanup()
	hk, algos, err := b.hostKeyCallback()
	if err != nil {
		return nil, err
	}
	var hostKeyErr error
	cfg := &ssh.ClientConfig{
		User: b.user,
		Auth: auth,
		HostKeyCallback: func(host string, remote net.Addr, key ssh.PublicKey) error {
			hostKeyErr = hk(host, remote, key)
			return hostKeyErr
		},
		HostKeyAlgorithms: algos,
		Timeout:           b.opts.Timeout,
	}
	d := net.Dialer{Timeout: b.opts.Timeout}
	nc, err := d.DialContext(ctx, "tcp", b.addr)
	if err != nil {
		return nil, &connError{addr: b.addr, err: err}
	}
	// The handshake is bounded by Timeout and by ctx.
	nc.SetDeadline(time.Now().Add(b.opts.Timeout))
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
	sc, chans, reqs, err := ssh.NewClientConn(nc, b.addr, cfg)
	stopped := stop()
	if err != nil {
		nc.Close()
		return nil, b.handshakeError(ctx, err, hostKeyErr, algos)
	}
	if !stopped {
		sc.Close()
		return nil, ctx.Err()
	}
	nc.SetDeadline(time.Time{})
	c := &conn{ssh: ssh.NewClient(sc, chans, reqs), done: make(chan struct{})}
	go func() {
		c.ssh.Wait()
		c.close()
	}()
	// Starting the sessions is bounded by Timeout and ctx too.
	slow := time.AfterFunc(b.opts.Timeout, c.close)
	defer slow.Stop()
	defer context.AfterFunc(ctx, c.close)()
	n := sessions
	if n <= 0 {
		n = min(b.opts.Connections, maxSessions)
	}
	for i := range n {
		s, err := sftp.NewClient(c.ssh, sftp.MaxConcurrentRequestsPerFile(64), sftp.UseConcurrentReads(true), sftp.MaxPacketUnchecked(maxPacket))
		var oce *ssh.OpenChannelError
		if i > 0 && errors.As(err, &oce) {
			break // the server's MaxSessions: make do with fewer
		}
		if err != nil {
			c.close()
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if connLost(err) || c.dead() {
				return nil, fmt.Errorf("starting SFTP: %w", &connError{addr: b.addr, err: err})
			}
			return nil, fmt.Errorf("starting SFTP (is the sftp subsystem enabled on the server?): %w", err)
		}
		c.sessions = append(c.sessions, s)
		// A session that ends ends the connection: the next operation
		// dials again.
		go func() {
			s.Wait()
			c.close()
		}()
	}
	_, ok := c.sessions[0].HasExtension("posix-rename@openssh.com")
	c.posixRename.Store(ok)
	v, ok := c.sessions[0].HasExtension("fsync@openssh.com")
	c.fsync.Store(ok && v == "1")
	if err := ctx.Err(); err != nil {
		c.close()
		return nil, err
	}
	if !slow.Stop() {
		return nil, fmt.Errorf("starting SFTP: %w", &connError{addr: b.addr, err: errors.New("timed out")})
	}
	go b.keepalive(c)
	return c, nil
}

// keepalive closes c when the server stops answering SSH keepalives, so
// that operations waiting for replies fail instead of hanging.
func (b *Backend) keepalive(c *conn) {
	interval := max(b.opts.Timeout, time.Second)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-t.C:
		}
		reply := make(chan error, 1)
		go func() {
			_, _, err := c.ssh.SendRequest("keepalive@openssh.com", true, nil)
			reply <- err
		}()
		select {
		case err := <-reply:
			if err != nil {
				c.close()
				return
			}
		case <-time.After(2 * interval):
			c.close()
			return
		case <-c.done:
			return
		}
	}
}

// handshakeError classifies a failed SSH handshake.
func (b *Backend) handshakeError(ctx context.Context, err, hostKeyErr error, algos []string) error {
	var ane *ssh.AlgorithmNegotiationError
	switch {
	case hostKeyErr != nil:
		return hostKeyErr
	case ctx.Err() != nil:
		return ctx.Err()
	case strings.Contains(err.Error(), "unable to authenticate"):
		return fmt.Errorf("logging in as %s: no key was accepted (%v): %w", b.user, err, backup.ErrAuth)
	case errors.As(err, &ane) && algos != nil && strings.Contains(ane.What, "host key"):
		// We asked only for the key types known_hosts holds for this
		// host, and the server has none of them: its keys changed.
		return &HostKeyError{Host: knownhosts.Normalize(b.addr), KeyType: strings.Join(ane.RequestedAlgorithms, ","),
			KnownHosts: b.opts.KnownHostsFile, Changed: true}
	case errors.As(err, &ane):
		return fmt.Errorf("SSH handshake: %w", err)
	}
	return fmt.Errorf("SSH handshake: %w", &connError{addr: b.addr, err: err})
}

// hostKeyCallback checks host keys against the known_hosts file, read
// afresh for every connection. It also returns the host key algorithms to
// ask for: those of the keys known for the host (so that a host known by
// its RSA key is not reported as changed because it offers Ed25519
// first), or nil for an unknown host.
func (b *Backend) hostKeyCallback() (ssh.HostKeyCallback, []string, error) {
	file := b.opts.KnownHostsFile
	var known ssh.HostKeyCallback
	if _, err := os.Stat(file); errors.Is(err, fs.ErrNotExist) {
		known = func(string, net.Addr, ssh.PublicKey) error { return &knownhosts.KeyError{} }
	} else {
		var err error
		known, err = knownhosts.New(file)
		if err != nil {
			return nil, nil, fmt.Errorf("reading known hosts: %w", err)
		}
	}
	// The keys recorded for the host: ask with a key no file holds.
	var algos []string
	probe, _, _ := ed25519.GenerateKey(rand.Reader)
	pk, _ := ssh.NewPublicKey(probe)
	remote := &net.TCPAddr{IP: net.IPv4zero}
	if host, port, err := net.SplitHostPort(b.addr); err == nil {
		if ip := net.ParseIP(host); ip != nil {
			remote.IP = ip
		}
		fmt.Sscan(port, &remote.Port)
	}
	var ke *knownhosts.KeyError
	if err := known(b.addr, remote, pk); errors.As(err, &ke) {
		seen := map[string]bool{}
		for _, k := range ke.Want {
			for _, a := range algorithmsFor(k.Key.Type()) {
				if !seen[a] {
					seen[a] = true
					algos = append(algos, a)
				}
			}
		}
	}
	cb := func(host string, remote net.Addr, key ssh.PublicKey) error {
		err := known(host, remote, key)
		if err == nil {
			return nil
		}
		hke := &HostKeyError{Host: knownhosts.Normalize(host), KeyType: key.Type(), Fingerprint: ssh.FingerprintSHA256(key), KnownHosts: file}
		if errors.As(err, &ke) && len(ke.Want) > 0 {
			hke.Changed = true
			return hke
		}
		var re *knownhosts.RevokedError
		if errors.As(err, &re) {
			return fmt.Errorf("the host key of %s is revoked in %s: %w", host, file, backup.ErrAuth)
		}
		if !errors.As(err, &ke) {
			return fmt.Errorf("checking the host key of %s: %v: %w", host, err, backup.ErrAuth)
		}
		if !b.opts.AcceptNew {
			return hke
		}
		if err := appendKnownHost(file, host, key); err != nil {
			hke.Err = err
			return hke
		}
		return nil
	}
	if len(algos) == 0 {
		algos = nil
	}
	return cb, algos, nil
}

// algorithmsFor lists the host key algorithms that use a key type.
func algorithmsFor(keyType string) []string {
	switch keyType {
	case ssh.KeyAlgoRSA:
		return []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA}
	case ssh.CertAlgoRSAv01:
		return []string{ssh.CertAlgoRSASHA512v01, ssh.CertAlgoRSASHA256v01, ssh.CertAlgoRSAv01}
	}
	return []string{keyType}
}

// knownHostsMu serialises additions to known_hosts files in this process.
var knownHostsMu sync.Mutex

// appendKnownHost records a host key, creating the file (0600, and its
// folder 0700) if needed.
func appendKnownHost(file, host string, key ssh.PublicKey) error {
	knownHostsMu.Lock()
	defer knownHostsMu.Unlock()
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	line := knownhosts.Line([]string{knownhosts.Normalize(host)}, key) + "\n"
	// A file that does not end in a newline gets one first.
	if st, err := f.Stat(); err == nil && st.Size() > 0 {
		last := make([]byte, 1)
		if r, err := os.Open(file); err == nil {
			if _, err := r.ReadAt(last, st.Size()-1); err == nil && last[0] != '\n' {
				line = "\n" + line
			}
			r.Close()
		}
	}
	if _, err := f.WriteString(line); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// authMethods loads the identity files and connects to ssh-agent. cleanup
// closes the agent connection after the handshake.
func (b *Backend) authMethods() ([]ssh.AuthMethod, func(), error) {
	cleanup := func() {}
	var ag agent.ExtendedAgent
	if sock := os.Getenv("SSH_AUTH_SOCK"); sock != "" {
		if c, err := net.DialTimeout("unix", sock, b.opts.Timeout); err == nil {
			ag = agent.NewClient(c)
			cleanup = func() { c.Close() }
		}
	}
	var agentSigners []ssh.Signer
	if ag != nil {
		agentSigners, _ = ag.Signers()
	}
	files := b.opts.IdentityFiles
	explicit := len(files) > 0
	if !explicit {
		if home, err := homeDir(); err == nil {
			for _, n := range []string{"id_ed25519", "id_ecdsa", "id_rsa"} {
				files = append(files, filepath.Join(home, ".ssh", n))
			}
		}
	}
	var signers []ssh.Signer
	seen := map[string]bool{}
	add := func(s ssh.Signer) {
		k := string(s.PublicKey().Marshal())
		if !seen[k] {
			seen[k] = true
			signers = append(signers, s)
		}
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			if !explicit && errors.Is(err, fs.ErrNotExist) {
				continue
			}
			cleanup()
			return nil, nil, fmt.Errorf("reading SSH identity: %w", err)
		}
		s, err := ssh.ParsePrivateKey(data)
		var pme *ssh.PassphraseMissingError
		switch {
		case errors.As(err, &pme):
			// Usable only through ssh-agent.
			found := false
			for _, as := range agentSigners {
				if pme.PublicKey != nil && string(as.PublicKey().Marshal()) == string(pme.PublicKey.Marshal()) {
					add(as)
					found = true
				}
			}
			if !found && explicit {
				cleanup()
				return nil, nil, fmt.Errorf("SSH identity %s has a passphrase: add it to ssh-agent (ssh-add %s): %w", f, f, backup.ErrAuth)
			}
		case err != nil:
			cleanup()
			return nil, nil, fmt.Errorf("SSH identity %s: %w", f, err)
		default:
			add(s)
		}
	}
	for _, s := range agentSigners {
		add(s)
	}
	if len(signers) == 0 {
		cleanup()
		return nil, nil, fmt.Errorf("no SSH key to log in with (give an identity file, or run ssh-agent): %w", backup.ErrAuth)
	}
	return []ssh.AuthMethod{ssh.PublicKeys(signers...)}, cleanup, nil
}

// maxPacket is the largest SFTP read or write: 32 KiB, which every server
// takes (measured: 255 KiB packets were slower against OpenSSH 9.2).
const maxPacket = 32768

// sessions is how many SFTP sessions a connection opens (0: one per
// allowed concurrent upload, Options.Connections).
var sessions = 0

// maxSessions stays under OpenSSH's default MaxSessions (10).
const maxSessions = 8

// homeDir is $HOME, or the user's home folder from the password database
// when $HOME is unset (systemd services without User=).
func homeDir() (string, error) {
	if h, err := os.UserHomeDir(); err == nil {
		return h, nil
	}
	u, err := user.Current()
	if err != nil {
		return "", err
	}
	if u.HomeDir == "" {
		return "", errors.New("no home folder")
	}
	return u.HomeDir, nil
}
