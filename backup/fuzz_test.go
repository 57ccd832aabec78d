package backup

import (
	"encoding/json"
	"testing"
)

// FuzzParseManifest: no panic; nil on error; a parsed manifest survives a
// JSON round trip unchanged (paths need not be UTF-8).
func FuzzParseManifest(f *testing.F) {
	f.Add([]byte(`{"version":1,"repository":"r","entries":[{"type":"file","path":"/a","size":1,"sha256":"` + hex64 + `","object":"` + hex64 + `","member":"a"}]}`))
	f.Add([]byte(`{"version":1,"entries":[{"type":"dir","path_b64":"L3Rt/w=="},{"type":"symlink","path":"/l","link":"../x"}]}`))
	f.Add([]byte(`{"version":1,"entries":[{"type":"stream","path":"db.sql","size":5,"sha256":"` + hex64 + `","object":"` + hex64 + `","member":"db.sql.part000000","parts":[{"object":"` + hex64 + `","offset":0,"member":"m","size":5}]}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseManifest(data)
		if err != nil {
			if m != nil {
				t.Fatal("manifest with error")
			}
			return
		}
		out, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		m2, err := ParseManifest(out)
		if err != nil {
			t.Fatalf("re-parse: %v", err)
		}
		out2, _ := json.Marshal(m2)
		if string(out) != string(out2) {
			t.Fatal("round trip changed the manifest")
		}
	})
}

const hex64 = "0000000000000000000000000000000000000000000000000000000000000000"

// FuzzParseConfig: no panic; nil on error; valid configs round-trip.
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(`{"version":1,"id":"` + hex64 + `","recipients":["age1zvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwj"],"compression":"zstd","object_size":67108864,"signers":[{"host":"h","public_key":"TlfzPH0j6YKi2P4R6PeDJWX7ZfAULo/CpX0aGlwEG9E="}]}`))
	f.Add([]byte(`{"version":2}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig(data)
		if err != nil {
			if c != nil {
				t.Fatal("config with error")
			}
			return
		}
		out, _ := json.Marshal(c)
		if _, err := ParseConfig(out); err != nil {
			t.Fatalf("re-parse: %v", err)
		}
	})
}

// FuzzParseSignedIndex: no panic, nil on error; a verified signature only
// ever comes with a parsed index.
func FuzzParseSignedIndex(f *testing.F) {
	f.Add([]byte(`{"index":{"version":1,"manifest":{"name":"` + hex64 + `","size":1},"objects":[]},"signer":"","signature":""}`))
	f.Add([]byte(`{"index":"x"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		idx, _, ok, err := ParseSignedIndex(data)
		if err != nil && (idx != nil || ok) {
			t.Fatal("result with error")
		}
	})
}
