package luks

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse: any bytes give a header or an error, never a panic; a parsed
// header survives the checks, JSON and the backup-size computation.
// Seeds in testdata/fuzz/FuzzParse are cryptsetup-made LUKS1 and LUKS2
// headers (see TestWriteFuzzSeeds).
func FuzzParse(f *testing.F) {
	f.Add([]byte("LUKS\xba\xbe\x00\x01"))
	f.Add([]byte("LUKS\xba\xbe\x00\x02"))
	f.Add([]byte("SKUL\xba\xbe\x00\x02"))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, size := range []int64{0, int64(len(data))} {
			h, err := Parse(bytes.NewReader(data), size)
			if err != nil {
				if h != nil {
					t.Fatal("header returned with an error")
				}
				continue
			}
			CheckHeader(h, "fuzz", DefaultPolicy())
			HeaderAreaSize(h)
			h.ActiveSlots()
			h.UUID()
			if _, err := json.Marshal(h); err != nil {
				t.Fatalf("parsed header does not marshal: %v", err)
			}
		}
	})
}

// TestWriteFuzzSeeds refreshes the seed corpus from cryptsetup images when
// NHSCRYPT_WRITE_FUZZ_SEEDS=1.
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("NHSCRYPT_WRITE_FUZZ_SEEDS") != "1" {
		t.Skip("set NHSCRYPT_WRITE_FUZZ_SEEDS=1 to rewrite testdata/fuzz/FuzzParse")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzParse")
	os.MkdirAll(dir, 0o755)
	for name, n := range map[string]int{"luks1": 4096, "luks2-argon2id": 32768, "luks2-token": 32768, "luks2-slots": 32768} {
		data, err := os.ReadFile(testImages(t)[name].path)
		if err != nil {
			t.Fatal(err)
		}
		data = bytes.TrimRight(data[:n], "\x00")
		var b bytes.Buffer
		b.WriteString("go test fuzz v1\n[]byte(")
		b.WriteString(goQuote(data))
		b.WriteString(")\n")
		if err := os.WriteFile(filepath.Join(dir, name), b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func goQuote(b []byte) string {
	var s bytes.Buffer
	s.WriteByte('"')
	for _, c := range b {
		switch {
		case c == '"' || c == '\\':
			s.WriteByte('\\')
			s.WriteByte(c)
		case c >= 0x20 && c < 0x7f:
			s.WriteByte(c)
		default:
			s.WriteString(`\x`)
			s.WriteByte("0123456789abcdef"[c>>4])
			s.WriteByte("0123456789abcdef"[c&15])
		}
	}
	s.WriteByte('"')
	return s.String()
}

// FuzzLUKS2Metadata wraps arbitrary JSON in two LUKS2 headers with valid
// checksums, so the fuzzer reaches the metadata parsing, validation and
// checks instead of stopping at the checksum.
func FuzzLUKS2Metadata(f *testing.F) {
	f.Add([]byte(`{"keyslots":{},"tokens":{},"segments":{},"digests":{},"config":{"json_size":"12288","keyslots_size":"16744448"}}`))
	f.Add([]byte(`{"keyslots":{"0":{"type":"luks2","key_size":64,"af":{"type":"luks1","stripes":4000,"hash":"sha256"},"area":{"type":"raw","offset":"32768","size":"258048","encryption":"aes-xts-plain64","key_size":64},"kdf":{"type":"argon2id","time":4,"memory":32,"cpus":2,"salt":"AAAA"}}},"tokens":{"0":{"type":"x","keyslots":["0"]}},"segments":{"0":{"type":"crypt","offset":"16777216","size":"dynamic","iv_tweak":"0","encryption":"aes-xts-plain64","sector_size":4096}},"digests":{"0":{"type":"pbkdf2","keyslots":["0"],"segments":["0"],"hash":"sha256","iterations":1000,"salt":"AAAA","digest":"AAAA"}},"config":{"json_size":"12288","keyslots_size":"16744448","requirements":{"mandatory":["online-reencrypt"]}}}`))
	f.Fuzz(func(t *testing.T, js []byte) {
		const hs = 16384
		if len(js) >= hs-LUKS2BinaryHeaderSize {
			return
		}
		img := make([]byte, 2*hs)
		for i, off := range []int{0, hs} {
			a := img[off : off+hs]
			copy(a, Magic)
			if i == 1 {
				copy(a, magic2)
			}
			a[7] = 2
			putBE64(a[8:], hs)
			putBE64(a[16:], 1)
			copy(a[72:], "sha256")
			copy(a[168:], "0b5e0a1c-0000-4000-8000-000000000000")
			putBE64(a[256:], uint64(off))
			copy(a[LUKS2BinaryHeaderSize:], js)
			fixChecksum(a)
		}
		h, err := Parse(bytes.NewReader(img), 0)
		if err != nil {
			return
		}
		CheckHeader(h, "fuzz", DefaultPolicy())
		HeaderAreaSize(h)
		if _, err := json.Marshal(h); err != nil {
			t.Fatal(err)
		}
		// A header that parses must say which keyslots it has.
		if len(h.ActiveSlots()) != len(h.LUKS2.Metadata.Keyslots) {
			t.Fatal("keyslot IDs lost")
		}
	})
}

func putBE64(b []byte, v uint64) {
	for i := 7; i >= 0; i-- {
		b[i] = byte(v)
		v >>= 8
	}
}
