package luks

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// Fuzz targets for the discovery parsers. Properties: no panic; an error
// comes with a nil result and names a line; a result survives a round
// trip through the format (re-encoded with octal escapes and parsed again,
// it is the same apart from line numbers). Seeds are the fixture files
// under testdata/systems plus the corpora under testdata/fuzz.

var discErrLine = regexp.MustCompile(`^line [1-9][0-9]*: `)

// discSeed adds every fixture file matching rel (a path inside a fixture
// root, glob allowed) to f's corpus.
func discSeed(f *testing.F, rel ...string) {
	for _, r := range rel {
		files, err := filepath.Glob(filepath.Join("testdata", "systems", "*", r))
		if err != nil {
			f.Fatal(err)
		}
		for _, p := range files {
			b, err := os.ReadFile(p)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
}

// discEscape encodes a field as the kernel and fstab do: space, tab,
// newline, carriage return, backslash and '#' become octal escapes.
func discEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case ' ', '\t', '\n', '\r', '\\', '#':
			fmt.Fprintf(&b, `\%03o`, c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

func discCheckErr(t *testing.T, err error, isNil bool) {
	t.Helper()
	if err == nil {
		return
	}
	if !isNil {
		t.Fatalf("error %v with a non-nil result", err)
	}
	if !discErrLine.MatchString(err.Error()) {
		t.Fatalf("error %q does not name a line", err)
	}
}

func FuzzParseMounts(f *testing.F) {
	discSeed(f, "proc/mounts", "proc/self/mounts")
	f.Add([]byte("/dev/sda1 /srv/a\\040b ext4 rw 0 0\n\n\t x  y  z  w \r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		ms, err := ParseMounts(strings.NewReader(string(data)))
		discCheckErr(t, err, ms == nil)
		if err != nil {
			return
		}
		var b strings.Builder
		for _, m := range ms {
			fmt.Fprintf(&b, "%s %s %s %s 0 0\n", discEscape(m.Source), discEscape(m.MountPoint), discEscape(m.FSType), discEscape(m.Options))
		}
		again, err := ParseMounts(strings.NewReader(b.String()))
		if err != nil || !reflect.DeepEqual(again, ms) {
			t.Fatalf("round trip of %q:\n%q\ngave %+v, %v\nwant %+v", data, b.String(), again, err, ms)
		}
	})
}

func FuzzParseSwaps(f *testing.F) {
	discSeed(f, "proc/swaps")
	f.Add([]byte("Filename Type Size Used Priority\n/swap\\040file file 10 0 -2\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		ws, err := ParseSwaps(strings.NewReader(string(data)))
		discCheckErr(t, err, ws == nil)
		if err != nil {
			return
		}
		b := strings.Builder{}
		b.WriteString("Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n")
		for _, w := range ws {
			fmt.Fprintf(&b, "%s\t%s\t%d\t%d\t%d\n", discEscape(w.Source), discEscape(w.Type), w.Size, w.Used, w.Priority)
		}
		again, err := ParseSwaps(strings.NewReader(b.String()))
		if err != nil || !reflect.DeepEqual(again, ws) {
			t.Fatalf("round trip of %q:\n%q\ngave %+v, %v\nwant %+v", data, b.String(), again, err, ws)
		}
	})
}

func FuzzParseCrypttab(f *testing.F) {
	discSeed(f, "etc/crypttab")
	f.Add([]byte("# c\nmedia LABEL=My\\040Disk none luks,noauto\r\nswap /dev/sda3 /dev/urandom swap\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		es, err := ParseCrypttab(strings.NewReader(string(data)))
		discCheckErr(t, err, es == nil)
		if err != nil {
			return
		}
		var b strings.Builder
		last := 0
		for _, e := range es {
			if e.Line <= last {
				t.Fatalf("line numbers not increasing: %+v", es)
			}
			last = e.Line
			fmt.Fprintf(&b, "%s %s", discEscape(e.Name), discEscape(e.Device))
			if e.KeyFile != "" || e.Options != nil {
				fmt.Fprintf(&b, " %s", discEscape(e.KeyFile))
			}
			if e.Options != nil {
				fmt.Fprintf(&b, " %s", discEscape(strings.Join(e.Options, ",")))
			}
			b.WriteString("\n")
		}
		again, err := ParseCrypttab(strings.NewReader(b.String()))
		if err != nil || len(again) != len(es) {
			t.Fatalf("round trip of %q:\n%q\ngave %+v, %v", data, b.String(), again, err)
		}
		for i := range es {
			again[i].Line = es[i].Line
		}
		if !reflect.DeepEqual(again, es) {
			t.Fatalf("round trip of %q:\n%q\ngave %+v\nwant %+v", data, b.String(), again, es)
		}
	})
}

func FuzzParseFstab(f *testing.F) {
	discSeed(f, "etc/fstab")
	f.Add([]byte("UUID=x / ext4 defaults 0 1\n/dev/sdb1 /srv/a\\040b ext4\nLABEL=y /mnt\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		es, err := ParseFstab(strings.NewReader(string(data)))
		discCheckErr(t, err, es == nil)
		if err != nil {
			return
		}
		var b strings.Builder
		last := 0
		for _, e := range es {
			if e.Line <= last {
				t.Fatalf("line numbers not increasing: %+v", es)
			}
			last = e.Line
			fmt.Fprintf(&b, "%s %s", discEscape(e.Spec), discEscape(e.File))
			if e.VFSType != "" {
				fmt.Fprintf(&b, " %s", discEscape(e.VFSType))
				if e.Options != nil {
					fmt.Fprintf(&b, " %s %d %d", discEscape(strings.Join(e.Options, ",")), e.Freq, e.PassNo)
				}
			}
			b.WriteString("\n")
		}
		again, err := ParseFstab(strings.NewReader(b.String()))
		if err != nil || len(again) != len(es) {
			t.Fatalf("round trip of %q:\n%q\ngave %+v, %v", data, b.String(), again, err)
		}
		for i := range es {
			again[i].Line = es[i].Line
		}
		if !reflect.DeepEqual(again, es) {
			t.Fatalf("round trip of %q:\n%q\ngave %+v\nwant %+v", data, b.String(), again, es)
		}
	})
}

// FuzzDiscoverResolve resolves fuzzed mount and swap tables against the
// devices of the lvm-on-luks and odd-sources fixtures, then runs
// CheckSystem. Properties: no panic; every disk-backed mount and swap
// area gets an encryption verdict; stacks name only known devices;
// "none" always names an unencrypted device.
func FuzzDiscoverResolve(f *testing.F) {
	type base struct {
		root string
		devs []BlockDevice
	}
	var bases []base
	for _, name := range []string{"lvm-on-luks", "odd-sources"} {
		root := filepath.Join("testdata", "systems", name)
		s, err := Discover(context.Background(), root)
		if err != nil {
			f.Fatal(err)
		}
		bases = append(bases, base{root, s.Devices})
	}
	for _, name := range []string{"lvm-on-luks", "odd-sources"} {
		root := filepath.Join("testdata", "systems", name)
		for _, m := range []string{"proc/mounts", "proc/self/mounts"} {
			mb, err := os.ReadFile(filepath.Join(root, m))
			if err != nil {
				continue
			}
			sb, _ := os.ReadFile(filepath.Join(root, "proc", "swaps"))
			f.Add(mb, sb, name == "odd-sources")
		}
	}
	f.Add([]byte("/dev/loop0 / ext4 rw 0 0\n/dev/loop1 /srv/patient\\040data ext4 rw 0 0\n"),
		[]byte("/srv/patient\\040data/swap file 1 0 0\n/dev/zram0 partition 1 0 0\n"), true)
	known := []string{EncryptionNone, EncryptionUnknown, EncryptionRAM, EncryptionPlain, EncryptionLUKS1, EncryptionLUKS2}
	f.Fuzz(func(t *testing.T, mounts, swaps []byte, odd bool) {
		ms, err := ParseMounts(strings.NewReader(string(mounts)))
		if err != nil {
			return
		}
		ws, err := ParseSwaps(strings.NewReader(string(swaps)))
		if err != nil {
			return
		}
		b := bases[0]
		if odd {
			b = bases[1]
		}
		s := &System{Root: b.root, Devices: b.devs, Mounts: ms, Swaps: ws}
		r := &discResolver{root: b.root, sys: s}
		r.index()
		r.resolveAll()
		for _, f := range CheckSystem(s, DefaultPolicy()) {
			if f.ID == "" || f.Subject == "" && f.ID != IDSwapUnencrypted && f.ID != IDSwapUnresolved {
				t.Fatalf("bad finding %+v", f)
			}
		}
		_ = s.LUKSDevices()
		check := func(what, enc string, stack, unenc []string) {
			if !slices.Contains(known, enc) {
				t.Fatalf("%s: encryption %q", what, enc)
			}
			for _, n := range stack {
				if r.dev(n) == nil {
					t.Fatalf("%s: unknown device %q in stack %q", what, n, stack)
				}
			}
			if enc == EncryptionNone && len(unenc) == 0 {
				t.Fatalf("%s: encryption none names no unencrypted device (stack %q)", what, stack)
			}
		}
		for _, m := range s.Mounts {
			if !m.Pseudo {
				check("mount "+m.MountPoint, m.Encryption, m.Stack, m.Unencrypted)
			}
		}
		for _, w := range s.Swaps {
			check("swap "+w.Source, w.Encryption, w.Stack, w.Unencrypted)
		}
	})
}
