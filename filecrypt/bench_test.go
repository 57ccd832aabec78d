package filecrypt

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"testing"

	"filippo.io/age"
	"golang.org/x/crypto/chacha20poly1305"
)

const benchSize = 64 << 20

// BenchmarkEncrypt measures in-memory age encryption throughput through
// filecrypt.Encrypt (64 KiB age chunks); compare with
// BenchmarkChaCha20Poly1305Chunks, the raw AEAD on the same chunking.
func BenchmarkEncrypt(b *testing.B) {
	_, r := newKey(b, X25519)
	src := make([]byte, benchSize)
	rand.Read(src)
	b.SetBytes(benchSize)
	b.ResetTimer()
	for b.Loop() {
		if _, err := Encrypt(context.Background(), io.Discard, bytes.NewReader(src), EncryptOptions{Recipients: []age.Recipient{r}}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecrypt(b *testing.B) {
	id, r := newKey(b, X25519)
	src := make([]byte, benchSize)
	rand.Read(src)
	var ct bytes.Buffer
	if _, err := Encrypt(context.Background(), &ct, bytes.NewReader(src), EncryptOptions{Recipients: []age.Recipient{r}}); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(benchSize)
	b.ResetTimer()
	for b.Loop() {
		if _, err := Decrypt(context.Background(), io.Discard, bytes.NewReader(ct.Bytes()), "bench", DecryptOptions{Identities: []age.Identity{id}}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkChaCha20Poly1305Chunks is the ceiling: the raw AEAD of
// golang.org/x/crypto sealing (or opening) 64 KiB chunks with a counter
// nonce, as age's STREAM does, with no I/O.
func BenchmarkChaCha20Poly1305Chunks(b *testing.B) {
	key := make([]byte, chacha20poly1305.KeySize)
	rand.Read(key)
	aead, err := chacha20poly1305.New(key)
	if err != nil {
		b.Fatal(err)
	}
	const chunk = 64 << 10
	src := make([]byte, benchSize)
	rand.Read(src)
	dst := make([]byte, 0, chunk+aead.Overhead())
	nonce := make([]byte, chacha20poly1305.NonceSize)
	b.Run("seal", func(b *testing.B) {
		b.SetBytes(benchSize)
		for b.Loop() {
			for i := 0; i < benchSize; i += chunk {
				nonce[0]++
				dst = aead.Seal(dst[:0], nonce, src[i:i+chunk], nil)
			}
		}
	})
	sealed := aead.Seal(nil, nonce, src[:chunk], nil)
	b.Run("open", func(b *testing.B) {
		b.SetBytes(benchSize)
		for b.Loop() {
			for i := 0; i < benchSize; i += chunk {
				if _, err := aead.Open(dst[:0], nonce, sealed, nil); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
}
