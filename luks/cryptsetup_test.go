package luks

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/nhscrypt/nhscrypt/internal/testenv"
)

// Cheap KDF settings: cryptsetup's benchmarked default takes seconds.
var (
	kdfPBKDF2   = []string{"--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"}
	kdfArgon2i  = []string{"--pbkdf", "argon2i", "--pbkdf-memory", "32", "--pbkdf-force-iterations", "4"}
	kdfArgon2id = []string{"--pbkdf", "argon2id", "--pbkdf-memory", "32", "--pbkdf-force-iterations", "4"}
	kdfLUKS1    = []string{"--pbkdf-force-iterations", "1000"}
)

const testPass = "correct horse battery staple"

// image is a LUKS image made by cryptsetup for the tests.
type image struct {
	name   string
	path   string // the header (and data, unless detached)
	data   string // the data device when the header is detached
	keys   map[int]string
	format []string
}

var (
	imagesOnce sync.Once
	imagesDir  string
	images     map[string]*image
	imagesErr  error
)

func cryptsetup(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("cryptsetup")
	if err != nil {
		p = "/usr/sbin/cryptsetup"
		if _, err := os.Stat(p); err != nil {
			testenv.Missing(t, "cryptsetup not installed (make test installs cryptsetup-bin)")
		}
	}
	return p
}

func run(stdin string, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, errb.String())
	}
	return out.String(), nil
}

// testImages makes every image once per test binary.
func testImages(t testing.TB) map[string]*image {
	t.Helper()
	cs := cryptsetup(t)
	imagesOnce.Do(func() {
		imagesDir, imagesErr = os.MkdirTemp("", "nhscrypt-luks-test")
		if imagesErr != nil {
			return
		}
		images = map[string]*image{}
		imagesErr = makeImages(cs, imagesDir)
	})
	if imagesErr != nil {
		t.Fatal(imagesErr)
	}
	return images
}

func makeImages(cs, dir string) error {
	specs := []struct {
		name string
		args []string
		size int64
	}{
		{"luks1", append([]string{"--type", "luks1"}, kdfLUKS1...), 8 << 20},
		{"luks1-cbc-essiv-sha1", append([]string{"--type", "luks1", "--cipher", "aes-cbc-essiv:sha256", "--key-size", "256", "--hash", "sha1"}, kdfLUKS1...), 8 << 20},
		{"luks1-sha512", append([]string{"--type", "luks1", "--hash", "sha512"}, kdfLUKS1...), 8 << 20},
		{"luks2-pbkdf2", append([]string{"--type", "luks2"}, kdfPBKDF2...), 20 << 20},
		{"luks2-argon2i", append([]string{"--type", "luks2"}, kdfArgon2i...), 20 << 20},
		{"luks2-argon2id", append([]string{"--type", "luks2"}, kdfArgon2id...), 20 << 20},
		{"luks2-xts256", append([]string{"--type", "luks2", "--cipher", "aes-xts-plain64", "--key-size", "256"}, kdfArgon2id...), 20 << 20},
		{"luks2-xts512", append([]string{"--type", "luks2", "--cipher", "aes-xts-plain64", "--key-size", "512"}, kdfPBKDF2...), 20 << 20},
		{"luks2-cbc-essiv", append([]string{"--type", "luks2", "--cipher", "aes-cbc-essiv:sha256", "--key-size", "256"}, kdfPBKDF2...), 20 << 20},
		{"luks2-sha1", append([]string{"--type", "luks2", "--hash", "sha1"}, kdfPBKDF2...), 20 << 20},
		{"luks2-sha512", append([]string{"--type", "luks2", "--hash", "sha512"}, kdfPBKDF2...), 20 << 20},
		{"luks2-label", append([]string{"--type", "luks2", "--label", "patient-data", "--subsystem", "nhs-trust"}, kdfArgon2id...), 20 << 20},
		{"luks2-slots", append([]string{"--type", "luks2"}, kdfPBKDF2...), 20 << 20},
		{"luks2-token", append([]string{"--type", "luks2"}, kdfArgon2id...), 20 << 20},
		{"luks1-slots", append([]string{"--type", "luks1"}, kdfLUKS1...), 8 << 20},
		// Weak or unusual, but cryptsetup makes them: they exercise the
		// other IV and hash paths of our own unsealing.
		{"luks1-ripemd160", append([]string{"--type", "luks1", "--hash", "ripemd160"}, kdfLUKS1...), 8 << 20},
		{"luks1-ecb", append([]string{"--type", "luks1", "--cipher", "aes-ecb", "--key-size", "256"}, kdfLUKS1...), 8 << 20},
		{"luks2-cbc-plain64", append([]string{"--type", "luks2", "--cipher", "aes-cbc-plain64", "--key-size", "256"}, kdfPBKDF2...), 20 << 20},
		{"luks1-cbc-plain", append([]string{"--type", "luks1", "--cipher", "aes-cbc-plain", "--key-size", "256"}, kdfLUKS1...), 8 << 20},
	}
	for _, s := range specs {
		img := &image{name: s.name, path: filepath.Join(dir, s.name+".img"), keys: map[int]string{0: testPass}, format: s.args}
		if err := os.WriteFile(img.path, nil, 0o600); err != nil {
			return err
		}
		if err := os.Truncate(img.path, s.size); err != nil {
			return err
		}
		args := append([]string{"luksFormat", "-q", "--key-file", "-", "--key-slot", "0"}, s.args...)
		if _, err := run(testPass, cs, append(args, img.path)...); err != nil {
			return err
		}
		images[s.name] = img
	}
	keyFile := filepath.Join(dir, "old.key")
	os.WriteFile(keyFile, []byte(testPass), 0o600)
	// Several keyslots, one removed: slots 0, 1, 3 active, 2 killed.
	for _, name := range []string{"luks2-slots", "luks1-slots"} {
		img := images[name]
		kdf := kdfPBKDF2
		if name == "luks1-slots" {
			kdf = kdfLUKS1
		}
		for slot := 1; slot <= 3; slot++ {
			nk := filepath.Join(dir, fmt.Sprintf("%s-%d.key", name, slot))
			key := fmt.Sprintf("key for slot %d", slot)
			os.WriteFile(nk, []byte(key), 0o600)
			args := append([]string{"luksAddKey", "-q", "--key-file", keyFile, "--key-slot", strconv.Itoa(slot)}, kdf...)
			if _, err := run("", cs, append(args, img.path, nk)...); err != nil {
				return err
			}
			img.keys[slot] = key
		}
		if _, err := run("", cs, "luksKillSlot", "-q", "--key-file", keyFile, img.path, "2"); err != nil {
			return err
		}
		delete(img.keys, 2)
	}
	tok := filepath.Join(dir, "token.json")
	os.WriteFile(tok, []byte(`{"type":"nhscrypt-test","keyslots":["0"],"escrow":"vault"}`), 0o600)
	if _, err := run("", cs, "token", "import", "--json-file", tok, images["luks2-token"].path); err != nil {
		return err
	}
	// A detached header.
	det := &image{name: "luks2-detached", path: filepath.Join(dir, "detached.hdr"), data: filepath.Join(dir, "detached.data"), keys: map[int]string{0: testPass}}
	os.WriteFile(det.data, nil, 0o600)
	os.Truncate(det.data, 4<<20)
	args := append([]string{"luksFormat", "-q", "--key-file", "-", "--type", "luks2", "--header", det.path}, kdfArgon2id...)
	if _, err := run(testPass, cs, append(args, det.data)...); err != nil {
		return err
	}
	images[det.name] = det
	return nil
}

// luksDump parses `cryptsetup luksDump` text into "section.id.field" keys.
func luksDump(t testing.TB, path string) map[string]string {
	t.Helper()
	out, err := run("", cryptsetup(t), "luksDump", path)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	section, id, last := "", "", ""
	entry := regexp.MustCompile(`^  (\d+): (\S+)$`)
	slot1 := regexp.MustCompile(`^Key Slot (\d): (ENABLED|DISABLED)$`)
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.TrimSpace(line) == "" || strings.HasPrefix(line, "LUKS header information"):
			continue
		case slot1.MatchString(line):
			g := slot1.FindStringSubmatch(line)
			section, id = "slot", g[1]
			m["slot."+id] = g[2]
			continue
		case !strings.HasPrefix(line, " ") && !strings.HasPrefix(line, "\t") && strings.HasSuffix(line, ":"):
			section, id = strings.TrimSuffix(line, ":"), ""
			continue
		case entry.MatchString(line):
			g := entry.FindStringSubmatch(line)
			id = g[1]
			m[section+"."+id+".type"] = g[2]
			continue
		}
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || (strings.HasPrefix(line, "\t") || strings.HasPrefix(line, " ")) && isHexRun(strings.TrimSpace(line)) {
			m[last] += " " + strings.TrimSpace(line)
			continue
		}
		key := k
		if id != "" || section == "slot" {
			key = section + "." + id + "." + k
		}
		last = key
		m[key] = strings.TrimSpace(v)
	}
	for k, v := range m {
		v = strings.TrimSuffix(v, " [bytes]")
		if isHexRun(v) && strings.Contains(v, " ") {
			v = strings.ReplaceAll(v, " ", "")
		}
		m[k] = v
	}
	return m
}

func isHexRun(s string) bool {
	return regexp.MustCompile(`^([0-9a-f]{2} ?)+$`).MatchString(s)
}

// dumpView renders what we parsed in luksDump's terms.
func dumpView(h *Header) map[string]string {
	m := map[string]string{}
	if l := h.LUKS1; l != nil {
		m["Version"] = "1"
		m["Cipher name"] = l.CipherName
		m["Cipher mode"] = l.CipherMode
		m["Hash spec"] = l.HashSpec
		m["Payload offset"] = fmt.Sprint(l.PayloadOffset)
		m["MK bits"] = fmt.Sprint(l.KeyBytes * 8)
		m["MK digest"] = hex.EncodeToString(l.MKDigest)
		m["MK salt"] = hex.EncodeToString(l.MKDigestSalt)
		m["MK iterations"] = fmt.Sprint(l.MKDigestIter)
		m["UUID"] = l.UUID
		for i, ks := range l.KeySlots {
			p := fmt.Sprintf("slot.%d", i)
			if !ks.Enabled() {
				m[p] = "DISABLED"
				continue
			}
			m[p] = "ENABLED"
			m[p+".Iterations"] = fmt.Sprint(ks.Iterations)
			m[p+".Salt"] = hex.EncodeToString(ks.Salt)
			m[p+".Key material offset"] = fmt.Sprint(ks.KeyMaterialOffset)
			m[p+".AF stripes"] = fmt.Sprint(ks.Stripes)
		}
		return m
	}
	l := h.LUKS2
	b := l.Primary
	md := l.Metadata
	m["Version"] = "2"
	m["Epoch"] = fmt.Sprint(b.SeqID)
	m["Metadata area"] = fmt.Sprint(b.HdrSize)
	m["Keyslots area"] = fmt.Sprint(uint64(md.Config.KeyslotsSize))
	m["UUID"] = b.UUID
	m["Label"] = orNone(b.Label, "(no label)")
	m["Subsystem"] = orNone(b.Subsystem, "(no subsystem)")
	m["Flags"] = orNone(strings.Join(md.Config.Flags, " "), "(no flags)")
	for id, s := range md.Segments {
		p := "Data segments." + id + "."
		m[p+"type"] = s.Type
		m[p+"offset"] = fmt.Sprint(uint64(s.Offset))
		m[p+"length"] = s.Size
		if s.Size == "dynamic" {
			m[p+"length"] = "(whole device)"
		}
		m[p+"cipher"] = s.Encryption
		m[p+"sector"] = fmt.Sprint(s.SectorSize)
	}
	for id, ks := range md.Keyslots {
		p := "Keyslots." + id + "."
		m[p+"type"] = ks.Type
		m[p+"Key"] = fmt.Sprintf("%d bits", ks.KeySize*8)
		prio := "normal"
		if ks.Priority != nil {
			prio = map[int]string{0: "ignored", 1: "normal", 2: "preferred"}[*ks.Priority]
		}
		m[p+"Priority"] = prio
		m[p+"Cipher"] = ks.Area.Encryption
		m[p+"Cipher key"] = fmt.Sprintf("%d bits", ks.Area.KeySize*8)
		m[p+"PBKDF"] = ks.KDF.Type
		if ks.KDF.Type == "pbkdf2" {
			m[p+"Hash"] = ks.KDF.Hash
			m[p+"Iterations"] = fmt.Sprint(ks.KDF.Iterations)
		} else {
			m[p+"Time cost"] = fmt.Sprint(ks.KDF.Time)
			m[p+"Memory"] = fmt.Sprint(ks.KDF.Memory)
			m[p+"Threads"] = fmt.Sprint(ks.KDF.CPUs)
		}
		m[p+"Salt"] = hex.EncodeToString(ks.KDF.Salt)
		m[p+"AF stripes"] = fmt.Sprint(ks.AF.Stripes)
		m[p+"AF hash"] = ks.AF.Hash
		m[p+"Area offset"] = fmt.Sprint(uint64(ks.Area.Offset))
		m[p+"Area length"] = fmt.Sprint(uint64(ks.Area.Size))
		for did, d := range md.Digests {
			for _, k := range d.Keyslots {
				if k == id {
					m[p+"Digest ID"] = did
				}
			}
		}
	}
	for id, tk := range md.Tokens {
		p := "Tokens." + id + "."
		m[p+"type"] = tk.Type
		m[p+"Keyslot"] = strings.Join(tk.Keyslots, " ")
	}
	for id, d := range md.Digests {
		p := "Digests." + id + "."
		m[p+"type"] = d.Type
		m[p+"Hash"] = d.Hash
		m[p+"Iterations"] = fmt.Sprint(d.Iterations)
		m[p+"Salt"] = hex.EncodeToString(d.Salt)
		m[p+"Digest"] = hex.EncodeToString(d.Digest)
	}
	return m
}

func orNone(s, none string) string {
	if s == "" {
		return none
	}
	return s
}

// TestParseMatchesLuksDump: every field we parse equals what cryptsetup
// luksDump prints for the same image.
func TestParseMatchesLuksDump(t *testing.T) {
	for name, img := range testImages(t) {
		t.Run(name, func(t *testing.T) {
			h, err := ParseFile(img.path)
			if err != nil {
				t.Fatal(err)
			}
			want := luksDump(t, img.path)
			got := dumpView(h)
			for k, v := range got {
				if want[k] != v {
					t.Errorf("%s: nhscrypt %q, luksDump %q", k, v, want[k])
				}
			}
			// And nothing luksDump shows about keyslots, segments,
			// digests or tokens is missing from ours.
			for k := range want {
				if _, ok := got[k]; !ok && (strings.HasPrefix(k, "Keyslots.") || strings.HasPrefix(k, "Digests.") ||
					strings.HasPrefix(k, "Tokens.") || strings.HasPrefix(k, "Data segments.") || strings.HasPrefix(k, "slot.")) {
					t.Errorf("luksDump shows %s = %q, which nhscrypt does not parse", k, want[k])
				}
			}
			if h.Version == 2 {
				compareJSONMetadata(t, img.path, h)
				if !h.LUKS2.Primary.ChecksumValid || !h.LUKS2.Secondary.ChecksumValid || len(h.LUKS2.Disagreements) > 0 || len(h.LUKS2.Problems) > 0 {
					t.Errorf("fresh image: checksums %v/%v, disagreements %v, problems %v", h.LUKS2.Primary.ChecksumValid,
						h.LUKS2.Secondary.ChecksumValid, h.LUKS2.Disagreements, h.LUKS2.Problems)
				}
			}
		})
	}
}

// compareJSONMetadata: the JSON area we read is the document cryptsetup's
// --dump-json-metadata prints.
func compareJSONMetadata(t *testing.T, path string, h *Header) {
	t.Helper()
	out, err := run("", cryptsetup(t), "luksDump", "--dump-json-metadata", path)
	if err != nil {
		t.Fatal(err)
	}
	want, err := parseLUKS2JSON([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	gotJ, _ := jsonMarshal(h.LUKS2.Metadata)
	wantJ, _ := jsonMarshal(want)
	if !bytes.Equal(gotJ, wantJ) {
		t.Errorf("JSON metadata differs from --dump-json-metadata:\n got %s\nwant %s", gotJ, wantJ)
	}
}
