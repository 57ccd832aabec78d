package filecrypt_test

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"filippo.io/age"

	"github.com/nhscrypt/nhscrypt/filecrypt"
)

// Encrypt to a recipient and decrypt with its identity, in memory.
func Example() {
	id, err := filecrypt.GenerateIdentity(filecrypt.X25519)
	if err != nil {
		log.Fatal(err)
	}
	rcpt, err := filecrypt.ParseRecipient(id.RecipientString())
	if err != nil {
		log.Fatal(err)
	}
	var ct bytes.Buffer
	ctx := context.Background()
	if _, err := filecrypt.Encrypt(ctx, &ct, bytes.NewReader([]byte("patient record")),
		filecrypt.EncryptOptions{Recipients: []age.Recipient{rcpt}}); err != nil {
		log.Fatal(err)
	}
	var pt bytes.Buffer
	if _, err := filecrypt.Decrypt(ctx, &pt, &ct, "record.age",
		filecrypt.DecryptOptions{Identities: []age.Identity{id}}); err != nil {
		log.Fatal(err)
	}
	fmt.Println(pt.String())
	// Output: patient record
}

// Encrypt a directory tree to a post-quantum hybrid recipient.
func ExampleEncryptTree() {
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	os.MkdirAll(filepath.Join(dir, "src", "clinic"), 0o755)
	os.WriteFile(filepath.Join(dir, "src", "clinic", "a.txt"), []byte("a"), 0o640)
	os.WriteFile(filepath.Join(dir, "src", "b.txt"), []byte("b"), 0o640)

	id, _ := filecrypt.GenerateIdentity(filecrypt.Hybrid)
	rcpt, _ := filecrypt.ParseRecipient(id.RecipientString())
	res, err := filecrypt.EncryptTree(context.Background(), filepath.Join(dir, "src"), filepath.Join(dir, "enc"),
		filecrypt.EncryptOptions{Recipients: []age.Recipient{rcpt}}, filecrypt.TreeOptions{})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(res.Files, "files encrypted")
	_, err = os.Stat(filepath.Join(dir, "enc", "clinic", "a.txt.age"))
	fmt.Println(err == nil)
	// Output:
	// 2 files encrypted
	// true
}

// A wrong key is a *WrongKeyError naming the recipient types of the file.
func ExampleWrongKeyError() {
	id, _ := filecrypt.GenerateIdentity(filecrypt.X25519)
	other, _ := filecrypt.GenerateIdentity(filecrypt.X25519)
	rcpt, _ := filecrypt.ParseRecipient(id.RecipientString())
	var ct bytes.Buffer
	filecrypt.Encrypt(context.Background(), &ct, bytes.NewReader([]byte("x")), filecrypt.EncryptOptions{Recipients: []age.Recipient{rcpt}})
	_, err := filecrypt.Decrypt(context.Background(), &bytes.Buffer{}, &ct, "x.age", filecrypt.DecryptOptions{Identities: []age.Identity{other}})
	fmt.Println(err)
	// Output: "x.age": no identity matched; the file is encrypted to recipient types: X25519
}
