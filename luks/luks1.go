package luks

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Sizes and constants of the LUKS1 On-Disk Format Specification 1.2.3.
const (
	LUKS1HeaderSize    = 592
	LUKS1NumKeys       = 8
	LUKS1SectorSize    = 512
	LUKS1KeyEnabled    = 0x00AC71F3 // LUKS_KEY_ENABLED
	LUKS1KeyDisabled   = 0x0000DEAD // LUKS_KEY_DISABLED
	LUKS1DigestSize    = 20         // LUKS_DIGESTSIZE
	LUKS1SaltSize      = 32         // LUKS_SALTSIZE
	luks1KeyslotOffset = 208
)

// Magic is the LUKS magic of the (primary) header: "LUKS\xba\xbe".
var Magic = []byte{'L', 'U', 'K', 'S', 0xba, 0xbe}

// magic2 is the magic of the secondary LUKS2 header: "SKUL\xba\xbe".
var magic2 = []byte{'S', 'K', 'U', 'L', 0xba, 0xbe}

// LUKS1Header is the LUKS1 phdr (all integers big-endian on disk).
type LUKS1Header struct {
	// Version is the version field (1).
	Version uint16 `json:"version"`
	// CipherName is cipher-name, e.g. "aes".
	CipherName string `json:"cipher_name"`
	// CipherMode is cipher-mode, e.g. "xts-plain64" or "cbc-essiv:sha256".
	CipherMode string `json:"cipher_mode"`
	// HashSpec is hash-spec, the hash of PBKDF2 and the AF, e.g. "sha256".
	HashSpec string `json:"hash_spec"`
	// PayloadOffset is payload-offset, in 512-byte sectors.
	PayloadOffset uint32 `json:"payload_offset"`
	// KeyBytes is key-bytes, the master key length in bytes.
	KeyBytes uint32 `json:"key_bytes"`
	// MKDigest is mk-digest: PBKDF2 of the master key.
	MKDigest []byte `json:"mk_digest"`
	// MKDigestSalt is mk-digest-salt.
	MKDigestSalt []byte `json:"mk_digest_salt"`
	// MKDigestIter is mk-digest-iter.
	MKDigestIter uint32 `json:"mk_digest_iter"`
	// UUID is uuid.
	UUID string `json:"uuid"`
	// KeySlots are the eight key-slot entries.
	KeySlots [LUKS1NumKeys]LUKS1KeySlot `json:"key_slots"`
}

// LUKS1KeySlot is one key-slot entry of the LUKS1 header.
type LUKS1KeySlot struct {
	// Active is active: LUKS1KeyEnabled or LUKS1KeyDisabled.
	Active uint32 `json:"active"`
	// Iterations is iterations, the PBKDF2 iteration count.
	Iterations uint32 `json:"iterations"`
	// Salt is salt, the PBKDF2 salt.
	Salt []byte `json:"salt"`
	// KeyMaterialOffset is key-material-offset, in 512-byte sectors.
	KeyMaterialOffset uint32 `json:"key_material_offset"`
	// Stripes is stripes, the anti-forensic split count (4000).
	Stripes uint32 `json:"stripes"`
}

// Enabled reports whether the slot is active.
func (k LUKS1KeySlot) Enabled() bool { return k.Active == LUKS1KeyEnabled }

// ErrNotLUKS is returned when the data does not start with the LUKS magic.
var ErrNotLUKS = errors.New("not a LUKS device (no LUKS magic)")

// ParseLUKS1 parses the LUKS1 header at the start of r, and checks that the
// values are consistent (slots inside the device, ordered, within
// size when size > 0).
func ParseLUKS1(r io.ReaderAt, size int64) (*LUKS1Header, error) {
	buf := make([]byte, LUKS1HeaderSize)
	if _, err := r.ReadAt(buf, 0); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("LUKS1 header truncated: %w", io.ErrUnexpectedEOF)
		}
		return nil, err
	}
	if !bytes.Equal(buf[:6], Magic) {
		return nil, ErrNotLUKS
	}
	be := binary.BigEndian
	h := &LUKS1Header{
		Version:       be.Uint16(buf[6:8]),
		CipherName:    cString(buf[8:40]),
		CipherMode:    cString(buf[40:72]),
		HashSpec:      cString(buf[72:104]),
		PayloadOffset: be.Uint32(buf[104:108]),
		KeyBytes:      be.Uint32(buf[108:112]),
		MKDigest:      bytes.Clone(buf[112:132]),
		MKDigestSalt:  bytes.Clone(buf[132:164]),
		MKDigestIter:  be.Uint32(buf[164:168]),
		UUID:          cString(buf[168:208]),
	}
	if h.Version != 1 {
		return nil, fmt.Errorf("LUKS1 parser given version %d", h.Version)
	}
	for i := range h.KeySlots {
		b := buf[luks1KeyslotOffset+48*i:]
		h.KeySlots[i] = LUKS1KeySlot{
			Active:            be.Uint32(b[0:4]),
			Iterations:        be.Uint32(b[4:8]),
			Salt:              bytes.Clone(b[8:40]),
			KeyMaterialOffset: be.Uint32(b[40:44]),
			Stripes:           be.Uint32(b[44:48]),
		}
	}
	if err := h.validate(size); err != nil {
		return nil, err
	}
	return h, nil
}

func (h *LUKS1Header) validate(size int64) error {
	if h.KeyBytes == 0 || h.KeyBytes > 512 {
		return fmt.Errorf("LUKS1 key-bytes %d out of range", h.KeyBytes)
	}
	for i, ks := range h.KeySlots {
		if ks.Active != LUKS1KeyEnabled && ks.Active != LUKS1KeyDisabled {
			return fmt.Errorf("LUKS1 key slot %d: invalid active value 0x%08x", i, ks.Active)
		}
		if !ks.Enabled() {
			continue
		}
		if ks.Stripes == 0 || ks.Stripes > 1<<20 {
			return fmt.Errorf("LUKS1 key slot %d: stripes %d out of range", i, ks.Stripes)
		}
		end := int64(ks.KeyMaterialOffset)*LUKS1SectorSize + int64(h.KeyBytes)*int64(ks.Stripes)
		if int64(ks.KeyMaterialOffset)*LUKS1SectorSize < LUKS1HeaderSize {
			return fmt.Errorf("LUKS1 key slot %d: key material overlaps the header", i)
		}
		if h.PayloadOffset > 0 && end > int64(h.PayloadOffset)*LUKS1SectorSize {
			return fmt.Errorf("LUKS1 key slot %d: key material runs into the payload", i)
		}
		if size > 0 && end > size {
			return fmt.Errorf("LUKS1 key slot %d: key material beyond the end of the device (%d > %d bytes)", i, end, size)
		}
	}
	return nil
}

// ActiveSlots returns the numbers of the enabled key slots.
func (h *LUKS1Header) ActiveSlots() []int {
	var s []int
	for i, ks := range h.KeySlots {
		if ks.Enabled() {
			s = append(s, i)
		}
	}
	return s
}

// cString returns the NUL-terminated string in b.
func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}
