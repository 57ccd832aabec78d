package luks

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/nhscrypt/nhscrypt/filecrypt"
	"github.com/nhscrypt/nhscrypt/internal/atomicfile"
)

// BackupRecord describes an encrypted header backup. It is written beside
// the policy's HeaderBackupDir as UUID.json so verify-disk can tell that a
// backup exists; it holds no secret.
type BackupRecord struct {
	UUID             string    `json:"uuid"`
	Device           string    `json:"device"`
	File             string    `json:"file"`
	Version          int       `json:"luks_version"`
	Bytes            int64     `json:"header_bytes"`
	CiphertextSHA256 string    `json:"ciphertext_sha256"`
	Created          time.Time `json:"created"`
}

// BackupRecordName is the file name of the record for a LUKS UUID.
func BackupRecordName(uuid string) string { return uuid + ".json" }

// HeaderAreaSize is the number of bytes at the start of the device that
// `cryptsetup luksHeaderBackup` saves: for LUKS1 the
// header and the key material of all eight slots; for LUKS2 both headers
// and the keyslot area.
func HeaderAreaSize(h *Header) int64 {
	if h.LUKS1 != nil {
		// As cryptsetup: the end of the key material of all eight slots
		// (enabled or not), aligned to 4 KiB.
		var sectors int64 = (LUKS1HeaderSize + LUKS1SectorSize - 1) / LUKS1SectorSize
		for _, ks := range h.LUKS1.KeySlots {
			n := (int64(h.LUKS1.KeyBytes)*int64(ks.Stripes) + LUKS1SectorSize - 1) / LUKS1SectorSize
			sectors = max(sectors, int64(ks.KeyMaterialOffset)+n)
		}
		return (sectors + 7) / 8 * 8 * LUKS1SectorSize
	}
	b := h.LUKS2.Primary
	if b == nil || !b.ChecksumValid {
		b = h.LUKS2.Secondary
	}
	return 2*int64(b.HdrSize) + int64(h.LUKS2.Metadata.Config.KeyslotsSize)
}

// BackupHeader writes an age-encrypted copy of the header area of the
// device at path (see HeaderAreaSize) to dst, atomically; an existing dst
// is replaced only with overwrite. The plaintext header never touches the
// disk. Restore with `age -d -i KEY dst > hdr && cryptsetup
// luksHeaderRestore DEVICE --header-backup-file hdr`.
func BackupHeader(ctx context.Context, path string, h *Header, dst string, enc filecrypt.EncryptOptions, overwrite bool) (*BackupRecord, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	n := HeaderAreaSize(h)
	if h.Size > 0 && n > h.Size {
		return nil, fmt.Errorf("%q: header area (%d bytes) is larger than the device (%d bytes)", path, n, h.Size)
	}
	out, err := atomicfile.Create(dst, 0o600, overwrite)
	if err != nil {
		return nil, err
	}
	defer out.Abort()
	sum := sha256.New()
	if _, err := filecrypt.Encrypt(ctx, io.MultiWriter(out, sum), io.NewSectionReader(f, 0, n), enc); err != nil {
		return nil, fmt.Errorf("encrypting the header of %q: %w", path, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := out.Commit(); err != nil {
		return nil, err
	}
	abs, _ := filepath.Abs(dst)
	return &BackupRecord{
		UUID: h.UUID(), Device: path, File: abs, Version: h.Version, Bytes: n,
		CiphertextSHA256: hex.EncodeToString(sum.Sum(nil)), Created: time.Now().UTC(),
	}, nil
}

// WriteBackupRecord records rec in dir (created 0700 if missing), replacing
// an older record for the same UUID.
func WriteBackupRecord(dir string, rec *BackupRecord) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	data, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(dir, BackupRecordName(rec.UUID)), append(data, '\n'), 0o600, true)
}
