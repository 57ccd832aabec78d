package luks

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Values of [Mount.Encryption] and [Swap.Encryption]. Mappings of the other
// types cryptsetup makes appear as their lower-case type name: "loopaes",
// "tcrypt", "bitlk" and "fvault2".
const (
	// EncryptionNone: at least one path from the filesystem down to a
	// disk passes through no dm-crypt mapping.
	EncryptionNone = "none"
	// EncryptionUnknown: the source, or part of the device stack under
	// it, could not be mapped to block devices, so nothing can be said.
	EncryptionUnknown = "unknown"
	// EncryptionRAM: the data ends in RAM (zram without a writeback
	// device, brd ramdisk), never on a disk.
	EncryptionRAM = "ram"
	// EncryptionPlain: plain dm-crypt (CRYPT-PLAIN-…), no LUKS header.
	EncryptionPlain = "plain"
	// EncryptionLUKS1 and EncryptionLUKS2: a LUKS mapping
	// (CRYPT-LUKS1-…, CRYPT-LUKS2-…).
	EncryptionLUKS1 = "luks1"
	EncryptionLUKS2 = "luks2"
)

// System is what [Discover] found under a filesystem root: the block
// devices and how they stack, the mounted filesystems and active swap
// areas with the devices under each, and the crypttab and fstab
// configuration.
type System struct {
	// Root is the directory that was inspected: "/" on a live system.
	Root string `json:"root"`
	// Devices are the block devices of sys/block and their partitions,
	// each disk followed by its partitions, in sysfs name order.
	Devices []BlockDevice `json:"devices"`
	// Mounts are the entries of proc/self/mounts (or proc/mounts), in
	// order, resolved to devices.
	Mounts []Mount `json:"mounts"`
	// Swaps are the active swap areas of proc/swaps, resolved to devices.
	Swaps []Swap `json:"swaps"`
	// Crypttab and Fstab are the entries of etc/crypttab and etc/fstab;
	// either is empty when the file does not exist.
	Crypttab []CrypttabEntry `json:"crypttab"`
	Fstab    []FstabEntry    `json:"fstab"`
}

// BlockDevice is one block device or partition of sys/block.
type BlockDevice struct {
	// Name is the kernel name: "sda2", "nvme0n1p3", "dm-0".
	Name string `json:"name"`
	// Path is the device's path under /dev: /dev/mapper/NAME for a
	// device-mapper device with a name, /dev/NAME otherwise (a "!" in a
	// kernel name stands for "/", as in cciss!c0d0).
	Path string `json:"path"`
	// Major and Minor are the device numbers from the dev file.
	Major int `json:"major"`
	Minor int `json:"minor"`
	// Type is "disk", "part", "crypt" (a dm-crypt mapping), "lvm",
	// "mpath", "verity", "integrity", "dm" (another device-mapper
	// device), "loop", "raid" (md), "zram", "ram" (brd) or "rom".
	Type string `json:"type"`
	// DMName and DMUUID are dm/name and dm/uuid of a device-mapper
	// device, such as "luks-3f2e…" and
	// "CRYPT-LUKS2-3f2e…-luks-3f2e…" or "LVM-<VG UUID><LV UUID>".
	DMName string `json:"dm_name,omitempty"`
	DMUUID string `json:"dm_uuid,omitempty"`
	// Parent is the disk a partition belongs to.
	Parent string `json:"parent,omitempty"`
	// Slaves are the names of the devices this one is built on (slaves/);
	// Holders are the devices built on it (holders/).
	Slaves  []string `json:"slaves,omitempty"`
	Holders []string `json:"holders,omitempty"`
	// Crypt is the encryption the device provides when it is a
	// dm-crypt mapping: "luks1", "luks2", "plain", "loopaes", "tcrypt",
	// "bitlk" or "fvault2", from its dm/uuid; "" for any other device.
	Crypt string `json:"crypt,omitempty"`
	// Size is the size in bytes.
	Size int64 `json:"size"`
	// Backing is a loop device's backing file (loop/backing_file) or a
	// zram device's writeback device (backing_dev), as the kernel shows
	// it; "" for other devices and when there is none.
	Backing string `json:"backing,omitempty"`
}

// Layer is one encryption layer under a mount or swap area.
type Layer struct {
	// Device is the kernel name of the dm-crypt mapping ("dm-0") and
	// Path its /dev/mapper path.
	Device string `json:"device"`
	Path   string `json:"path"`
	// Crypt is the mapping's type, as in [BlockDevice.Crypt].
	Crypt string `json:"crypt"`
	// Backing is the path of the device under the mapping, which holds
	// the LUKS header (unless the header is detached).
	Backing string `json:"backing,omitempty"`
}

// Mount is one mounted filesystem, from proc/mounts, and what is under it.
// [ParseMounts] fills the first four fields; [Discover] the rest.
type Mount struct {
	Source     string `json:"source"`
	MountPoint string `json:"mount_point"`
	FSType     string `json:"fstype"`
	Options    string `json:"options"`
	// Pseudo is true for filesystems that do not live on a local block
	// device, which are listed but never judged: kernel and RAM
	// filesystems (proc, sysfs, tmpfs, devtmpfs, cgroup, …), overlay
	// (its upper directory is on another, judged, mount), FUSE (except
	// fuseblk) and network filesystems (nfs, cifs, 9p, virtiofs, ceph, …)
	// whose data rests on another host.
	Pseudo bool `json:"pseudo,omitempty"`
	// Device is the kernel name of the block device Source resolves to,
	// or "" when it resolves to none.
	Device string `json:"device,omitempty"`
	// Stack lists the device names from the mounted device down to the
	// physical ones, depth first, each once. A partition is followed by
	// its disk; a loop device by the stack of the filesystem holding its
	// backing file; a zram device by its writeback device.
	Stack []string `json:"stack,omitempty"`
	// Encryption sums up the stack: one of the Encryption* values, or
	// another dm-crypt type; "" for a pseudo filesystem. When branches
	// differ (an LVM volume spread over several physical volumes) the
	// weakest wins, so one unencrypted branch makes it "none".
	Encryption string `json:"encryption,omitempty"`
	// CryptDevice is the /dev/mapper path of the dm-crypt mapping that
	// gives Encryption (the first in stack order when several do).
	CryptDevice string `json:"crypt_device,omitempty"`
	// LUKSBacking is the path of the device under that mapping when it is
	// LUKS: the device holding the LUKS header, such as /dev/sda2.
	LUKSBacking string `json:"luks_backing,omitempty"`
	// Layers are all the dm-crypt mappings in the stack, top down.
	Layers []Layer `json:"layers,omitempty"`
	// Unencrypted names the devices the data reaches with no dm-crypt
	// mapping above them (a partition rather than its disk); empty unless
	// Encryption is "none".
	Unencrypted []string `json:"unencrypted,omitempty"`
}

// Swap is one active swap area, from proc/swaps, and what is under it.
// [ParseSwaps] fills the first five fields; [Discover] the rest.
type Swap struct {
	// Source is the Filename column: a device (/dev/dm-1) or a file.
	Source string `json:"source"`
	// Type is "partition" (any block device) or "file".
	Type string `json:"type"`
	// Size and Used are in KiB; Priority as the kernel shows it.
	Size     int64 `json:"size_kib"`
	Used     int64 `json:"used_kib"`
	Priority int   `json:"priority"`
	// Device is the kernel name of the swap device, "" for a swap file.
	Device string `json:"device,omitempty"`
	// MountPoint is the mount holding a swap file.
	MountPoint string `json:"mount_point,omitempty"`
	// Stack, Encryption, CryptDevice, LUKSBacking, Layers and
	// Unencrypted are as in [Mount]; a swap file takes them from the
	// mount holding it. zram swap is "ram" unless it has a writeback
	// device.
	Stack       []string `json:"stack,omitempty"`
	Encryption  string   `json:"encryption"`
	CryptDevice string   `json:"crypt_device,omitempty"`
	LUKSBacking string   `json:"luks_backing,omitempty"`
	Layers      []Layer  `json:"layers,omitempty"`
	Unencrypted []string `json:"unencrypted,omitempty"`
}

// CrypttabEntry is one line of /etc/crypttab (crypttab(5)).
type CrypttabEntry struct {
	// Name is the mapping name: the device appears as /dev/mapper/Name.
	Name string `json:"name"`
	// Device is the encrypted device as written: a path, or UUID=,
	// PARTUUID=, LABEL=, PARTLABEL= or ID=.
	Device string `json:"device"`
	// KeyFile is the third field as written ("none", "-", a path, or
	// /dev/urandom for a random key); "" when absent. It names a file and
	// never holds key material.
	KeyFile string `json:"key_file,omitempty"`
	// Options are the comma-separated options of the fourth field.
	Options []string `json:"options,omitempty"`
	// Line is the 1-based line number in the file.
	Line int `json:"line"`
	// Resolved is set by [Discover]: the /dev path of the block device
	// Device names, Device itself for a file that exists (an image), or
	// "" when it names nothing that exists under the root.
	Resolved string `json:"resolved,omitempty"`
}

// FstabEntry is one line of /etc/fstab (fstab(5)).
type FstabEntry struct {
	// Spec (fs_spec) is the device or remote filesystem, File (fs_file)
	// the mount point ("none" for swap), VFSType (fs_vfstype) the type.
	Spec    string `json:"spec"`
	File    string `json:"file"`
	VFSType string `json:"vfstype,omitempty"`
	// Options are the comma-separated fs_mntops.
	Options []string `json:"options,omitempty"`
	// Freq (fs_freq) and PassNo (fs_passno); 0 when absent.
	Freq   int `json:"freq"`
	PassNo int `json:"passno"`
	// Line is the 1-based line number in the file.
	Line int `json:"line"`
}

// Discover inspects the system under root: "/" on a live system, a
// fixture directory in tests. It reads, relative to root:
//
//   - sys/block: each device's dev, size, holders/ and slaves/ (only the
//     entry names are used, so symlinks and plain files both work),
//     partitions (subdirectories with a partition file), dm/name and
//     dm/uuid of device-mapper devices, loop/backing_file of loop devices
//     and backing_dev of zram devices;
//   - proc/self/mounts, or proc/mounts when it is missing, and
//     proc/self/mountinfo (only to resolve sources such as /dev/root by
//     device number);
//   - proc/swaps, etc/crypttab and etc/fstab (each may be missing);
//   - dev/disk/by-* symlinks, to resolve UUID=, PARTUUID=, LABEL=,
//     PARTLABEL= and ID= and /dev/disk paths.
//
// Every mount and swap area is mapped to the devices under it and to the
// encryption of that stack (see [Mount]). Sources are resolved as
// /dev/mapper/NAME (dm/name), /dev/VG/LV (an LVM device named VG-LV with
// "-" doubled inside names), /dev/NAME, /dev/block/MAJ:MIN, the by-*
// symlinks under root, and as a last resort the device number in
// mountinfo. A source that resolves to nothing gives Encryption
// "unknown".
//
// Discover only reads (a few hundred small files on a large host) and
// never opens a device. It returns an error, naming the file, when
// sys/block or the mount table cannot be read or a file cannot be parsed;
// the error wraps [fs.ErrNotExist] when sys/block or the mount table is
// missing. The mount table is the one of the calling process's mount
// namespace.
func Discover(ctx context.Context, root string) (*System, error) {
	if root == "" {
		root = "/"
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s := &System{Root: root}
	r := &discResolver{root: root, sys: s}
	if err := r.readDevices(ctx); err != nil {
		return nil, err
	}
	r.index()

	var err error
	mountsFile := r.in("/proc/self/mounts")
	s.Mounts, err = discParseFile(mountsFile, ParseMounts)
	if errors.Is(err, fs.ErrNotExist) {
		mountsFile = r.in("/proc/mounts")
		s.Mounts, err = discParseFile(mountsFile, ParseMounts)
	}
	if err != nil {
		return nil, err
	}
	if s.Swaps, err = discParseFile(r.in("/proc/swaps"), ParseSwaps); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if s.Crypttab, err = discParseFile(r.in("/etc/crypttab"), ParseCrypttab); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if s.Fstab, err = discParseFile(r.in("/etc/fstab"), ParseFstab); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	r.resolveAll()
	return s, nil
}

// resolveAll maps every mount, swap area and crypttab entry of r.sys to
// devices. It touches nothing but the files under r.root.
func (r *discResolver) resolveAll() {
	s := r.sys
	// Resolve every mount's device first: a loop device's or a swap
	// file's stack goes through the mount holding its file.
	for i := range s.Mounts {
		m := &s.Mounts[i]
		m.Pseudo = discPseudoFS(m.FSType)
		if m.Pseudo {
			continue
		}
		m.Device = r.resolve(m.Source)
		if m.Device == "" {
			m.Device = r.resolveByMountInfo(m)
		}
	}
	for i := range s.Mounts {
		m := &s.Mounts[i]
		if m.Pseudo {
			continue
		}
		if m.Device == "" {
			m.Encryption = EncryptionUnknown
			continue
		}
		st := r.stackOf(m.Device)
		m.Stack, m.Encryption, m.CryptDevice, m.LUKSBacking, m.Layers, m.Unencrypted = st.fields()
	}
	for i := range s.Swaps {
		w := &s.Swaps[i]
		if w.Type != "file" {
			w.Device = r.resolve(w.Source)
		}
		var st *discStack
		switch {
		case w.Device != "":
			st = r.stackOf(w.Device)
		case w.Type == "file" || !strings.HasPrefix(w.Source, "/dev/"):
			st = r.stackOfFile(w.Source)
			if m := r.mountOf(w.Source); m != nil {
				w.MountPoint = m.MountPoint
			}
		default:
			w.Encryption = EncryptionUnknown
			continue
		}
		w.Stack, w.Encryption, w.CryptDevice, w.LUKSBacking, w.Layers, w.Unencrypted = st.fields()
	}
	for i := range s.Crypttab {
		e := &s.Crypttab[i]
		e.Resolved = r.resolveExisting(e.Device)
	}
}

// discParseFile opens file and parses it with parse, naming the file in
// any error. A missing file gives an error wrapping fs.ErrNotExist.
func discParseFile[T any](file string, parse func(io.Reader) ([]T, error)) ([]T, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("reading %q: %w", file, err)
	}
	defer f.Close()
	v, err := parse(f)
	if err != nil {
		return nil, fmt.Errorf("parsing %q: %w", file, err)
	}
	return v, nil
}

// discResolver maps paths and numbers to devices and walks device stacks.
type discResolver struct {
	root      string
	sys       *System
	byName    map[string]int    // kernel name → index in sys.Devices
	byPath    map[string]string // /dev path → kernel name
	byNum     map[string]string // "MAJ:MIN" → kernel name
	mountInfo map[string][]string
	infoRead  bool
}

// in returns the host path of p, an absolute path inside the root.
func (r *discResolver) in(p string) string {
	return filepath.Join(r.root, filepath.FromSlash(p))
}

// readDevices fills sys.Devices from sys/block.
func (r *discResolver) readDevices(ctx context.Context) error {
	dir := r.in("/sys/block")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("reading %q: %w", dir, err)
	}
	for _, e := range ents {
		if err := ctx.Err(); err != nil {
			return err
		}
		name := e.Name()
		if strings.HasPrefix(name, ".") {
			continue
		}
		devDir := filepath.Join(dir, name)
		d, err := discReadDevice(devDir, name, "")
		if err != nil {
			return err
		}
		r.sys.Devices = append(r.sys.Devices, d)
		// Partitions are subdirectories named after the disk (sda1,
		// nvme0n1p1, mmcblk0p1) that hold a partition file.
		sub, err := os.ReadDir(devDir)
		if err != nil {
			return fmt.Errorf("reading %q: %w", devDir, err)
		}
		for _, p := range sub {
			pn := p.Name()
			if !p.IsDir() || len(pn) <= len(name) || !strings.HasPrefix(pn, name) {
				continue
			}
			partDir := filepath.Join(devDir, pn)
			if _, err := os.Stat(filepath.Join(partDir, "partition")); err != nil {
				continue
			}
			pd, err := discReadDevice(partDir, pn, name)
			if err != nil {
				return err
			}
			r.sys.Devices = append(r.sys.Devices, pd)
		}
	}
	return nil
}

// discReadDevice reads one sysfs device directory. A missing attribute
// file is left at its zero value; one that cannot be parsed is an error.
func discReadDevice(dir, name, parent string) (BlockDevice, error) {
	d := BlockDevice{Name: name, Parent: parent}
	read := func(rel string) string {
		b, err := os.ReadFile(filepath.Join(dir, rel))
		if err != nil {
			return ""
		}
		return strings.TrimRight(string(b), "\n")
	}
	if v := read("dev"); v != "" {
		maj, min, ok := strings.Cut(v, ":")
		var err1, err2 error
		d.Major, err1 = strconv.Atoi(maj)
		d.Minor, err2 = strconv.Atoi(min)
		if !ok || err1 != nil || err2 != nil || d.Major < 0 || d.Minor < 0 {
			return d, fmt.Errorf("parsing %q: want MAJOR:MINOR, got %q", filepath.Join(dir, "dev"), v)
		}
	}
	if v := read("size"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 || n > 1<<53 {
			return d, fmt.Errorf("parsing %q: want a count of 512-byte sectors, got %q", filepath.Join(dir, "size"), v)
		}
		d.Size = n * 512
	}
	d.Holders = discNames(filepath.Join(dir, "holders"))
	d.Slaves = discNames(filepath.Join(dir, "slaves"))
	d.Path = "/dev/" + strings.ReplaceAll(name, "!", "/")
	switch {
	case parent != "":
		d.Type = "part"
	case strings.HasPrefix(name, "dm-"):
		d.DMName = read("dm/name")
		d.DMUUID = read("dm/uuid")
		if d.DMName != "" && !strings.Contains(d.DMName, "/") {
			d.Path = "/dev/mapper/" + d.DMName
		}
		d.Type, d.Crypt = discDMType(d.DMUUID)
	case strings.HasPrefix(name, "loop"):
		d.Type = "loop"
		d.Backing = read("loop/backing_file")
	case strings.HasPrefix(name, "zram"):
		d.Type = "zram"
		if b := read("backing_dev"); b != "none" {
			d.Backing = b
		}
	case strings.HasPrefix(name, "md"):
		d.Type = "raid"
	case strings.HasPrefix(name, "ram"):
		d.Type = "ram"
	case strings.HasPrefix(name, "sr"):
		d.Type = "rom"
	default:
		d.Type = "disk"
	}
	return d, nil
}

// discNames lists the entry names of a holders/ or slaves/ directory,
// skipping dot files; a missing directory has none.
func discNames(dir string) []string {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var names []string
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), ".") {
			names = append(names, e.Name())
		}
	}
	return names
}

// discCryptTypes maps the type in a CRYPT-TYPE-… dm uuid (cryptsetup's
// dm_prepare_uuid) to the encryption it provides. VERITY, INTEGRITY and
// SUBDEV (the integrity device under authenticated LUKS2) do not encrypt.
var discCryptTypes = map[string]string{
	"LUKS1":   EncryptionLUKS1,
	"LUKS2":   EncryptionLUKS2,
	"PLAIN":   EncryptionPlain,
	"LOOPAES": "loopaes",
	"TCRYPT":  "tcrypt",
	"BITLK":   "bitlk",
	"FVAULT2": "fvault2",
}

// discDMType classifies a device-mapper device by its dm/uuid.
func discDMType(uuid string) (typ, crypt string) {
	switch {
	case strings.HasPrefix(uuid, "CRYPT-"):
		t, _, _ := strings.Cut(uuid[len("CRYPT-"):], "-")
		if c, ok := discCryptTypes[t]; ok {
			return "crypt", c
		}
		switch t {
		case "VERITY":
			return "verity", ""
		case "INTEGRITY", "SUBDEV":
			return "integrity", ""
		}
		return "dm", ""
	case strings.HasPrefix(uuid, "LVM-"):
		return "lvm", ""
	case strings.HasPrefix(uuid, "mpath-"):
		return "mpath", ""
	case strings.HasPrefix(uuid, "part") && strings.Contains(uuid, "-"):
		return "part", "" // kpartx partition of a dm device
	}
	return "dm", ""
}

// discLVMName splits a device-mapper name made by LVM, "VG-LV" with each
// "-" inside a name doubled, into the volume group and logical volume.
func discLVMName(dm string) (vg, lv string, ok bool) {
	var b strings.Builder
	for i := 0; i < len(dm); i++ {
		if dm[i] != '-' {
			b.WriteByte(dm[i])
			continue
		}
		if i+1 < len(dm) && dm[i+1] == '-' {
			b.WriteByte('-')
			i++
			continue
		}
		vg, lv = b.String(), strings.ReplaceAll(dm[i+1:], "--", "-")
		if vg == "" || lv == "" {
			return "", "", false
		}
		return vg, lv, true
	}
	return "", "", false
}

// index builds the lookup maps once the devices are known.
func (r *discResolver) index() {
	devs := r.sys.Devices
	r.byName = make(map[string]int, len(devs))
	r.byPath = make(map[string]string, 3*len(devs))
	r.byNum = make(map[string]string, len(devs))
	for i, d := range devs {
		r.byName[d.Name] = i
		r.byPath["/dev/"+strings.ReplaceAll(d.Name, "!", "/")] = d.Name
		r.byPath[d.Path] = d.Name
		num := strconv.Itoa(d.Major) + ":" + strconv.Itoa(d.Minor)
		if d.Major != 0 || d.Minor != 0 {
			r.byNum[num] = d.Name
			r.byPath["/dev/block/"+num] = d.Name
		}
		if d.Type == "lvm" {
			if vg, lv, ok := discLVMName(d.DMName); ok {
				r.byPath["/dev/"+vg+"/"+lv] = d.Name
			}
		}
	}
}

// dev returns the device named name, or nil.
func (r *discResolver) dev(name string) *BlockDevice {
	if i, ok := r.byName[name]; ok {
		return &r.sys.Devices[i]
	}
	return nil
}

// discTagDirs maps fstab/crypttab tags to their udev symlink directories.
var discTagDirs = map[string]string{
	"UUID":      "/dev/disk/by-uuid/",
	"PARTUUID":  "/dev/disk/by-partuuid/",
	"LABEL":     "/dev/disk/by-label/",
	"PARTLABEL": "/dev/disk/by-partlabel/",
	"ID":        "/dev/disk/by-id/",
}

// discTagPath turns UUID=x and the like into the udev symlink path that
// names the device, encoding labels as udev does.
func discTagPath(spec string) (string, bool) {
	tag, val, ok := strings.Cut(spec, "=")
	dir, known := discTagDirs[tag]
	if !ok || !known {
		return "", false
	}
	if len(val) >= 2 && val[0] == '"' && val[len(val)-1] == '"' {
		val = val[1 : len(val)-1]
	}
	if val == "" {
		return "", false
	}
	switch tag {
	case "LABEL", "PARTLABEL":
		val = discUdevEncode(val)
	case "PARTUUID":
		val = strings.ToLower(val)
	}
	if strings.Contains(val, "/") {
		return "", false
	}
	return dir + val, true
}

// discUdevEncode encodes a label as udev names its by-label symlink:
// bytes outside [0-9A-Za-z#+-.:=@_] and outside valid multi-byte UTF-8
// become \xNN.
func discUdevEncode(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			r, n := utf8.DecodeRuneInString(s[i:])
			if r != utf8.RuneError || n > 1 {
				b.WriteString(s[i : i+n])
				i += n
				continue
			}
		}
		switch {
		case c >= '0' && c <= '9', c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z',
			strings.IndexByte("#+-.:=@_", c) >= 0:
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, `\x%02x`, c)
		}
		i++
	}
	return b.String()
}

// lookup follows p, an absolute path inside the root, through symlinks
// (at most 16 hops, each kept inside the root) until it names a known
// device. It returns the device's kernel name, or "", and whether the
// final path exists at all.
func (r *discResolver) lookup(p string) (name string, exists bool) {
	if !path.IsAbs(p) {
		return "", false
	}
	p = path.Clean(p)
	for range 16 {
		if n, ok := r.byPath[p]; ok {
			return n, true
		}
		host := r.in(p)
		fi, err := os.Lstat(host)
		if err != nil {
			return "", false
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			return "", true
		}
		t, err := os.Readlink(host)
		if err != nil {
			return "", false
		}
		if !path.IsAbs(t) {
			t = path.Join(path.Dir(p), t)
		}
		p = path.Clean(t)
	}
	return "", false
}

// resolve maps a mount, swap or crypttab source to a kernel device name,
// or "".
func (r *discResolver) resolve(spec string) string {
	if p, ok := discTagPath(spec); ok {
		n, _ := r.lookup(p)
		if n == "" && strings.HasPrefix(spec, "UUID=") && strings.ToLower(p) != p {
			// UUIDs of most filesystems are lower case in by-uuid;
			// accept an upper-case spelling.
			n, _ = r.lookup(strings.ToLower(p))
		}
		return n
	}
	n, _ := r.lookup(spec)
	return n
}

// resolveExisting returns the /dev path of the device spec names, spec
// itself when it is a path that exists but is no known device (an image
// file), or "" when it names nothing under the root.
func (r *discResolver) resolveExisting(spec string) string {
	if n := r.resolve(spec); n != "" {
		return r.dev(n).Path
	}
	if _, ok := discTagPath(spec); ok {
		return ""
	}
	if _, exists := r.lookup(spec); exists {
		return spec
	}
	return ""
}

// resolveByMountInfo maps a mount whose source did not resolve (such as
// /dev/root) to a device by the number in proc/self/mountinfo.
func (r *discResolver) resolveByMountInfo(m *Mount) string {
	if !r.infoRead {
		r.infoRead = true
		r.mountInfo = discReadMountInfo(r.in("/proc/self/mountinfo"))
	}
	key := m.MountPoint + "\x00" + m.Source + "\x00" + m.FSType
	nums := r.mountInfo[key]
	if len(nums) == 0 {
		return ""
	}
	r.mountInfo[key] = nums[1:]
	return r.byNum[nums[0]]
}

// discReadMountInfo reads proc/self/mountinfo into mount point, source
// and type → device numbers, in file order. It is best effort: a missing
// file or a bad line gives nothing for that mount.
func discReadMountInfo(file string) map[string][]string {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil
	}
	out := make(map[string][]string)
	for line := range strings.SplitSeq(string(b), "\n") {
		f := strings.Fields(line)
		// id parent MAJ:MIN root mountpoint options [optional…] - type source super
		sep := -1
		for i := 6; i < len(f); i++ {
			if f[i] == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+2 >= len(f) {
			continue
		}
		key := discUnescape(f[4]) + "\x00" + discUnescape(f[sep+2]) + "\x00" + discUnescape(f[sep+1])
		out[key] = append(out[key], f[2])
	}
	return out
}

// mountOf returns the mount holding the file p: the one with the longest
// mount point that is p or a parent of it, the last mounted when several
// share that mount point. It returns nil when none does.
func (r *discResolver) mountOf(p string) *Mount {
	var best *Mount
	for i := range r.sys.Mounts {
		m := &r.sys.Mounts[i]
		mp := m.MountPoint
		if !(mp == "/" && strings.HasPrefix(p, "/") || p == mp || strings.HasPrefix(p, mp+"/")) {
			continue
		}
		if best == nil || len(mp) >= len(best.MountPoint) {
			best = m
		}
	}
	return best
}

// Encryption ranks: along one path down the stack the strongest layer
// counts; across branches the weakest.
const (
	discRankNone = iota
	discRankUnknown
	discRankPlain
	discRankOther
	discRankLUKS1
	discRankLUKS2
	discRankRAM
)

func discRank(crypt string) int {
	switch crypt {
	case EncryptionLUKS2:
		return discRankLUKS2
	case EncryptionLUKS1:
		return discRankLUKS1
	case EncryptionPlain:
		return discRankPlain
	}
	return discRankOther
}

// discStack is the result of walking the devices under a mount or swap.
type discStack struct {
	names       []string
	seen        map[string]bool
	onPath      map[string]bool
	memo        map[discMemoKey]discResult
	layers      []Layer
	unencrypted []string
	rank        int
	top         *Layer
}

type discMemoKey struct {
	name       string
	underCrypt bool
}

type discResult struct {
	rank int
	top  *Layer
}

// fields returns the stack as the fields of Mount and Swap.
func (st *discStack) fields() (stack []string, enc, cryptDev, luksBacking string, layers []Layer, unenc []string) {
	switch st.rank {
	case discRankNone:
		enc = EncryptionNone
		unenc = st.unencrypted
	case discRankUnknown:
		enc = EncryptionUnknown
	case discRankRAM:
		enc = EncryptionRAM
	default:
		enc = st.top.Crypt
	}
	if st.top != nil && st.rank != discRankRAM {
		cryptDev = st.top.Path
		if st.rank == discRankLUKS1 || st.rank == discRankLUKS2 {
			luksBacking = st.top.Backing
		}
	}
	return st.names, enc, cryptDev, luksBacking, st.layers, unenc
}

// stackOf walks the devices under the device name.
func (r *discResolver) stackOf(name string) *discStack {
	st := newDiscStack()
	st.rank, st.top = r.walk(st, name, false, 0)
	return st
}

// stackOfFile walks the devices under the filesystem holding the file p.
func (r *discResolver) stackOfFile(p string) *discStack {
	st := newDiscStack()
	st.rank, st.top = r.walkFile(st, p, false, 0)
	return st
}

func newDiscStack() *discStack {
	return &discStack{seen: map[string]bool{}, onPath: map[string]bool{}, memo: map[discMemoKey]discResult{}}
}

// walkFile continues a walk through the mount holding file p.
func (r *discResolver) walkFile(st *discStack, p string, underCrypt bool, depth int) (int, *Layer) {
	m := r.mountOf(p)
	switch {
	case m == nil:
		return discRankUnknown, nil
	case m.Pseudo && (m.FSType == "tmpfs" || m.FSType == "ramfs"):
		return discRankRAM, nil
	case m.Pseudo || m.Device == "":
		return discRankUnknown, nil
	}
	return r.walk(st, m.Device, underCrypt, depth+1)
}

// note records name in the stack, once.
func (st *discStack) note(name string) {
	if !st.seen[name] {
		st.seen[name] = true
		st.names = append(st.names, name)
	}
}

// isLeaf reports whether d has nothing under it: no slaves, no parent
// disk, no backing file or writeback device.
func discIsLeaf(d *BlockDevice) bool {
	switch {
	case len(d.Slaves) > 0 || d.Parent != "":
		return false
	case d.Type == "loop" || d.Type == "zram" || d.Type == "ram":
		return false
	}
	return true
}

// walk visits name and everything under it, depth first, recording the
// stack, and returns the encryption rank and the layer that gives it.
// underCrypt says a dm-crypt mapping is above. Results are memoized per
// device, so a shared lower device is walked once; a cycle (impossible
// in sysfs, possible through loop backing files) counts as unknown.
func (r *discResolver) walk(st *discStack, name string, underCrypt bool, depth int) (int, *Layer) {
	d := r.dev(name)
	if d == nil || st.onPath[name] || depth > 64 {
		return discRankUnknown, nil
	}
	key := discMemoKey{name, underCrypt}
	if res, ok := st.memo[key]; ok {
		return res.rank, res.top
	}
	st.note(name)
	st.onPath[name] = true
	defer delete(st.onPath, name)

	var self *Layer
	selfRank := discRankNone
	if d.Crypt != "" {
		l := Layer{Device: d.Name, Path: d.Path, Crypt: d.Crypt}
		if len(d.Slaves) > 0 {
			if b := r.dev(d.Slaves[0]); b != nil {
				l.Backing = b.Path
			}
		}
		if !discHasLayer(st.layers, d.Name) {
			st.layers = append(st.layers, l)
		}
		self, selfRank = &l, discRank(d.Crypt)
		underCrypt = true
	}

	rank, top := discRankNone, (*Layer)(nil)
	children := 0
	child := func(cr int, ct *Layer) {
		if children == 0 || cr < rank {
			rank, top = cr, ct
		}
		children++
	}
	for _, s := range d.Slaves {
		child(r.walk(st, s, underCrypt, depth+1))
	}
	if d.Parent != "" {
		// A partition of a plain disk is itself the leaf (the disk is
		// listed in the stack); a partition of anything else (md, loop,
		// a dm device) goes on down.
		if p := r.dev(d.Parent); p != nil && discIsLeaf(p) {
			st.note(p.Name)
		} else {
			child(r.walk(st, d.Parent, underCrypt, depth+1))
		}
	}
	switch d.Type {
	case "loop":
		if d.Backing != "" {
			child(r.walkFile(st, strings.TrimSuffix(d.Backing, " (deleted)"), underCrypt, depth))
		}
	case "zram", "ram":
		if d.Backing != "" {
			if b := r.resolve(d.Backing); b != "" {
				child(r.walk(st, b, underCrypt, depth+1))
			} else {
				child(discRankUnknown, nil)
			}
		} else {
			child(discRankRAM, nil)
		}
	}
	if children == 0 && !underCrypt && !slices.Contains(st.unencrypted, name) {
		st.unencrypted = append(st.unencrypted, name)
	}
	res := discResult{rank, top}
	if self != nil && selfRank >= rank {
		res = discResult{selfRank, self}
	}
	st.memo[key] = res
	return res.rank, res.top
}

func discHasLayer(ls []Layer, dev string) bool {
	for _, l := range ls {
		if l.Device == dev {
			return true
		}
	}
	return false
}

// discPseudoFSTypes are filesystem types not stored on a local block
// device (see [Mount.Pseudo]).
var discPseudoFSTypes = map[string]bool{
	// Kernel and RAM filesystems.
	"autofs": true, "binfmt_misc": true, "bpf": true, "cgroup": true, "cgroup2": true,
	"configfs": true, "debugfs": true, "devpts": true, "devtmpfs": true, "efivarfs": true,
	"fusectl": true, "hugetlbfs": true, "mqueue": true, "nsfs": true, "proc": true,
	"pstore": true, "ramfs": true, "rootfs": true, "rpc_pipefs": true, "securityfs": true,
	"selinuxfs": true, "sysfs": true, "tmpfs": true, "tracefs": true, "nfsd": true,
	"binder": true, "ipathfs": true, "resctrl": true,
	// Union filesystems: their writable layer is a directory of another mount.
	"overlay": true, "aufs": true, "shiftfs": true,
	// FUSE (but not fuseblk, which has a block device) and network filesystems.
	"fuse": true, "sshfs": true, "nfs": true, "nfs4": true, "cifs": true, "smb3": true,
	"smbfs": true, "9p": true, "virtiofs": true, "ceph": true, "glusterfs": true,
	"lustre": true, "afs": true, "vboxsf": true, "drvfs": true, "davfs": true,
}

// discPseudoFS reports whether a filesystem type is not disk-backed.
func discPseudoFS(t string) bool {
	return discPseudoFSTypes[t] || strings.HasPrefix(t, "fuse.") || strings.HasPrefix(t, "cgroup")
}

// discUnescape decodes the octal escapes (\040 for a space, \011 tab,
// \012 newline, \134 backslash) the kernel and fstab use in fields. A
// backslash not followed by three octal digits below \400 is kept.
func discUnescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && discOctal(s[i+1]) && discOctal(s[i+2]) && discOctal(s[i+3]) && s[i+1] <= '3' {
			b = append(b, (s[i+1]-'0')<<6|(s[i+2]-'0')<<3|(s[i+3]-'0'))
			i += 3
			continue
		}
		b = append(b, s[i])
	}
	return string(b)
}

func discOctal(c byte) bool { return c >= '0' && c <= '7' }

// discLines calls fn with each line of r (1-based number, without the
// line ending and a trailing carriage return), split into fields on
// spaces and tabs. Blank lines are skipped, and so are comment lines
// (first non-blank character '#') when comments is true. Lines longer
// than 1 MiB are an error.
func discLines(r io.Reader, comments bool, fn func(n int, fields []string) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSuffix(sc.Text(), "\r")
		fields := strings.FieldsFunc(line, func(c rune) bool { return c == ' ' || c == '\t' })
		if len(fields) == 0 || comments && strings.HasPrefix(fields[0], "#") {
			continue
		}
		if err := fn(n, fields); err != nil {
			return fmt.Errorf("line %d: %w", n, err)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("line %d: %w", n+1, err)
	}
	return nil
}

// discInts parses the optional trailing integer fields (dump, pass).
func discInts(fields []string, names ...string) ([]int, error) {
	out := make([]int, len(names))
	for i, f := range fields {
		v, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("%s field %q is not a number", names[i], f)
		}
		out[i] = v
	}
	return out, nil
}

// discOptions splits a comma-separated option field; "" gives nil.
func discOptions(f string) []string {
	if f == "" {
		return nil
	}
	return strings.Split(f, ",")
}

// ParseMounts parses a mount table in the format of /proc/mounts (and
// /etc/mtab): "source mountpoint fstype options freq passno" per line,
// octal escapes decoded. Lines of four or five fields are accepted; freq
// and passno must be numbers when present and are dropped. Blank lines
// are skipped; '#' does not start a comment (the kernel does not write
// any). It fills Source, MountPoint, FSType and Options. An error names
// the line, and no mounts are returned with it.
func ParseMounts(r io.Reader) ([]Mount, error) {
	var out []Mount
	err := discLines(r, false, func(_ int, f []string) error {
		if len(f) < 4 || len(f) > 6 {
			return fmt.Errorf("want 6 fields (source, mount point, type, options, freq, passno), got %d", len(f))
		}
		if _, err := discInts(f[4:], "freq", "passno"); err != nil {
			return err
		}
		out = append(out, Mount{
			Source:     discUnescape(f[0]),
			MountPoint: discUnescape(f[1]),
			FSType:     discUnescape(f[2]),
			Options:    discUnescape(f[3]),
		})
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ParseSwaps parses /proc/swaps: an optional header line starting with
// "Filename", then "Filename Type Size Used Priority" per line, the
// filename octal-escaped. It fills Source, Type, Size, Used and Priority.
// An error names the line, and no swaps are returned with it.
func ParseSwaps(r io.Reader) ([]Swap, error) {
	var out []Swap
	first := true
	err := discLines(r, false, func(_ int, f []string) error {
		if first {
			first = false
			if f[0] == "Filename" {
				return nil
			}
		}
		if len(f) != 5 {
			return fmt.Errorf("want 5 fields (filename, type, size, used, priority), got %d", len(f))
		}
		size, err1 := strconv.ParseInt(f[2], 10, 64)
		used, err2 := strconv.ParseInt(f[3], 10, 64)
		prio, err3 := strconv.Atoi(f[4])
		switch {
		case err1 != nil || size < 0:
			return fmt.Errorf("size %q is not a number of KiB", f[2])
		case err2 != nil || used < 0:
			return fmt.Errorf("used %q is not a number of KiB", f[3])
		case err3 != nil:
			return fmt.Errorf("priority %q is not a number", f[4])
		}
		out = append(out, Swap{Source: discUnescape(f[0]), Type: discUnescape(f[1]), Size: size, Used: used, Priority: prio})
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ParseCrypttab parses /etc/crypttab: "name device [keyfile [options]]"
// per line, fields separated by spaces or tabs, octal escapes such as
// \040 decoded, '#' comments and blank lines skipped. An error names the
// line, and no entries are returned with it.
func ParseCrypttab(r io.Reader) ([]CrypttabEntry, error) {
	var out []CrypttabEntry
	err := discLines(r, true, func(n int, f []string) error {
		if len(f) < 2 || len(f) > 4 {
			return fmt.Errorf("want 2 to 4 fields (name, device, key file, options), got %d", len(f))
		}
		e := CrypttabEntry{Name: discUnescape(f[0]), Device: discUnescape(f[1]), Line: n}
		if len(f) > 2 {
			e.KeyFile = discUnescape(f[2])
		}
		if len(f) > 3 {
			e.Options = discOptions(discUnescape(f[3]))
		}
		out = append(out, e)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ParseFstab parses /etc/fstab: "spec file [vfstype [options [freq
// [passno]]]]" per line, fields separated by spaces or tabs, octal
// escapes such as \040 decoded, '#' comments and blank lines skipped.
// An error names the line, and no entries are returned with it.
func ParseFstab(r io.Reader) ([]FstabEntry, error) {
	var out []FstabEntry
	err := discLines(r, true, func(n int, f []string) error {
		if len(f) < 2 || len(f) > 6 {
			return fmt.Errorf("want 2 to 6 fields (spec, file, vfstype, options, freq, passno), got %d", len(f))
		}
		e := FstabEntry{Spec: discUnescape(f[0]), File: discUnescape(f[1]), Line: n}
		if len(f) > 2 {
			e.VFSType = discUnescape(f[2])
		}
		if len(f) > 3 {
			e.Options = discOptions(discUnescape(f[3]))
		}
		if len(f) > 4 {
			v, err := discInts(f[4:], "freq", "passno")
			if err != nil {
				return err
			}
			e.Freq = v[0]
			if len(v) > 1 {
				e.PassNo = v[1]
			}
		}
		out = append(out, e)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
