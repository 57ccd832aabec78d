package tlscheck

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// A Protocol is the application protocol spoken before the TLS handshake
// starts. The zero value, [Direct], means TLS from the first byte.
type Protocol string

// The protocols with a STARTTLS-style upgrade that tlscheck can negotiate.
const (
	Direct   Protocol = ""         // TLS from the first byte (https, smtps, ldaps…)
	SMTP     Protocol = "smtp"     // EHLO, STARTTLS (RFC 3207); also submission
	IMAP     Protocol = "imap"     // STARTTLS (RFC 2595)
	POP3     Protocol = "pop3"     // STLS (RFC 2595)
	FTP      Protocol = "ftp"      // AUTH TLS (RFC 4217)
	Postgres Protocol = "postgres" // SSLRequest (PostgreSQL frontend/backend protocol)
	MySQL    Protocol = "mysql"    // SSL request packet after the server greeting
	LDAP     Protocol = "ldap"     // StartTLS extended operation (RFC 4511 §4.14)
)

// A scheme maps a URL scheme to its default port and how TLS starts on it.
type scheme struct {
	Name     string
	Port     int
	StartTLS Protocol
}

// schemes is the scheme→default-port table used by [ParseTarget] and for
// guessing the protocol of a discovered listener from its port.
var schemes = []scheme{
	{"https", 443, Direct},
	{"tls", 443, Direct},
	{"smtps", 465, Direct},
	{"imaps", 993, Direct},
	{"pop3s", 995, Direct},
	{"ldaps", 636, Direct},
	{"ftps", 990, Direct},
	{"smtp", 25, SMTP},
	{"submission", 587, SMTP},
	{"imap", 143, IMAP},
	{"pop3", 110, POP3},
	{"ftp", 21, FTP},
	{"postgres", 5432, Postgres},
	{"postgresql", 5432, Postgres},
	{"mysql", 3306, MySQL},
	{"ldap", 389, LDAP},
}

func lookupScheme(name string) (scheme, bool) {
	i := slices.IndexFunc(schemes, func(s scheme) bool { return s.Name == name })
	if i < 0 {
		return scheme{}, false
	}
	return schemes[i], true
}

// Schemes returns the URL schemes [ParseTarget] accepts.
func Schemes() []string {
	var names []string
	for _, s := range schemes {
		names = append(names, s.Name)
	}
	return names
}

// A Target is one TLS endpoint to check.
type Target struct {
	// Host is the name or IP address to dial.
	Host string `json:"host"`
	// Port is the TCP port.
	Port int `json:"port"`
	// StartTLS is the protocol spoken before TLS starts; [Direct] for none.
	StartTLS Protocol `json:"starttls,omitempty"`
	// ServerName is the name sent in SNI and checked against the
	// certificate. Empty means Host (when Host is a name; an IP address is
	// checked against the certificate's IP addresses and not sent as SNI).
	ServerName string `json:"server_name,omitempty"`
	// SkipHostname turns off the hostname check, for discovered listeners
	// whose public name is unknown.
	SkipHostname bool `json:"skip_hostname,omitempty"`
	// Source says where the target came from, such as "discovered: nginx
	// (pid 812)". It is informational.
	Source string `json:"source,omitempty"`
}

// Addr returns "host:port" for dialling.
func (t Target) Addr() string { return net.JoinHostPort(t.Host, strconv.Itoa(t.Port)) }

// String returns the target as findings name it: "host:port" for direct
// TLS and "proto://host:port" for STARTTLS.
func (t Target) String() string {
	if t.StartTLS == Direct {
		return t.Addr()
	}
	return string(t.StartTLS) + "://" + t.Addr()
}

// name returns the name to verify the certificate against.
func (t Target) name() string {
	if t.ServerName != "" {
		return t.ServerName
	}
	return t.Host
}

// sni returns the server name to send, or "" for an IP address.
func (t Target) sni() string {
	n := t.name()
	if _, err := netip.ParseAddr(n); err == nil {
		return ""
	}
	return n
}

// ParseTarget parses "host:port", "[v6]:port", or a URL with a scheme
// from [Schemes] ("https://host", "smtp://host:2525", "ldaps://host").
// A URL without a port gets the scheme's default port. Any path in a URL
// is ignored.
func ParseTarget(s string) (Target, error) {
	if s == "" {
		return Target{}, fmt.Errorf("empty target")
	}
	if i := strings.Index(s, "://"); i >= 0 {
		sc, ok := lookupScheme(strings.ToLower(s[:i]))
		if !ok {
			return Target{}, fmt.Errorf("target %q: unknown scheme %q (known: %s)", s, s[:i], strings.Join(Schemes(), ", "))
		}
		u, err := url.Parse(s)
		if err != nil {
			return Target{}, fmt.Errorf("target %q: %w", s, err)
		}
		host := u.Hostname()
		if host == "" {
			return Target{}, fmt.Errorf("target %q: no host", s)
		}
		port := sc.Port
		if p := u.Port(); p != "" {
			if port, err = parsePort(p); err != nil {
				return Target{}, fmt.Errorf("target %q: %w", s, err)
			}
		}
		return Target{Host: host, Port: port, StartTLS: sc.StartTLS}, nil
	}
	host, p, err := net.SplitHostPort(s)
	if err != nil {
		return Target{}, fmt.Errorf("target %q: want host:port or a URL such as https://host", s)
	}
	if host == "" {
		return Target{}, fmt.Errorf("target %q: no host", s)
	}
	port, err := parsePort(p)
	if err != nil {
		return Target{}, fmt.Errorf("target %q: %w", s, err)
	}
	return Target{Host: host, Port: port}, nil
}

func parsePort(p string) (int, error) {
	n, err := strconv.Atoi(p)
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("invalid port %q", p)
	}
	return n, nil
}
