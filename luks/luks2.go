package luks

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"sort"
	"strconv"
)

// Sizes of the LUKS2 On-Disk Format Specification.
const (
	LUKS2BinaryHeaderSize = 4096
	luks2ChecksumOffset   = 448
	luks2ChecksumLen      = 64
)

// luks2HeaderSizes are the valid hdr_size values (binary header plus JSON
// area), which are also the offsets where a secondary header may be.
var luks2HeaderSizes = []int64{16 << 10, 32 << 10, 64 << 10, 128 << 10, 256 << 10, 512 << 10, 1 << 20, 2 << 20, 4 << 20}

// LUKS2BinaryHeader is one of the two binary headers (struct
// luks2_hdr_disk), as read from disk.
type LUKS2BinaryHeader struct {
	// Offset is where the header was found.
	Offset int64 `json:"offset"`
	// Magic is magic: "LUKS\xba\xbe" (primary) or "SKUL\xba\xbe" (secondary).
	Magic string `json:"magic"`
	// Version is version (2).
	Version uint16 `json:"version"`
	// HdrSize is hdr_size: binary header plus JSON area, in bytes.
	HdrSize uint64 `json:"hdr_size"`
	// SeqID is seqid, incremented on every metadata update.
	SeqID uint64 `json:"seqid"`
	// Label is label.
	Label string `json:"label"`
	// ChecksumAlg is checksum_alg, e.g. "sha256".
	ChecksumAlg string `json:"checksum_alg"`
	// Salt is salt (unique per header).
	Salt []byte `json:"salt"`
	// UUID is uuid.
	UUID string `json:"uuid"`
	// Subsystem is subsystem.
	Subsystem string `json:"subsystem"`
	// HdrOffset is hdr_offset, the header's own offset.
	HdrOffset uint64 `json:"hdr_offset"`
	// Csum is csum, the header checksum (hash length bytes used).
	Csum []byte `json:"csum"`
	// ChecksumValid says whether csum matches the checksum computed as the
	// specification defines it: checksum_alg over hdr_size bytes with the
	// csum field zeroed.
	ChecksumValid bool `json:"checksum_valid"`
	// JSONError, if set, says why the JSON area could not be parsed.
	JSONError string `json:"json_error,omitempty"`

	json []byte // the JSON area, up to its NUL
}

// LUKS2Header is a parsed LUKS2 device header: both binary headers and the
// JSON metadata of the one in use.
type LUKS2Header struct {
	Primary   *LUKS2BinaryHeader `json:"primary"`
	Secondary *LUKS2BinaryHeader `json:"secondary"`
	// MetadataFrom says which header the metadata came from: "primary",
	// or "secondary" when the primary is damaged.
	MetadataFrom string         `json:"metadata_from"`
	Metadata     *LUKS2Metadata `json:"metadata"`
	// Disagreements lists differences between intact primary and
	// secondary headers (they must be identical apart from magic, offset,
	// salt and checksum).
	Disagreements []string `json:"disagreements,omitempty"`
	// Problems lists damage found: bad checksums, a missing secondary, JSON
	// that does not parse.
	Problems []string `json:"problems,omitempty"`
}

// U64 is a 64-bit number stored as a JSON string, as LUKS2 does for
// offsets and sizes.
type U64 uint64

// UnmarshalJSON accepts a JSON string holding a decimal number.
func (u *U64) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("expected a number in a string: %w", err)
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return err
	}
	*u = U64(v)
	return nil
}

// MarshalJSON writes the number as a string, as LUKS2 does.
func (u U64) MarshalJSON() ([]byte, error) { return json.Marshal(strconv.FormatUint(uint64(u), 10)) }

// LUKS2Metadata is the JSON area.
type LUKS2Metadata struct {
	Keyslots map[string]*Keyslot `json:"keyslots"`
	Tokens   map[string]*Token   `json:"tokens"`
	Segments map[string]*Segment `json:"segments"`
	Digests  map[string]*Digest  `json:"digests"`
	Config   Config              `json:"config"`
}

// Keyslot is a keyslots object.
type Keyslot struct {
	// Type is type: "luks2" (or "reencrypt").
	Type string `json:"type"`
	// KeySize is key_size: the size of the key it stores, in bytes.
	KeySize int `json:"key_size"`
	// Area is area: where and how the key material is stored.
	Area KeyslotArea `json:"area"`
	// KDF is kdf.
	KDF KDF `json:"kdf"`
	// AF is af: the anti-forensic splitter.
	AF AF `json:"af"`
	// Priority is priority: 0 ignore, 1 normal (when absent), 2 high.
	Priority *int `json:"priority,omitempty"`
}

// KeyslotArea is a keyslot's area object.
type KeyslotArea struct {
	// Type is type: "raw" for key material.
	Type string `json:"type"`
	// Offset is offset of the area from the device start, in bytes.
	Offset U64 `json:"offset"`
	// Size is size of the area, in bytes.
	Size U64 `json:"size"`
	// Encryption is encryption, the area cipher, e.g. "aes-xts-plain64".
	Encryption string `json:"encryption,omitempty"`
	// KeySize is key_size, the area cipher key size in bytes.
	KeySize int `json:"key_size,omitempty"`
}

// KDF is a keyslot's kdf object.
type KDF struct {
	// Type is type: "pbkdf2", "argon2i" or "argon2id".
	Type string `json:"type"`
	// Salt is salt (base64 in JSON).
	Salt []byte `json:"salt"`
	// Hash is hash (pbkdf2 only).
	Hash string `json:"hash,omitempty"`
	// Iterations is iterations (pbkdf2 only).
	Iterations int `json:"iterations,omitempty"`
	// Time is time, the argon2 iteration (time) cost.
	Time int `json:"time,omitempty"`
	// Memory is memory, the argon2 memory cost in KiB.
	Memory int `json:"memory,omitempty"`
	// CPUs is cpus, the argon2 parallelism.
	CPUs int `json:"cpus,omitempty"`
}

// AF is a keyslot's af object.
type AF struct {
	// Type is type: "luks1".
	Type string `json:"type"`
	// Stripes is stripes (4000).
	Stripes int `json:"stripes"`
	// Hash is hash, the diffuser hash.
	Hash string `json:"hash"`
}

// Segment is a segments object.
type Segment struct {
	// Type is type: "crypt" (or "linear").
	Type string `json:"type"`
	// Offset is offset of the data, in bytes.
	Offset U64 `json:"offset"`
	// Size is size in bytes, or "dynamic" for the rest of the device.
	Size string `json:"size"`
	// IVTweak is iv_tweak.
	IVTweak U64 `json:"iv_tweak"`
	// Encryption is encryption, e.g. "aes-xts-plain64".
	Encryption string `json:"encryption,omitempty"`
	// SectorSize is sector_size: 512 to 4096.
	SectorSize int `json:"sector_size,omitempty"`
	// Integrity is integrity (dm-integrity), when set.
	Integrity *SegmentIntegrity `json:"integrity,omitempty"`
	// Flags is flags.
	Flags []string `json:"flags,omitempty"`
}

// SegmentIntegrity is a segment's integrity object.
type SegmentIntegrity struct {
	Type              string `json:"type"`
	JournalEncryption string `json:"journal_encryption"`
	JournalIntegrity  string `json:"journal_integrity"`
}

// Digest is a digests object: how the volume key is verified.
type Digest struct {
	// Type is type: "pbkdf2".
	Type string `json:"type"`
	// Keyslots is keyslots: the slots whose key this digest verifies.
	Keyslots []string `json:"keyslots"`
	// Segments is segments.
	Segments []string `json:"segments"`
	// Hash is hash.
	Hash string `json:"hash"`
	// Iterations is iterations.
	Iterations int `json:"iterations"`
	// Salt is salt.
	Salt []byte `json:"salt"`
	// Digest is digest.
	Digest []byte `json:"digest"`
}

// Token is a tokens object. Only type and keyslots are common to all
// tokens; the rest is kept as it is.
type Token struct {
	// Type is type, e.g. "luks2-keyring", "systemd-tpm2", "clevis".
	Type string `json:"type"`
	// Keyslots is keyslots.
	Keyslots []string `json:"keyslots"`
	// Raw is the whole token object.
	Raw json.RawMessage `json:"-"`
}

// UnmarshalJSON keeps the raw token.
func (t *Token) UnmarshalJSON(b []byte) error {
	type plain Token
	var p plain
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	*t = Token(p)
	t.Raw = bytes.Clone(b)
	return nil
}

// Config is the config object.
type Config struct {
	// JSONSize is json_size: the JSON area size in bytes.
	JSONSize U64 `json:"json_size"`
	// KeyslotsSize is keyslots_size: the binary keyslot area size in bytes.
	KeyslotsSize U64 `json:"keyslots_size"`
	// Flags is flags, persistent activation flags.
	Flags []string `json:"flags,omitempty"`
	// Requirements is requirements.
	Requirements *Requirements `json:"requirements,omitempty"`
}

// Requirements is the config requirements object.
type Requirements struct {
	Mandatory []string `json:"mandatory,omitempty"`
}

// ParseLUKS2 parses both LUKS2 binary headers and the JSON metadata.
// Damage that leaves one intact header is recorded in Problems (and so
// becomes a finding); an error means neither header is usable.
func ParseLUKS2(r io.ReaderAt, size int64) (*LUKS2Header, error) {
	h := &LUKS2Header{}
	primary, perr := readLUKS2Binary(r, 0, size)
	if perr != nil {
		h.Problems = append(h.Problems, "primary header: "+perr.Error())
	} else {
		h.Primary = primary
	}
	// The secondary is at hdr_size of the primary; if that is unknown, try
	// every valid offset, as cryptsetup does.
	offsets := luks2HeaderSizes
	if primary != nil && validHdrSize(primary.HdrSize) {
		offsets = []int64{int64(primary.HdrSize)}
	}
	var serr error = errors.New("not found")
	for _, off := range offsets {
		if size > 0 && off+LUKS2BinaryHeaderSize > size {
			break
		}
		var s *LUKS2BinaryHeader
		s, serr = readLUKS2Binary(r, off, size)
		if serr == nil {
			h.Secondary = s
			break
		}
		if errors.Is(serr, errBadMagic) && len(offsets) > 1 {
			continue
		}
		break
	}
	if h.Secondary == nil {
		h.Problems = append(h.Problems, "secondary header: "+serr.Error())
	}
	for _, b := range []*LUKS2BinaryHeader{h.Primary, h.Secondary} {
		if b == nil {
			continue
		}
		which := "primary"
		if b == h.Secondary {
			which = "secondary"
		}
		if !b.ChecksumValid {
			h.Problems = append(h.Problems, which+" header: checksum mismatch")
		}
		if b.JSONError != "" {
			h.Problems = append(h.Problems, which+" header: JSON metadata: "+b.JSONError)
		}
	}
	// Use the intact header with the highest seqid, primary first.
	var use *LUKS2BinaryHeader
	for _, b := range []*LUKS2BinaryHeader{h.Primary, h.Secondary} {
		if b != nil && b.ChecksumValid && b.JSONError == "" && (use == nil || b.SeqID > use.SeqID) {
			use = b
		}
	}
	if use == nil {
		return nil, fmt.Errorf("no intact LUKS2 header: %s", joinProblems(h.Problems))
	}
	h.MetadataFrom = "primary"
	if use == h.Secondary {
		h.MetadataFrom = "secondary"
	}
	md, err := parseLUKS2JSON(use.json)
	if err != nil {
		return nil, fmt.Errorf("LUKS2 %s header JSON: %w", h.MetadataFrom, err)
	}
	if err := md.validate(size, int64(use.HdrSize)); err != nil {
		return nil, fmt.Errorf("LUKS2 %s header: %w", h.MetadataFrom, err)
	}
	h.Metadata = md
	if h.Primary != nil && h.Secondary != nil && h.Primary.ChecksumValid && h.Secondary.ChecksumValid {
		h.Disagreements = compareLUKS2(h.Primary, h.Secondary)
	}
	return h, nil
}

func joinProblems(p []string) string {
	var b bytes.Buffer
	for i, s := range p {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(s)
	}
	return b.String()
}

func validHdrSize(n uint64) bool {
	for _, s := range luks2HeaderSizes {
		if int64(n) == s {
			return true
		}
	}
	return false
}

var errBadMagic = errors.New("bad magic")

func checksumHash(alg string) func() hash.Hash {
	switch alg {
	case "sha256":
		return sha256.New
	case "sha512":
		return sha512.New
	case "sha1":
		return sha1.New
	}
	return nil
}

// readLUKS2Binary reads a binary header at off and its JSON area, and
// verifies its checksum.
func readLUKS2Binary(r io.ReaderAt, off, size int64) (*LUKS2BinaryHeader, error) {
	buf := make([]byte, LUKS2BinaryHeaderSize)
	if _, err := r.ReadAt(buf, off); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("truncated at offset %d", off)
		}
		return nil, err
	}
	magic := buf[:6]
	if !bytes.Equal(magic, Magic) && !bytes.Equal(magic, magic2) {
		return nil, fmt.Errorf("%w at offset %d", errBadMagic, off)
	}
	be := binary.BigEndian
	b := &LUKS2BinaryHeader{
		Offset:      off,
		Magic:       string(magic[:4]),
		Version:     be.Uint16(buf[6:8]),
		HdrSize:     be.Uint64(buf[8:16]),
		SeqID:       be.Uint64(buf[16:24]),
		Label:       cString(buf[24:72]),
		ChecksumAlg: cString(buf[72:104]),
		Salt:        bytes.Clone(buf[104:168]),
		UUID:        cString(buf[168:208]),
		Subsystem:   cString(buf[208:256]),
		HdrOffset:   be.Uint64(buf[256:264]),
	}
	if b.Version != 2 {
		return nil, fmt.Errorf("version %d at offset %d, want 2", b.Version, off)
	}
	if !validHdrSize(b.HdrSize) {
		return nil, fmt.Errorf("invalid hdr_size %d at offset %d", b.HdrSize, off)
	}
	if b.HdrOffset != uint64(off) {
		return nil, fmt.Errorf("hdr_offset %d does not match its position %d", b.HdrOffset, off)
	}
	if size > 0 && off+int64(b.HdrSize) > size {
		return nil, fmt.Errorf("header area (%d bytes at %d) runs past the end of the device (%d bytes)", b.HdrSize, off, size)
	}
	newHash := checksumHash(b.ChecksumAlg)
	if newHash == nil {
		return nil, fmt.Errorf("unsupported checksum_alg %q", b.ChecksumAlg)
	}
	area := make([]byte, int(b.HdrSize))
	copy(area, buf)
	if _, err := r.ReadAt(area[LUKS2BinaryHeaderSize:], off+LUKS2BinaryHeaderSize); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("JSON area truncated at offset %d", off)
		}
		return nil, err
	}
	hs := newHash()
	b.Csum = bytes.Clone(buf[luks2ChecksumOffset : luks2ChecksumOffset+hs.Size()])
	clear(area[luks2ChecksumOffset : luks2ChecksumOffset+luks2ChecksumLen])
	hs.Write(area)
	b.ChecksumValid = bytes.Equal(hs.Sum(nil), b.Csum)
	js := area[LUKS2BinaryHeaderSize:]
	if i := bytes.IndexByte(js, 0); i >= 0 {
		js = js[:i]
	}
	b.json = js
	if _, err := parseLUKS2JSON(js); err != nil {
		b.JSONError = err.Error()
	}
	return b, nil
}

func parseLUKS2JSON(js []byte) (*LUKS2Metadata, error) {
	md := &LUKS2Metadata{}
	if err := json.Unmarshal(js, md); err != nil {
		return nil, err
	}
	if md.Keyslots == nil || md.Segments == nil || md.Digests == nil {
		return nil, errors.New("missing keyslots, segments or digests")
	}
	return md, nil
}

// validate checks what the rest of the package relies on: numeric IDs,
// areas inside the keyslot area and the device, sane sizes.
func (md *LUKS2Metadata) validate(size, hdrSize int64) error {
	for _, m := range []map[string]struct{}{keysOf(md.Keyslots), keysOf(md.Segments), keysOf(md.Digests), keysOf(md.Tokens)} {
		for id := range m {
			if _, err := strconv.ParseUint(id, 10, 16); err != nil {
				return fmt.Errorf("invalid object ID %q", id)
			}
		}
	}
	for id, ks := range md.Keyslots {
		if ks == nil {
			return fmt.Errorf("keyslot %s is null", id)
		}
		if ks.KeySize < 0 || ks.KeySize > 512 || ks.Area.KeySize < 0 || ks.Area.KeySize > 512 {
			return fmt.Errorf("keyslot %s: key size out of range", id)
		}
		if ks.AF.Stripes < 0 || ks.AF.Stripes > 1<<20 {
			return fmt.Errorf("keyslot %s: stripes out of range", id)
		}
		end := uint64(ks.Area.Offset) + uint64(ks.Area.Size)
		if end < uint64(ks.Area.Offset) {
			return fmt.Errorf("keyslot %s: area overflows", id)
		}
		if ks.Area.Type == "raw" && int64(ks.Area.Offset) < 2*hdrSize {
			return fmt.Errorf("keyslot %s: area at %d overlaps the headers", id, ks.Area.Offset)
		}
		if size > 0 && end > uint64(size) {
			return fmt.Errorf("keyslot %s: area (%d+%d) beyond the end of the device (%d bytes)", id, ks.Area.Offset, ks.Area.Size, size)
		}
	}
	for id, s := range md.Segments {
		if s == nil {
			return fmt.Errorf("segment %s is null", id)
		}
	}
	for id, d := range md.Digests {
		if d == nil {
			return fmt.Errorf("digest %s is null", id)
		}
	}
	for id, t := range md.Tokens {
		if t == nil {
			return fmt.Errorf("token %s is null", id)
		}
	}
	return nil
}

func keysOf[T any](m map[string]T) map[string]struct{} {
	out := make(map[string]struct{}, len(m))
	for k := range m {
		out[k] = struct{}{}
	}
	return out
}

// compareLUKS2 lists the fields in which two intact headers differ.
func compareLUKS2(p, s *LUKS2BinaryHeader) []string {
	var d []string
	add := func(field string, a, b any) {
		if fmt.Sprint(a) != fmt.Sprint(b) {
			d = append(d, fmt.Sprintf("%s: primary %v, secondary %v", field, a, b))
		}
	}
	add("hdr_size", p.HdrSize, s.HdrSize)
	add("seqid", p.SeqID, s.SeqID)
	add("label", p.Label, s.Label)
	add("checksum_alg", p.ChecksumAlg, s.ChecksumAlg)
	add("uuid", p.UUID, s.UUID)
	add("subsystem", p.Subsystem, s.Subsystem)
	if !bytes.Equal(p.json, s.json) {
		d = append(d, "JSON metadata differs")
	}
	return d
}

// SortedIDs returns the numeric object IDs of a metadata map in order.
func SortedIDs[T any](m map[string]T) []int {
	ids := make([]int, 0, len(m))
	for k := range m {
		if n, err := strconv.Atoi(k); err == nil {
			ids = append(ids, n)
		}
	}
	sort.Ints(ids)
	return ids
}

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }
