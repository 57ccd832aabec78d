package luks

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/nhscrypt/nhscrypt/report"
)

// Finding IDs of header checks (documented in docs/policy.md).
const (
	IDVersion1        = "LUKS-VERSION-1"
	IDCipherWeak      = "LUKS-CIPHER-WEAK"
	IDKDFPBKDF2       = "LUKS-KDF-PBKDF2"
	IDKDFWeak         = "LUKS-KDF-WEAK"
	IDHeaderChecksum  = "LUKS-HEADER-CHECKSUM"
	IDHeaderDamaged   = "LUKS-HEADER-DAMAGED"
	IDHeaderMismatch  = "LUKS-HEADER-MISMATCH"
	IDKeyslotsMany    = "LUKS-KEYSLOTS-MANY"
	IDHeaderNoBackup  = "LUKS-HEADER-NO-BACKUP"
	IDReencryptActive = "LUKS-REENCRYPT-PENDING"
	IDDeviceNotLUKS   = "LUKS-DEVICE-NOT-LUKS"
)

// NotLUKSFinding is the finding for a device that was named for checking
// but has no LUKS header.
func NotLUKSFinding(dev string) report.Finding {
	return report.Finding{ID: IDDeviceNotLUKS, Severity: report.Fail, Subject: dev,
		Message: "no LUKS header: the device is not LUKS-encrypted (or its header is destroyed)",
		Remedy:  "encrypt it with LUKS2 (cryptsetup luksFormat, or cryptsetup reencrypt --encrypt for data in place), or restore the header from a backup"}
}

// CheckHeader returns the findings for one parsed header under policy p.
// subject names the device in the findings.
func CheckHeader(h *Header, subject string, p Policy) []report.Finding {
	var out []report.Finding
	add := func(id string, sev report.Severity, msg, remedy string, ev map[string]string) {
		if p.enabled(id) {
			out = append(out, report.Finding{ID: id, Severity: sev, Subject: subject, Message: msg, Remedy: remedy, Evidence: ev})
		}
	}
	if h.LUKS1 != nil {
		l := h.LUKS1
		add(IDVersion1, report.Warn, "LUKS1 header: no argon2 key derivation, no header checksum, no redundant header",
			"convert to LUKS2 with `cryptsetup convert --type luks2` (back up the header first), then move keyslots to argon2id with `cryptsetup luksConvertKey --pbkdf argon2id`",
			map[string]string{"uuid": l.UUID})
		checkCipher(add, "data", l.CipherName+"-"+l.CipherMode, int(l.KeyBytes)*8, p)
		for _, s := range l.ActiveSlots() {
			ks := l.KeySlots[s]
			checkPBKDF2(add, s, int(ks.Iterations), l.HashSpec, p)
		}
		checkSlotCount(add, len(l.ActiveSlots()), p)
		checkBackup(add, l.UUID, p)
		return out
	}
	l := h.LUKS2
	for _, prob := range l.Problems {
		id, sev := IDHeaderDamaged, report.Fail
		if strings.Contains(prob, "checksum mismatch") {
			id = IDHeaderChecksum
		}
		add(id, sev, "LUKS2 "+prob+"; metadata read from the "+l.MetadataFrom+" header",
			"restore the header from a backup (`cryptsetup luksHeaderRestore`), or let cryptsetup repair it with `cryptsetup repair` after taking a backup with `nhscrypt luks backup-header`",
			map[string]string{"metadata_from": l.MetadataFrom})
	}
	if len(l.Disagreements) > 0 {
		add(IDHeaderMismatch, report.Fail, "primary and secondary LUKS2 headers disagree: "+strings.Join(l.Disagreements, "; "),
			"run `cryptsetup repair` (after a header backup) so both copies match; find out why they diverged",
			map[string]string{"primary_seqid": strconv.FormatUint(l.Primary.SeqID, 10), "secondary_seqid": strconv.FormatUint(l.Secondary.SeqID, 10)})
	}
	md := l.Metadata
	for _, id := range SortedIDs(md.Segments) {
		s := md.Segments[strconv.Itoa(id)]
		if s.Type != "crypt" {
			continue
		}
		checkCipher(add, "segment "+strconv.Itoa(id), s.Encryption, segmentKeyBits(md, id), p)
	}
	for _, id := range SortedIDs(md.Keyslots) {
		ks := md.Keyslots[strconv.Itoa(id)]
		if ks.Area.Encryption != "" {
			checkCipher(add, "keyslot "+strconv.Itoa(id)+" area", ks.Area.Encryption, ks.Area.KeySize*8, p)
		}
		switch ks.KDF.Type {
		case "pbkdf2":
			checkPBKDF2(add, id, ks.KDF.Iterations, ks.KDF.Hash, p)
		case "argon2i", "argon2id":
			if ks.KDF.Memory < p.MinArgon2MemoryKiB || ks.KDF.Time < p.MinArgon2Time {
				add(IDKDFWeak, report.Warn,
					fmt.Sprintf("keyslot %d: %s with %d KiB memory and time cost %d is below the policy (%d KiB, %d)", id, ks.KDF.Type, ks.KDF.Memory, ks.KDF.Time, p.MinArgon2MemoryKiB, p.MinArgon2Time),
					fmt.Sprintf("re-derive the keyslot with cryptsetup's benchmarked defaults: `cryptsetup luksConvertKey --key-slot %d --pbkdf argon2id`", id),
					map[string]string{"keyslot": strconv.Itoa(id), "kdf": ks.KDF.Type, "memory_kib": strconv.Itoa(ks.KDF.Memory), "time": strconv.Itoa(ks.KDF.Time), "cpus": strconv.Itoa(ks.KDF.CPUs)})
			}
		}
	}
	checkSlotCount(add, len(md.Keyslots), p)
	if md.Config.Requirements != nil && len(md.Config.Requirements.Mandatory) > 0 {
		add(IDReencryptActive, report.Warn, "the header has mandatory requirements ("+strings.Join(md.Config.Requirements.Mandatory, ", ")+"), such as an unfinished re-encryption",
			"finish or recover the operation with cryptsetup (for re-encryption: `cryptsetup reencrypt --resume-only`)",
			map[string]string{"requirements": strings.Join(md.Config.Requirements.Mandatory, ",")})
	}
	checkBackup(add, h.UUID(), p)
	return out
}

type addFunc func(id string, sev report.Severity, msg, remedy string, ev map[string]string)

// segmentKeyBits is the volume key size of the keyslots whose digest covers
// the segment.
func segmentKeyBits(md *LUKS2Metadata, seg int) int {
	sid := strconv.Itoa(seg)
	for _, d := range md.Digests {
		covers := false
		for _, s := range d.Segments {
			covers = covers || s == sid
		}
		if !covers {
			continue
		}
		for _, k := range d.Keyslots {
			if ks := md.Keyslots[k]; ks != nil {
				return ks.KeySize * 8
			}
		}
	}
	return 0
}

// CipherWeakness says what is wrong with a dm-crypt cipher spec (such as
// "aes-xts-plain64") and key size, or "" if nothing.
func CipherWeakness(spec string, keyBits int, minXTSBits int) string {
	name, rest, _ := strings.Cut(spec, "-")
	mode, iv, _ := strings.Cut(rest, "-")
	switch {
	case name == "cipher_null" || strings.HasPrefix(spec, "cipher_null"):
		return "cipher_null: the data is not encrypted at all"
	case mode == "ecb":
		return "ECB mode leaks patterns in the data"
	case iv == "plain" || iv == "":
		if mode == "xts" && iv == "plain" {
			return "the 32-bit plain IV wraps on devices over 2 TiB; use plain64"
		}
		if iv == "" {
			return "no IV mode given"
		}
		return "plain IV (32-bit sector numbers) with " + mode + " is predictable; use xts-plain64"
	case mode == "cbc" && !strings.HasPrefix(iv, "essiv"):
		return "CBC without ESSIV has predictable IVs (watermarking attacks)"
	case mode == "xts" && keyBits > 0 && keyBits < minXTSBits:
		return fmt.Sprintf("XTS with a %d-bit key (AES-%d) is below the policy's %d bits", keyBits, keyBits/2, minXTSBits)
	}
	return ""
}

func checkCipher(add addFunc, where, spec string, keyBits int, p Policy) {
	if w := CipherWeakness(spec, keyBits, p.MinXTSKeyBits); w != "" {
		add(IDCipherWeak, report.Fail, where+": "+spec+": "+w,
			"re-encrypt with aes-xts-plain64 and a 512-bit key: `cryptsetup reencrypt --cipher aes-xts-plain64 --key-size 512` (back up first)",
			map[string]string{"where": where, "cipher": spec, "key_bits": strconv.Itoa(keyBits)})
	}
}

func checkPBKDF2(add addFunc, slot, iterations int, hash string, p Policy) {
	ev := map[string]string{"keyslot": strconv.Itoa(slot), "kdf": "pbkdf2", "iterations": strconv.Itoa(iterations), "hash": hash}
	add(IDKDFPBKDF2, report.Warn, fmt.Sprintf("keyslot %d uses PBKDF2, which is not memory-hard: GPUs guess passphrases cheaply", slot),
		fmt.Sprintf("convert the keyslot to argon2id: `cryptsetup luksConvertKey --key-slot %d --pbkdf argon2id` (LUKS2 only)", slot), ev)
	if iterations < p.MinPBKDF2Iterations {
		add(IDKDFWeak, report.Warn, fmt.Sprintf("keyslot %d: PBKDF2 with %d iterations is below the policy (%d)", slot, iterations, p.MinPBKDF2Iterations),
			fmt.Sprintf("re-derive the keyslot with cryptsetup's benchmarked defaults: `cryptsetup luksConvertKey --key-slot %d`", slot), ev)
	}
}

func checkSlotCount(add addFunc, n int, p Policy) {
	if p.MaxActiveKeyslots > 0 && n > p.MaxActiveKeyslots {
		add(IDKeyslotsMany, report.Info, fmt.Sprintf("%d active keyslots (policy: at most %d): every keyslot is a way in", n, p.MaxActiveKeyslots),
			"remove keyslots no longer needed with `cryptsetup luksKillSlot`, keeping an escrowed recovery key",
			map[string]string{"active_keyslots": strconv.Itoa(n)})
	}
}

func checkBackup(add addFunc, uuid string, p Policy) {
	if p.HeaderBackupDir == "" || uuid == "" {
		return
	}
	if _, err := os.Stat(filepath.Join(p.HeaderBackupDir, BackupRecordName(uuid))); err == nil {
		return
	}
	add(IDHeaderNoBackup, report.Info, "no encrypted header backup is recorded for LUKS UUID "+uuid,
		"take one: `nhscrypt luks backup-header DEVICE -r RECIPIENT -o FILE.age`, and keep it off this machine",
		map[string]string{"uuid": uuid, "record_dir": p.HeaderBackupDir})
}
