package tlscheck

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"os"
	"strings"
	"time"
)

// ErrStartTLSNotOffered is returned (wrapped) when a STARTTLS service
// answers but does not offer the upgrade. The endpoint checks turn it into
// the finding TLS-STARTTLS-MISSING.
var ErrStartTLSNotOffered = errors.New("STARTTLS not offered")

// ErrTimeout is returned (wrapped) when a connection to an endpoint does
// not finish within the timeout.
var ErrTimeout = errors.New("timed out")

// maxPreTLS bounds what a server may send before TLS starts.
const maxPreTLS = 64 << 10

// withConn dials t, negotiates STARTTLS if t needs it, and calls fn with
// the connection ready for a ClientHello. The whole exchange, fn
// included, must finish within timeout; cancelling ctx ends it at once.
func withConn(parent context.Context, t Target, timeout time.Duration, fn func(net.Conn) error) error {
	ctx, cancel := context.WithTimeout(parent, timeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", t.Addr())
	if err != nil {
		if parent.Err() != nil {
			return parent.Err()
		}
		if dl, ok := parent.Deadline(); ok && !time.Now().Before(dl) {
			return context.DeadlineExceeded
		}
		if ctx.Err() != nil || errors.Is(err, os.ErrDeadlineExceeded) {
			return fmt.Errorf("%w after %v connecting", ErrTimeout, timeout)
		}
		return err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	// A cancelled or expired ctx unblocks any read or write at once.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	err = startTLS(conn, t.StartTLS)
	if err == nil {
		err = fn(conn)
	}
	pdl, pHasDL := parent.Deadline()
	switch {
	case err == nil:
	case parent.Err() != nil:
		return parent.Err()
	case pHasDL && !time.Now().Before(pdl):
		// The connection's deadline (the parent's) fired just before the
		// parent's own timer.
		return context.DeadlineExceeded
	case ctx.Err() != nil, errors.Is(err, os.ErrDeadlineExceeded):
		// The connection's deadline is ctx's: it may fire a moment
		// before ctx's own timer does.
		return fmt.Errorf("%w after %v", ErrTimeout, timeout)
	}
	return err
}

// startTLS speaks protocol p on conn up to the point where the next byte
// the server expects is a TLS ClientHello.
func startTLS(conn net.Conn, p Protocol) error {
	if p == Direct {
		return nil
	}
	lr := &io.LimitedReader{R: conn, N: maxPreTLS}
	br := bufio.NewReader(lr)
	var err error
	switch p {
	case SMTP:
		err = smtpStartTLS(conn, br)
	case IMAP:
		err = imapStartTLS(conn, br)
	case POP3:
		err = pop3StartTLS(conn, br)
	case FTP:
		err = ftpStartTLS(conn, br)
	case Postgres:
		err = postgresStartTLS(conn, br)
	case MySQL:
		err = mysqlStartTLS(conn, br)
	case LDAP:
		err = ldapStartTLS(conn, br)
	default:
		return fmt.Errorf("unknown STARTTLS protocol %q", p)
	}
	if err != nil {
		return fmt.Errorf("%s STARTTLS: %w", p, err)
	}
	if br.Buffered() > 0 {
		return fmt.Errorf("%s STARTTLS: server sent unexpected data before the TLS handshake", p)
	}
	return nil
}

func writeLine(w io.Writer, s string) error {
	_, err := io.WriteString(w, s+"\r\n")
	return err
}

func smtpStartTLS(conn net.Conn, br *bufio.Reader) error {
	tp := textproto.NewReader(br)
	if _, _, err := tp.ReadResponse(220); err != nil {
		return fmt.Errorf("greeting: %w", err)
	}
	if err := writeLine(conn, "EHLO nhscrypt.invalid"); err != nil {
		return err
	}
	_, msg, err := tp.ReadResponse(250)
	if err != nil {
		return fmt.Errorf("EHLO: %w", err)
	}
	offered := false
	for _, l := range strings.Split(msg, "\n") {
		if strings.EqualFold(strings.TrimSpace(l), "STARTTLS") {
			offered = true
		}
	}
	if !offered {
		return ErrStartTLSNotOffered
	}
	if err := writeLine(conn, "STARTTLS"); err != nil {
		return err
	}
	if code, msg, err := tp.ReadResponse(220); err != nil {
		return fmt.Errorf("%w: %d %s", ErrStartTLSNotOffered, code, msg)
	}
	return nil
}

func imapStartTLS(conn net.Conn, br *bufio.Reader) error {
	tp := textproto.NewReader(br)
	l, err := tp.ReadLine()
	if err != nil {
		return fmt.Errorf("greeting: %w", err)
	}
	if !strings.HasPrefix(l, "* OK") && !strings.HasPrefix(l, "* PREAUTH") {
		return fmt.Errorf("unexpected greeting %q", truncate(l))
	}
	if err := writeLine(conn, "N1 STARTTLS"); err != nil {
		return err
	}
	for range 100 {
		l, err := tp.ReadLine()
		if err != nil {
			return err
		}
		if rest, ok := strings.CutPrefix(l, "N1 "); ok {
			if strings.HasPrefix(strings.ToUpper(rest), "OK") {
				return nil
			}
			return fmt.Errorf("%w: %s", ErrStartTLSNotOffered, truncate(rest))
		}
	}
	return errors.New("no tagged response to STARTTLS")
}

func pop3StartTLS(conn net.Conn, br *bufio.Reader) error {
	tp := textproto.NewReader(br)
	l, err := tp.ReadLine()
	if err != nil {
		return fmt.Errorf("greeting: %w", err)
	}
	if !strings.HasPrefix(l, "+OK") {
		return fmt.Errorf("unexpected greeting %q", truncate(l))
	}
	if err := writeLine(conn, "STLS"); err != nil {
		return err
	}
	if l, err = tp.ReadLine(); err != nil {
		return err
	}
	if !strings.HasPrefix(l, "+OK") {
		return fmt.Errorf("%w: %s", ErrStartTLSNotOffered, truncate(l))
	}
	return nil
}

func ftpStartTLS(conn net.Conn, br *bufio.Reader) error {
	tp := textproto.NewReader(br)
	if _, _, err := tp.ReadResponse(220); err != nil {
		return fmt.Errorf("greeting: %w", err)
	}
	if err := writeLine(conn, "AUTH TLS"); err != nil {
		return err
	}
	if code, msg, err := tp.ReadResponse(234); err != nil {
		return fmt.Errorf("%w: %d %s", ErrStartTLSNotOffered, code, truncate(msg))
	}
	return nil
}

// postgresSSLRequest is the SSLRequest message: length 8, code 80877103.
var postgresSSLRequest = []byte{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f}

func postgresStartTLS(conn net.Conn, br *bufio.Reader) error {
	if _, err := conn.Write(postgresSSLRequest); err != nil {
		return err
	}
	b, err := br.ReadByte()
	if err != nil {
		return err
	}
	switch b {
	case 'S':
		return nil
	case 'N':
		return ErrStartTLSNotOffered
	}
	return fmt.Errorf("unexpected answer %q to SSLRequest", b)
}

// MySQL capability flags (client/server protocol).
const (
	mysqlClientLongPassword     = 0x00000001
	mysqlClientProtocol41       = 0x00000200
	mysqlClientSSL              = 0x00000800
	mysqlClientSecureConnection = 0x00008000
)

func mysqlStartTLS(conn net.Conn, br *bufio.Reader) error {
	var hdr [4]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return fmt.Errorf("greeting: %w", err)
	}
	n := int(hdr[0]) | int(hdr[1])<<8 | int(hdr[2])<<16
	if n < 1 || n > maxPreTLS/2 {
		return fmt.Errorf("greeting: bad packet length %d", n)
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(br, p); err != nil {
		return fmt.Errorf("greeting: %w", err)
	}
	if p[0] == 0xff {
		return fmt.Errorf("server refused the connection: %q", truncate(string(p[min(len(p), 3):])))
	}
	if p[0] != 10 {
		return fmt.Errorf("unsupported protocol version %d", p[0])
	}
	i := 1
	for i < len(p) && p[i] != 0 {
		i++
	}
	i += 1 + 4 + 8 + 1 // NUL, connection id, auth data part 1, filler
	if i+2 > len(p) {
		return errors.New("greeting too short")
	}
	caps := uint32(binary.LittleEndian.Uint16(p[i:]))
	if caps&mysqlClientSSL == 0 {
		return ErrStartTLSNotOffered
	}
	req := make([]byte, 4+32)
	req[0], req[3] = 32, 1 // length 32, sequence 1
	binary.LittleEndian.PutUint32(req[4:], mysqlClientLongPassword|mysqlClientProtocol41|mysqlClientSSL|mysqlClientSecureConnection)
	binary.LittleEndian.PutUint32(req[8:], 1<<24)
	req[12] = 0x21 // utf8_general_ci
	_, err := conn.Write(req)
	return err
}

// ldapStartTLSRequest is an LDAPMessage with message ID 1 holding an
// ExtendedRequest for the StartTLS OID 1.3.6.1.4.1.1466.20037.
var ldapStartTLSRequest = append([]byte{0x30, 0x1d, 0x02, 0x01, 0x01, 0x77, 0x18, 0x80, 0x16},
	"1.3.6.1.4.1.1466.20037"...)

func ldapStartTLS(conn net.Conn, br *bufio.Reader) error {
	if _, err := conn.Write(ldapStartTLSRequest); err != nil {
		return err
	}
	tag, msg, err := readBER(br)
	if err != nil {
		return err
	}
	if tag != 0x30 {
		return fmt.Errorf("unexpected LDAP response tag %#x", tag)
	}
	code, err := ldapResultCode(msg)
	if err != nil {
		return err
	}
	if code != 0 {
		return fmt.Errorf("%w: LDAP result code %d", ErrStartTLSNotOffered, code)
	}
	return nil
}

// readBER reads one BER TLV with a single-byte tag and a definite length.
func readBER(r io.ByteReader) (tag byte, value []byte, err error) {
	if tag, err = r.ReadByte(); err != nil {
		return 0, nil, err
	}
	l, err := r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n := int(l)
	if l&0x80 != 0 {
		k := int(l & 0x7f)
		if k == 0 || k > 3 {
			return 0, nil, fmt.Errorf("unsupported BER length form %#x", l)
		}
		n = 0
		for range k {
			b, err := r.ReadByte()
			if err != nil {
				return 0, nil, err
			}
			n = n<<8 | int(b)
		}
	}
	if n > maxPreTLS/2 {
		return 0, nil, fmt.Errorf("BER value too long (%d bytes)", n)
	}
	value = make([]byte, n)
	for i := range value {
		if value[i], err = r.ReadByte(); err != nil {
			return 0, nil, err
		}
	}
	return tag, value, nil
}

// ldapResultCode returns the resultCode of the ExtendedResponse in the
// contents of an LDAPMessage.
func ldapResultCode(msg []byte) (int, error) {
	br := bytesReader(msg)
	if tag, _, err := readBER(br); err != nil || tag != 0x02 {
		return 0, fmt.Errorf("bad LDAP message ID")
	}
	tag, op, err := readBER(br)
	if err != nil || tag != 0x78 {
		return 0, fmt.Errorf("LDAP response is not an ExtendedResponse (tag %#x)", tag)
	}
	tag, code, err := readBER(bytesReader(op))
	if err != nil || tag != 0x0a || len(code) != 1 {
		return 0, fmt.Errorf("bad LDAP resultCode")
	}
	return int(code[0]), nil
}

type byteSliceReader struct{ b []byte }

func bytesReader(b []byte) *byteSliceReader { return &byteSliceReader{b} }

func (r *byteSliceReader) ReadByte() (byte, error) {
	if len(r.b) == 0 {
		return 0, io.ErrUnexpectedEOF
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c, nil
}

func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}
