package filecrypt

import (
	"fmt"
	"strings"
)

// WrongKeyError is returned when none of the identities given opens a file.
// StanzaTypes lists the recipient types the file is encrypted to (such as
// "X25519", "mlkem768x25519", "ssh-ed25519", "scrypt"), which tells the
// user which kind of key to look for.
type WrongKeyError struct {
	Path        string
	StanzaTypes []string
	// Detail, if set, replaces the standard message (for example for the
	// wrong passphrase of an SSH key, where Path is the key file).
	Detail string
}

func (e *WrongKeyError) Error() string {
	name := e.Path
	if name == "" {
		name = "input"
	}
	if e.Detail != "" {
		return fmt.Sprintf("%q: %s", name, e.Detail)
	}
	types := strings.Join(uniq(e.StanzaTypes), ", ")
	if types == "" {
		types = "unknown"
	}
	if len(e.StanzaTypes) == 1 && e.StanzaTypes[0] == "scrypt" {
		return fmt.Sprintf("%q: incorrect passphrase", name)
	}
	return fmt.Sprintf("%q: no identity matched; the file is encrypted to recipient types: %s", name, types)
}

// CorruptError is returned when a file is not a valid age file, or fails
// authentication (truncated or tampered). Its message gives Reason only:
// the underlying error (from Unwrap) may quote bytes of the input.
type CorruptError struct {
	Path   string
	Reason string
	Err    error
}

func (e *CorruptError) Error() string {
	name := e.Path
	if name == "" {
		name = "input"
	}
	reason := e.Reason
	if reason == "" {
		reason = "invalid age file"
	}
	return fmt.Sprintf("%q is corrupt or not an age file: %s", name, reason)
}

func (e *CorruptError) Unwrap() error { return e.Err }

func uniq(s []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, v := range s {
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out
}
