// Package filecrypt encrypts and decrypts files and directory trees with age
// (https://age-encryption.org/v1, implemented by filippo.io/age). Its output
// is byte-compatible with the age command-line tool in both directions.
//
// Supported recipient and identity types are X25519 (age1…,
// AGE-SECRET-KEY-1…), the post-quantum hybrid ML-KEM-768 + X25519 of age
// v1.3 (age1pq1…, AGE-SECRET-KEY-PQ-1…), SSH keys (ssh-ed25519 and ssh-rsa,
// optionally passphrase-protected), hardware tag recipients (age1tag1…,
// age1tagpq1…, encrypt only) and passphrases (scrypt).
//
// Every file output is written to a temporary file in the destination
// folder, fsynced, and renamed into place (see EncryptFile and DecryptFile);
// an existing output is never replaced unless Overwrite is set. Decrypted
// plaintext is published only after the whole file authenticated, so a
// truncated or tampered file leaves nothing behind.
//
// Errors that callers branch on are typed: *WrongKeyError when no identity
// opens a file, *CorruptError when a file is not valid age or fails
// authentication. No error, log line or event ever holds key material.
package filecrypt
