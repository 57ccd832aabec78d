package sftp_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/url"
	"time"

	"github.com/nhscrypt/nhscrypt/backup"
	"github.com/nhscrypt/nhscrypt/backup/retry"
	"github.com/nhscrypt/nhscrypt/backup/sftp"
)

// Open a repository on an SFTP server with a dedicated key and
// known_hosts, wrapped in the retry decorator as the CLI does.
func ExampleOpen() {
	ctx := context.Background()
	u, _ := url.Parse("sftp://nhscrypt-web1@backup.example.nhs.uk/web1")
	b, err := sftp.Open(ctx, u, sftp.Options{
		KnownHostsFile: "/etc/nhscrypt/known_hosts",
		IdentityFiles:  []string{"/etc/nhscrypt/ssh_ed25519"},
	})
	var hke *sftp.HostKeyError
	switch {
	case errors.As(err, &hke) && !hke.Changed:
		log.Fatalf("check the server's host key fingerprint %s with its administrator, then connect with AcceptNew", hke.Fingerprint)
	case err != nil:
		log.Fatal(err) // wraps backup.ErrAuth, backup.ErrNotFound, or is transient
	}
	defer b.Close()
	repo, err := backup.Open(ctx, retry.New(b, 5, time.Second, 30*time.Second))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(repo.Config.ID)
}
