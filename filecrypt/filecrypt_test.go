package filecrypt

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/nhscrypt/nhscrypt/internal/atomicfile"
)

func randBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func newKey(t testing.TB, kt KeyType) (Identity, age.Recipient) {
	t.Helper()
	id, err := GenerateIdentity(kt)
	if err != nil {
		t.Fatal(err)
	}
	r, err := ParseRecipient(id.RecipientString())
	if err != nil {
		t.Fatal(err)
	}
	return id, r
}

func encrypt(t testing.TB, plain []byte, opts EncryptOptions) []byte {
	t.Helper()
	var buf bytes.Buffer
	n, err := Encrypt(context.Background(), &buf, bytes.NewReader(plain), opts)
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(len(plain)) {
		t.Fatalf("Encrypt read %d bytes, want %d", n, len(plain))
	}
	return buf.Bytes()
}

func TestRoundTrip(t *testing.T) {
	xid, xr := newKey(t, X25519)
	hid, hr := newKey(t, Hybrid)
	sr, err := age.NewScryptRecipient("pass phrase")
	if err != nil {
		t.Fatal(err)
	}
	sr.SetWorkFactor(10)
	pass := &PassphraseSource{Prompt: func(string) ([]byte, error) { return []byte("pass phrase"), nil }}
	cases := []struct {
		name  string
		rcpt  age.Recipient
		dec   DecryptOptions
		armor bool
		stype string
	}{
		{"x25519", xr, DecryptOptions{Identities: []age.Identity{xid}}, false, "X25519"},
		{"x25519-armor", xr, DecryptOptions{Identities: []age.Identity{xid}}, true, "X25519"},
		{"hybrid", hr, DecryptOptions{Identities: []age.Identity{hid}}, false, "mlkem768x25519"},
		{"scrypt", sr, DecryptOptions{Passphrase: pass}, false, "scrypt"},
	}
	for _, c := range cases {
		for _, size := range []int{0, 1, 64 << 10, 64<<10 + 1, 300_000} {
			plain := randBytes(t, size)
			ct := encrypt(t, plain, EncryptOptions{Recipients: []age.Recipient{c.rcpt}, Armor: c.armor})
			if c.armor != strings.HasPrefix(string(ct), "-----BEGIN AGE ENCRYPTED FILE-----") {
				t.Errorf("%s: armor=%v but output starts %q", c.name, c.armor, ct[:20])
			}
			if !c.armor && !bytes.Contains(ct[:200], []byte("-> "+c.stype+" ")) {
				t.Errorf("%s: no %s stanza in header", c.name, c.stype)
			}
			var out bytes.Buffer
			n, err := Decrypt(context.Background(), &out, bytes.NewReader(ct), "f.age", c.dec)
			if err != nil {
				t.Fatalf("%s/%d: %v", c.name, size, err)
			}
			if n != int64(size) || !bytes.Equal(out.Bytes(), plain) {
				t.Fatalf("%s/%d: round trip differs", c.name, size)
			}
		}
	}
}

func TestWrongKey(t *testing.T) {
	_, r := newKey(t, X25519)
	other, _ := newKey(t, X25519)
	pq, _ := newKey(t, Hybrid)
	ct := encrypt(t, []byte("secret"), EncryptOptions{Recipients: []age.Recipient{r}})
	_, err := Decrypt(context.Background(), &bytes.Buffer{}, bytes.NewReader(ct), "f.age",
		DecryptOptions{Identities: []age.Identity{other, pq}})
	var wk *WrongKeyError
	if !errors.As(err, &wk) {
		t.Fatalf("got %v (%T), want *WrongKeyError", err, err)
	}
	if len(wk.StanzaTypes) != 1 || wk.StanzaTypes[0] != "X25519" || wk.Path != "f.age" {
		t.Errorf("WrongKeyError = %+v", wk)
	}
	if strings.Contains(err.Error(), "AGE-SECRET") {
		t.Errorf("error leaks key material: %v", err)
	}
}

// TestDecryptFileLeavesNothing: a tampered or truncated file, or a wrong
// key, must not leave any plaintext (or temporary file) behind.
func TestDecryptFileLeavesNothing(t *testing.T) {
	id, r := newKey(t, X25519)
	other, _ := newKey(t, X25519)
	plain := randBytes(t, 200_000) // four chunks
	ct := encrypt(t, plain, EncryptOptions{Recipients: []age.Recipient{r}})
	hdr := bytes.Index(ct, []byte("\n--- ")) + 48
	tampered := bytes.Clone(ct)
	tampered[len(tampered)-100] ^= 1 // in the last chunk
	early := bytes.Clone(ct)
	early[hdr+16+10] ^= 0x80 // in the first chunk
	cases := map[string]struct {
		data []byte
		ids  []age.Identity
		want any
	}{
		"tampered-last-chunk":  {tampered, []age.Identity{id}, new(*CorruptError)},
		"tampered-first-chunk": {early, []age.Identity{id}, new(*CorruptError)},
		"truncated-at-chunk":   {ct[:hdr+16+(64<<10)+16], []age.Identity{id}, new(*CorruptError)},
		"truncated-mid-chunk":  {ct[:len(ct)-1], []age.Identity{id}, new(*CorruptError)},
		"header-only":          {ct[:hdr], []age.Identity{id}, new(*CorruptError)},
		"empty":                {nil, []age.Identity{id}, new(*CorruptError)},
		"wrong-key":            {ct, []age.Identity{other}, new(*WrongKeyError)},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			src := filepath.Join(dir, "f.age")
			if err := os.WriteFile(src, c.data, 0o600); err != nil {
				t.Fatal(err)
			}
			dst := filepath.Join(dir, "out")
			_, err := DecryptFile(context.Background(), src, dst, DecryptOptions{Identities: c.ids}, FileOptions{})
			if err == nil {
				t.Fatal("decrypt succeeded")
			}
			if !errors.As(err, c.want) {
				t.Fatalf("got %v (%T), want %T", err, err, c.want)
			}
			if !strings.Contains(err.Error(), src) {
				t.Errorf("error %q does not name the file", err)
			}
			assertOnly(t, dir, "f.age")
		})
	}
}

// assertOnly checks that dir holds exactly the named entries.
func assertOnly(t *testing.T, dir string, names ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if strings.Join(got, ",") != strings.Join(names, ",") {
		t.Errorf("%s holds %v, want %v", dir, got, names)
	}
}

func TestEncryptFileNoOverwrite(t *testing.T) {
	id, r := newKey(t, X25519)
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "p"), filepath.Join(dir, "p.age")
	os.WriteFile(src, []byte("new"), 0o644)
	os.WriteFile(dst, []byte("old"), 0o644)
	enc := EncryptOptions{Recipients: []age.Recipient{r}}
	if _, err := EncryptFile(context.Background(), src, dst, enc, FileOptions{}); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("got %v, want fs.ErrExist", err)
	}
	if b, _ := os.ReadFile(dst); string(b) != "old" {
		t.Fatal("existing output was changed")
	}
	if _, err := EncryptFile(context.Background(), src, dst, enc, FileOptions{Overwrite: true}); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	if _, err := DecryptFile(context.Background(), dst, out, DecryptOptions{Identities: []age.Identity{id}}, FileOptions{}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(out); string(b) != "new" {
		t.Fatalf("decrypted %q", b)
	}
	if st, _ := os.Stat(out); st.Mode().Perm() != 0o600&^atomicfile.Umask() {
		t.Errorf("plaintext output mode %v, want 0600", st.Mode().Perm())
	}
	assertOnly(t, dir, "out", "p", "p.age")
}

func TestEncryptCancelled(t *testing.T) {
	_, r := newKey(t, X25519)
	dir := t.TempDir()
	src := filepath.Join(dir, "big")
	os.WriteFile(src, randBytes(t, 4<<20), 0o644)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := EncryptFile(ctx, src, filepath.Join(dir, "big.age"), EncryptOptions{Recipients: []age.Recipient{r}}, FileOptions{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	assertOnly(t, dir, "big")
}

// makeTree writes n files of random sizes and modes in nested folders.
func makeTree(t testing.TB, root string, n int) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	modes := []fs.FileMode{0o600, 0o640, 0o644, 0o400, 0o755}
	for i := 0; i < n; i++ {
		d1, _ := rand.Int(rand.Reader, big.NewInt(8))
		d2, _ := rand.Int(rand.Reader, big.NewInt(5))
		sz, _ := rand.Int(rand.Reader, big.NewInt(20_000))
		rel := filepath.Join("d"+d1.String(), "e"+d2.String(), "f"+big.NewInt(int64(i)).String())
		if i%97 == 0 {
			sz = big.NewInt(0)
		}
		if i%500 == 1 {
			sz = big.NewInt(150_000) // multi-chunk
		}
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		data := randBytes(t, int(sz.Int64()))
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, modes[i%len(modes)])
		mt := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC).Add(time.Duration(i) * time.Minute)
		os.Chtimes(p, mt, mt)
		files[rel] = data
	}
	return files
}

func TestTreeRoundTrip(t *testing.T) {
	n := 3000
	if testing.Short() {
		n = 300
	}
	id, r := newKey(t, X25519)
	base := t.TempDir()
	src, enc, dec := filepath.Join(base, "src"), filepath.Join(base, "enc"), filepath.Join(base, "dec")
	files := makeTree(t, src, n)
	os.Symlink("d0", filepath.Join(src, "link"))
	var events atomic.Int64
	prog := progressFunc(func(e Event) {
		if e.Kind == EventFile {
			events.Add(1)
		}
	})
	res, err := EncryptTree(context.Background(), src, enc, EncryptOptions{Recipients: []age.Recipient{r}}, TreeOptions{Progress: prog})
	if err != nil {
		t.Fatal(err)
	}
	if res.Files != n || int(events.Load()) != n {
		t.Fatalf("encrypted %d files, %d events, want %d", res.Files, events.Load(), n)
	}
	if len(res.Skipped) != 1 || res.Skipped[0].Path != "link" {
		t.Errorf("skipped = %v, want the symlink", res.Skipped)
	}
	res, err = DecryptTree(context.Background(), enc, dec, DecryptOptions{Identities: []age.Identity{id}}, TreeOptions{Workers: 3})
	if err != nil {
		t.Fatal(err)
	}
	if res.Files != n {
		t.Fatalf("decrypted %d files, want %d", res.Files, n)
	}
	for rel, want := range files {
		got, err := os.ReadFile(filepath.Join(dec, rel))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s: content differs", rel)
		}
		sst, _ := os.Stat(filepath.Join(src, rel))
		dst, _ := os.Stat(filepath.Join(dec, rel))
		est, _ := os.Stat(filepath.Join(enc, rel+Suffix))
		if sst.Mode() != dst.Mode() || sst.Mode() != est.Mode() {
			t.Fatalf("%s: modes src %v enc %v dec %v", rel, sst.Mode(), est.Mode(), dst.Mode())
		}
		if !sst.ModTime().Equal(dst.ModTime()) || !sst.ModTime().Equal(est.ModTime()) {
			t.Fatalf("%s: mtimes differ", rel)
		}
	}
	if _, err := os.Lstat(filepath.Join(dec, "link")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("symlink was reproduced or followed: %v", err)
	}
}

type progressFunc func(Event)

func (f progressFunc) TreeEvent(e Event) { f(e) }

// TestTreeCancel cancels a tree mid-run: it stops, reports the
// cancellation, and leaves no temporary files (and no partial outputs).
func TestTreeCancel(t *testing.T) {
	id, r := newKey(t, X25519)
	base := t.TempDir()
	src, enc, dec := filepath.Join(base, "src"), filepath.Join(base, "enc"), filepath.Join(base, "dec")
	makeTree(t, src, 1500)
	for _, run := range []func(ctx context.Context, p Progress) (*TreeResult, error){
		func(ctx context.Context, p Progress) (*TreeResult, error) {
			return EncryptTree(ctx, src, enc, EncryptOptions{Recipients: []age.Recipient{r}}, TreeOptions{Progress: p})
		},
		func(ctx context.Context, p Progress) (*TreeResult, error) {
			return DecryptTree(ctx, enc, dec, DecryptOptions{Identities: []age.Identity{id}}, TreeOptions{Progress: p})
		},
	} {
		ctx, cancel := context.WithCancel(context.Background())
		var done atomic.Int64
		res, err := run(ctx, progressFunc(func(e Event) {
			if e.Kind == EventFile && done.Add(1) == 200 {
				cancel()
			}
		}))
		cancel()
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v, want context.Canceled", err)
		}
		if res.Files < 200 || res.Files >= 1500 {
			t.Errorf("%d files done; cancellation did not stop the run mid-way", res.Files)
		}
		if len(res.Failed) != 0 {
			t.Errorf("cancelled files reported as failures: %v", res.Failed[0])
		}
		for _, dir := range []string{enc, dec} {
			filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
				if err == nil && atomicfile.IsTemp(d.Name()) {
					t.Errorf("temporary file left behind: %s", p)
				}
				return nil
			})
		}
		// For the decrypt leg, first finish the encryption.
		if _, err := EncryptTree(context.Background(), src, enc, EncryptOptions{Recipients: []age.Recipient{r}}, TreeOptions{Overwrite: true}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestTreeRemoveSource(t *testing.T) {
	id, r := newKey(t, Hybrid)
	base := t.TempDir()
	src, enc, dec := filepath.Join(base, "src"), filepath.Join(base, "enc"), filepath.Join(base, "dec")
	files := makeTree(t, src, 50)
	res, err := EncryptTree(context.Background(), src, enc, EncryptOptions{Recipients: []age.Recipient{r}}, TreeOptions{RemoveSource: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Removed != len(files) {
		t.Fatalf("removed %d, want %d", res.Removed, len(files))
	}
	for rel := range files {
		if _, err := os.Stat(filepath.Join(src, rel)); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("%s not removed", rel)
		}
	}
	if _, err := DecryptTree(context.Background(), enc, dec, DecryptOptions{Identities: []age.Identity{id}}, TreeOptions{}); err != nil {
		t.Fatal(err)
	}
	for rel, want := range files {
		got, _ := os.ReadFile(filepath.Join(dec, rel))
		if !bytes.Equal(got, want) {
			t.Fatalf("%s differs after remove-source round trip", rel)
		}
	}
}

// TestVerifyCiphertextDetectsDamage: the check behind --remove-source must
// fail if the written ciphertext does not decrypt to the source.
func TestVerifyCiphertextDetectsDamage(t *testing.T) {
	_, r := newKey(t, X25519)
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "p"), filepath.Join(dir, "p.age")
	os.WriteFile(src, randBytes(t, 100_000), 0o644)
	k := &keyCapture{}
	_, sum, err := encryptFile(context.Background(), src, dst, EncryptOptions{Recipients: []age.Recipient{r}}, FileOptions{}, k)
	if err != nil {
		t.Fatal(err)
	}
	if err := verifyCiphertext(context.Background(), dst, k, sum); err != nil {
		t.Fatalf("intact ciphertext failed verification: %v", err)
	}
	wrongSum := bytes.Clone(sum)
	wrongSum[0] ^= 1
	if err := verifyCiphertext(context.Background(), dst, k, wrongSum); err == nil {
		t.Fatal("hash mismatch not detected")
	}
	ct, _ := os.ReadFile(dst)
	ct[len(ct)-5] ^= 1
	os.WriteFile(dst, ct, 0o644)
	if err := verifyCiphertext(context.Background(), dst, k, sum); err == nil {
		t.Fatal("damaged ciphertext passed verification")
	}
}

func TestParseRecipients(t *testing.T) {
	id, _ := newKey(t, X25519)
	pq, _ := newKey(t, Hybrid)
	good := "# comment\n\n" + id.RecipientString() + "\r\n" + pq.RecipientString() + "\n" +
		"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHsKLqeplhpW+uObz5dvMgjz1OxfM/XXUB+VHtZ6isGN alice@example\n" +
		"ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBIrexyvyQ+BBAvS1aTtPlyp6zlcZ4JvcPvSIu2tD9PHhA0nuyhxuWu6t5bKpV9JYumpaUmpR8qq2jRt+2sDtN+I= bob@example\n"
	recs, skipped, err := ParseRecipients(strings.NewReader(good))
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 3 || len(skipped) != 1 || !strings.HasPrefix(skipped[0], "line 6: ecdsa") {
		t.Fatalf("got %d recipients, skipped %v", len(recs), skipped)
	}
	bad := map[string]string{
		"":                        "no recipients found",
		"# only comments\n":       "no recipients found",
		"x\n":                     "line 1: malformed recipient",
		"# c\n" + id.String():     "line 2: an identity",
		"age1plugin1qqqqqqqqq\n":  "line 1: malformed recipient",
		"\xff\xfe\n":              "line 1: not valid UTF-8",
		strings.Repeat("a", 9000): "too long",
	}
	for in, want := range bad {
		_, _, err := ParseRecipients(strings.NewReader(in))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseRecipients(%.20q) = %v, want %q", in, err, want)
		}
		if err != nil && len(in) > 8 && strings.Contains(err.Error(), in[:8]) && !strings.HasPrefix(in, "#") {
			t.Errorf("error echoes the input: %v", err)
		}
	}
}

func TestParseIdentities(t *testing.T) {
	id, _ := newKey(t, X25519)
	pq, _ := newKey(t, Hybrid)
	file := MarshalIdentity(id, time.Now()) // with comments
	file = append(file, []byte(pq.String()+"\n")...)
	ids, err := ParseIdentities("k", bytes.NewReader(file), nil)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := RecipientsOf(ids)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 || recs[0] != id.RecipientString() || recs[1] != pq.RecipientString() {
		t.Fatalf("RecipientsOf = %v", recs)
	}
	// A passphrase-encrypted identity file.
	sr, _ := age.NewScryptRecipient("pw")
	sr.SetWorkFactor(10)
	ct := encrypt(t, file, EncryptOptions{Recipients: []age.Recipient{sr}, Armor: true})
	asked := 0
	prompt := func(string) ([]byte, error) { asked++; return []byte("pw"), nil }
	ids, err = ParseIdentities("k.age", bytes.NewReader(ct), prompt)
	if err != nil || len(ids) != 2 || asked != 1 {
		t.Fatalf("encrypted identity file: %v, %d ids, asked %d", err, len(ids), asked)
	}
	_, err = ParseIdentities("k.age", bytes.NewReader(ct), func(string) ([]byte, error) { return []byte("no"), nil })
	var wk *WrongKeyError
	if !errors.As(err, &wk) {
		t.Fatalf("wrong passphrase: %v", err)
	}
	for in, want := range map[string]string{
		"":                         "no identities found",
		id.RecipientString():       "line 1: a recipient",
		"AGE-SECRET-KEY-1AAAA\n":   "line 1: malformed identity",
		"AGE-PLUGIN-YUBIKEY-1QQ\n": "plugin identities are not supported",
	} {
		_, err := ParseIdentities("k", strings.NewReader(in), nil)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseIdentities(%.20q) = %v, want %q", in, err, want)
		}
	}
}

func TestWriteIdentityFile(t *testing.T) {
	id, _ := newKey(t, X25519)
	p := filepath.Join(t.TempDir(), "key.txt")
	if err := WriteIdentityFile(p, id, time.Now()); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(p)
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", st.Mode().Perm())
	}
	other, _ := newKey(t, X25519)
	if err := WriteIdentityFile(p, other, time.Now()); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("overwrote an identity file: %v", err)
	}
	ids, err := ParseIdentitiesFile(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	if recs, _ := RecipientsOf(ids); recs[0] != id.RecipientString() {
		t.Fatal("identity file was replaced")
	}
}
