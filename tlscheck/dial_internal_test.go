package tlscheck

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

// scriptConn is a net.Conn whose reads come from what a server sends and
// whose writes are kept, for testing the STARTTLS dialogues without a
// server (the real servers are in services_test.go).
type scriptConn struct {
	r       io.Reader
	written bytes.Buffer
}

func newScriptConn(server []byte) *scriptConn { return &scriptConn{r: bytes.NewReader(server)} }

func (c *scriptConn) Read(b []byte) (int, error)       { return c.r.Read(b) }
func (c *scriptConn) Write(b []byte) (int, error)      { return c.written.Write(b) }
func (c *scriptConn) Close() error                     { return nil }
func (c *scriptConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *scriptConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *scriptConn) SetDeadline(time.Time) error      { return nil }
func (c *scriptConn) SetReadDeadline(time.Time) error  { return nil }
func (c *scriptConn) SetWriteDeadline(time.Time) error { return nil }

// lines is what a line-based server sends.
func lines(l ...string) []byte { return []byte(strings.Join(l, "\r\n") + "\r\n") }

func mysqlPacket(seq byte, body []byte) []byte {
	return append([]byte{byte(len(body)), byte(len(body) >> 8), 0, seq}, body...)
}

// mysqlGreeting is a MariaDB 10.11 server greeting with the given lower
// capability flags.
func mysqlGreeting(caps uint16) []byte {
	b := []byte{10}
	b = append(b, "10.11.19-MariaDB-0+deb12u1\x00"...)
	b = append(b, 5, 0, 0, 0)        // connection id
	b = append(b, "abcdefgh\x00"...) // auth data 1, filler
	b = binary.LittleEndian.AppendUint16(b, caps)
	b = append(b, 0x21, 2, 0, 0xff, 0x81) // charset, status, capabilities (upper)
	b = append(b, 21, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
	b = append(b, "ijklmnopqrst\x00mysql_native_password\x00"...)
	return mysqlPacket(0, b)
}

// ldapResponse is an ExtendedResponse to message 1 with resultCode code.
func ldapResponse(code byte) []byte {
	return []byte{0x30, 0x0c, 0x02, 0x01, 0x01, 0x78, 0x07, 0x0a, 0x01, code, 0x04, 0x00, 0x04, 0x00}
}

var dialogues = []struct {
	name   string
	proto  Protocol
	server []byte
	want   error // nil, ErrStartTLSNotOffered, or errOther
	sent   string
}{
	{"smtp", SMTP, lines("220 mail.test ESMTP Postfix", "250-mail.test", "250-PIPELINING", "250-STARTTLS", "250 8BITMIME", "220 2.0.0 Ready to start TLS"), nil, "EHLO nhscrypt.invalid\r\nSTARTTLS\r\n"},
	{"smtp multi-line greeting", SMTP, lines("220-mail.test ESMTP", "220 welcome", "250-mail.test", "250 STARTTLS", "220 go ahead"), nil, ""},
	{"smtp without STARTTLS", SMTP, lines("220 mail.test ESMTP Postfix", "250-mail.test", "250 8BITMIME"), ErrStartTLSNotOffered, "EHLO nhscrypt.invalid\r\n"},
	{"smtp STARTTLS refused", SMTP, lines("220 mail.test ESMTP", "250 STARTTLS", "454 4.7.0 TLS not available"), ErrStartTLSNotOffered, ""},
	{"smtp rejects the client", SMTP, lines("554 5.7.1 go away"), errOther, ""},
	{"smtp data after ready", SMTP, lines("220 a", "250 STARTTLS", "220 ready", "junk"), errOther, ""},
	{"imap", IMAP, lines("* OK [CAPABILITY IMAP4rev1 STARTTLS] ready", "N1 OK Begin TLS negotiation now."), nil, "N1 STARTTLS\r\n"},
	{"imap untagged first", IMAP, lines("* OK ready", "* CAPABILITY IMAP4rev1 STARTTLS", "N1 OK go"), nil, ""},
	{"imap without STARTTLS", IMAP, lines("* OK ready", "N1 BAD Unknown command"), ErrStartTLSNotOffered, ""},
	{"imap bad greeting", IMAP, lines("* BYE too many connections"), errOther, ""},
	{"pop3", POP3, lines("+OK Dovecot ready.", "+OK Begin TLS negotiation now."), nil, "STLS\r\n"},
	{"pop3 without STLS", POP3, lines("+OK ready", "-ERR Unknown command: STLS"), ErrStartTLSNotOffered, ""},
	{"ftp", FTP, lines("220 (vsFTPd 3.0.3)", "234 Proceed with negotiation."), nil, "AUTH TLS\r\n"},
	{"ftp multi-line greeting", FTP, lines("220-Welcome", "220 ProFTPD", "234 AUTH TLS successful"), nil, ""},
	{"ftp without TLS", FTP, lines("220 (vsFTPd 3.0.3)", "530 Please login with USER and PASS."), ErrStartTLSNotOffered, ""},
	{"postgres", Postgres, []byte("S"), nil, string(postgresSSLRequest)},
	{"postgres without ssl", Postgres, []byte("N"), ErrStartTLSNotOffered, ""},
	{"postgres error", Postgres, []byte("E\x00\x00\x00\x10"), errOther, ""},
	{"postgres closed", Postgres, nil, errOther, ""},
	{"mysql", MySQL, mysqlGreeting(0xfffe), nil, ""},
	{"mysql without ssl", MySQL, mysqlGreeting(0xfffe &^ mysqlClientSSL), ErrStartTLSNotOffered, ""},
	{"mysql refuses the host", MySQL, mysqlPacket(0, append([]byte{0xff, 0x6a, 0x04}, "Host '10.0.0.1' is blocked"...)), errOther, ""},
	{"mysql old protocol", MySQL, mysqlPacket(0, []byte{9, '3', 0}), errOther, ""},
	{"mysql short greeting", MySQL, mysqlPacket(0, []byte{10, '5', 0, 1, 2}), errOther, ""},
	{"mysql empty packet", MySQL, mysqlPacket(0, nil), errOther, ""},
	{"ldap", LDAP, ldapResponse(0), nil, string(ldapStartTLSRequest)},
	{"ldap StartTLS unavailable", LDAP, ldapResponse(52), ErrStartTLSNotOffered, ""},
	{"ldap not a response", LDAP, []byte{0x04, 0x01, 0x00}, errOther, ""},
	{"ldap indefinite length", LDAP, []byte{0x30, 0x80}, errOther, ""},
}

var errOther = errors.New("any other error")

// The STARTTLS dialogues, against scripted servers: success, the
// upgrade refused (TLS-STARTTLS-MISSING) and other failures (the target
// could not be checked) are told apart.
func TestStartTLSDialogues(t *testing.T) {
	for _, d := range dialogues {
		t.Run(d.name, func(t *testing.T) {
			c := newScriptConn(d.server)
			err := startTLS(c, d.proto)
			switch d.want {
			case nil:
				if err != nil {
					t.Fatalf("err = %v", err)
				}
			case errOther:
				if err == nil || errors.Is(err, ErrStartTLSNotOffered) {
					t.Fatalf("err = %v, want an error other than ErrStartTLSNotOffered", err)
				}
			default:
				if !errors.Is(err, d.want) {
					t.Fatalf("err = %v, want %v", err, d.want)
				}
			}
			if d.sent != "" && c.written.String() != d.sent {
				t.Errorf("sent %q, want %q", c.written.String(), d.sent)
			}
		})
	}
	// The MySQL SSL request: 32 bytes, sequence 1, with CLIENT_SSL.
	c := newScriptConn(mysqlGreeting(0xffff))
	if err := startTLS(c, MySQL); err != nil {
		t.Fatal(err)
	}
	w := c.written.Bytes()
	if len(w) != 36 || w[0] != 32 || w[3] != 1 || binary.LittleEndian.Uint32(w[4:])&mysqlClientSSL == 0 {
		t.Errorf("MySQL SSL request % x", w)
	}
}

// A server that talks forever before TLS is cut off at maxPreTLS bytes.
func TestStartTLSBounded(t *testing.T) {
	endless := io.MultiReader(strings.NewReader("220-x\r\n"), &repeatReader{line: []byte("220-and more\r\n")})
	c := &scriptConn{r: endless}
	if err := startTLS(c, SMTP); err == nil {
		t.Fatal("endless greeting accepted")
	}
}

type repeatReader struct {
	line []byte
	n    int
}

func (r *repeatReader) Read(b []byte) (int, error) {
	if r.n > 4*maxPreTLS {
		return 0, errors.New("read past the limit")
	}
	n := copy(b, r.line)
	r.n += n
	return n, nil
}

// Whatever a server sends before TLS, the dialogues return (no panic, no
// endless read), and succeed only when the server said yes.
func FuzzStartTLS(f *testing.F) {
	protos := []Protocol{SMTP, IMAP, POP3, FTP, Postgres, MySQL, LDAP}
	for _, d := range dialogues {
		f.Add(byte(slices.Index(protos, d.proto)), d.server)
	}
	f.Fuzz(func(t *testing.T, p byte, server []byte) {
		proto := protos[int(p)%len(protos)]
		err := startTLS(newScriptConn(server), proto)
		if err == nil && len(server) == 0 {
			t.Fatalf("%s: success with no answer from the server", proto)
		}
	})
}

// readServerHello never panics, and accepts only a handshake record.
func FuzzReadServerHello(f *testing.F) {
	sh := []byte{22, 3, 3, 0, 42, 2, 0, 0, 38, 3, 3}
	sh = append(sh, make([]byte, 32)...)
	sh = append(sh, 0, 0xc0, 0x2f, 0)
	f.Add(sh)
	f.Add([]byte{21, 3, 3, 0, 2, 2, 40})
	f.Add([]byte("HTTP/1.1 400 Bad Request\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := readServerHello(bytes.NewReader(b))
		if err == nil && (len(b) < 5 || b[0] != 22) {
			t.Fatalf("accepted %v from a non-handshake record", got)
		}
	})
}
