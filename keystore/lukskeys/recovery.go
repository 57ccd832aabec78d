package lukskeys

import (
	"crypto/rand"
	"fmt"
)

// Recovery keys have the format of systemd-cryptenroll's recovery keys: 32
// random bytes (256 bits of entropy) written in "modhex", the alphabet
// cbdefghijklnrtuv that types the same on QWERTY, AZERTY and QWERTZ
// keyboards, two characters per byte (high nibble first), in eight groups
// of eight joined by hyphens: 71 characters, for example
// fhgidtrr-cvegtdbh-kblcrhbr-jjuvhgtu-lfhlcnvd-ubnrfgcl-nklrnttt-lhtknkvd.
// The key is used as a LUKS passphrase exactly as written (no newline).
const (
	// RecoveryKeyBytes is the number of random bytes in a recovery key.
	RecoveryKeyBytes = 32
	// RecoveryKeyLen is the length of a formatted recovery key.
	RecoveryKeyLen = RecoveryKeyBytes*2 + RecoveryKeyBytes/4 - 1
)

const modhex = "cbdefghijklnrtuv"

// NewRecoveryKey returns a new random recovery key. The caller should clear
// it after use.
func NewRecoveryKey() ([]byte, error) {
	var raw [RecoveryKeyBytes]byte
	defer clear(raw[:])
	if _, err := rand.Read(raw[:]); err != nil {
		return nil, fmt.Errorf("generating a recovery key: %w", err)
	}
	out := make([]byte, 0, RecoveryKeyLen)
	for i, b := range raw {
		if i > 0 && i%4 == 0 {
			out = append(out, '-')
		}
		out = append(out, modhex[b>>4], modhex[b&0xf])
	}
	return out, nil
}

// IsRecoveryKey reports whether k has the recovery-key format.
func IsRecoveryKey(k []byte) bool {
	if len(k) != RecoveryKeyLen {
		return false
	}
	for i, c := range k {
		if i%9 == 8 {
			if c != '-' {
				return false
			}
			continue
		}
		if !isModhex(c) {
			return false
		}
	}
	return true
}

func isModhex(c byte) bool {
	for i := 0; i < len(modhex); i++ {
		if modhex[i] == c {
			return true
		}
	}
	return false
}
