package backup_test

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
)

func backupB64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func sha256hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
