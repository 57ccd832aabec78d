package tlscheck_test

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
)

func sprint(args ...any) string            { return fmt.Sprint(args...) }
func sprintf(f string, args ...any) string { return fmt.Sprintf(f, args...) }

// decodeCert parses the first PEM certificate in b.
func decodeCert(b []byte) (*x509.Certificate, []byte, bool) {
	for {
		blk, rest := pem.Decode(b)
		if blk == nil {
			return nil, nil, false
		}
		if blk.Type == "CERTIFICATE" {
			c, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				return nil, nil, false
			}
			return c, rest, true
		}
		b = rest
	}
}
