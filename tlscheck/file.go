package tlscheck

import (
	"context"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/nhscrypt/nhscrypt/report"
)

// A CertFile is a certificate file to check, with the private key file
// that belongs to it when known.
type CertFile struct {
	// Path is the certificate file: PEM (one or more certificates, a
	// bundle, possibly with the key in it) or DER.
	Path string `json:"path"`
	// KeyPath is the private key file. Empty means: look in Path itself,
	// then beside it (NAME.key for NAME.pem or NAME.crt, privkey.pem
	// beside cert.pem or fullchain.pem).
	KeyPath string `json:"key_path,omitempty"`
	// Source says where the file came from, such as "nginx config
	// /etc/nginx/sites-enabled/default". Informational.
	Source string `json:"source,omitempty"`
}

// maxCertFile bounds the size of a certificate file read.
const maxCertFile = 4 << 20

// CheckFile checks a certificate file: the validity, key and signature of
// its first non-CA certificate (the leaf), the chain when the file is a
// bundle, and whether the private key matches the leaf.
//
// A file that cannot be read, or holds no certificate, gives a Result
// with Err set (a *TargetError wrapping the fs error or
// [ErrNoCertificate]). The private key is never put in a finding.
func CheckFile(ctx context.Context, cf CertFile, opts Options) Result {
	r := Result{Subject: cf.Path}
	if err := checkFile(ctx, cf, &opts, &r); err != nil {
		r.Err = &TargetError{Subject: cf.Path, Err: err}
	}
	return r
}

func checkFile(ctx context.Context, cf CertFile, opts *Options, r *Result) error {
	data, err := readLimited(cf.Path)
	if err != nil {
		return err
	}
	certs, keys, err := parseCertsAndKeys(data)
	if err != nil {
		return err
	}
	if len(certs) == 0 {
		return ErrNoCertificate
	}
	// The leaf is the first certificate that is not a CA; a file of CA
	// certificates only is checked on its first one.
	li := 0
	for i, c := range certs {
		if !c.IsCA {
			li = i
			break
		}
	}
	chain := []*x509.Certificate{certs[li]}
	for i, c := range certs {
		if i != li {
			chain = append(chain, c)
		}
	}
	r.Chain = chain
	r.Findings = checkCerts(ctx, certInput{subject: cf.Path, chain: chain, verifyAll: len(certs) > 1 && !chain[0].IsCA}, opts)

	// Key match.
	keyFile := "in the file"
	if len(keys) == 0 {
		for _, kp := range keyCandidates(cf) {
			kd, err := readLimited(kp)
			if err != nil {
				if cf.KeyPath != "" && kp == cf.KeyPath {
					return fmt.Errorf("key file: %w", err)
				}
				continue
			}
			_, ks, err := parseCertsAndKeys(kd)
			if err == nil && len(ks) > 0 {
				keys, keyFile = ks, kp
				break
			}
			if cf.KeyPath != "" {
				return fmt.Errorf("key file %q: no unencrypted private key found", kp)
			}
		}
	}
	if len(keys) == 0 {
		return nil
	}
	for _, k := range keys {
		if keyMatches(k, chain[0]) {
			return nil
		}
	}
	r.add(IDKeyMismatch, report.Fail, "the private key does not belong to the certificate: the service will fail to start or serve the wrong certificate",
		"install the key that was used to request this certificate, or request a new certificate for this key",
		map[string]string{"certificate": certName(chain[0]), "key_file": keyFile})
	return nil
}

// keyCandidates lists the key files that may belong to cf.
func keyCandidates(cf CertFile) []string {
	if cf.KeyPath != "" {
		return []string{cf.KeyPath}
	}
	dir, base := filepath.Split(cf.Path)
	stem := strings.TrimSuffix(base, filepath.Ext(base))
	c := []string{filepath.Join(dir, stem+".key")}
	switch base {
	case "cert.pem", "fullchain.pem":
		c = append(c, filepath.Join(dir, "privkey.pem"))
	}
	return c
}

func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%q is not a regular file", path)
	}
	if st.Size() > maxCertFile {
		return nil, fmt.Errorf("%q is too large for a certificate file (%d bytes)", path, st.Size())
	}
	b := make([]byte, st.Size())
	n, err := f.ReadAt(b, 0)
	if err != nil && n != len(b) {
		return nil, err
	}
	return b, nil
}
