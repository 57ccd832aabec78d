package sftp_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nhscrypt/nhscrypt/backup"
	"github.com/nhscrypt/nhscrypt/backup/sftp"
	"github.com/nhscrypt/nhscrypt/backup/sftp/sftptest"
)

// BenchmarkSave uploads 16 objects of 8 MiB, 4 at a time, straight to
// sshd and through a proxy adding 10 ms each way (a distant server), over
// one SFTP session or one per concurrent upload (the default).
func BenchmarkSave(b *testing.B) {
	b.Setenv("SSH_AUTH_SOCK", "")
	srv := sftptest.Start(b)
	objs := make([][]byte, 16)
	for i := range objs {
		objs[i] = randomData(8 << 20)
	}
	for _, delay := range []time.Duration{0, 10 * time.Millisecond} {
		addr := srv.Addr()
		known := srv.KnownHostsFile
		if delay > 0 {
			addr = latencyProxy(b, srv.Addr(), delay)
			pub, _ := os.ReadFile(srv.HostKeyFile + ".pub")
			f := strings.Fields(string(pub))
			known = filepath.Join(b.TempDir(), "known_hosts")
			os.WriteFile(known, []byte("["+strings.Replace(addr, ":", "]:", 1)+" "+f[0]+" "+f[1]+"\n"), 0o600)
		}
		for _, sess := range []int{1, 0} {
			b.Run(fmt.Sprintf("delay=%v/sessions=%d", delay, sess), func(b *testing.B) {
				defer sftp.SetSessions(0)
				sftp.SetSessions(sess)
				b.SetBytes(16 * 8 << 20)
				for range b.N {
					dir := filepath.Join(b.TempDir(), "repo")
					os.MkdirAll(dir, 0o700)
					opts := srv.Options()
					opts.KnownHostsFile = known
					u := &url.URL{Scheme: "sftp", User: url.User(srv.User), Host: addr, Path: dir}
					be, err := sftp.Open(context.Background(), u, opts)
					if err != nil {
						b.Fatal(err)
					}
					be.Create(context.Background())
					var wg sync.WaitGroup
					for _, d := range objs {
						wg.Add(1)
						go func() {
							defer wg.Done()
							h := backup.Handle{Type: backup.DataFile, Name: hashName(d)}
							if err := be.Save(context.Background(), h, int64(len(d)), bytes.NewReader(d)); err != nil {
								b.Error(err)
							}
						}()
					}
					wg.Wait()
					be.Close()
					os.RemoveAll(dir)
				}
			})
		}
	}
}

// latencyProxy forwards connections to addr, delaying every chunk by d in
// each direction.
func latencyProxy(b *testing.B, addr string, d time.Duration) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", addr)
			if err != nil {
				c.Close()
				continue
			}
			go delayed(c, s, d)
			go delayed(s, c, d)
		}
	}()
	return l.Addr().String()
}

func delayed(dst, src net.Conn, d time.Duration) {
	type chunk struct {
		at   time.Time
		data []byte
	}
	ch := make(chan chunk, 4096)
	go func() {
		defer close(ch)
		for {
			buf := make([]byte, 64<<10)
			n, err := src.Read(buf)
			if n > 0 {
				ch <- chunk{time.Now().Add(d), buf[:n]}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range ch {
		time.Sleep(time.Until(c.at))
		if _, err := dst.Write(c.data); err != nil {
			break
		}
	}
	io.Copy(io.Discard, src)
	dst.Close()
	src.Close()
}

// BenchmarkOpen reads a 64 MiB object back.
func BenchmarkOpen(b *testing.B) {
	b.Setenv("SSH_AUTH_SOCK", "")
	srv := sftptest.Start(b)
	dir := filepath.Join(b.TempDir(), "repo")
	be, err := sftp.Open(context.Background(), srv.URL(dir), srv.Options())
	if err != nil {
		b.Fatal(err)
	}
	defer be.Close()
	be.Create(context.Background())
	data := randomData(64 << 20)
	h := backup.Handle{Type: backup.DataFile, Name: hashName(data)}
	if err := be.Save(context.Background(), h, int64(len(data)), bytes.NewReader(data)); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for range b.N {
		rc, err := be.Open(context.Background(), h, 0, 0)
		if err != nil {
			b.Fatal(err)
		}
		if n, err := io.Copy(io.Discard, rc); err != nil || n != int64(len(data)) {
			b.Fatal(n, err)
		}
		rc.Close()
	}
}
