package luks

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"

	luksgo "github.com/anatol/luks.go"
	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/pbkdf2"
	//lint:ignore SA1019 LUKS1 allows ripemd160 as hash-spec
	"golang.org/x/crypto/ripemd160"
	"golang.org/x/crypto/xts"
	"golang.org/x/sys/unix"
)

// ErrKeyMismatch is returned when the passphrase or key opens none of the
// keyslots tried.
var ErrKeyMismatch = errors.New("the key does not open any keyslot tried")

// Method says which implementation opened a keyslot.
type Method string

// Methods of KeyTest.
const (
	MethodLuksGo   Method = "luks.go"  // github.com/anatol/luks.go UnsealVolume
	MethodNhscrypt Method = "nhscrypt" // this package's own unsealing
)

// KeyTestResult says which keyslot a key opened, and how. It never holds
// the key or the volume key.
type KeyTestResult struct {
	Keyslot int    `json:"keyslot"`
	Method  Method `json:"method"`
}

// maxArgon2MemoryKiB bounds the memory a (possibly hostile) header can make
// us allocate: 4 GiB, cryptsetup's own maximum.
const maxArgon2MemoryKiB = 4 << 20

// TestKey proves that key (a passphrase, or the contents of a key file)
// opens a keyslot of the LUKS device or image at path, in-process and
// read-only: no mapping is created. slot < 0 tries every active keyslot in
// order. luks.go is tried first; where it cannot unseal a keyslot (CBC area
// ciphers, other hashes, other stripe counts, a damaged primary LUKS2
// header) this package unseals it from its own parsed header. It returns
// ErrKeyMismatch when no keyslot opens.
func TestKey(ctx context.Context, path string, hdr *Header, key []byte, slot int) (*KeyTestResult, error) {
	slots := hdr.ActiveSlots()
	if slot >= 0 {
		found := false
		for _, s := range slots {
			found = found || s == slot
		}
		if !found {
			return nil, fmt.Errorf("%q has no active keyslot %d", path, slot)
		}
		slots = []int{slot}
	}
	var dev luksgo.Device
	if d, err := luksgo.Open(path); err == nil {
		dev = d
		defer d.Close()
	}
	for _, s := range slots {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		res, err := tryKeyslot(dev, path, hdr, s, key)
		if res != nil || err != nil {
			return res, err
		}
	}
	return nil, ErrKeyMismatch
}

// tryKeyslot tries key on keyslot s: luks.go first, then this package's
// own unsealing. It returns nil, nil when the key does not match.
func tryKeyslot(dev luksgo.Device, path string, hdr *Header, s int, key []byte) (*KeyTestResult, error) {
	if mem := argon2MemoryKiB(hdr, s); mem > 32<<10 && mem <= maxArgon2MemoryKiB {
		warmHeap(mem << 10)
		if mem >= 256<<10 {
			// The memory is garbage once tried: give it back at once,
			// so that trying several keyslots, or keys one after
			// another, never holds two. (Smaller buffers are left for
			// the next test to reuse.)
			defer debug.FreeOSMemory()
		}
	}
	if dev != nil && (hdr.LUKS2 == nil || hdr.LUKS2.MetadataFrom == "primary") {
		_, err := dev.UnsealVolume(s, key) // the Volume holds the key: drop it
		if err == nil {
			return &KeyTestResult{Keyslot: s, Method: MethodLuksGo}, nil
		}
		if errors.Is(err, luksgo.ErrPassphraseDoesNotMatch) {
			return nil, nil
		}
	}
	ok, err := unsealOwnPath(path, hdr, s, key)
	if err != nil {
		return nil, fmt.Errorf("%q keyslot %d: %w", path, s, err)
	}
	if ok {
		return &KeyTestResult{Keyslot: s, Method: MethodNhscrypt}, nil
	}
	return nil, nil
}

// argon2MemoryKiB returns the argon2 memory cost of LUKS2 keyslot s, or 0.
func argon2MemoryKiB(hdr *Header, s int) int {
	if hdr.LUKS2 == nil {
		return 0
	}
	ks, ok := hdr.LUKS2.Metadata.Keyslots[strconv.Itoa(s)]
	if !ok || !strings.HasPrefix(ks.KDF.Type, "argon2") {
		return 0
	}
	return ks.KDF.Memory
}

// warmHeap leaves n bytes of already faulted-in memory free in the Go heap,
// where argon2's allocation of its memory finds it. golang.org/x/crypto's
// argon2 reads every block of its fresh memory before writing it, so each
// page faults twice (a read maps the zero page, the write replaces it), and
// the second fault costs a TLB shootdown on every CPU running its lanes:
// in a VM that made a 1 GiB keyslot test 2.5x slower than cryptsetup's,
// mostly in the kernel (bench/escrow.sh). Touching the pages first, on
// one thread, costs one cheap fault each.
func warmHeap(n int) {
	b := make([]byte, n)
	if unix.Madvise(b, unix.MADV_POPULATE_WRITE) != nil { // before Linux 5.14
		for i := 0; i < len(b); i += os.Getpagesize() {
			b[i] = 1
		}
	}
	runtime.KeepAlive(b)
	runtime.GC()
}

// UnsealLuksGo tries key on one keyslot with luks.go only. It reports
// whether the key matched; an error means luks.go could not try.
func UnsealLuksGo(path string, slot int, key []byte) (bool, error) {
	dev, err := luksgo.Open(path)
	if err != nil {
		return false, err
	}
	defer dev.Close()
	_, err = dev.UnsealVolume(slot, key)
	if errors.Is(err, luksgo.ErrPassphraseDoesNotMatch) {
		return false, nil
	}
	return err == nil, err
}

func unsealOwnPath(path string, hdr *Header, slot int, key []byte) (bool, error) {
	f, err := openReaderAt(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	return UnsealOwn(f, hdr, slot, key)
}

// UnsealOwn tries key on one keyslot with this package's implementation,
// reading key material from r (the device or image whose header is hdr).
// It reports whether the key matched; an error means the keyslot could not
// be tried (an unsupported cipher, say). The volume key never leaves it.
func UnsealOwn(r io.ReaderAt, hdr *Header, slot int, key []byte) (bool, error) {
	mk, err := unseal(r, hdr, slot, key)
	clear(mk)
	if errors.Is(err, ErrKeyMismatch) {
		return false, nil
	}
	return err == nil, err
}

func unseal(r io.ReaderAt, hdr *Header, slot int, key []byte) ([]byte, error) {
	if hdr.LUKS1 != nil {
		return unsealLUKS1(r, hdr.LUKS1, slot, key)
	}
	return unsealLUKS2(r, hdr.LUKS2.Metadata, slot, key)
}

func unsealLUKS1(r io.ReaderAt, h *LUKS1Header, slot int, key []byte) ([]byte, error) {
	if slot < 0 || slot >= LUKS1NumKeys || !h.KeySlots[slot].Enabled() {
		return nil, fmt.Errorf("keyslot %d is not active", slot)
	}
	ks := h.KeySlots[slot]
	newHash, err := hashByName(h.HashSpec)
	if err != nil {
		return nil, err
	}
	kb := int(h.KeyBytes)
	derived := pbkdf2.Key(key, ks.Salt, int(ks.Iterations), kb, newHash)
	defer clear(derived)
	mk, err := openKeyMaterial(r, int64(ks.KeyMaterialOffset)*LUKS1SectorSize, kb, int(ks.Stripes),
		h.CipherName+"-"+h.CipherMode, derived, newHash)
	if err != nil {
		return nil, err
	}
	d := pbkdf2.Key(mk, h.MKDigestSalt, int(h.MKDigestIter), LUKS1DigestSize, newHash)
	if subtle.ConstantTimeCompare(d, h.MKDigest) != 1 {
		clear(mk)
		return nil, ErrKeyMismatch
	}
	return mk, nil
}

func unsealLUKS2(r io.ReaderAt, md *LUKS2Metadata, slot int, key []byte) ([]byte, error) {
	id := strconv.Itoa(slot)
	ks := md.Keyslots[id]
	if ks == nil {
		return nil, fmt.Errorf("keyslot %d does not exist", slot)
	}
	if ks.Type != "luks2" || ks.Area.Type != "raw" || ks.AF.Type != "luks1" {
		return nil, fmt.Errorf("keyslot type %q with %q area and %q AF is not supported", ks.Type, ks.Area.Type, ks.AF.Type)
	}
	var dg *Digest
	for _, d := range md.Digests {
		for _, k := range d.Keyslots {
			if k == id {
				dg = d
			}
		}
	}
	if dg == nil || dg.Type != "pbkdf2" {
		return nil, errors.New("no pbkdf2 digest for the keyslot")
	}
	derived, err := deriveKey(key, ks.KDF, ks.Area.KeySize)
	if err != nil {
		return nil, err
	}
	defer clear(derived)
	afHash, err := hashByName(ks.AF.Hash)
	if err != nil {
		return nil, err
	}
	mk, err := openKeyMaterial(r, int64(ks.Area.Offset), ks.KeySize, ks.AF.Stripes, ks.Area.Encryption, derived, afHash)
	if err != nil {
		return nil, err
	}
	if int64(ks.KeySize)*int64(ks.AF.Stripes) > int64(ks.Area.Size) {
		clear(mk)
		return nil, errors.New("key material larger than the keyslot area")
	}
	dh, err := hashByName(dg.Hash)
	if err != nil {
		clear(mk)
		return nil, err
	}
	d := pbkdf2.Key(mk, dg.Salt, dg.Iterations, len(dg.Digest), dh)
	if len(dg.Digest) == 0 || subtle.ConstantTimeCompare(d, dg.Digest) != 1 {
		clear(mk)
		return nil, ErrKeyMismatch
	}
	return mk, nil
}

func deriveKey(pass []byte, k KDF, keyLen int) ([]byte, error) {
	if keyLen <= 0 || keyLen > 512 {
		return nil, fmt.Errorf("area key size %d out of range", keyLen)
	}
	switch k.Type {
	case "pbkdf2":
		h, err := hashByName(k.Hash)
		if err != nil {
			return nil, err
		}
		if k.Iterations <= 0 {
			return nil, errors.New("pbkdf2 iterations missing")
		}
		return pbkdf2.Key(pass, k.Salt, k.Iterations, keyLen, h), nil
	case "argon2i", "argon2id":
		if k.Time <= 0 || k.Memory <= 0 || k.CPUs <= 0 || k.CPUs > 255 {
			return nil, errors.New("argon2 parameters missing or out of range")
		}
		if k.Memory > maxArgon2MemoryKiB {
			return nil, fmt.Errorf("argon2 memory %d KiB over the 4 GiB limit", k.Memory)
		}
		if k.Type == "argon2i" {
			return argon2.Key(pass, k.Salt, uint32(k.Time), uint32(k.Memory), uint8(k.CPUs), uint32(keyLen)), nil
		}
		return argon2.IDKey(pass, k.Salt, uint32(k.Time), uint32(k.Memory), uint8(k.CPUs), uint32(keyLen)), nil
	}
	return nil, fmt.Errorf("unsupported KDF %q", k.Type)
}

func hashByName(name string) (func() hash.Hash, error) {
	switch name {
	case "sha1":
		return sha1.New, nil
	case "sha256":
		return sha256.New, nil
	case "sha512":
		return sha512.New, nil
	case "ripemd160":
		return ripemd160.New, nil
	}
	return nil, fmt.Errorf("unsupported hash %q", name)
}

// openKeyMaterial reads keyLen*stripes bytes of encrypted key material at
// off, decrypts them with spec ("aes-xts-plain64" style) under key, and
// merges the anti-forensic stripes into the key.
func openKeyMaterial(r io.ReaderAt, off int64, keyLen, stripes int, spec string, key []byte, newHash func() hash.Hash) ([]byte, error) {
	if keyLen <= 0 || keyLen > 512 || stripes <= 0 || stripes > 1<<20 {
		return nil, errors.New("key size or stripes out of range")
	}
	n := keyLen * stripes
	n = (n + LUKS1SectorSize - 1) / LUKS1SectorSize * LUKS1SectorSize
	buf := make([]byte, n)
	defer clear(buf)
	if _, err := r.ReadAt(buf, off); err != nil {
		return nil, fmt.Errorf("reading key material at %d: %w", off, err)
	}
	if err := decryptSectors(spec, key, buf); err != nil {
		return nil, err
	}
	return afMerge(buf[:keyLen*stripes], keyLen, stripes, newHash), nil
}

// decryptSectors decrypts buf in place as consecutive 512-byte sectors
// numbered from 0, under a dm-crypt cipher spec CIPHER-MODE-IV.
func decryptSectors(spec string, key, buf []byte) error {
	name, rest, ok := strings.Cut(spec, "-")
	if !ok {
		return fmt.Errorf("cipher %q: no mode", spec)
	}
	mode, iv, _ := strings.Cut(rest, "-")
	var newBlock func([]byte) (cipher.Block, error)
	switch name {
	case "aes":
		newBlock = aes.NewCipher
	default:
		return fmt.Errorf("cipher %q is not supported for in-process unsealing", name)
	}
	const sector = LUKS1SectorSize
	switch mode {
	case "xts":
		if iv != "plain64" && iv != "plain" {
			return fmt.Errorf("cipher %q: IV %q not supported with XTS", spec, iv)
		}
		c, err := xts.NewCipher(newBlock, key)
		if err != nil {
			return err
		}
		for i := 0; i < len(buf); i += sector {
			c.Decrypt(buf[i:i+sector], buf[i:i+sector], uint64(i/sector))
		}
		return nil
	case "cbc", "ecb":
		b, err := newBlock(key)
		if err != nil {
			return err
		}
		if mode == "ecb" {
			for i := 0; i < len(buf); i += b.BlockSize() {
				b.Decrypt(buf[i:], buf[i:])
			}
			return nil
		}
		ivFor, err := ivGenerator(iv, key, newBlock, b.BlockSize())
		if err != nil {
			return fmt.Errorf("cipher %q: %w", spec, err)
		}
		for i := 0; i < len(buf); i += sector {
			cipher.NewCBCDecrypter(b, ivFor(uint64(i/sector))).CryptBlocks(buf[i:i+sector], buf[i:i+sector])
		}
		return nil
	}
	return fmt.Errorf("cipher mode %q is not supported for in-process unsealing", mode)
}

// ivGenerator returns the dm-crypt IV for a sector number.
func ivGenerator(iv string, key []byte, newBlock func([]byte) (cipher.Block, error), bs int) (func(uint64) []byte, error) {
	switch {
	case iv == "plain":
		return func(s uint64) []byte {
			b := make([]byte, bs)
			binary.LittleEndian.PutUint32(b, uint32(s))
			return b
		}, nil
	case iv == "plain64":
		return func(s uint64) []byte {
			b := make([]byte, bs)
			binary.LittleEndian.PutUint64(b, s)
			return b
		}, nil
	case strings.HasPrefix(iv, "essiv:"):
		newHash, err := hashByName(strings.TrimPrefix(iv, "essiv:"))
		if err != nil {
			return nil, err
		}
		h := newHash()
		h.Write(key)
		salt := h.Sum(nil)
		eb, err := newBlock(salt)
		if err != nil {
			return nil, fmt.Errorf("ESSIV: %w", err)
		}
		return func(s uint64) []byte {
			b := make([]byte, bs)
			binary.LittleEndian.PutUint64(b, s)
			eb.Encrypt(b, b)
			return b
		}, nil
	}
	return nil, fmt.Errorf("IV %q not supported", iv)
}

// afMerge recovers a key of keyLen bytes from stripes anti-forensic stripes
// (LUKS1 specification, section 2.4: AFmerge with the diffuser H).
func afMerge(data []byte, keyLen, stripes int, newHash func() hash.Hash) []byte {
	d := make([]byte, keyLen)
	for i := 0; i < stripes-1; i++ {
		subtle.XORBytes(d, d, data[i*keyLen:(i+1)*keyLen])
		diffuse(d, newHash)
	}
	subtle.XORBytes(d, d, data[(stripes-1)*keyLen:stripes*keyLen])
	return d
}

// diffuse replaces each hash-sized block j of d by H(be32(j) || block),
// the last block truncated.
func diffuse(d []byte, newHash func() hash.Hash) {
	h := newHash()
	ds := h.Size()
	var idx [4]byte
	sum := make([]byte, 0, ds)
	for j := 0; j*ds < len(d); j++ {
		end := min((j+1)*ds, len(d))
		binary.BigEndian.PutUint32(idx[:], uint32(j))
		h.Reset()
		h.Write(idx[:])
		h.Write(d[j*ds : end])
		sum = h.Sum(sum[:0])
		copy(d[j*ds:end], sum)
	}
}
