package filecrypt

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"syscall"

	"filippo.io/age"

	"github.com/nhscrypt/nhscrypt/internal/atomicfile"
)

// FileOptions control how EncryptFile and DecryptFile write their output.
type FileOptions struct {
	// Overwrite allows replacing an existing output file.
	Overwrite bool
	// KeepMetadata copies the input's permission bits and modification time
	// (and, as root, its owner) to the output. Without it the output is 0600
	// for decrypt and 0644 for encrypt, less the umask.
	KeepMetadata bool
}

// EncryptFile encrypts the file src to dst. The output is written to a
// temporary file beside dst, fsynced and renamed, so dst is either absent or
// complete. It returns the number of plaintext bytes.
func EncryptFile(ctx context.Context, src, dst string, enc EncryptOptions, fo FileOptions) (int64, error) {
	n, _, err := encryptFile(ctx, src, dst, enc, fo, nil)
	return n, err
}

// encryptFile encrypts src to dst; when verify is set it also returns the
// SHA-256 of the plaintext read and records the file key in verify.
func encryptFile(ctx context.Context, src, dst string, enc EncryptOptions, fo FileOptions, verify *keyCapture) (int64, []byte, error) {
	in, err := os.Open(src)
	if err != nil {
		return 0, nil, err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return 0, nil, err
	}
	if !st.Mode().IsRegular() {
		return 0, nil, fmt.Errorf("%q is not a regular file", src)
	}
	out, err := atomicfile.Create(dst, outputMode(st, fo, 0o644), fo.Overwrite)
	if err != nil {
		return 0, nil, err
	}
	defer out.Abort()
	keepMetadata(out, st, fo)
	var r io.Reader = in
	var h hash.Hash
	if verify != nil {
		h = sha256.New()
		r = io.TeeReader(in, h)
		enc.Recipients = verify.wrap(enc.Recipients)
	}
	n, err := Encrypt(ctx, out, r, enc)
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		return n, nil, encErr(src, err)
	}
	if err := out.Commit(); err != nil {
		return n, nil, err
	}
	if h != nil {
		return n, h.Sum(nil), nil
	}
	return n, nil, nil
}

func encErr(name string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return fmt.Errorf("encrypting %q: %w", name, err)
}

// DecryptFile decrypts src to dst. Plaintext goes to a temporary file beside
// dst (mode 0600) and is renamed to dst only after the whole file
// authenticated: a wrong key, a truncated or tampered file, or a cancelled
// context leaves nothing behind. Errors are *WrongKeyError, *CorruptError,
// or I/O errors naming the file.
func DecryptFile(ctx context.Context, src, dst string, dec DecryptOptions, fo FileOptions) (int64, error) {
	in, err := os.Open(src)
	if err != nil {
		return 0, err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return 0, err
	}
	if st.IsDir() {
		return 0, fmt.Errorf("%q is a directory", src)
	}
	out, err := atomicfile.Create(dst, outputMode(st, fo, 0o600), fo.Overwrite)
	if err != nil {
		return 0, err
	}
	defer out.Abort()
	keepMetadata(out, st, fo)
	n, err := Decrypt(ctx, out, in, src, dec)
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		return n, err
	}
	return n, out.Commit()
}

func outputMode(st fs.FileInfo, fo FileOptions, def fs.FileMode) fs.FileMode {
	if fo.KeepMetadata {
		return st.Mode().Perm()
	}
	return def &^ atomicfile.Umask()
}

func keepMetadata(out *atomicfile.File, st fs.FileInfo, fo FileOptions) {
	if !fo.KeepMetadata {
		return
	}
	out.SetModTime(st.ModTime())
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		out.SetOwner(int(sys.Uid), int(sys.Gid))
	}
}

// keyCapture records the file key age wraps, so that a file just encrypted
// to public keys can be decrypted back (and so proven readable) without any
// private key. The key is wiped after use.
type keyCapture struct {
	key []byte
}

func (k *keyCapture) wrap(rs []age.Recipient) []age.Recipient {
	out := make([]age.Recipient, len(rs))
	for i, r := range rs {
		out[i] = &capturingRecipient{r: r, k: k}
	}
	return out
}

func (k *keyCapture) identity() age.Identity { return age.NewInjectedFileKeyIdentity(k.key) }

func (k *keyCapture) wipe() {
	clear(k.key)
	k.key = nil
}

type capturingRecipient struct {
	r age.Recipient
	k *keyCapture
}

func (c *capturingRecipient) Wrap(fileKey []byte) ([]*age.Stanza, error) {
	c.k.key = append(c.k.key[:0], fileKey...)
	return c.r.Wrap(fileKey)
}

func (c *capturingRecipient) WrapWithLabels(fileKey []byte) ([]*age.Stanza, []string, error) {
	c.k.key = append(c.k.key[:0], fileKey...)
	if rl, ok := c.r.(age.RecipientWithLabels); ok {
		return rl.WrapWithLabels(fileKey)
	}
	s, err := c.r.Wrap(fileKey)
	return s, nil, err
}

// verifyCiphertext decrypts the file at path with the captured file key and
// checks that its plaintext hashes to sum.
func verifyCiphertext(ctx context.Context, path string, k *keyCapture, sum []byte) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := Decrypt(ctx, h, f, path, DecryptOptions{Identities: []age.Identity{k.identity()}}); err != nil {
		return err
	}
	if string(h.Sum(nil)) != string(sum) {
		return fmt.Errorf("%q: decrypted content differs from the source", path)
	}
	return nil
}
