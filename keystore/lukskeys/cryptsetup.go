package lukskeys

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"syscall"

	"github.com/nhscrypt/nhscrypt/luks"
)

// PBKDF is the key derivation a new keyslot gets.
type PBKDF struct {
	// Type is "pbkdf2", "argon2i" or "argon2id".
	Type string `json:"type"`
	// Hash is the PBKDF2 hash (LUKS2 only; LUKS1 uses the header's).
	Hash string `json:"hash,omitempty"`
	// Iterations is the PBKDF2 iteration count or the argon2 time cost.
	Iterations int `json:"iterations"`
	// MemoryKiB and Parallel are argon2's memory and thread costs.
	MemoryKiB int `json:"memory_kib,omitempty"`
	Parallel  int `json:"parallel,omitempty"`
}

func (p PBKDF) args() []string {
	a := []string{"--pbkdf", p.Type, "--pbkdf-force-iterations", strconv.Itoa(p.Iterations)}
	if strings.HasPrefix(p.Type, "argon2") {
		a = append(a, "--pbkdf-memory", strconv.Itoa(p.MemoryKiB), "--pbkdf-parallel", strconv.Itoa(p.Parallel))
	} else if p.Hash != "" {
		a = append(a, "--hash", p.Hash)
	}
	return a
}

// PBKDFFor returns the key derivation for a new keyslot of hdr: the same as
// keyslot model's (the one the existing key opened), raised to the
// policy's minimum costs, so a recovery key is never weaker than the key it
// sits beside nor than the policy allows.
func PBKDFFor(hdr *luks.Header, model int, p luks.Policy) PBKDF {
	if hdr.LUKS1 != nil {
		it := 0
		if model >= 0 && model < len(hdr.LUKS1.KeySlots) {
			it = int(hdr.LUKS1.KeySlots[model].Iterations)
		}
		return PBKDF{Type: "pbkdf2", Iterations: max(it, p.MinPBKDF2Iterations, 1000)}
	}
	out := PBKDF{Type: "argon2id", Iterations: max(p.MinArgon2Time, 4), MemoryKiB: max(p.MinArgon2MemoryKiB, 1<<20), Parallel: 4}
	if ks, ok := hdr.LUKS2.Metadata.Keyslots[strconv.Itoa(model)]; ok {
		switch k := ks.KDF; k.Type {
		case "pbkdf2":
			out = PBKDF{Type: "pbkdf2", Hash: k.Hash, Iterations: max(k.Iterations, p.MinPBKDF2Iterations, 1000)}
		case "argon2i", "argon2id":
			// cryptsetup refuses an argon2 time cost below 4.
			out = PBKDF{Type: k.Type, Iterations: max(k.Time, p.MinArgon2Time, 4),
				MemoryKiB: max(k.Memory, p.MinArgon2MemoryKiB, 32), Parallel: max(k.CPUs, 1)}
		}
	}
	return out
}

// CryptsetupError is a failed cryptsetup run; Output is what it printed
// (cryptsetup never prints keys).
type CryptsetupError struct {
	Args   []string
	Code   int
	Output string
	Err    error
}

func (e *CryptsetupError) Error() string {
	msg := strings.TrimSpace(e.Output)
	if i := strings.LastIndexByte(msg, '\n'); i >= 0 {
		msg = msg[i+1:]
	}
	if msg == "" && e.Err != nil {
		msg = e.Err.Error()
	}
	return fmt.Sprintf("cryptsetup %s failed (exit %d): %s", strings.Join(e.Args, " "), e.Code, msg)
}

func (e *CryptsetupError) Unwrap() error { return e.Err }

// cryptsetup runs the cryptsetup binary at path (default: "cryptsetup" on
// PATH) with args in batch mode, stdin as its standard input. A header
// write is never cut short: cryptsetup runs in a process group of its own
// (a Ctrl-C at the terminal does not reach it) and is not killed when ctx
// is cancelled; the caller sees the cancellation at its next step, and
// undoes what cryptsetup did.
func cryptsetup(ctx context.Context, path string, stdin []byte, args ...string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if path == "" {
		path = "cryptsetup"
	}
	all := append([]string{"--batch-mode"}, args...)
	cmd := exec.Command(path, all...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Stdin = bytes.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		code := -1
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		}
		return &CryptsetupError{Args: args, Code: code, Output: out.String(), Err: err}
	}
	return nil
}

// addKey adds newKey (read from stdin, so it never touches the disk) to
// keyslot slot of device, authorised by the key in keyFile.
func addKey(ctx context.Context, bin, device, keyFile string, newKey []byte, slot int, p PBKDF) error {
	args := []string{"luksAddKey", "--key-file", keyFile, "--key-slot", strconv.Itoa(slot)}
	args = append(args, p.args()...)
	args = append(args, device, "-")
	return cryptsetup(ctx, bin, newKey, args...)
}

// killSlot wipes keyslot slot of device, authorised by auth (a key of
// another keyslot, read from stdin).
func killSlot(ctx context.Context, bin, device string, slot int, auth []byte) error {
	return cryptsetup(ctx, bin, auth, "luksKillSlot", "--key-file", "-", device, strconv.Itoa(slot))
}
