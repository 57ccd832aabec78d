package tlscheck

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"

	"golang.org/x/crypto/cryptobyte"
)

// A Version is a TLS (or SSL) protocol version number, as on the wire.
type Version uint16

// The protocol versions tlscheck probes.
const (
	SSL30 Version = 0x0300
	TLS10 Version = 0x0301
	TLS11 Version = 0x0302
	TLS12 Version = 0x0303
	TLS13 Version = 0x0304
)

// String returns "SSLv3", "TLS1.0" … "TLS1.3".
func (v Version) String() string {
	switch v {
	case SSL30:
		return "SSLv3"
	case TLS10:
		return "TLS1.0"
	case TLS11:
		return "TLS1.1"
	case TLS12:
		return "TLS1.2"
	case TLS13:
		return "TLS1.3"
	}
	return fmt.Sprintf("0x%04x", uint16(v))
}

// MarshalText implements encoding.TextMarshaler.
func (v Version) MarshalText() ([]byte, error) { return []byte(v.String()), nil }

// A clientHello describes one hand-built ClientHello offer. Scanners such
// as sslscan and testssl.sh enumerate a server's protocols and ciphers
// with such offers and read only the ServerHello: it costs the server
// far less than a full handshake, and it can offer versions and suites Go's
// crypto/tls cannot speak (SSLv3, RC4, export suites).
type clientHello struct {
	version    Version
	suites     []uint16
	serverName string
}

// errRejected means the server refused the offer (an alert, or it closed
// the connection).
var errRejected = errors.New("offer rejected")

// errNotTLS means the server answered with something that is not TLS.
var errNotTLS = errors.New("not a TLS server")

// marshal returns the ClientHello as one TLS record.
func (h clientHello) marshal() ([]byte, error) {
	random := make([]byte, 32)
	rand.Read(random)
	var keyShare []byte
	var sessionID []byte
	if h.version >= TLS13 {
		k, err := ecdh.X25519().GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		keyShare = k.PublicKey().Bytes()
		sessionID = make([]byte, 32)
		rand.Read(sessionID)
	}
	legacy := h.version
	if legacy > TLS12 {
		legacy = TLS12
	}
	recordVersion := TLS10
	if h.version == SSL30 {
		recordVersion = SSL30
	}
	var b cryptobyte.Builder
	b.AddUint8(22) // handshake
	b.AddUint16(uint16(recordVersion))
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
		b.AddUint8(1) // client_hello
		b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) {
			b.AddUint16(uint16(legacy))
			b.AddBytes(random)
			b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(sessionID) })
			b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
				for _, s := range h.suites {
					b.AddUint16(s)
				}
				if h.version < TLS13 {
					b.AddUint16(0x00ff) // TLS_EMPTY_RENEGOTIATION_INFO_SCSV
				}
			})
			b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddUint8(0) }) // null compression
			b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { h.addExtensions(b, keyShare) })
		})
	})
	return b.Bytes()
}

func (h clientHello) addExtensions(b *cryptobyte.Builder, keyShare []byte) {
	ext := func(typ uint16, body func(*cryptobyte.Builder)) {
		b.AddUint16(typ)
		b.AddUint16LengthPrefixed(body)
	}
	if h.serverName != "" {
		ext(0, func(b *cryptobyte.Builder) { // server_name
			b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
				b.AddUint8(0) // host_name
				b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(h.serverName)) })
			})
		})
	}
	ext(10, func(b *cryptobyte.Builder) { // supported_groups
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
			for _, g := range []uint16{29, 23, 24, 25, 30, 256, 257, 258} {
				b.AddUint16(g)
			}
		})
	})
	ext(11, func(b *cryptobyte.Builder) { // ec_point_formats: uncompressed
		b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddUint8(0) })
	})
	if h.version >= TLS12 {
		ext(13, func(b *cryptobyte.Builder) { // signature_algorithms
			b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
				for _, s := range []uint16{0x0403, 0x0503, 0x0603, 0x0807, 0x0808, 0x0804, 0x0805, 0x0806,
					0x0401, 0x0501, 0x0601, 0x0203, 0x0201, 0x0402, 0x0202} {
					b.AddUint16(s)
				}
			})
		})
	}
	ext(23, func(b *cryptobyte.Builder) {}) // extended_master_secret
	if h.version >= TLS13 {
		ext(43, func(b *cryptobyte.Builder) { // supported_versions
			b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddUint16(uint16(TLS13)) })
		})
		ext(45, func(b *cryptobyte.Builder) { // psk_key_exchange_modes: psk_dhe_ke
			b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddUint8(1) })
		})
		ext(51, func(b *cryptobyte.Builder) { // key_share: x25519
			b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
				b.AddUint16(29)
				b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(keyShare) })
			})
		})
	}
}

// A serverHello is what tlscheck reads of a server's answer.
type serverHello struct {
	Version Version
	Suite   uint16
}

// maxHandshake bounds the handshake bytes read while looking for the
// ServerHello.
const maxHandshake = 1 << 16

// readServerHello reads TLS records from r up to the end of the first
// handshake message, which must be a ServerHello. An alert, or the server
// closing the connection, is errRejected.
func readServerHello(r io.Reader) (serverHello, error) {
	var hs []byte
	for {
		var hdr [5]byte
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			if closedByPeer(err) {
				return serverHello{}, errRejected
			}
			return serverHello{}, err
		}
		typ, n := hdr[0], int(hdr[3])<<8|int(hdr[4])
		if (typ != 21 && typ != 22) || hdr[1] != 3 || n == 0 || n > 16384+2048 {
			return serverHello{}, errNotTLS
		}
		body := make([]byte, n)
		if _, err := io.ReadFull(r, body); err != nil {
			if closedByPeer(err) {
				return serverHello{}, errRejected
			}
			return serverHello{}, err
		}
		if typ == 21 {
			return serverHello{}, errRejected
		}
		hs = append(hs, body...)
		if len(hs) < 4 {
			continue
		}
		if hs[0] != 2 {
			return serverHello{}, fmt.Errorf("%w: handshake message %d instead of ServerHello", errNotTLS, hs[0])
		}
		l := int(hs[1])<<16 | int(hs[2])<<8 | int(hs[3])
		if l > maxHandshake {
			return serverHello{}, fmt.Errorf("%w: ServerHello of %d bytes", errNotTLS, l)
		}
		if len(hs) >= 4+l {
			return parseServerHello(hs[4 : 4+l])
		}
	}
}

// parseServerHello parses the body of a ServerHello message.
func parseServerHello(b []byte) (serverHello, error) {
	s := cryptobyte.String(b)
	var sh serverHello
	var v uint16
	var random, sid []byte
	var comp uint8
	if !s.ReadUint16(&v) || !s.ReadBytes(&random, 32) || !s.ReadUint8LengthPrefixed((*cryptobyte.String)(&sid)) ||
		!s.ReadUint16(&sh.Suite) || !s.ReadUint8(&comp) {
		return serverHello{}, fmt.Errorf("%w: malformed ServerHello", errNotTLS)
	}
	sh.Version = Version(v)
	if s.Empty() {
		return sh, nil
	}
	var exts cryptobyte.String
	if !s.ReadUint16LengthPrefixed(&exts) {
		return serverHello{}, fmt.Errorf("%w: malformed ServerHello extensions", errNotTLS)
	}
	for !exts.Empty() {
		var typ uint16
		var body cryptobyte.String
		if !exts.ReadUint16(&typ) || !exts.ReadUint16LengthPrefixed(&body) {
			return serverHello{}, fmt.Errorf("%w: malformed ServerHello extension", errNotTLS)
		}
		if typ == 43 && body.ReadUint16(&v) { // supported_versions
			sh.Version = Version(v)
		}
	}
	return sh, nil
}

func closedByPeer(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// offer sends h to t and reports whether the server accepted it: it
// answered with a ServerHello for exactly h.version and one of h.suites.
// A refusal is (false, nil); an error means the offer could not be made
// or the answer could not be read.
func offer(ctx context.Context, t Target, timeout time.Duration, h clientHello) (serverHello, bool, error) {
	msg, err := h.marshal()
	if err != nil {
		return serverHello{}, false, err
	}
	var sh serverHello
	err = withConn(ctx, t, timeout, func(c net.Conn) error {
		if _, err := c.Write(msg); err != nil {
			if closedByPeer(err) {
				return errRejected
			}
			return err
		}
		sh, err = readServerHello(c)
		return err
	})
	switch {
	case errors.Is(err, errRejected):
		return serverHello{}, false, nil
	case err != nil:
		return serverHello{}, false, err
	}
	ok := sh.Version == h.version
	if ok && h.version < TLS13 {
		ok = false
		for _, s := range h.suites {
			ok = ok || s == sh.Suite
		}
	}
	return sh, ok, nil
}
