package luks

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
)

// Header is a parsed LUKS header of either version.
type Header struct {
	// Path is the device or file it was read from, if any.
	Path    string       `json:"path,omitempty"`
	Size    int64        `json:"size"`
	Version int          `json:"version"`
	LUKS1   *LUKS1Header `json:"luks1,omitempty"`
	LUKS2   *LUKS2Header `json:"luks2,omitempty"`
}

// UUID returns the header's UUID.
func (h *Header) UUID() string {
	if h.LUKS1 != nil {
		return h.LUKS1.UUID
	}
	if h.LUKS2.Primary != nil && h.LUKS2.Primary.ChecksumValid {
		return h.LUKS2.Primary.UUID
	}
	return h.LUKS2.Secondary.UUID
}

// ActiveSlots returns the numbers of the active keyslots in order.
func (h *Header) ActiveSlots() []int {
	if h.LUKS1 != nil {
		return h.LUKS1.ActiveSlots()
	}
	return SortedIDs(h.LUKS2.Metadata.Keyslots)
}

// Parse reads a LUKS1 or LUKS2 header from r; size is the device size in
// bytes (0 if unknown), used to check that offsets lie inside it.
func Parse(r io.ReaderAt, size int64) (*Header, error) {
	var hdr [8]byte
	if _, err := r.ReadAt(hdr[:], 0); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("%w (too short)", ErrNotLUKS)
		}
		return nil, err
	}
	v := binary.BigEndian.Uint16(hdr[6:8])
	isMagic := string(hdr[:6]) == string(Magic)
	h := &Header{Size: size}
	switch {
	case isMagic && v == 1:
		l1, err := ParseLUKS1(r, size)
		if err != nil {
			return nil, err
		}
		h.Version, h.LUKS1 = 1, l1
	case isMagic && v == 2, string(hdr[:6]) == string(magic2):
		l2, err := ParseLUKS2(r, size)
		if err != nil {
			return nil, err
		}
		h.Version, h.LUKS2 = 2, l2
	case isMagic:
		return nil, fmt.Errorf("unsupported LUKS version %d", v)
	default:
		// The primary LUKS2 header may be wiped with the secondary intact.
		if l2, err := ParseLUKS2(r, size); err == nil && l2.Secondary != nil {
			h.Version, h.LUKS2 = 2, l2
			break
		}
		return nil, ErrNotLUKS
	}
	return h, nil
}

// ParseFile opens a device or image file read-only and parses its header.
// Errors name the path; a missing path wraps fs.ErrNotExist and a denied
// one fs.ErrPermission.
func ParseFile(path string) (*Header, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	size, err := f.Seek(0, io.SeekEnd) // works for block devices too
	if err != nil {
		return nil, fmt.Errorf("sizing %q: %w", path, err)
	}
	h, err := Parse(f, size)
	if err != nil {
		return nil, fmt.Errorf("reading LUKS header of %q: %w", path, err)
	}
	h.Path = path
	return h, nil
}

// readerAtCloser is an open device or image.
type readerAtCloser interface {
	io.ReaderAt
	io.Closer
}

func openReaderAt(path string) (readerAtCloser, error) { return os.Open(path) }
