package local_test

import (
	"testing"

	"github.com/nhscrypt/nhscrypt/backup"
	"github.com/nhscrypt/nhscrypt/backup/backendtest"
	"github.com/nhscrypt/nhscrypt/backup/local"
)

func TestConformance(t *testing.T) {
	backendtest.Run(t, func(t *testing.T) backup.Backend {
		b := local.Open(t.TempDir())
		if err := b.Create(); err != nil {
			t.Fatal(err)
		}
		return b
	})
}
