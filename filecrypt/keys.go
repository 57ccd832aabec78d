package filecrypt

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"filippo.io/age"
	"filippo.io/age/agessh"
	"filippo.io/age/armor"
	"filippo.io/age/tag"
	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/ssh"

	"github.com/nhscrypt/nhscrypt/internal/atomicfile"
)

// Size limits applied to key files, the same as the age CLI's.
const (
	recipientsFileLimit = 16 << 20 // 16 MiB
	identityFileLimit   = 16 << 20
	pemKeyLimit         = 16 << 10
	lineLengthLimit     = 8 << 10 // as sshd(8)
)

// KeyType selects the kind of identity GenerateIdentity makes.
type KeyType int

const (
	// X25519 is age's classic identity (AGE-SECRET-KEY-1…, age1…).
	X25519 KeyType = iota
	// Hybrid is the post-quantum ML-KEM-768 + X25519 identity of age v1.3
	// (AGE-SECRET-KEY-PQ-1…, age1pq1…).
	Hybrid
)

// Identity is a generated age identity: it decrypts, and knows its
// recipient.
type Identity interface {
	age.Identity
	// String returns the secret key encoding. Never log or print it.
	String() string
	// RecipientString returns the public recipient encoding.
	RecipientString() string
}

type x25519Identity struct{ *age.X25519Identity }

func (i x25519Identity) RecipientString() string { return i.Recipient().String() }

type hybridIdentity struct{ *age.HybridIdentity }

func (i hybridIdentity) RecipientString() string { return i.Recipient().String() }

// GenerateIdentity makes a new random identity of the given type.
func GenerateIdentity(t KeyType) (Identity, error) {
	switch t {
	case X25519:
		id, err := age.GenerateX25519Identity()
		if err != nil {
			return nil, err
		}
		return x25519Identity{id}, nil
	case Hybrid:
		id, err := age.GenerateHybridIdentity()
		if err != nil {
			return nil, err
		}
		return hybridIdentity{id}, nil
	}
	return nil, fmt.Errorf("unknown key type %d", t)
}

// MarshalIdentity returns the identity file contents in the format of
// age-keygen: a created comment, the public key comment and the secret key.
func MarshalIdentity(id Identity, created time.Time) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# created: %s\n", created.Format(time.RFC3339))
	fmt.Fprintf(&b, "# public key: %s\n", id.RecipientString())
	fmt.Fprintf(&b, "%s\n", id.String())
	return b.Bytes()
}

// WriteIdentityFile writes id to path with mode 0600, atomically. It never
// replaces an existing file: it returns an error wrapping fs.ErrExist.
func WriteIdentityFile(path string, id Identity, created time.Time) error {
	if err := atomicfile.WriteFile(path, MarshalIdentity(id, created), 0o600, false); err != nil {
		return fmt.Errorf("writing identity file: %w", err)
	}
	return nil
}

// ParseRecipient parses one recipient: age1… (X25519), age1pq1… (hybrid),
// age1tag1…/age1tagpq1… (tag), ssh-ed25519 or ssh-rsa (authorized_keys
// format). Plugin recipients are not supported. The error never repeats the
// input.
func ParseRecipient(s string) (age.Recipient, error) {
	switch {
	case strings.HasPrefix(s, "age1tag1") || strings.HasPrefix(s, "age1tagpq1"):
		return tag.ParseRecipient(s)
	case strings.HasPrefix(s, "age1pq1"):
		return age.ParseHybridRecipient(s)
	case strings.HasPrefix(s, "age1") && strings.Count(s, "1") > 1:
		return nil, errors.New("age plugin recipients are not supported")
	case strings.HasPrefix(s, "age1"):
		return age.ParseX25519Recipient(s)
	case strings.HasPrefix(s, "ssh-"):
		return agessh.ParseRecipient(s)
	case strings.HasPrefix(s, "AGE-SECRET-KEY-"):
		return nil, errors.New("found an identity (secret key) where a recipient was expected")
	}
	return nil, errors.New("unknown recipient type")
}

// ParseRecipients parses a recipients file: one recipient per line, blank
// lines and lines starting with # ignored, as the age CLI's -R. SSH keys of
// unsupported types are skipped and reported in skipped as "line N: TYPE".
// Errors name the line number, never its contents, since a recipients file
// given by mistake may be confidential.
func ParseRecipients(r io.Reader) (recipients []age.Recipient, skipped []string, err error) {
	lr := &io.LimitedReader{R: r, N: recipientsFileLimit + 1}
	sc := bufio.NewScanner(lr)
	sc.Buffer(make([]byte, 0, 4096), lineLengthLimit+2)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSuffix(sc.Text(), "\r")
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if !utf8.ValidString(line) {
			return nil, nil, fmt.Errorf("line %d: not valid UTF-8", n)
		}
		rec, perr := ParseRecipient(line)
		if perr != nil {
			if t, unsupported := unsupportedSSHKey(line); unsupported {
				skipped = append(skipped, fmt.Sprintf("line %d: %s", n, t))
				continue
			}
			if strings.HasPrefix(line, "AGE-") {
				return nil, nil, fmt.Errorf("line %d: an identity (secret key) was found in a recipients file", n)
			}
			return nil, nil, fmt.Errorf("line %d: malformed recipient", n)
		}
		recipients = append(recipients, rec)
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, nil, fmt.Errorf("line %d: line too long", n+1)
		}
		return nil, nil, err
	}
	if lr.N == 0 {
		return nil, nil, errors.New("recipients file too long")
	}
	if len(recipients) == 0 {
		return nil, nil, errors.New("no recipients found")
	}
	return recipients, skipped, nil
}

// ParseRecipientsFile is ParseRecipients on a named file; errors name it.
func ParseRecipientsFile(path string) ([]age.Recipient, []string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("opening recipients file: %w", err)
	}
	defer f.Close()
	recs, skipped, err := ParseRecipients(f)
	if err != nil {
		return nil, nil, fmt.Errorf("recipients file %q: %w", path, err)
	}
	return recs, skipped, nil
}

// unsupportedSSHKey reports whether s is a well-formed SSH public key of a
// type age cannot encrypt to (or an RSA key under 2048 bits).
func unsupportedSSHKey(s string) (string, bool) {
	fields := strings.Fields(s)
	if len(fields) < 2 {
		return "", false
	}
	key, err := base64.StdEncoding.DecodeString(fields[1])
	if err != nil {
		return "", false
	}
	k := cryptobyte.String(key)
	var typeLen uint32
	var typ []byte
	if !k.ReadUint32(&typeLen) || !k.ReadBytes(&typ, int(typeLen)) || string(typ) != fields[0] {
		return "", false
	}
	switch fields[0] {
	case "ssh-ed25519":
		return "", false
	case "ssh-rsa":
		pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(s))
		if err != nil {
			return "", false
		}
		ck, ok := pk.(ssh.CryptoPublicKey)
		if !ok {
			return "", false
		}
		rk, ok := ck.CryptoPublicKey().(*rsa.PublicKey)
		return "ssh-rsa under 2048 bits", ok && rk.N.BitLen() < 2048
	}
	return fields[0], true
}

// Prompt asks the user for a secret (a passphrase) with the given prompt.
type Prompt func(prompt string) ([]byte, error)

// ParseIdentities parses the contents of an identity file as the age CLI's
// -i does: age secret keys one per line (X25519 and hybrid), an SSH private
// key in PEM (ed25519 or RSA, passphrase-protected ones through prompt), or
// an age-encrypted identity file (decrypted with a passphrase from prompt).
// name is used in errors and to find NAME.pub for old-format encrypted SSH
// keys; the error never quotes key material.
func ParseIdentities(name string, r io.Reader, prompt Prompt) ([]age.Identity, error) {
	b := bufio.NewReader(r)
	p, _ := b.Peek(1024 + len(armor.Header))
	trimmed := bytes.TrimSpace(p)
	switch {
	case bytes.HasPrefix(p, []byte("age-encryption.org/")) || bytes.HasPrefix(trimmed, []byte(armor.Header)):
		return parseEncryptedIdentities(name, b, trimmed, prompt)
	case bytes.HasPrefix(trimmed, []byte("-----BEGIN")):
		data, err := io.ReadAll(io.LimitReader(b, pemKeyLimit+1))
		if err != nil {
			return nil, fmt.Errorf("reading %q: %w", name, err)
		}
		if len(data) > pemKeyLimit {
			return nil, fmt.Errorf("reading %q: file too long for a PEM key", name)
		}
		return parseSSHIdentity(name, data, prompt)
	}
	ids, err := parseIdentityLines(b)
	if err != nil {
		return nil, fmt.Errorf("identity file %q: %w", name, err)
	}
	return ids, nil
}

// ParseIdentitiesFile reads and parses the identity file at path.
func ParseIdentitiesFile(path string, prompt Prompt) ([]age.Identity, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening identity file: %w", err)
	}
	defer f.Close()
	return ParseIdentities(path, f, prompt)
}

func parseIdentityLines(r io.Reader) ([]age.Identity, error) {
	lr := &io.LimitedReader{R: r, N: identityFileLimit + 1}
	sc := bufio.NewScanner(lr)
	sc.Buffer(make([]byte, 0, 4096), lineLengthLimit+2)
	var ids []age.Identity
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSuffix(sc.Text(), "\r")
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if !utf8.ValidString(line) {
			return nil, fmt.Errorf("line %d: not valid UTF-8", n)
		}
		var id age.Identity
		var err error
		switch {
		case strings.HasPrefix(line, "AGE-SECRET-KEY-PQ-1"):
			id, err = age.ParseHybridIdentity(line)
		case strings.HasPrefix(line, "AGE-SECRET-KEY-1"):
			id, err = age.ParseX25519Identity(line)
		case strings.HasPrefix(line, "AGE-PLUGIN-"):
			return nil, fmt.Errorf("line %d: age plugin identities are not supported", n)
		case strings.HasPrefix(line, "age1") || strings.HasPrefix(line, "ssh-"):
			return nil, fmt.Errorf("line %d: a recipient (public key) was found in an identity file", n)
		default:
			err = errors.New("unknown identity type")
		}
		if err != nil {
			// age's parse errors do not echo the key, but be explicit.
			return nil, fmt.Errorf("line %d: malformed identity", n)
		}
		ids = append(ids, id)
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("line %d: line too long", n+1)
		}
		return nil, err
	}
	if lr.N == 0 {
		return nil, errors.New("identity file too long")
	}
	if len(ids) == 0 {
		return nil, errors.New("no identities found")
	}
	return ids, nil
}

func parseEncryptedIdentities(name string, b *bufio.Reader, trimmed []byte, prompt Prompt) ([]age.Identity, error) {
	var r io.Reader = b
	if bytes.HasPrefix(trimmed, []byte(armor.Header)) {
		r = armor.NewReader(b)
	}
	if prompt == nil {
		return nil, fmt.Errorf("identity file %q is passphrase-protected and no passphrase can be asked for", name)
	}
	pass, err := prompt(fmt.Sprintf("Enter passphrase for identity file %q:", name))
	if err != nil {
		return nil, &PromptError{err}
	}
	sid, err := age.NewScryptIdentity(string(pass))
	if err != nil {
		return nil, err
	}
	pr, err := age.Decrypt(r, sid)
	if err != nil {
		var nm *age.NoIdentityMatchError
		if errors.As(err, &nm) {
			return nil, &WrongKeyError{Path: name, StanzaTypes: nm.StanzaTypes}
		}
		return nil, &CorruptError{Path: name, Reason: "invalid encrypted identity file", Err: err}
	}
	ids, err := parseIdentityLines(pr)
	if err != nil {
		return nil, fmt.Errorf("encrypted identity file %q: %w", name, err)
	}
	return ids, nil
}

func parseSSHIdentity(name string, pemBytes []byte, prompt Prompt) ([]age.Identity, error) {
	id, err := agessh.ParseIdentity(pemBytes)
	var missing *ssh.PassphraseMissingError
	if errors.As(err, &missing) {
		if prompt == nil {
			return nil, fmt.Errorf("SSH key %q is passphrase-protected and no passphrase can be asked for", name)
		}
		pub := missing.PublicKey
		if pub == nil {
			pub, err = readSSHPubFile(name)
			if err != nil {
				return nil, err
			}
		}
		return []age.Identity{&encryptedSSHIdentity{name: name, pub: pub, pem: pemBytes, prompt: prompt}}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("malformed or unsupported SSH key in %q", name)
	}
	return []age.Identity{id}, nil
}

func readSSHPubFile(name string) (ssh.PublicKey, error) {
	data, err := os.ReadFile(name + ".pub")
	if err != nil {
		return nil, fmt.Errorf("SSH key %q is encrypted in an old format: its public key %q is needed: %w", name, name+".pub", err)
	}
	pk, _, _, _, err := ssh.ParseAuthorizedKey(data)
	if err != nil {
		return nil, fmt.Errorf("parsing %q: %w", name+".pub", err)
	}
	return pk, nil
}

// RecipientsOf returns the recipient string of each age identity in an
// identity file (as age-keygen -y does). SSH identities give their
// authorized_keys line.
func RecipientsOf(ids []age.Identity) ([]string, error) {
	var out []string
	for _, id := range ids {
		switch id := id.(type) {
		case *age.X25519Identity:
			out = append(out, id.Recipient().String())
		case *age.HybridIdentity:
			out = append(out, id.Recipient().String())
		case *agessh.Ed25519Identity, *agessh.RSAIdentity, *encryptedSSHIdentity:
			return nil, errors.New("SSH identities: take the recipient from the .pub file")
		default:
			return nil, fmt.Errorf("cannot derive a recipient from identity of type %T", id)
		}
	}
	return out, nil
}

// encryptedSSHIdentity is a passphrase-protected SSH key. It asks for the
// passphrase only when a file is encrypted to its public key, once (it is
// safe for concurrent use across a tree), and reports a wrong passphrase as
// *WrongKeyError and a failed prompt as *PromptError, which
// agessh.EncryptedSSHIdentity cannot (it flattens errors to text).
type encryptedSSHIdentity struct {
	name   string
	pub    ssh.PublicKey
	pem    []byte
	prompt Prompt

	mu        sync.Mutex
	decrypted age.Identity
}

func sshFingerprint(pk ssh.PublicKey) string {
	h := sha256.Sum256(pk.Marshal())
	return base64.RawStdEncoding.EncodeToString(h[:4])
}

func (i *encryptedSSHIdentity) Unwrap(stanzas []*age.Stanza) ([]byte, error) {
	match := false
	for _, s := range stanzas {
		if s.Type == i.pub.Type() && len(s.Args) > 0 && s.Args[0] == sshFingerprint(i.pub) {
			match = true
		}
	}
	if !match {
		return nil, age.ErrIncorrectIdentity
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.decrypted == nil {
		pass, err := i.prompt(fmt.Sprintf("Enter passphrase for SSH key %q:", i.name))
		if err != nil {
			return nil, &PromptError{err}
		}
		raw, err := ssh.ParseRawPrivateKeyWithPassphrase(i.pem, pass)
		if errors.Is(err, x509.IncorrectPasswordError) {
			return nil, &WrongKeyError{Path: i.name, StanzaTypes: []string{i.pub.Type()}, Detail: "incorrect passphrase for the SSH key"}
		}
		if err != nil {
			return nil, fmt.Errorf("SSH key %q: cannot decrypt it", i.name)
		}
		signer, err := ssh.NewSignerFromKey(raw)
		if err != nil || !bytes.Equal(signer.PublicKey().Marshal(), i.pub.Marshal()) {
			return nil, fmt.Errorf("SSH key %q does not match its public key", i.name)
		}
		switch k := raw.(type) {
		case *ed25519.PrivateKey:
			i.decrypted, err = agessh.NewEd25519Identity(*k)
		case ed25519.PrivateKey:
			i.decrypted, err = agessh.NewEd25519Identity(k)
		case *rsa.PrivateKey:
			i.decrypted, err = agessh.NewRSAIdentity(k)
		default:
			err = fmt.Errorf("unsupported SSH key type %T", raw)
		}
		if err != nil {
			return nil, fmt.Errorf("SSH key %q: %w", i.name, err)
		}
	}
	return i.decrypted.Unwrap(stanzas)
}

// IsPostQuantum reports whether a recipient is post-quantum (the hybrid
// ML-KEM-768 + X25519 recipient, or a hybrid tag recipient). age refuses to
// mix them with classic recipients in one file.
func IsPostQuantum(r age.Recipient) bool {
	switch r := r.(type) {
	case *age.HybridRecipient:
		return true
	case *tag.Recipient:
		return r.Hybrid()
	}
	return false
}
