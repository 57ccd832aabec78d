package luks

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/nhscrypt/nhscrypt/report"
)

// Finding IDs of [CheckSystem], documented in docs/policy.md.
const (
	// IDMountUnencrypted (fail): a data mount with no dm-crypt layer on
	// some path down to a disk.
	IDMountUnencrypted = "LUKS-MOUNT-UNENCRYPTED"
	// IDMountPlainDMCrypt (warn): a data mount on plain dm-crypt, with no
	// LUKS header.
	IDMountPlainDMCrypt = "LUKS-MOUNT-PLAIN-DMCRYPT"
	// IDMountUnresolved (warn): a data mount whose source or device stack
	// cannot be followed to disks, so its encryption cannot be judged.
	IDMountUnresolved = "LUKS-MOUNT-UNRESOLVED"
	// IDSwapUnencrypted (fail): a swap area with no dm-crypt layer (zram
	// swap without a writeback device is RAM and exempt).
	IDSwapUnencrypted = "LUKS-SWAP-UNENCRYPTED"
	// IDSwapUnresolved (warn): a swap area whose device cannot be
	// followed to disks.
	IDSwapUnresolved = "LUKS-SWAP-UNRESOLVED"
	// IDCrypttabMissingDevice (warn): a crypttab entry whose device does
	// not exist.
	IDCrypttabMissingDevice = "LUKS-CRYPTTAB-MISSING-DEVICE"
)

const (
	remedyMountUnencrypted = "put the filesystem on LUKS2: back it up, `cryptsetup luksFormat --type luks2` the device " +
		"(or a new one), open it, restore the data onto the mapping and add it to /etc/crypttab and /etc/fstab " +
		"(`cryptsetup reencrypt --encrypt --type luks2 --reduce-device-size 32M DEVICE` encrypts in place once the " +
		"filesystem is shrunk by 32 MiB); if the mount holds no personal data, add it to ignore_mounts in the policy"
	remedyMountPlain = "move the data to a LUKS2 volume (`cryptsetup luksFormat --type luks2` a device, copy the data, " +
		"switch the crypttab and fstab entries): plain mode has no header, so its key cannot be changed, backed up " +
		"or checked, and a wrong passphrase silently opens garbage"
	remedyMountUnresolved = "check the mount with `findmnt` and `lsblk`; if it is encrypted by other means (such as ZFS " +
		"native encryption) or holds no personal data, add the mount point to ignore_mounts in the policy"
	remedySwapUnencrypted = "encrypt swap: for a swap partition add a random-key plain dm-crypt mapping to /etc/crypttab " +
		"(`cryptswap PARTUUID=… /dev/urandom swap,cipher=aes-xts-plain64,size=512`; not UUID=, which mkswap rewrites) " +
		"and point the fstab swap line at /dev/mapper/cryptswap, or move swap into LVM on LUKS (needed for " +
		"hibernation); move a swap file onto an encrypted filesystem. Swap holds copies of process memory, " +
		"including patient records"
	remedySwapUnresolved = "check the swap area with `swapon --show` and `lsblk`; if it cannot be shown to be on " +
		"dm-crypt, replace it with encrypted swap"
	remedyCrypttabMissing = "attach the device, correct the device field (find the UUID with `blkid` or `lsblk -f`; " +
		"UUID= and PARTUUID= survive device renames, /dev/sdX names do not) or remove the entry; mark a device " +
		"that is only sometimes attached noauto,nofail"
)

// CheckSystem returns the findings for the discovered system s under the
// policy p, skipping IDs p disables:
//
//   - LUKS-MOUNT-UNENCRYPTED (fail): a data mount (p.IsDataMount) with
//     Encryption "none";
//   - LUKS-MOUNT-PLAIN-DMCRYPT (warn): a data mount on plain dm-crypt;
//   - LUKS-MOUNT-UNRESOLVED (warn): a data mount with Encryption
//     "unknown";
//   - LUKS-SWAP-UNENCRYPTED (fail): a swap area with Encryption "none"
//     (plain dm-crypt swap with a random key passes; zram without a
//     writeback device is "ram" and passes);
//   - LUKS-SWAP-UNRESOLVED (warn): a swap area with Encryption "unknown";
//   - LUKS-CRYPTTAB-MISSING-DEVICE (warn): a crypttab entry whose device
//     (a path, or UUID=, PARTUUID=, LABEL=, PARTLABEL=, ID= resolved
//     through dev/disk/by-*) does not exist under the root.
//
// Pseudo filesystems are never judged, and mounts under other encryption
// (LUKS, TCRYPT, BitLocker, …) give no finding here; the LUKS headers
// themselves are checked separately (see [System.LUKSDevices]). A mount
// point listed twice gives one finding per ID.
func CheckSystem(s *System, p Policy) []report.Finding {
	var out []report.Finding
	seen := map[string]bool{}
	add := func(f report.Finding) {
		if !p.enabled(f.ID) || seen[f.ID+"\x00"+f.Subject] {
			return
		}
		seen[f.ID+"\x00"+f.Subject] = true
		out = append(out, f)
	}
	for _, m := range s.Mounts {
		if m.Pseudo || !p.IsDataMount(m.MountPoint) {
			continue
		}
		ev := discEvidence(m.Source, m.Device, m.Stack, m.Layers, m.Unencrypted)
		ev["fstype"] = m.FSType
		what := fmt.Sprintf("data mount %s (%s on %s)", m.MountPoint, m.FSType, m.Source)
		switch m.Encryption {
		case EncryptionNone:
			add(report.Finding{
				ID: IDMountUnencrypted, Severity: report.Fail, Subject: m.MountPoint,
				Message:  what + " is not encrypted: no dm-crypt layer above " + strings.Join(m.Unencrypted, ", "),
				Remedy:   remedyMountUnencrypted,
				Evidence: ev,
			})
		case EncryptionPlain:
			add(report.Finding{
				ID: IDMountPlainDMCrypt, Severity: report.Warn, Subject: m.MountPoint,
				Message:  what + " is on plain dm-crypt " + m.CryptDevice + " with no LUKS header",
				Remedy:   remedyMountPlain,
				Evidence: ev,
			})
		case EncryptionUnknown:
			msg := what + ": the source is not a block device in sys/block, so its encryption cannot be judged"
			if m.Device != "" {
				msg = what + ": the devices under " + m.Device + " cannot be followed to disks, so its encryption cannot be judged"
			}
			add(report.Finding{
				ID: IDMountUnresolved, Severity: report.Warn, Subject: m.MountPoint,
				Message: msg, Remedy: remedyMountUnresolved, Evidence: ev,
			})
		}
	}
	for _, w := range s.Swaps {
		ev := discEvidence(w.Source, w.Device, w.Stack, w.Layers, w.Unencrypted)
		ev["type"] = w.Type
		if w.MountPoint != "" {
			ev["mount_point"] = w.MountPoint
		}
		what := "swap " + w.Source
		if w.MountPoint != "" {
			what += " (a file on " + w.MountPoint + ")"
		}
		switch w.Encryption {
		case EncryptionNone:
			add(report.Finding{
				ID: IDSwapUnencrypted, Severity: report.Fail, Subject: w.Source,
				Message:  what + " is not encrypted: no dm-crypt layer above " + strings.Join(w.Unencrypted, ", "),
				Remedy:   remedySwapUnencrypted,
				Evidence: ev,
			})
		case EncryptionUnknown:
			add(report.Finding{
				ID: IDSwapUnresolved, Severity: report.Warn, Subject: w.Source,
				Message:  what + " cannot be followed to disks, so its encryption cannot be judged",
				Remedy:   remedySwapUnresolved,
				Evidence: ev,
			})
		}
	}
	for _, e := range s.Crypttab {
		if e.Resolved != "" {
			continue
		}
		ev := map[string]string{"name": e.Name, "device": e.Device, "line": strconv.Itoa(e.Line)}
		if len(e.Options) > 0 {
			ev["options"] = strings.Join(e.Options, ",")
		}
		add(report.Finding{
			ID: IDCrypttabMissingDevice, Severity: report.Warn, Subject: "crypttab:" + e.Name,
			Message: fmt.Sprintf("crypttab entry %q (line %d) names device %s, which does not exist", e.Name, e.Line, e.Device),
			Remedy:  remedyCrypttabMissing, Evidence: ev,
		})
	}
	return out
}

// discEvidence is the evidence common to mount and swap findings.
func discEvidence(source, device string, stack []string, layers []Layer, unenc []string) map[string]string {
	ev := map[string]string{"source": source}
	if device != "" {
		ev["device"] = device
	}
	if len(stack) > 0 {
		ev["stack"] = strings.Join(stack, ",")
	}
	if len(layers) > 0 {
		var ls []string
		for _, l := range layers {
			ls = append(ls, l.Device+"="+l.Crypt)
		}
		ev["crypt_layers"] = strings.Join(ls, ",")
	}
	if len(unenc) > 0 {
		ev["unencrypted"] = strings.Join(unenc, ",")
	}
	return ev
}

// Checked returns the subjects [CheckSystem] judges under p, for
// report.Report.Checked: each data mount point (pseudo filesystems
// excluded), each swap source and "crypttab:NAME" for each crypttab
// entry, each once, in that order.
func (s *System) Checked(p Policy) []string {
	var out []string
	add := func(v string) {
		if !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	for _, m := range s.Mounts {
		if !m.Pseudo && p.IsDataMount(m.MountPoint) {
			add(m.MountPoint)
		}
	}
	for _, w := range s.Swaps {
		add(w.Source)
	}
	for _, e := range s.Crypttab {
		add("crypttab:" + e.Name)
	}
	return out
}

// discNotLUKSOptions are crypttab options that select a non-LUKS mode.
var discNotLUKSOptions = []string{"plain", "tcrypt", "bitlk", "loop-aes", "fvault2"}

// discRandomKeys are key files that make a fresh random key at each boot
// (plain mode: there is no header to check).
var discRandomKeys = []string{"/dev/urandom", "/dev/random", "/dev/hw_random"}

// discCrypttabHeader returns the header= option of a crypttab entry when
// it is a plain absolute path (a detached LUKS header), or "".
func discCrypttabHeader(e CrypttabEntry) string {
	for _, o := range e.Options {
		if h, ok := strings.CutPrefix(o, "header="); ok && strings.HasPrefix(h, "/") && !strings.Contains(h, ":") {
			return h
		}
	}
	return ""
}

// discMaybeLUKS reports whether a crypttab entry may be a LUKS device:
// not forced to another mode and not keyed from a random source.
func discMaybeLUKS(e CrypttabEntry) bool {
	if slices.Contains(discRandomKeys, e.KeyFile) {
		return false
	}
	for _, o := range e.Options {
		name, _, _ := strings.Cut(o, "=")
		if slices.Contains(discNotLUKSOptions, name) {
			return false
		}
	}
	return true
}

// LUKSDevices returns the paths whose LUKS headers should be checked, each
// once: first, for every LUKS mapping in Devices, the device under it (or
// the header= path of the crypttab entry of the same name, for a detached
// header); then every crypttab entry that exists and may be LUKS (no
// plain, tcrypt, bitlk, loop-aes or fvault2 option and no random key
// file), by its resolved path or header= path. Mapped devices come in
// sysfs order, crypttab entries in file order. Paths are as seen on the
// inspected system: under a root other than "/", join them to Root
// before opening them.
func (s *System) LUKSDevices() []string {
	var out []string
	add := func(v string) {
		if v != "" && !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	headers := map[string]string{}
	for _, e := range s.Crypttab {
		if h := discCrypttabHeader(e); h != "" {
			headers[e.Name] = h
		}
	}
	paths := make(map[string]string, len(s.Devices))
	for _, d := range s.Devices {
		paths[d.Name] = d.Path
	}
	for _, d := range s.Devices {
		if d.Crypt != EncryptionLUKS1 && d.Crypt != EncryptionLUKS2 {
			continue
		}
		if h, ok := headers[d.DMName]; ok {
			add(h)
		} else if len(d.Slaves) > 0 {
			add(paths[d.Slaves[0]])
		}
	}
	for _, e := range s.Crypttab {
		if e.Resolved == "" || !discMaybeLUKS(e) {
			continue
		}
		if h := discCrypttabHeader(e); h != "" {
			add(h)
		} else {
			add(e.Resolved)
		}
	}
	return out
}
