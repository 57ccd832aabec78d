package tlscheck

import (
	"bufio"
	"cmp"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// A Listener is a TCP socket in the LISTEN state.
type Listener struct {
	Addr  netip.AddrPort `json:"addr"`
	UID   int            `json:"uid"`
	Inode uint64         `json:"inode"`
	// PID and Process name the owning process, when /proc/PID/fd is
	// readable (as root); 0 and "" otherwise.
	PID     int    `json:"pid,omitempty"`
	Process string `json:"process,omitempty"`
}

const tcpListen = 0x0A

// maxProcNetLines bounds the lines read from one /proc/net/tcp file.
const maxProcNetLines = 1 << 20

// ParseProcNetTCP parses the contents of /proc/net/tcp or /proc/net/tcp6
// and returns the sockets in the LISTEN state. The header line is
// skipped; a malformed line is an error naming its number.
func ParseProcNetTCP(r io.Reader) ([]Listener, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 512), 4096)
	var out []Listener
	for n := 1; sc.Scan(); n++ {
		if n > maxProcNetLines {
			return nil, errors.New("too many lines")
		}
		f := strings.Fields(sc.Text())
		if n == 1 && len(f) > 0 && f[0] == "sl" {
			continue
		}
		if len(f) == 0 {
			continue
		}
		if len(f) < 10 {
			return nil, fmt.Errorf("line %d: %d fields, want at least 10", n, len(f))
		}
		st, err := strconv.ParseUint(f[3], 16, 8)
		if err != nil {
			return nil, fmt.Errorf("line %d: bad state %q", n, f[3])
		}
		if st != tcpListen {
			continue
		}
		ap, err := parseHexAddrPort(f[1])
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		uid, err := strconv.Atoi(f[7])
		if err != nil || uid < 0 {
			return nil, fmt.Errorf("line %d: bad uid %q", n, f[7])
		}
		inode, err := strconv.ParseUint(f[9], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("line %d: bad inode %q", n, f[9])
		}
		out = append(out, Listener{Addr: ap, UID: uid, Inode: inode})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// parseHexAddrPort parses "0100007F:1F90" (IPv4) or a 32-digit IPv6
// address and a port, as the kernel prints them: the address as 32-bit
// words in host byte order (little-endian here), the port big-endian.
func parseHexAddrPort(s string) (netip.AddrPort, error) {
	a, p, ok := strings.Cut(s, ":")
	if !ok || len(p) != 4 {
		return netip.AddrPort{}, fmt.Errorf("bad address %q", s)
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("bad port in %q", s)
	}
	raw, err := hex.DecodeString(a)
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return netip.AddrPort{}, fmt.Errorf("bad address %q", s)
	}
	b := make([]byte, len(raw))
	for i := 0; i < len(raw); i += 4 {
		binary.LittleEndian.PutUint32(b[i:], binary.BigEndian.Uint32(raw[i:]))
	}
	addr, _ := netip.AddrFromSlice(b)
	return netip.AddrPortFrom(addr.Unmap(), uint16(port)), nil
}

// Listeners returns the TCP listeners in procRoot/net/tcp and tcp6
// (procRoot is normally "/proc"), with their owning processes where
// procRoot/PID/fd can be read.
func Listeners(procRoot string) ([]Listener, error) {
	var all []Listener
	found := false
	for _, name := range []string{"tcp", "tcp6"} {
		f, err := os.Open(filepath.Join(procRoot, "net", name))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		ls, err := ParseProcNetTCP(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f.Name(), err)
		}
		found = true
		all = append(all, ls...)
	}
	if !found {
		return nil, fmt.Errorf("%s: no net/tcp or net/tcp6: %w", procRoot, fs.ErrNotExist)
	}
	owners := socketOwners(procRoot)
	for i := range all {
		if pid, ok := owners[all[i].Inode]; ok {
			all[i].PID = pid
			comm, _ := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "comm"))
			all[i].Process = strings.TrimSpace(string(comm))
		}
	}
	return all, nil
}

// socketOwners maps socket inodes to the PID of a process holding them,
// from the procRoot/PID/fd/N -> "socket:[INODE]" links it can read.
func socketOwners(procRoot string) map[uint64]int {
	m := map[uint64]int{}
	ents, _ := os.ReadDir(procRoot)
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 {
			continue
		}
		fdDir := filepath.Join(procRoot, e.Name(), "fd")
		fds, err := os.ReadDir(fdDir)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			l, err := os.Readlink(filepath.Join(fdDir, fd.Name()))
			if err != nil {
				continue
			}
			s, ok := strings.CutPrefix(l, "socket:[")
			if !ok {
				continue
			}
			if ino, err := strconv.ParseUint(strings.TrimSuffix(s, "]"), 10, 64); err == nil {
				if _, seen := m[ino]; !seen {
					m[ino] = pid
				}
			}
		}
	}
	return m
}

// processProtocols maps a process name to the protocol it speaks.
var processProtocols = map[string]Protocol{
	"master": SMTP, "smtpd": SMTP, "exim4": SMTP, "exim": SMTP, "sendmail": SMTP,
	"postgres": Postgres, "postmaster": Postgres,
	"mysqld": MySQL, "mariadbd": MySQL,
	"slapd":  LDAP,
	"vsftpd": FTP, "proftpd": FTP, "pure-ftpd": FTP,
}

// directPorts are ports where TLS starts at once.
var directPorts = map[int]bool{443: true, 465: true, 636: true, 853: true, 990: true, 993: true, 995: true, 8443: true}

// A Skipped listener is one discovery did not turn into a target.
type Skipped struct {
	Listener Listener `json:"listener"`
	Reason   string   `json:"reason"`
	// Plaintext is true when the listener answered, and neither with TLS
	// nor with a greeting that offers STARTTLS (HTTP, SSH…). When false,
	// the probe failed (refused, timed out) and the listener may well be a
	// TLS service that was not checked.
	Plaintext bool `json:"plaintext,omitempty"`
}

// Discover finds the local TCP listeners (see [Listeners]) and returns
// those that speak TLS, directly or after STARTTLS, as targets. The
// protocol is taken from the port (the scheme table) or the process name
// where they tell it, and otherwise from a short probe: a server that
// greets first (SMTP, FTP, IMAP, POP3) is asked for STARTTLS, one that
// answers a ClientHello with TLS is a TLS endpoint, anything else is
// plaintext and skipped. Discovered targets skip the hostname check: the
// name clients use is not known.
func Discover(ctx context.Context, procRoot string, opts Options) ([]Target, []Skipped, error) {
	ls, err := Listeners(procRoot)
	if err != nil {
		return nil, nil, err
	}
	// One target per port and process: a daemon listening on 0.0.0.0 and
	// :: is checked once.
	type key struct {
		port int
		pid  int
		host string
	}
	seen := map[key]bool{}
	var uniq []Listener
	for _, l := range ls {
		k := key{int(l.Addr.Port()), l.PID, dialHost(l.Addr.Addr())}
		if isLocal(l.Addr.Addr()) {
			k.host = "local"
		}
		if seen[k] {
			continue
		}
		seen[k] = true
		uniq = append(uniq, l)
	}
	targets := make([]*Target, len(uniq))
	skipped := make([]Skipped, len(uniq))
	var wg sync.WaitGroup
	sem := make(chan struct{}, opts.workers())
	for i, l := range uniq {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			targets[i], skipped[i] = classify(ctx, l, opts.timeout())
		}()
	}
	wg.Wait()
	var out []Target
	var skips []Skipped
	for i := range uniq {
		if targets[i] != nil {
			out = append(out, *targets[i])
		} else {
			skips = append(skips, skipped[i])
		}
	}
	slices.SortFunc(out, func(a, b Target) int { return cmp.Or(a.Port-b.Port, strings.Compare(a.Host, b.Host)) })
	return out, skips, ctx.Err()
}

func isLocal(a netip.Addr) bool { return a.IsUnspecified() || a.IsLoopback() }

// dialHost returns the address to dial for a listener bound to a.
func dialHost(a netip.Addr) string {
	switch {
	case a.IsUnspecified() && a.Is4():
		return "127.0.0.1"
	case a.IsUnspecified():
		return "::1"
	}
	return a.String()
}

// classify decides what l speaks. It returns nil and why for a listener
// that is not checked.
func classify(ctx context.Context, l Listener, timeout time.Duration) (*Target, Skipped) {
	t := &Target{Host: dialHost(l.Addr.Addr()), Port: int(l.Addr.Port()), SkipHostname: true, Source: "discovered"}
	if l.Process != "" {
		t.Source = fmt.Sprintf("discovered: %s (pid %d)", l.Process, l.PID)
	}
	if directPorts[t.Port] {
		return t, Skipped{}
	}
	if p, ok := processProtocols[l.Process]; ok {
		t.StartTLS = p
		return t, Skipped{}
	}
	if l.Process == "" || strings.Contains(l.Process, "dovecot") || strings.HasSuffix(l.Process, "-login") {
		for _, s := range schemes {
			if s.Port == t.Port && s.StartTLS != Direct {
				t.StartTLS = s.StartTLS
				return t, Skipped{}
			}
		}
	}
	p, err := sniff(ctx, *t, min(timeout, 2*time.Second))
	if err != nil {
		return nil, Skipped{Listener: l, Reason: err.Error()}
	}
	if p == "plaintext" {
		return nil, Skipped{Listener: l, Reason: "plaintext: no TLS and no STARTTLS greeting", Plaintext: true}
	}
	t.StartTLS = Protocol(p)
	return t, Skipped{}
}

// sniff tells what an unknown port speaks: a greeting within a moment
// (SMTP, FTP, IMAP, POP3), or an answer to a ClientHello (TLS).
func sniff(ctx context.Context, t Target, timeout time.Duration) (string, error) {
	greeting := ""
	err := withConn(ctx, t, timeout, func(c net.Conn) error {
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		b := make([]byte, 512)
		n, err := c.Read(b)
		if n > 0 {
			greeting = string(b[:n])
			return nil
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil
		}
		return err
	})
	if err != nil {
		return "", err
	}
	if greeting != "" {
		return greetingProtocol(greeting), nil
	}
	msg, err := clientHello{version: TLS12, suites: allSuiteIDs()}.marshal()
	if err != nil {
		return "", err
	}
	isTLS := false
	err = withConn(ctx, t, timeout, func(c net.Conn) error {
		if _, err := c.Write(msg); err != nil {
			return err
		}
		var hdr [5]byte
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			if closedByPeer(err) {
				return nil
			}
			return err
		}
		isTLS = (hdr[0] == 21 || hdr[0] == 22) && hdr[1] == 3
		return nil
	})
	switch {
	case err != nil:
		return "", err
	case isTLS:
		return string(Direct), nil
	}
	return "plaintext", nil
}

// greetingProtocol tells the protocol of a server that spoke first from
// its greeting, or returns "plaintext".
func greetingProtocol(greeting string) string {
	g := strings.ToUpper(greeting)
	switch {
	// An SMTP banner says (E)SMTP by custom, whatever the host is called
	// ("220 ftp.example.org ESMTP Postfix"); an FTP banner does not.
	case strings.HasPrefix(g, "220") && strings.Contains(g, "SMTP"):
		return string(SMTP)
	case strings.HasPrefix(g, "220") && strings.Contains(g, "FTP"):
		return string(FTP)
	case strings.HasPrefix(g, "220"):
		return string(SMTP)
	case strings.HasPrefix(g, "* OK"), strings.HasPrefix(g, "* PREAUTH"):
		return string(IMAP)
	case strings.HasPrefix(g, "+OK"):
		return string(POP3)
	case isMySQLGreeting([]byte(greeting)):
		return string(MySQL)
	}
	return "plaintext"
}

// isMySQLGreeting reports whether b starts like the first packet of a
// MySQL or MariaDB server: a 3-byte little-endian length, sequence 0, and
// protocol version 10 followed by a printable version string.
func isMySQLGreeting(b []byte) bool {
	if len(b) < 6 || b[3] != 0 || b[4] != 10 {
		return false
	}
	n := int(b[0]) | int(b[1])<<8 | int(b[2])<<16
	return n >= 2 && n < maxPreTLS/2 && b[5] >= '0' && b[5] <= '9'
}
