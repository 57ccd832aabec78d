package report_test

import (
	"fmt"
	"os"
	"time"

	"github.com/nhscrypt/nhscrypt/report"
)

func Example() {
	r := &report.Report{
		Tool:    "nhscrypt",
		Command: "luks check",
		Started: time.Now(),
		Checked: []string{"/dev/sda2", "/dev/sdb1"},
	}
	r.Add(report.Finding{
		ID:       "LUKS-PBKDF-WEAK",
		Severity: report.Warn,
		Subject:  "/dev/sda2",
		Message:  "keyslot 0 uses pbkdf2 with 1000 iterations",
		Remedy:   "cryptsetup luksConvertKey --pbkdf argon2id /dev/sda2",
		Evidence: map[string]string{"pbkdf": "pbkdf2", "iterations": "1000"},
	})
	r.Add(report.Finding{
		ID:       "LUKS-VERSION-1",
		Severity: report.Info,
		Subject:  "/dev/sdb1",
		Message:  "LUKS1 header; LUKS2 supports argon2id",
	})
	if err := r.WriteText(os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	fmt.Println("exit code:", r.ExitCode())
	// Output:
	// SEVERITY  ID               SUBJECT    MESSAGE
	// warn      LUKS-PBKDF-WEAK  /dev/sda2  keyslot 0 uses pbkdf2 with 1000 iterations
	//                                       remedy: cryptsetup luksConvertKey --pbkdf argon2id /dev/sda2
	// info      LUKS-VERSION-1   /dev/sdb1  LUKS1 header; LUKS2 supports argon2id
	// 2 findings: 0 fail, 1 warn, 1 info
	// exit code: 3
}
