package filecrypt

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"

	"filippo.io/age"
)

// Fixed keys for fuzz seeds (test-only; never used for real data).
const (
	fuzzIdentity  = "AGE-SECRET-KEY-1GFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPQ4EGAEX"
	fuzzRecipient = "age1zvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwj"
	fuzzSSH       = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHsKLqeplhpW+uObz5dvMgjz1OxfM/XXUB+VHtZ6isGN alice@example"
)

func stringer(r age.Recipient) (string, bool) {
	s, ok := r.(fmt.Stringer)
	if !ok {
		return "", false
	}
	return s.String(), true
}

// FuzzParseRecipients: no panic, nil results on error, and every recipient
// that can print itself parses back to the same string.
func FuzzParseRecipients(f *testing.F) {
	f.Add([]byte(fuzzRecipient + "\n"))
	f.Add([]byte("# c\n\n" + fuzzRecipient + "\r\n" + fuzzSSH + "\n"))
	f.Add([]byte(fuzzIdentity))
	f.Add([]byte("age1pq1qqqq\nssh-rsa AAAA\n"))
	f.Add([]byte("age1tag1qqqq\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		recs, skipped, err := ParseRecipients(bytes.NewReader(data))
		if err != nil {
			if recs != nil || skipped != nil {
				t.Fatalf("results with error %v", err)
			}
			if strings.Contains(err.Error(), "AGE-SECRET-KEY-1") {
				t.Fatalf("error echoes a secret: %v", err)
			}
			return
		}
		if len(recs) == 0 {
			t.Fatal("no recipients and no error")
		}
		for _, r := range recs {
			s, ok := stringer(r)
			if !ok {
				continue
			}
			r2, err := ParseRecipient(s)
			if err != nil {
				t.Fatalf("%q does not parse back: %v", s, err)
			}
			if s2, _ := stringer(r2); s2 != s {
				t.Fatalf("round trip %q -> %q", s, s2)
			}
		}
	})
}

// FuzzParseIdentities: no panic, nil on error, and age identities give
// recipients that parse.
func FuzzParseIdentities(f *testing.F) {
	f.Add([]byte(fuzzIdentity + "\n"))
	f.Add([]byte("# created: 2026-01-01T00:00:00Z\n# public key: " + fuzzRecipient + "\n" + fuzzIdentity + "\n"))
	f.Add([]byte("-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n"))
	f.Add([]byte("-----BEGIN AGE ENCRYPTED FILE-----\nYWdl\n-----END AGE ENCRYPTED FILE-----\n"))
	f.Add([]byte("age-encryption.org/v1\n-> scrypt AAAA 10\nAAAA\n--- AAAA\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		prompt := func(string) ([]byte, error) { return []byte("x"), nil }
		ids, err := ParseIdentities("fuzz", bytes.NewReader(data), prompt)
		if err != nil {
			if ids != nil {
				t.Fatal("identities with error")
			}
			if strings.Contains(err.Error(), "AGE-SECRET-KEY-1") {
				t.Fatalf("error echoes a secret: %v", err)
			}
			return
		}
		if recs, err := RecipientsOf(ids); err == nil {
			for _, s := range recs {
				if _, err := ParseRecipient(s); err != nil {
					t.Fatalf("recipient %q of a parsed identity does not parse: %v", s, err)
				}
			}
		}
	})
}

// FuzzDecrypt: arbitrary input never panics, and anything that decrypts
// re-encrypts and decrypts to the same plaintext.
func FuzzDecrypt(f *testing.F) {
	id, err := age.ParseX25519Identity(fuzzIdentity)
	if err != nil {
		f.Fatal(err)
	}
	for _, size := range []int{0, 10, 70_000} {
		var buf bytes.Buffer
		if _, err := Encrypt(context.Background(), &buf, bytes.NewReader(make([]byte, size)), EncryptOptions{Recipients: []age.Recipient{id.Recipient()}}); err != nil {
			f.Fatal(err)
		}
		f.Add(buf.Bytes())
	}
	f.Add([]byte("-----BEGIN AGE ENCRYPTED FILE-----\n-----END AGE ENCRYPTED FILE-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var out bytes.Buffer
		n, err := Decrypt(context.Background(), &out, bytes.NewReader(data), "fuzz", DecryptOptions{Identities: []age.Identity{id}})
		if err != nil {
			return
		}
		if n != int64(out.Len()) {
			t.Fatalf("reported %d bytes, wrote %d", n, out.Len())
		}
		var ct bytes.Buffer
		if _, err := Encrypt(context.Background(), &ct, bytes.NewReader(out.Bytes()), EncryptOptions{Recipients: []age.Recipient{id.Recipient()}}); err != nil {
			t.Fatal(err)
		}
		var again bytes.Buffer
		if _, err := Decrypt(context.Background(), &again, &ct, "again", DecryptOptions{Identities: []age.Identity{id}}); err != nil || !bytes.Equal(again.Bytes(), out.Bytes()) {
			t.Fatalf("re-encryption round trip failed: %v", err)
		}
	})
}
