package luks

import (
	"fmt"
	"io"
	"path"

	"github.com/BurntSushi/toml"
)

// Policy holds the thresholds and lists the checks use. DefaultPolicy
// follows current cryptsetup guidance (cryptsetup 2.x defaults: LUKS2,
// aes-xts-plain64 with a 512-bit key, argon2id with about 1 GiB of memory);
// an admin overrides it with a TOML file (see docs/policy.md).
type Policy struct {
	// DataMounts are mount points (path.Match patterns) whose filesystems
	// hold data and must sit on encryption. Default: /, /home, /var,
	// /var/*, /var/lib/*, /srv, /srv/*, /opt, /data, /data/*, /mnt/*.
	DataMounts []string `toml:"data_mounts"`
	// IgnoreMounts are mount points never checked (pseudo filesystems are
	// always ignored).
	IgnoreMounts []string `toml:"ignore_mounts"`
	// MinArgon2MemoryKiB and MinArgon2Time: an argon2 keyslot below
	// either gives LUKS-KDF-WEAK.
	MinArgon2MemoryKiB int `toml:"min_argon2_memory_kib"`
	MinArgon2Time      int `toml:"min_argon2_time"`
	// MinPBKDF2Iterations: a PBKDF2 keyslot below it gives LUKS-KDF-WEAK
	// as well as LUKS-KDF-PBKDF2.
	MinPBKDF2Iterations int `toml:"min_pbkdf2_iterations"`
	// MaxActiveKeyslots: more active keyslots give LUKS-KEYSLOTS-MANY (info).
	MaxActiveKeyslots int `toml:"max_active_keyslots"`
	// MinXTSKeyBits: an XTS key shorter gives LUKS-CIPHER-WEAK (XTS splits
	// the key in two: 256 bits is AES-128, 512 bits AES-256).
	MinXTSKeyBits int `toml:"min_xts_key_bits"`
	// HeaderBackupDir is where `nhscrypt luks backup-header` records
	// backups (UUID.json); a LUKS device with no record there gives
	// LUKS-HEADER-NO-BACKUP. Empty disables the check.
	HeaderBackupDir string `toml:"header_backup_dir"`
	// Disabled lists finding IDs not to report.
	Disabled []string `toml:"disabled"`
}

// DefaultPolicy returns the built-in policy.
func DefaultPolicy() Policy {
	return Policy{
		DataMounts: []string{"/", "/home", "/home/*", "/var", "/var/*", "/var/lib/*", "/srv", "/srv/*",
			"/opt", "/data", "/data/*", "/mnt/*"},
		MinArgon2MemoryKiB:  65536,
		MinArgon2Time:       2,
		MinPBKDF2Iterations: 100000,
		MaxActiveKeyslots:   4,
		MinXTSKeyBits:       256,
		HeaderBackupDir:     "/var/lib/nhscrypt/luks-headers",
	}
}

// LoadPolicy reads a TOML policy file over the defaults: keys it sets
// replace the default values, keys it omits keep them. Unknown keys are an
// error, so a typo does not silently weaken the policy.
func LoadPolicy(r io.Reader) (Policy, error) {
	p := DefaultPolicy()
	md, err := toml.NewDecoder(r).Decode(&p)
	if err != nil {
		return Policy{}, fmt.Errorf("parsing policy: %w", err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		return Policy{}, fmt.Errorf("parsing policy: unknown key %q", und[0].String())
	}
	for _, pat := range append(append([]string{}, p.DataMounts...), p.IgnoreMounts...) {
		if _, err := path.Match(pat, "/"); err != nil {
			return Policy{}, fmt.Errorf("parsing policy: bad mount pattern %q: %w", pat, err)
		}
	}
	return p, nil
}

// IsDataMount reports whether the mount point counts as data under p.
func (p Policy) IsDataMount(mountPoint string) bool {
	for _, pat := range p.IgnoreMounts {
		if ok, _ := path.Match(pat, mountPoint); ok {
			return false
		}
	}
	for _, pat := range p.DataMounts {
		if ok, _ := path.Match(pat, mountPoint); ok {
			return true
		}
	}
	return false
}

// enabled reports whether a finding ID is reported under p.
func (p Policy) enabled(id string) bool {
	for _, d := range p.Disabled {
		if d == id {
			return false
		}
	}
	return true
}
