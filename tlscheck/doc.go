// Package tlscheck checks the TLS of a server's services and the
// certificate files on its disk, and returns what it finds as
// [report.Finding] values with stable IDs (TLS-CERT-EXPIRED,
// TLS-PROTO-TLS10, …; the list and the fix for each are in docs/tls.md).
//
// Endpoints are checked with one full handshake (Go's crypto/tls, to get
// and verify the certificate chain) and a few hand-built ClientHello
// offers that read only the ServerHello, as sslscan and testssl.sh do, to
// learn which protocol versions (SSLv3 to TLS 1.3) and which weak classes
// of cipher suites (NULL, anonymous, export, RC4, DES, 3DES, no forward
// secrecy) the server accepts. STARTTLS is spoken for SMTP, IMAP, POP3,
// FTP, PostgreSQL, MySQL and LDAP. Every connection has a timeout and
// stops when its context is cancelled; [Run] checks many endpoints at
// once with a bounded pool of workers.
//
// Certificate files (PEM, DER, bundles) are checked for validity, key
// size, signature algorithm, self-signature and, when the private key can
// be found, whether it matches.
//
// [Listeners] and [Discover] find the local TCP listeners from
// /proc/net/tcp and /proc/net/tcp6; [DiscoverCertFiles] finds the
// certificate files in the usual places and in web, mail and IMAP server
// configurations.
//
// Findings are data, errors are failures: an endpoint that cannot be
// reached or a file that cannot be read is a [Result] with Err set, never
// a finding.
package tlscheck
