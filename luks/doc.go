// Package luks parses LUKS headers, checks them and the system's disk
// encryption against a policy, and proves that a passphrase or key opens a
// keyslot, all in-process and read-only.
//
// The on-disk formats follow the LUKS1 On-Disk Format Specification
// (version 1.2.3) and the LUKS2 On-Disk Format Specification (version 1.1.x,
// as cryptsetup 2.x writes it). Struct fields keep the specification's names
// in their doc comments. Devices are opened with github.com/anatol/luks.go
// where it can; headers are parsed here from an io.ReaderAt, and keyslots
// luks.go cannot open are unsealed here too.
//
// Findings (weak PBKDF, LUKS1, unencrypted mounts, …) are report.Finding
// values with stable IDs documented in docs/policy.md; an error means the
// check could not be made.
package luks
