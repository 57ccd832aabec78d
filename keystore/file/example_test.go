package file_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"filippo.io/age"

	"github.com/nhscrypt/nhscrypt/keystore"
	"github.com/nhscrypt/nhscrypt/keystore/file"
)

// A server escrows a recovery key with only the admin's public key, and
// lists what it escrowed; reading the key back needs the admin identity.
func Example() {
	ctx := context.Background()
	admin, _ := age.GenerateX25519Identity() // kept off the server in real use
	dir, _ := os.MkdirTemp("", "escrow")
	defer os.RemoveAll(dir)

	server, err := file.Open(dir, file.Options{Recipients: []age.Recipient{admin.Recipient()}})
	if err != nil {
		log.Fatal(err)
	}
	k := keystore.Key{Name: "sda2-recovery", Kind: keystore.KindLUKSRecovery, Device: "/dev/sda2", Keyslot: keystore.Slot(1)}
	if _, err := server.Put(ctx, k, []byte("recovery passphrase")); err != nil {
		log.Fatal(err)
	}
	if _, err := server.SetState(ctx, "sda2-recovery", 1, keystore.StateActive); err != nil {
		log.Fatal(err)
	}
	keys, _ := server.List(ctx)
	for _, k := range keys {
		fmt.Println(k.Name, k.Kind, k.State, k.Revision)
	}
	_, err = server.Put(ctx, k, []byte("another"))
	fmt.Println(err)

	restore, _ := file.Open(dir, file.Options{Identities: []age.Identity{admin}})
	_, secret, _ := restore.Get(ctx, "sda2-recovery")
	fmt.Printf("%s\n", secret)
	// Output:
	// sda2-recovery luks-recovery active 2
	// escrow "sda2-recovery": escrow entry already exists
	// recovery passphrase
}
