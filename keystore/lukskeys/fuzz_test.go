package lukskeys

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// FuzzDecompressHeader: an escrowed header backup read back from a store
// that may have been tampered with never panics and never yields more than
// the limit.
func FuzzDecompressHeader(f *testing.F) {
	enc, _ := zstd.NewWriter(nil)
	f.Add(enc.EncodeAll(make([]byte, 64<<10), nil))
	f.Add(enc.EncodeAll([]byte("LUKS\xba\xbe\x00\x02"), nil))
	f.Add([]byte{})
	f.Add([]byte("not zstd"))
	f.Fuzz(func(t *testing.T, b []byte) {
		const limit = 1 << 20
		out, err := DecompressHeader(b, limit)
		if err != nil && out != nil {
			t.Fatal("output with an error")
		}
		if len(out) > limit {
			t.Fatalf("%d bytes, over the limit", len(out))
		}
		if err == nil {
			// Round trip: what was read compresses back to the same data.
			again, err := DecompressHeader(enc.EncodeAll(out, nil), limit)
			if err != nil || !bytes.Equal(again, out) {
				t.Fatalf("round trip: %v", err)
			}
		}
	})
}

// FuzzJournal: a damaged enrolment journal is an error naming the file,
// never a panic or a journal for another volume.
func FuzzJournal(f *testing.F) {
	good, _ := json.Marshal(journal{Name: "k1", Device: "/dev/sda2", UUID: "u", Keyslot: 1, Phase: phaseAdd})
	f.Add(good)
	f.Add([]byte(`{"name":"k1","luks_uuid":"other"}`))
	f.Add([]byte(`{`))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		e := &Enroller{StateDir: t.TempDir()}
		if err := os.WriteFile(filepath.Join(e.StateDir, "enroll-u.json"), data, 0o600); err != nil {
			t.Fatal(err)
		}
		j, err := e.loadJournal("u")
		if err != nil {
			if j != nil {
				t.Fatal("journal with an error")
			}
			return
		}
		if j == nil || j.UUID != "u" || j.Name == "" || j.Device == "" || j.Keyslot < 0 || j.Keyslot > 31 {
			t.Fatalf("accepted journal %+v", j)
		}
	})
}

// FuzzIsRecoveryKey: only the exact format is accepted.
func FuzzIsRecoveryKey(f *testing.F) {
	k, _ := NewRecoveryKey()
	f.Add(k)
	f.Add([]byte("cccccccc-cccccccc-cccccccc-cccccccc-cccccccc-cccccccc-cccccccc-cccccccc"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, b []byte) {
		if !IsRecoveryKey(b) {
			return
		}
		if len(b) != RecoveryKeyLen {
			t.Fatalf("accepted %d bytes", len(b))
		}
		for i, c := range b {
			if (i%9 == 8) != (c == '-') {
				t.Fatalf("accepted %q", b)
			}
		}
	})
}
