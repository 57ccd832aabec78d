package tlstest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// A Service is a running mail, database or directory server started by
// StartPostfix and the others, in its own folder on a 127.0.0.1 port.
type Service struct {
	Name  string
	Ports map[string]int // protocol → port: "smtp", "imap", "pop3", "postgres", "ldap", "mysql", "ftp"
	Dir   string
	cmd   *exec.Cmd
	log   string
	done  chan struct{}
}

// PID returns the process ID of the service's main process. It leads its
// own session: every process the service forks has PID as its session
// ID.
func (s *Service) PID() int { return s.cmd.Process.Pid }

// Stop ends the service and every process it started.
func (s *Service) Stop() {
	if s == nil || s.cmd == nil || s.cmd.Process == nil {
		return
	}
	pg := s.cmd.Process.Pid
	syscall.Kill(-pg, syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		syscall.Kill(-pg, syscall.SIGKILL)
		<-s.done
	}
	// Children that outlived the leader (postfix's daemons).
	for range 50 {
		if syscall.Kill(-pg, 0) != nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	syscall.Kill(-pg, syscall.SIGKILL)
}

// Logs returns the service's log output, for failure messages.
func (s *Service) Logs() string {
	var b strings.Builder
	for _, p := range []string{s.log, filepath.Join(s.Dir, "stdout.log")} {
		d, _ := os.ReadFile(p)
		b.Write(d)
	}
	return b.String()
}

// start runs cmd in its own session and process group, and waits until
// every port accepts connections.
func start(s *Service, cmd *exec.Cmd) error {
	s.cmd = cmd
	s.done = make(chan struct{})
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setsid = true
	out, err := os.Create(filepath.Join(s.Dir, "stdout.log"))
	if err != nil {
		return err
	}
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return err
	}
	go func() { cmd.Wait(); close(s.done) }()
	deadline := time.Now().Add(15 * time.Second)
	for _, p := range s.Ports {
		for {
			c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(p), time.Second)
			if err == nil {
				c.Close()
				break
			}
			select {
			case <-s.done:
				return fmt.Errorf("%s exited: %s", s.Name, s.Logs())
			default:
			}
			if time.Now().After(deadline) {
				s.Stop()
				return fmt.Errorf("%s did not listen on %d: %s", s.Name, p, s.Logs())
			}
			time.Sleep(25 * time.Millisecond)
		}
	}
	return nil
}

// reachable lets the unprivileged users the services switch to
// (postfix, postgres, dovenull) reach dir: it adds o+x to dir and to each
// folder above it inside the temporary folder (tests make theirs 0700).
// Folders outside the temporary folder are left alone.
func reachable(dir string) {
	tmp := filepath.Clean(os.TempDir())
	for d := filepath.Clean(dir); d != tmp && strings.HasPrefix(d, tmp+"/"); d = filepath.Dir(d) {
		if st, err := os.Stat(d); err == nil && st.Mode().Perm()&0o001 == 0 {
			os.Chmod(d, st.Mode().Perm()|0o711)
		}
	}
}

// A Cert is the certificate and key a service serves. The zero Cert
// starts the services that accept it (Postfix, Dovecot, vsftpd, MariaDB)
// without TLS: they answer in plain text and do not offer STARTTLS.
type Cert struct{ CertFile, KeyFile string }

func (c Cert) none() bool { return c.CertFile == "" }

// StartPostfix starts Postfix's master in dir (its own main.cf, master.cf
// and queue) with smtpd on 127.0.0.1:port offering STARTTLS (none with
// the zero Cert).
func StartPostfix(dir string, port int, c Cert) (*Service, error) {
	s := &Service{Name: "postfix", Dir: dir, Ports: map[string]int{"smtp": port}, log: filepath.Join(dir, "maillog")}
	for _, d := range []string{"spool/pid", "data"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	// The daemons (as the postfix user) talk to each other through
	// sockets in private/ and public/, which must be theirs. ("postfix
	// check" would make every queue folder, but takes seconds.)
	for _, d := range []string{"spool/private", "spool/public"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return nil, err
		}
	}
	if u, err := user.Lookup("postfix"); err == nil {
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		for _, d := range []string{"data", "spool/private", "spool/public"} {
			os.Chown(filepath.Join(dir, d), uid, gid)
		}
	}
	// master opens data/master.lock as the postfix user.
	reachable(dir)
	main := fmt.Sprintf(`compatibility_level = 3.6
queue_directory = %[1]s/spool
data_directory = %[1]s/data
maillog_file = %[1]s/maillog
maillog_file_prefixes = %[1]s
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = nhscrypt-test.invalid
mydestination =
alias_maps =
alias_database =
`, dir)
	if !c.none() {
		main += fmt.Sprintf("smtpd_tls_security_level = may\nsmtpd_tls_cert_file = %s\nsmtpd_tls_key_file = %s\n", c.CertFile, c.KeyFile)
	}
	master := fmt.Sprintf(`127.0.0.1:%d inet n - n - - smtpd
postlog unix-dgram n - n - 1 postlogd
tlsmgr unix - - n 1000? 1 tlsmgr
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
cleanup unix n - n - 0 cleanup
proxymap unix - - n - - proxymap
`, port)
	if err := os.WriteFile(filepath.Join(dir, "main.cf"), []byte(main), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "master.cf"), []byte(master), 0o644); err != nil {
		return nil, err
	}
	return s, start(s, exec.Command("/usr/lib/postfix/sbin/master", "-c", dir, "-d"))
}

// StartDovecot starts dovecot in the foreground with a standalone
// configuration: IMAP and POP3 on 127.0.0.1 with STARTTLS (none, and
// ssl = no, with the zero Cert).
func StartDovecot(dir string, imapPort, pop3Port int, c Cert) (*Service, error) {
	s := &Service{Name: "dovecot", Dir: dir, Ports: map[string]int{"imap": imapPort, "pop3": pop3Port}, log: filepath.Join(dir, "dovecot.log")}
	for _, d := range []string{"run", "state"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	reachable(dir) // the login processes run as dovenull
	ssl := fmt.Sprintf("ssl = yes\nssl_cert = <%s\nssl_key = <%s\nssl_min_protocol = TLSv1.2", c.CertFile, c.KeyFile)
	if c.none() {
		ssl = "ssl = no"
	}
	conf := fmt.Sprintf(`base_dir = %[1]s/run
state_dir = %[1]s/state
log_path = %[1]s/dovecot.log
protocols = imap pop3
listen = 127.0.0.1
%[2]s
auth_mechanisms = plain
passdb {
  driver = static
  args = nopassword=y
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup home=/nonexistent
}
service imap-login {
  inet_listener imap {
    port = %[3]d
  }
  inet_listener imaps {
    port = 0
  }
}
service pop3-login {
  inet_listener pop3 {
    port = %[4]d
  }
  inet_listener pop3s {
    port = 0
  }
}
`, dir, ssl, imapPort, pop3Port)
	f := filepath.Join(dir, "dovecot.conf")
	if err := os.WriteFile(f, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	return s, start(s, exec.Command("dovecot", "-F", "-c", f))
}

// PostgresBin returns the folder of Debian's PostgreSQL server binaries
// (initdb and postgres are not in PATH there), or "".
func PostgresBin() string {
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p)
	}
	m, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(m) == 0 {
		return ""
	}
	return filepath.Dir(m[len(m)-1])
}

// StartPostgres runs initdb into dir and starts PostgreSQL with ssl=on on
// 127.0.0.1:port, as the postgres user (it refuses to run as root).
func StartPostgres(dir string, port int, c Cert) (*Service, error) {
	bin := PostgresBin()
	if bin == "" {
		return nil, errors.New("PostgreSQL server binaries not found")
	}
	s := &Service{Name: "postgres", Dir: dir, Ports: map[string]int{"postgres": port}, log: filepath.Join(dir, "stdout.log")}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, err
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	cred := &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	reachable(dir)
	os.Chown(dir, uid, gid)
	for _, f := range [][2]string{{c.CertFile, "server.crt"}, {c.KeyFile, "server.key"}} {
		b, err := os.ReadFile(f[0])
		if err != nil {
			return nil, err
		}
		p := filepath.Join(dir, f[1])
		if err := os.WriteFile(p, b, 0o600); err != nil {
			return nil, err
		}
		os.Chown(p, uid, gid)
	}
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", filepath.Join(dir, "data"), "-A", "trust", "-U", "postgres", "--no-sync")
	initdb.SysProcAttr = cred
	initdb.Env = []string{"PATH=/usr/bin:/bin", "LANG=C"}
	if out, err := initdb.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("initdb: %v\n%s", err, out)
	}
	cmd := exec.Command(filepath.Join(bin, "postgres"), "-D", filepath.Join(dir, "data"),
		"-c", "port="+strconv.Itoa(port), "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="+dir,
		"-c", "ssl=on", "-c", "ssl_cert_file="+filepath.Join(dir, "server.crt"), "-c", "ssl_key_file="+filepath.Join(dir, "server.key"),
		"-c", "fsync=off")
	cmd.SysProcAttr = cred
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LANG=C"}
	return s, start(s, cmd)
}

// StartSlapd starts OpenLDAP's slapd in the foreground with a standalone
// slapd.conf, on ldap://127.0.0.1:port with StartTLS.
func StartSlapd(dir string, port int, c Cert) (*Service, error) {
	s := &Service{Name: "slapd", Dir: dir, Ports: map[string]int{"ldap": port}, log: filepath.Join(dir, "stdout.log")}
	if err := os.MkdirAll(filepath.Join(dir, "db"), 0o700); err != nil {
		return nil, err
	}
	conf := fmt.Sprintf(`include /etc/ldap/schema/core.schema
pidfile %[1]s/slapd.pid
argsfile %[1]s/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
TLSCertificateFile %[2]s
TLSCertificateKeyFile %[3]s
database mdb
suffix "dc=nhscrypt,dc=test"
directory %[1]s/db
maxsize 10485760
`, dir, c.CertFile, c.KeyFile)
	f := filepath.Join(dir, "slapd.conf")
	if err := os.WriteFile(f, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	return s, start(s, exec.Command("/usr/sbin/slapd", "-f", f, "-h", fmt.Sprintf("ldap://127.0.0.1:%d/", port), "-d", "0"))
}

// StartMariaDB makes a new MariaDB data folder in dir with
// mariadb-install-db and starts mariadbd on 127.0.0.1:port, with its
// socket and logs in dir, serving c (no TLS with the zero Cert). As root
// it runs as root (--user=root), which the test folders need.
func StartMariaDB(dir string, port int, c Cert) (*Service, error) {
	s := &Service{Name: "mariadb", Dir: dir, Ports: map[string]int{"mysql": port}, log: filepath.Join(dir, "error.log")}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	data := filepath.Join(dir, "data")
	install := []string{"--no-defaults", "--datadir=" + data, "--auth-root-authentication-method=normal", "--skip-test-db"}
	server := []string{"--no-defaults", "--datadir=" + data, "--port=" + strconv.Itoa(port), "--bind-address=127.0.0.1",
		"--socket=" + filepath.Join(dir, "mysqld.sock"), "--pid-file=" + filepath.Join(dir, "mysqld.pid"),
		"--log-error=" + s.log, "--skip-name-resolve", "--skip-log-bin", "--innodb-buffer-pool-size=16M"}
	if os.Geteuid() == 0 {
		install = append(install, "--user=root")
		server = append(server, "--user=root")
	}
	if !c.none() {
		server = append(server, "--ssl-cert="+c.CertFile, "--ssl-key="+c.KeyFile)
	}
	cmd := exec.Command("mariadb-install-db", install...)
	cmd.Env = []string{"PATH=/usr/bin:/bin:/usr/sbin:/sbin", "LANG=C"}
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("mariadb-install-db: %v\n%s", err, out)
	}
	cmd = exec.Command("/usr/sbin/mariadbd", server...)
	cmd.Env = []string{"PATH=/usr/bin:/bin:/usr/sbin:/sbin", "LANG=C"}
	return s, start(s, cmd)
}

// StartVsftpd starts vsftpd in the foreground with its own configuration
// file in dir: FTP on 127.0.0.1:port offering AUTH TLS (none with the
// zero Cert). Its other settings are Debian's defaults, so its
// ssl_ciphers is DES-CBC3-SHA.
func StartVsftpd(dir string, port int, c Cert) (*Service, error) {
	s := &Service{Name: "vsftpd", Dir: dir, Ports: map[string]int{"ftp": port}, log: filepath.Join(dir, "vsftpd.log")}
	// The folder vsftpd chroots its unprivileged process into.
	if err := os.MkdirAll(filepath.Join(dir, "empty"), 0o755); err != nil {
		return nil, err
	}
	conf := fmt.Sprintf(`listen=YES
listen_ipv6=NO
listen_address=127.0.0.1
listen_port=%[2]d
background=NO
secure_chroot_dir=%[1]s/empty
anonymous_enable=NO
local_enable=YES
xferlog_enable=NO
vsftpd_log_file=%[1]s/vsftpd.log
`, dir, port)
	if c.none() {
		conf += "ssl_enable=NO\n"
	} else {
		conf += fmt.Sprintf("ssl_enable=YES\nrsa_cert_file=%s\nrsa_private_key_file=%s\n", c.CertFile, c.KeyFile)
	}
	f := filepath.Join(dir, "vsftpd.conf")
	if err := os.WriteFile(f, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	return s, start(s, exec.Command("/usr/sbin/vsftpd", f))
}
