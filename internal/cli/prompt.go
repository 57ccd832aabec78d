package cli

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"

	"golang.org/x/term"
)

// readSecretFromTTY prompts on the controlling terminal (not stdin, which
// may carry the data) and reads a line without echo, as the age CLI does.
func readSecretFromTTY(prompt string) ([]byte, error) {
	tty, err := os.OpenFile("/dev/tty", os.O_RDWR, 0)
	if err != nil {
		return nil, errors.New("a passphrase is needed but there is no terminal to ask on; use --passphrase-file")
	}
	defer tty.Close()
	fmt.Fprintf(tty, "%s ", prompt)
	defer fmt.Fprintln(tty)
	pass, err := term.ReadPassword(int(tty.Fd()))
	if err != nil {
		return nil, fmt.Errorf("reading passphrase: %w", err)
	}
	return pass, nil
}

// readPassphraseFile reads a passphrase from the first line of a file.
func readPassphraseFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening passphrase file: %w", err)
	}
	defer f.Close()
	line, err := bufio.NewReader(f).ReadBytes('\n')
	if err != nil && len(line) == 0 {
		return nil, fmt.Errorf("passphrase file %q is empty", path)
	}
	line = bytes.TrimRight(line, "\r\n")
	if len(line) == 0 {
		return nil, fmt.Errorf("passphrase file %q starts with an empty line", path)
	}
	return line, nil
}

// newPassphrase gets a passphrase for encryption: from a file, or asked
// twice on the terminal.
func newPassphrase(passFile string) ([]byte, error) {
	if passFile != "" {
		return readPassphraseFile(passFile)
	}
	p1, err := readSecretFromTTY("Enter passphrase:")
	if err != nil {
		return nil, err
	}
	if len(p1) == 0 {
		return nil, errors.New("empty passphrase")
	}
	p2, err := readSecretFromTTY("Confirm passphrase:")
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(p1, p2) {
		return nil, errors.New("passphrases didn't match")
	}
	return p1, nil
}

// passphrasePrompt returns a prompt that reads passFile if set, or asks on
// the terminal.
func passphrasePrompt(passFile string) func(string) ([]byte, error) {
	return func(prompt string) ([]byte, error) {
		if passFile != "" {
			return readPassphraseFile(passFile)
		}
		return readSecretFromTTY(prompt)
	}
}
