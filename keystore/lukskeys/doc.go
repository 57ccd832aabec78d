// Package lukskeys keeps LUKS recovery keys in escrow and proves that they
// work. It enrols a new recovery passphrase in two phases (escrow it as
// pending, add it to a keyslot with cryptsetup, prove in-process that it
// opens that keyslot, then mark it active), rolls back anything a failed
// enrolment did, resumes an enrolment that was interrupted, rotates recovery
// keys (the old keyslot is removed only after the new one is proven), escrows
// header backups beside the keys, and verifies at any time that every
// escrowed key still opens its volume.
//
// The escrow store is any [keystore.Escrow]; the LUKS headers are read and
// keys are tested by package luks. cryptsetup(8) is run for the two header
// writes (luksAddKey, luksKillSlot), since nothing else writes LUKS headers.
package lukskeys
