package luks

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"filippo.io/age"

	"github.com/nhscrypt/nhscrypt/filecrypt"
	"github.com/nhscrypt/nhscrypt/internal/testenv"
	"github.com/nhscrypt/nhscrypt/report"
)

func copyImage(t *testing.T, src string) string {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), filepath.Base(src))
	if err := os.WriteFile(dst, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return dst
}

// rewriteLUKS2 edits the JSON metadata of the header at off and fixes its
// checksum, as cryptsetup would write it.
func rewriteLUKS2(t *testing.T, path string, off int64, edit func(md map[string]any)) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	bin := make([]byte, LUKS2BinaryHeaderSize)
	f.ReadAt(bin, off)
	hdrSize := int64(beUint64(bin[8:16]))
	area := make([]byte, hdrSize)
	f.ReadAt(area, off)
	js := area[LUKS2BinaryHeaderSize:]
	var md map[string]any
	if err := json.Unmarshal(bytes.TrimRight(js, "\x00"), &md); err != nil {
		t.Fatal(err)
	}
	edit(md)
	nj, _ := json.Marshal(md)
	clear(js)
	copy(js, nj)
	fixChecksum(area)
	if _, err := f.WriteAt(area, off); err != nil {
		t.Fatal(err)
	}
}

func fixChecksum(area []byte) {
	clear(area[luks2ChecksumOffset : luks2ChecksumOffset+luks2ChecksumLen])
	s := sha256.Sum256(area)
	copy(area[luks2ChecksumOffset:], s[:])
}

func beUint64(b []byte) uint64 {
	var v uint64
	for _, x := range b[:8] {
		v = v<<8 | uint64(x)
	}
	return v
}

func ids(fs []report.Finding) []string {
	var out []string
	for _, f := range fs {
		out = append(out, f.ID)
	}
	sort.Strings(out)
	return out
}

func TestCheckHeaderFindings(t *testing.T) {
	imgs := testImages(t)
	p := DefaultPolicy()
	p.HeaderBackupDir = t.TempDir()
	cases := map[string][]string{
		// Test images use cheap KDF settings, so every keyslot is weak.
		"luks1":                {"LUKS-HEADER-NO-BACKUP", "LUKS-KDF-PBKDF2", "LUKS-KDF-WEAK", "LUKS-VERSION-1"},
		"luks1-cbc-essiv-sha1": {"LUKS-HEADER-NO-BACKUP", "LUKS-KDF-PBKDF2", "LUKS-KDF-WEAK", "LUKS-VERSION-1"},
		"luks2-pbkdf2":         {"LUKS-HEADER-NO-BACKUP", "LUKS-KDF-PBKDF2", "LUKS-KDF-WEAK"},
		"luks2-argon2id":       {"LUKS-HEADER-NO-BACKUP", "LUKS-KDF-WEAK"},
		"luks2-argon2i":        {"LUKS-HEADER-NO-BACKUP", "LUKS-KDF-WEAK"},
		"luks2-cbc-essiv":      {"LUKS-HEADER-NO-BACKUP", "LUKS-KDF-PBKDF2", "LUKS-KDF-WEAK"},
		"luks1-ecb":            {"LUKS-CIPHER-WEAK", "LUKS-HEADER-NO-BACKUP", "LUKS-KDF-PBKDF2", "LUKS-KDF-WEAK", "LUKS-VERSION-1"},
		"luks2-cbc-plain64":    {"LUKS-CIPHER-WEAK", "LUKS-CIPHER-WEAK", "LUKS-HEADER-NO-BACKUP", "LUKS-KDF-PBKDF2", "LUKS-KDF-WEAK"},
		"luks1-cbc-plain":      {"LUKS-CIPHER-WEAK", "LUKS-HEADER-NO-BACKUP", "LUKS-KDF-PBKDF2", "LUKS-KDF-WEAK", "LUKS-VERSION-1"},
		"luks2-slots":          {"LUKS-HEADER-NO-BACKUP", "LUKS-KDF-PBKDF2", "LUKS-KDF-PBKDF2", "LUKS-KDF-PBKDF2", "LUKS-KDF-WEAK", "LUKS-KDF-WEAK", "LUKS-KDF-WEAK"},
	}
	for name, want := range cases {
		h, err := ParseFile(imgs[name].path)
		if err != nil {
			t.Fatal(err)
		}
		got := ids(CheckHeader(h, imgs[name].path, p))
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("%s: findings %v, want %v", name, got, want)
		}
	}
	// A strong policy-compliant header: argon2 thresholds met, 3 slots
	// allowed, a backup recorded.
	h, _ := ParseFile(imgs["luks2-argon2id"].path)
	lenient := p
	lenient.MinArgon2MemoryKiB, lenient.MinArgon2Time = 32, 4
	WriteBackupRecord(p.HeaderBackupDir, &BackupRecord{UUID: h.UUID()})
	lenient.HeaderBackupDir = p.HeaderBackupDir
	if f := CheckHeader(h, "x", lenient); len(f) != 0 {
		t.Errorf("compliant header gave findings %v", ids(f))
	}
	// Too many keyslots is info; disabled IDs are not reported.
	h, _ = ParseFile(imgs["luks2-slots"].path)
	few := p
	few.MaxActiveKeyslots = 2
	few.Disabled = []string{IDKDFPBKDF2, IDKDFWeak, IDHeaderNoBackup}
	got := CheckHeader(h, "x", few)
	if len(got) != 1 || got[0].ID != IDKeyslotsMany || got[0].Severity != report.Info {
		t.Errorf("keyslots: %+v", got)
	}
}

// TestCheckEditedCiphers edits the segment cipher in a cryptsetup header
// (fixing the checksum): ciphers the kernel here won't format.
func TestCheckEditedCiphers(t *testing.T) {
	imgs := testImages(t)
	cases := map[string]string{
		"serpent-xts-plain64":  "",
		"twofish-xts-plain64":  "",
		"cipher_null-ecb":      "cipher_null",
		"aes-ecb":              "ECB",
		"aes-cbc-plain64":      "CBC without ESSIV",
		"aes-cbc-plain":        "plain IV",
		"aes-xts-plain":        "32-bit plain IV",
		"aes-cbc-essiv:sha256": "",
	}
	p := DefaultPolicy()
	p.HeaderBackupDir = ""
	p.Disabled = []string{IDKDFPBKDF2, IDKDFWeak}
	for cipher, want := range cases {
		path := copyImage(t, imgs["luks2-pbkdf2"].path)
		for _, off := range []int64{0, 16384} {
			rewriteLUKS2(t, path, off, func(md map[string]any) {
				md["segments"].(map[string]any)["0"].(map[string]any)["encryption"] = cipher
			})
		}
		h, err := ParseFile(path)
		if err != nil {
			t.Fatalf("%s: %v", cipher, err)
		}
		if len(h.LUKS2.Problems) > 0 || len(h.LUKS2.Disagreements) > 0 {
			t.Fatalf("%s: edited header not intact: %v %v", cipher, h.LUKS2.Problems, h.LUKS2.Disagreements)
		}
		f := CheckHeader(h, path, p)
		switch {
		case want == "" && len(f) != 0:
			t.Errorf("%s: unexpected findings %+v", cipher, f)
		case want != "" && (len(f) != 1 || f[0].ID != IDCipherWeak || f[0].Severity != report.Fail || !strings.Contains(f[0].Message, want)):
			t.Errorf("%s: findings %+v, want LUKS-CIPHER-WEAK about %q", cipher, f, want)
		}
	}
	// An XTS key of 256 bits fails a policy asking for 512.
	h, _ := ParseFile(imgs["luks2-xts256"].path)
	strict := p
	strict.MinXTSKeyBits = 512
	strict.Disabled = append(strict.Disabled, IDHeaderNoBackup)
	// Both the data segment and the keyslot area use 256-bit XTS.
	if f := CheckHeader(h, "x", strict); len(f) != 2 || f[0].ID != IDCipherWeak || f[1].ID != IDCipherWeak ||
		!strings.HasPrefix(f[0].Message, "segment 0:") || !strings.HasPrefix(f[1].Message, "keyslot 0 area:") {
		t.Errorf("xts256 under a 512-bit policy: %+v", f)
	}
}

// TestBrokenHeaders: damage gives a finding or a clean error naming the
// file, never a panic.
func TestBrokenHeaders(t *testing.T) {
	imgs := testImages(t)
	l2 := imgs["luks2-argon2id"].path
	l1 := imgs["luks1"].path
	flip := func(path string, off int64) string {
		p := copyImage(t, path)
		f, _ := os.OpenFile(p, os.O_RDWR, 0)
		b := make([]byte, 1)
		f.ReadAt(b, off)
		b[0] ^= 0x40
		f.WriteAt(b, off)
		f.Close()
		return p
	}
	type want struct {
		err      string   // substring of the error, or ""
		findings []string // IDs that must be among the findings
	}
	cases := map[string]struct {
		path string
		want want
	}{
		"luks2-primary-binary-flip":   {flip(l2, 30), want{findings: []string{IDHeaderChecksum}}},
		"luks2-primary-json-flip":     {flip(l2, 4096+20), want{findings: []string{IDHeaderChecksum}}},
		"luks2-secondary-json-flip":   {flip(l2, 16384+4096+20), want{findings: []string{IDHeaderChecksum}}},
		"luks2-primary-magic":         {flip(l2, 0), want{findings: []string{IDHeaderDamaged}}},
		"luks2-primary-csum":          {flip(l2, luks2ChecksumOffset+3), want{findings: []string{IDHeaderChecksum}}},
		"luks2-both-json":             {flip(flipPath(t, l2, 4096+20), 16384+4096+20), want{err: "no intact LUKS2 header"}},
		"luks1-magic":                 {flip(l1, 1), want{err: "not a LUKS device"}},
		"luks1-slot-active":           {flip(l1, 208+1), want{err: "invalid active value"}},
		"luks1-keymaterial-offset":    {flip(l1, 208+40), want{err: "key material"}},
		"luks1-version":               {flip(l1, 7), want{err: "unsupported LUKS version"}},
		"luks2-primary-hdr_size-flip": {flip(l2, 13), want{findings: []string{IDHeaderDamaged}}},
	}
	// Primary and secondary disagree: edit the primary's label, valid
	// checksum on both.
	dis := copyImage(t, l2)
	f, _ := os.OpenFile(dis, os.O_RDWR, 0)
	area := make([]byte, 16384)
	f.ReadAt(area, 0)
	copy(area[24:], "tampered")
	fixChecksum(area)
	f.WriteAt(area, 0)
	f.Close()
	cases["luks2-disagree"] = struct {
		path string
		want want
	}{dis, want{findings: []string{IDHeaderMismatch}}}
	// JSON edited in the primary only (valid checksums): disagreement.
	dj := copyImage(t, l2)
	rewriteLUKS2(t, dj, 0, func(md map[string]any) { md["config"].(map[string]any)["flags"] = []string{"allow-discards"} })
	cases["luks2-json-disagree"] = struct {
		path string
		want want
	}{dj, want{findings: []string{IDHeaderMismatch}}}
	// A keyslot area pointing past the end of the file.
	big := copyImage(t, l2)
	for _, off := range []int64{0, 16384} {
		rewriteLUKS2(t, big, off, func(md map[string]any) {
			md["keyslots"].(map[string]any)["0"].(map[string]any)["area"].(map[string]any)["offset"] = "99999999999"
		})
	}
	cases["luks2-area-beyond-end"] = struct {
		path string
		want want
	}{big, want{err: "beyond the end of the device"}}
	// Truncations, zeros, random data.
	for name, n := range map[string]int64{"trunc-100": 100, "trunc-600": 600, "trunc-5000": 5000, "trunc-20000": 20000} {
		p := copyImage(t, l2)
		os.Truncate(p, n)
		e := "truncated"
		if n >= 5000 {
			e = "end of the device"
		}
		cases[name] = struct {
			path string
			want want
		}{p, want{err: e}}
	}
	zero := filepath.Join(t.TempDir(), "zero")
	os.WriteFile(zero, make([]byte, 1<<20), 0o600)
	rnd := filepath.Join(t.TempDir(), "random")
	rb := make([]byte, 1<<20)
	rand.Read(rb)
	os.WriteFile(rnd, rb, 0o600)
	empty := filepath.Join(t.TempDir(), "empty")
	os.WriteFile(empty, nil, 0o600)
	for name, p := range map[string]string{"zero": zero, "random": rnd, "empty": empty} {
		cases[name] = struct {
			path string
			want want
		}{p, want{err: "not a LUKS device"}}
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			h, err := ParseFile(c.path)
			if c.want.err != "" {
				if err == nil {
					t.Fatalf("parsed without error; problems %v", h.LUKS2)
				}
				if !strings.Contains(err.Error(), c.want.err) || !strings.Contains(err.Error(), c.path) {
					t.Fatalf("error %q: want it to contain %q and name the file", err, c.want.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("error %v, want findings %v", err, c.want.findings)
			}
			got := ids(CheckHeader(h, c.path, DefaultPolicy()))
			for _, id := range c.want.findings {
				found := false
				for _, g := range got {
					found = found || g == id
				}
				if !found {
					t.Errorf("findings %v lack %s", got, id)
				}
			}
		})
	}
}

func flipPath(t *testing.T, path string, off int64) string {
	p := copyImage(t, path)
	f, _ := os.OpenFile(p, os.O_RDWR, 0)
	b := make([]byte, 1)
	f.ReadAt(b, off)
	b[0] ^= 0x40
	f.WriteAt(b, off)
	f.Close()
	return p
}

// TestBackupHeaderRestores: the encrypted backup decrypts with the age CLI
// to exactly what cryptsetup luksHeaderBackup saves, and
// cryptsetup luksHeaderRestore brings a wiped header back.
func TestBackupHeaderRestores(t *testing.T) {
	imgs := testImages(t)
	ageBin := testenv.Tool(t, "age")
	cs := cryptsetup(t)
	id, _ := age.GenerateX25519Identity()
	keyFile := filepath.Join(t.TempDir(), "key.txt")
	os.WriteFile(keyFile, []byte(id.String()+"\n"), 0o600)
	for _, name := range []string{"luks1", "luks2-argon2id"} {
		img := copyImage(t, imgs[name].path)
		h, err := ParseFile(img)
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		dst := filepath.Join(dir, "hdr.age")
		rec, err := BackupHeader(context.Background(), img, h, dst, filecrypt.EncryptOptions{Recipients: []age.Recipient{id.Recipient()}}, false)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := BackupHeader(context.Background(), img, h, dst, filecrypt.EncryptOptions{Recipients: []age.Recipient{id.Recipient()}}, false); !errors.Is(err, os.ErrExist) {
			t.Errorf("second backup over the first: %v", err)
		}
		ct, _ := os.ReadFile(dst)
		if s := sha256.Sum256(ct); rec.UUID != h.UUID() || rec.CiphertextSHA256 != hexs(s[:]) {
			t.Errorf("record %+v does not match", rec)
		}
		plain := filepath.Join(dir, "hdr.img")
		if out, err := exec.Command(ageBin, "-d", "-i", keyFile, "-o", plain, dst).CombinedOutput(); err != nil {
			t.Fatalf("age -d: %v %s", err, out)
		}
		theirs := filepath.Join(dir, "cs.img")
		if _, err := run("", cs, "luksHeaderBackup", img, "--header-backup-file", theirs); err != nil {
			t.Fatal(err)
		}
		a, _ := os.ReadFile(plain)
		b, _ := os.ReadFile(theirs)
		if !bytes.Equal(a, b) {
			t.Errorf("%s: backup (%d bytes) differs from luksHeaderBackup (%d bytes)", name, len(a), len(b))
		}
		// Wipe the header, restore it, open it.
		f, _ := os.OpenFile(img, os.O_RDWR, 0)
		f.WriteAt(make([]byte, 8192), 0)
		if h.Version == 2 {
			f.WriteAt(make([]byte, 8192), 16384)
		}
		f.Close()
		if _, err := run("", cs, "open", "--test-passphrase", "--key-file", "-", img); err == nil {
			t.Fatal("wiped header still opens")
		}
		if _, err := run("", cs, "luksHeaderRestore", "-q", img, "--header-backup-file", plain); err != nil {
			t.Fatal(err)
		}
		if _, err := run(testPass, cs, "open", "--test-passphrase", "--key-file", "-", img); err != nil {
			t.Errorf("%s: restored header does not open: %v", name, err)
		}
	}
}

func hexs(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, x := range b {
		out = append(out, digits[x>>4], digits[x&15])
	}
	return string(out)
}
