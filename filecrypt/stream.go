package filecrypt

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"filippo.io/age"
	"filippo.io/age/armor"
)

// bufSize is the copy buffer: a multiple of age's 64 KiB chunk.
const bufSize = 256 << 10

var bufPool = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}

// EncryptOptions say how to encrypt.
type EncryptOptions struct {
	// Recipients to encrypt to. At least one is needed. A scrypt
	// (passphrase) recipient must be the only one.
	Recipients []age.Recipient
	// Armor produces ASCII-armored (PEM-like) output.
	Armor bool
}

// DecryptOptions say how to decrypt.
type DecryptOptions struct {
	// Identities to try.
	Identities []age.Identity
	// Passphrase, if set, is called (at most once per call to Decrypt) when
	// a file is passphrase-encrypted. It may be shared by many files.
	Passphrase *PassphraseSource
}

// PassphraseSource asks for a passphrase once and remembers it, so a tree of
// passphrase-encrypted files asks only once.
type PassphraseSource struct {
	Prompt Prompt
	once   sync.Once
	pass   []byte
	err    error
}

// Get returns the passphrase, asking for it on first use.
func (p *PassphraseSource) Get() ([]byte, error) {
	p.once.Do(func() {
		if p.Prompt == nil {
			p.err = &PromptError{errors.New("the file is passphrase-encrypted and no passphrase can be asked for")}
			return
		}
		p.pass, p.err = p.Prompt("Enter passphrase:")
		if p.err != nil {
			p.err = &PromptError{p.err}
		}
	})
	return p.pass, p.err
}

// lazyScrypt is an identity that asks for the passphrase only when it meets
// an scrypt stanza.
type lazyScrypt struct{ src *PassphraseSource }

func (l lazyScrypt) Unwrap(stanzas []*age.Stanza) ([]byte, error) {
	if len(stanzas) != 1 || stanzas[0].Type != "scrypt" {
		return nil, age.ErrIncorrectIdentity
	}
	pass, err := l.src.Get()
	if err != nil {
		return nil, err
	}
	id, err := age.NewScryptIdentity(string(pass))
	if err != nil {
		return nil, err
	}
	return id.Unwrap(stanzas)
}

func (o DecryptOptions) identities() []age.Identity {
	ids := append(make([]age.Identity, 0, len(o.Identities)+1), o.Identities...)
	if o.Passphrase != nil {
		ids = append(ids, lazyScrypt{o.Passphrase})
	}
	return ids
}

// ctxReader stops a copy when ctx is cancelled, and remembers the
// underlying reader's own error so that it is not taken for corruption.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
	err error
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := c.r.Read(p)
	if err != nil && err != io.EOF {
		c.err = err
	}
	return n, err
}

func copyBuffer(ctx context.Context, dst io.Writer, src io.Reader) (int64, error) {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	return io.CopyBuffer(dst, &ctxReader{ctx: ctx, r: src}, *bp)
}

// Encrypt encrypts src to dst. It returns the number of plaintext bytes read.
// It stops with ctx's error when ctx is cancelled; dst then holds a partial,
// invalid ciphertext that the caller must discard.
func Encrypt(ctx context.Context, dst io.Writer, src io.Reader, opts EncryptOptions) (int64, error) {
	if len(opts.Recipients) == 0 {
		return 0, errors.New("no recipients given")
	}
	out := dst
	var aw io.WriteCloser
	if opts.Armor {
		aw = armor.NewWriter(dst)
		out = aw
	}
	w, err := age.Encrypt(out, opts.Recipients...)
	if err != nil {
		return 0, err
	}
	n, err := copyBuffer(ctx, w, src)
	if err != nil {
		return n, err
	}
	if err := w.Close(); err != nil {
		return n, err
	}
	if aw != nil {
		if err := aw.Close(); err != nil {
			return n, err
		}
	}
	return n, nil
}

// Decrypt decrypts src (binary or armored age) to dst and returns the number
// of plaintext bytes written. Plaintext reaches dst in authenticated 64 KiB
// chunks; only a nil error says the whole file authenticated, so a caller
// writing to a file must discard dst on error (DecryptFile does). name is
// used in errors. It returns *WrongKeyError if no identity matches and
// *CorruptError if src is not a valid, intact age file.
func Decrypt(ctx context.Context, dst io.Writer, src io.Reader, name string, opts DecryptOptions) (int64, error) {
	cr := &ctxReader{ctx: ctx, r: src}
	in, err := maybeArmored(cr)
	if err != nil {
		return 0, fmt.Errorf("reading %q: %w", name, err)
	}
	r, err := age.Decrypt(in, opts.identities()...)
	if err != nil {
		return 0, classify(ctx, cr, name, err, "invalid or unsupported age header")
	}
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	n, err := io.CopyBuffer(errWriter{dst}, readerOnly{r}, *bp)
	if err != nil {
		if werr := (*writeError)(nil); errors.As(err, &werr) {
			return n, werr.err
		}
		return n, classify(ctx, cr, name, err, "payload failed authentication (truncated or tampered)")
	}
	return n, nil
}

// readerOnly hides WriterTo so io.CopyBuffer uses our buffer.
type readerOnly struct{ io.Reader }

// errWriter marks errors from dst, so they are not taken for corruption.
type errWriter struct{ w io.Writer }

func (e errWriter) Write(p []byte) (int, error) {
	n, err := e.w.Write(p)
	if err != nil {
		return n, &writeError{err}
	}
	return n, nil
}

type writeError struct{ err error }

func (w *writeError) Error() string { return w.err.Error() }

// classify turns an error from age into ours. age's own messages can quote
// bytes of the input (which may be plaintext given by mistake), so a
// CorruptError prints only reason; the original stays available to Unwrap.
func classify(ctx context.Context, cr *ctxReader, name string, err error, reason string) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if cr.err != nil {
		return fmt.Errorf("reading %q: %w", name, cr.err)
	}
	var pe *PromptError
	if errors.As(err, &pe) {
		return pe
	}
	var nm *age.NoIdentityMatchError
	if errors.As(err, &nm) {
		return &WrongKeyError{Path: name, StanzaTypes: nm.StanzaTypes}
	}
	var wk *WrongKeyError
	if errors.As(err, &wk) {
		return wk
	}
	var ae *armor.Error
	if errors.As(err, &ae) {
		reason = "invalid ASCII armor"
	}
	return &CorruptError{Path: name, Reason: reason, Err: err}
}

// PromptError is returned when a passphrase was needed but could not be
// had (no terminal, an unreadable passphrase file).
type PromptError struct{ Err error }

func (e *PromptError) Error() string { return e.Err.Error() }
func (e *PromptError) Unwrap() error { return e.Err }

// maybeArmored detects ASCII armor (after leading whitespace, as age does).
func maybeArmored(r io.Reader) (io.Reader, error) {
	b := bufio.NewReaderSize(r, 4096)
	p, err := b.Peek(len(armor.Header) + 1024)
	if err != nil && err != io.EOF && err != bufio.ErrBufferFull {
		return nil, err
	}
	if bytes.HasPrefix(bytes.TrimSpace(p), []byte(armor.Header)) {
		return armor.NewReader(b), nil
	}
	return b, nil
}
