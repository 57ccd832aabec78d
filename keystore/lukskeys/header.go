package lukskeys

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"

	"github.com/klauspost/compress/zstd"

	"github.com/nhscrypt/nhscrypt/luks"
)

// DefaultMaxHeaderBytes bounds an escrowed header backup (after
// compression): base64 and Vault's JSON must fit in the 1 MiB that Vault's
// integrated storage allows per entry by default.
const DefaultMaxHeaderBytes = 700 << 10

// HeaderBackup returns a header backup of the LUKS device at path, as
// escrowed: a zstd frame of the bytes `cryptsetup luksHeaderBackup` saves
// (see luks.HeaderAreaSize), with the key material of every keyslot except
// those in keep zeroed. The backup escrowed beside a recovery key keeps
// only that key's keyslot: restored, it opens with the recovery key alone
// (no old or leaked passphrase can be tried against an escrowed copy), and
// it compresses to about 260 KiB, well inside Vault's 1 MiB entry limit,
// where the full area of a volume with several keyslots would not fit.
// Restore it with
//
//	zstd -d < backup > header.img
//	cryptsetup luksHeaderRestore DEVICE --header-backup-file header.img
//
// It returns the compressed backup and the size of the header area.
func HeaderBackup(path string, hdr *luks.Header, keep []int) ([]byte, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	n := luks.HeaderAreaSize(hdr)
	raw := make([]byte, n)
	if _, err := io.ReadFull(io.NewSectionReader(f, 0, n), raw); err != nil {
		return nil, 0, fmt.Errorf("reading the LUKS header of %q: %w", path, err)
	}
	zeroKeyslotAreas(raw, hdr, keep)
	var buf bytes.Buffer
	zw, err := zstd.NewWriter(&buf, zstd.WithEncoderLevel(zstd.SpeedBetterCompression), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return nil, 0, err
	}
	if _, err := zw.Write(raw); err != nil {
		return nil, 0, err
	}
	if err := zw.Close(); err != nil {
		return nil, 0, err
	}
	return buf.Bytes(), n, nil
}

// zeroKeyslotAreas clears the parts of the keyslot area of raw (a header
// area) that no keyslot in keep uses.
func zeroKeyslotAreas(raw []byte, hdr *luks.Header, keep []int) {
	n := int64(len(raw))
	zero := func(from, to int64) {
		from, to = max(from, 0), min(to, n)
		if from < to {
			clear(raw[from:to])
		}
	}
	if l1 := hdr.LUKS1; l1 != nil {
		for i, ks := range l1.KeySlots {
			if ks.Enabled() && slices.Contains(keep, i) {
				continue
			}
			off := int64(ks.KeyMaterialOffset) * luks.LUKS1SectorSize
			size := (int64(l1.KeyBytes)*int64(ks.Stripes) + luks.LUKS1SectorSize - 1) / luks.LUKS1SectorSize * luks.LUKS1SectorSize
			zero(off, off+size)
		}
		return
	}
	b := hdr.LUKS2.Primary
	if b == nil || !b.ChecksumValid {
		b = hdr.LUKS2.Secondary
	}
	start := 2 * int64(b.HdrSize)
	end := start + int64(hdr.LUKS2.Metadata.Config.KeyslotsSize)
	// Zero [start, end) except the areas of active keyslots.
	type span struct{ from, to int64 }
	var used []span
	for id, ks := range hdr.LUKS2.Metadata.Keyslots {
		if n, err := strconv.Atoi(id); err == nil && slices.Contains(keep, n) {
			used = append(used, span{int64(ks.Area.Offset), int64(ks.Area.Offset) + int64(ks.Area.Size)})
		}
	}
	pos := start
	for pos < end {
		next := end
		skipTo := int64(-1)
		for _, u := range used {
			if u.from <= pos && pos < u.to {
				skipTo = max(skipTo, u.to)
			} else if u.from > pos && u.from < next {
				next = u.from
			}
		}
		if skipTo >= 0 {
			pos = skipTo
			continue
		}
		zero(pos, next)
		pos = next
	}
}

// DecompressHeader returns the header area held in an escrowed backup,
// reading at most limit bytes of it.
func DecompressHeader(backup []byte, limit int64) ([]byte, error) {
	zr, err := zstd.NewReader(bytes.NewReader(backup), zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(uint64(limit)))
	if err != nil {
		return nil, err
	}
	defer zr.Close()
	out, err := io.ReadAll(io.LimitReader(zr, limit+1))
	if err != nil {
		return nil, fmt.Errorf("decompressing the header backup: %w", err)
	}
	if int64(len(out)) > limit {
		return nil, fmt.Errorf("the header backup is larger than %d bytes", limit)
	}
	return out, nil
}
