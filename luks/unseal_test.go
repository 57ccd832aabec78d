package luks

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"testing"

	luksgo "github.com/anatol/luks.go"
)

// cryptsetupOpens asks cryptsetup whether key opens slot of img.
func cryptsetupOpens(t *testing.T, img *image, slot int, key string) bool {
	t.Helper()
	args := []string{"open", "--test-passphrase", "--key-file", "-", "--key-slot", strconv.Itoa(slot)}
	if img.data != "" {
		args = append(args, "--header", img.path, img.data)
	} else {
		args = append(args, img.path)
	}
	_, err := run(key, cryptsetup(t), args...)
	return err == nil
}

// TestUnsealAgreesWithCryptsetup: for every image, keyslot and key (right
// and wrong), our unsealing, luks.go's (where it can try) and cryptsetup's
// --test-passphrase all agree.
func TestUnsealAgreesWithCryptsetup(t *testing.T) {
	for name, img := range testImages(t) {
		t.Run(name, func(t *testing.T) {
			h, err := ParseFile(img.path)
			if err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(img.path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			luksGoTried := 0
			for _, slot := range h.ActiveSlots() {
				for _, key := range []string{img.keys[slot], "wrong passphrase"} {
					want := cryptsetupOpens(t, img, slot, key)
					if key == img.keys[slot] && !want {
						t.Fatalf("cryptsetup does not open slot %d with its key", slot)
					}
					own, err := UnsealOwn(f, h, slot, []byte(key))
					if err != nil {
						t.Fatalf("own unseal of slot %d: %v", slot, err)
					}
					if own != want {
						t.Errorf("slot %d key %q: nhscrypt %v, cryptsetup %v", slot, key, own, want)
					}
					if img.data != "" {
						continue // luks.go cannot read a detached header file plus data
					}
					lg, err := UnsealLuksGo(img.path, slot, []byte(key))
					if err != nil {
						t.Logf("slot %d: luks.go cannot try: %v", slot, err)
						continue
					}
					luksGoTried++
					if lg != want {
						t.Errorf("slot %d key %q: luks.go %v, cryptsetup %v", slot, key, lg, want)
					}
				}
			}
			// luks.go handles XTS area ciphers with sha256/sha512 and 4000 stripes.
			luksGoCannot := map[string]bool{"luks1-cbc-essiv-sha1": true, "luks2-cbc-essiv": true, "luks2-sha1": true,
				"luks1-ripemd160": true, "luks1-ecb": true, "luks2-cbc-plain64": true, "luks1-cbc-plain": true}
			if luksGoTried == 0 && img.data == "" && !luksGoCannot[name] {
				t.Errorf("luks.go could not try any keyslot of %s", name)
			}
		})
	}
}

// TestTestKeyDamagedPrimary: luks.go reads only the primary LUKS2 header;
// with it damaged, nhscrypt unseals from the secondary copy, as
// cryptsetup does.
func TestTestKeyDamagedPrimary(t *testing.T) {
	img := testImages(t)["luks2-argon2id"]
	path := flipPath(t, img.path, 4096+30) // the primary's JSON
	h, err := ParseFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if h.LUKS2.MetadataFrom != "secondary" {
		t.Fatalf("metadata from %s", h.LUKS2.MetadataFrom)
	}
	res, err := TestKey(context.Background(), path, h, []byte(testPass), -1)
	if err != nil || res.Method != MethodNhscrypt || res.Keyslot != 0 {
		t.Fatalf("damaged primary: %+v %v", res, err)
	}
	if !cryptsetupOpens(t, &image{path: path}, 0, testPass) {
		t.Error("cryptsetup does not open it either")
	}
}

// TestParseAgreesWithLuksGo: version, UUID, keyslots and tokens as
// luks.go reads them.
func TestParseAgreesWithLuksGo(t *testing.T) {
	for name, img := range testImages(t) {
		if img.data != "" {
			continue
		}
		h, err := ParseFile(img.path)
		if err != nil {
			t.Fatal(err)
		}
		dev, err := luksgo.Open(img.path)
		if err != nil {
			t.Fatalf("%s: luks.go: %v", name, err)
		}
		slots := dev.Slots()
		sort.Ints(slots)
		if dev.Version() != h.Version || dev.UUID() != h.UUID() || fmt.Sprint(slots) != fmt.Sprint(h.ActiveSlots()) {
			t.Errorf("%s: luks.go v%d %s %v; nhscrypt v%d %s %v", name, dev.Version(), dev.UUID(), slots, h.Version, h.UUID(), h.ActiveSlots())
		}
		if h.Version == 2 {
			toks, err := dev.Tokens()
			if err != nil || len(toks) != len(h.LUKS2.Metadata.Tokens) {
				t.Errorf("%s: luks.go tokens %v %v, nhscrypt %d", name, toks, err, len(h.LUKS2.Metadata.Tokens))
			}
			for _, tk := range toks {
				if h.LUKS2.Metadata.Tokens[strconv.Itoa(tk.ID)].Type != tk.Type {
					t.Errorf("%s: token %d type %q differs", name, tk.ID, tk.Type)
				}
			}
		}
		dev.Close()
	}
}

func TestTestKey(t *testing.T) {
	imgs := testImages(t)
	ctx := context.Background()
	for _, name := range []string{"luks1-slots", "luks2-slots", "luks2-cbc-essiv", "luks1-cbc-essiv-sha1", "luks2-argon2id"} {
		img := imgs[name]
		h, err := ParseFile(img.path)
		if err != nil {
			t.Fatal(err)
		}
		for slot, key := range img.keys {
			res, err := TestKey(ctx, img.path, h, []byte(key), -1)
			if err != nil {
				t.Fatalf("%s: key of slot %d: %v", name, slot, err)
			}
			if res.Keyslot != slot {
				t.Errorf("%s: key of slot %d opened slot %d", name, slot, res.Keyslot)
			}
			if res, err := TestKey(ctx, img.path, h, []byte(key), slot); err != nil || res.Keyslot != slot {
				t.Errorf("%s: --slot %d: %v %v", name, slot, res, err)
			}
		}
		if _, err := TestKey(ctx, img.path, h, []byte("wrong"), -1); !errors.Is(err, ErrKeyMismatch) {
			t.Errorf("%s: wrong key: %v, want ErrKeyMismatch", name, err)
		}
		if _, err := TestKey(ctx, img.path, h, []byte(testPass), 2); err == nil {
			t.Errorf("%s: a removed or absent slot 2 was accepted", name)
		}
	}
	// The CBC image can only be opened by our own unsealing.
	img := imgs["luks2-cbc-essiv"]
	h, _ := ParseFile(img.path)
	res, err := TestKey(ctx, img.path, h, []byte(testPass), 0)
	if err != nil || res.Method != MethodNhscrypt {
		t.Errorf("cbc-essiv: %+v %v, want opened by nhscrypt", res, err)
	}
	img = imgs["luks2-argon2id"]
	h, _ = ParseFile(img.path)
	res, err = TestKey(ctx, img.path, h, []byte(testPass), 0)
	if err != nil || res.Method != MethodLuksGo {
		t.Errorf("argon2id: %+v %v, want opened by luks.go", res, err)
	}
}
