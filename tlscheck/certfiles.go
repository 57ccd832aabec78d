package tlscheck

import (
	"bufio"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// A ConfigKind is a server configuration format [ScanConfig] reads.
type ConfigKind string

// The configuration formats scanned for certificate paths.
const (
	NginxConfig   ConfigKind = "nginx"   // ssl_certificate, ssl_certificate_key
	ApacheConfig  ConfigKind = "apache"  // SSLCertificateFile, SSLCertificateKeyFile
	PostfixConfig ConfigKind = "postfix" // smtpd_tls_cert_file, smtpd_tls_key_file, smtpd_tls_chain_files
	DovecotConfig ConfigKind = "dovecot" // ssl_cert = <FILE, ssl_key = <FILE
)

// maxConfigLine bounds a configuration line; longer lines are skipped.
const maxConfigLine = 64 << 10

// ScanConfig returns the certificate files (with their key files, when
// the configuration names them) that a configuration of the given kind
// refers to, as written (relative paths are not resolved). It does not
// fail: lines it does not understand are ignored, and paths holding
// variables ($ssl_server_name, %{...}) are skipped.
func ScanConfig(kind ConfigKind, r io.Reader) []CertFile {
	var out []CertFile
	pendingKey := ""
	addCert := func(p string) {
		out = append(out, CertFile{Path: p, KeyPath: pendingKey})
		pendingKey = ""
	}
	addKey := func(p string) {
		if n := len(out); n > 0 && out[n-1].KeyPath == "" && pendingKey == "" {
			out[n-1].KeyPath = p
			return
		}
		pendingKey = p
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxConfigLine)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = strings.TrimSpace(line[:i])
		}
		if line == "" {
			continue
		}
		switch kind {
		case NginxConfig:
			for _, stmt := range strings.Split(line, ";") {
				f := strings.Fields(stmt)
				if len(f) != 2 {
					continue
				}
				switch f[0] {
				case "ssl_certificate":
					if p := cleanPath(f[1]); p != "" {
						addCert(p)
					}
				case "ssl_certificate_key":
					if p := cleanPath(f[1]); p != "" {
						addKey(p)
					}
				}
			}
		case ApacheConfig:
			f := strings.Fields(line)
			if len(f) != 2 {
				continue
			}
			switch strings.ToLower(f[0]) {
			case "sslcertificatefile":
				if p := cleanPath(f[1]); p != "" {
					addCert(p)
				}
			case "sslcertificatekeyfile":
				if p := cleanPath(f[1]); p != "" {
					addKey(p)
				}
			}
		case PostfixConfig, DovecotConfig:
			name, val, ok := strings.Cut(line, "=")
			if !ok {
				continue
			}
			name, val = strings.TrimSpace(name), strings.TrimSpace(val)
			if kind == DovecotConfig {
				val = strings.TrimSpace(strings.TrimPrefix(val, "<"))
			}
			switch name {
			case "smtpd_tls_cert_file", "ssl_cert":
				if p := cleanPath(val); p != "" {
					addCert(p)
				}
			case "smtpd_tls_key_file", "ssl_key":
				if p := cleanPath(val); p != "" {
					addKey(p)
				}
			case "smtpd_tls_chain_files":
				// KEY, CERT[, CHAIN…], KEY, CERT…: a key then its
				// certificates.
				key := ""
				for _, p := range strings.FieldsFunc(val, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' }) {
					if p = cleanPath(p); p == "" {
						continue
					}
					if strings.Contains(strings.ToLower(filepath.Base(p)), "key") {
						key = p
						continue
					}
					out = append(out, CertFile{Path: p, KeyPath: key})
				}
			}
		}
	}
	return out
}

// cleanPath unquotes a configuration value and rejects one that is not a
// plain path.
func cleanPath(p string) string {
	p = strings.Trim(p, `"'`)
	if p == "" || strings.ContainsAny(p, "$%{}\x00") || strings.HasPrefix(p, "data:") || strings.HasPrefix(p, "engine:") {
		return ""
	}
	return p
}

// configSources lists where each kind of configuration lives, and the
// folder its relative paths are relative to.
var configSources = []struct {
	kind ConfigKind
	dirs []string
	rel  string
}{
	{NginxConfig, []string{"etc/nginx"}, "etc/nginx"},
	{ApacheConfig, []string{"etc/apache2", "etc/httpd"}, "etc/apache2"},
	{PostfixConfig, []string{"etc/postfix/main.cf"}, "etc/postfix"},
	{DovecotConfig, []string{"etc/dovecot"}, "etc/dovecot"},
}

// certDirs are the usual places for certificate files.
var certDirs = []string{"etc/ssl", "etc/pki", "etc/letsencrypt/live"}

var certExts = []string{".pem", ".crt", ".cer", ".der"}

// DiscoverCertFiles finds the certificate files under root (normally
// "/"): those in /etc/ssl, /etc/pki and /etc/letsencrypt/live, and those
// named by the nginx, Apache, Postfix and Dovecot configurations present.
// Paths named by configurations are resolved under root too. Files that
// hold only CA certificates (the system trust store) or no certificate
// at all (keys) are left out. Unreadable folders are skipped.
func DiscoverCertFiles(root string) ([]CertFile, error) {
	byPath := map[string]int{}
	var out []CertFile
	add := func(cf CertFile) {
		if i, ok := byPath[cf.Path]; ok {
			if out[i].KeyPath == "" {
				out[i].KeyPath = cf.KeyPath
			}
			return
		}
		byPath[cf.Path] = len(out)
		out = append(out, cf)
	}
	for _, src := range configSources {
		for _, d := range src.dirs {
			base := filepath.Join(root, d)
			filepath.WalkDir(base, func(p string, e fs.DirEntry, err error) error {
				if err != nil || !e.Type().IsRegular() {
					return nil
				}
				f, err := os.Open(p)
				if err != nil {
					return nil
				}
				defer f.Close()
				for _, cf := range ScanConfig(src.kind, io.LimitReader(f, maxCertFile)) {
					cf.Path = resolve(root, src.rel, cf.Path)
					if cf.KeyPath != "" {
						cf.KeyPath = resolve(root, src.rel, cf.KeyPath)
					}
					cf.Source = string(src.kind) + " config " + strings.TrimPrefix(p, filepath.Clean(root))
					if _, err := os.Stat(cf.Path); err == nil {
						add(cf)
					}
				}
				return nil
			})
		}
	}
	for _, d := range certDirs {
		filepath.WalkDir(filepath.Join(root, d), func(p string, e fs.DirEntry, err error) error {
			if err != nil || e.IsDir() || !slices.Contains(certExts, strings.ToLower(filepath.Ext(p))) {
				return nil
			}
			if e.Type()&fs.ModeSymlink != 0 && strings.HasSuffix(filepath.Dir(p), "/etc/ssl/certs") {
				return nil // the trust store's links to /usr/share/ca-certificates
			}
			if st, err := os.Stat(p); err != nil || !st.Mode().IsRegular() {
				return nil
			}
			if hasServerCert(p) {
				add(CertFile{Path: p, Source: "found in " + strings.TrimPrefix(filepath.Join("/", d), filepath.Clean(root))})
			}
			return nil
		})
	}
	return out, nil
}

func resolve(root, rel, p string) string {
	if !filepath.IsAbs(p) {
		p = filepath.Join("/", rel, p)
	}
	return filepath.Join(root, p)
}

// hasServerCert reports whether the file holds at least one certificate
// that is not a CA certificate.
func hasServerCert(p string) bool {
	b, err := readLimited(p)
	if err != nil {
		return false
	}
	certs, _, err := parseCertsAndKeys(b)
	if err != nil {
		return false
	}
	for _, c := range certs {
		if !c.IsCA {
			return true
		}
	}
	return false
}
