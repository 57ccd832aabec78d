package s3_test

import (
	"context"
	"fmt"
	"log"
	"net/url"
	"time"

	"github.com/nhscrypt/nhscrypt/backup"
	"github.com/nhscrypt/nhscrypt/backup/retry"
	"github.com/nhscrypt/nhscrypt/backup/s3"
)

// Open a repository in a bucket with object lock, so that every object
// written is kept for 30 days in compliance mode, with the credentials
// every S3 tool reads, and retry transient failures.
func ExampleOpen() {
	ctx := context.Background()
	u, _ := url.Parse("s3://s3.eu-west-2.amazonaws.com/trust-backups/host-a")
	b, err := s3.Open(ctx, u, s3.Options{
		Credentials:  s3.DefaultCredentials(),
		Region:       s3.DefaultRegion(),
		StorageClass: "STANDARD_IA",
		Retention:    &s3.Retention{Mode: s3.Compliance, Days: 30},
	})
	if err != nil {
		log.Fatal(err) // wraps backup.ErrNotFound for a missing bucket, backup.ErrAuth for refused credentials
	}
	defer b.Close()
	repo, err := backup.Open(ctx, retry.New(b, 6, time.Second, time.Minute))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(repo.Config.ID)
}
