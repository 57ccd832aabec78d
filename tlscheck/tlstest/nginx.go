package tlstest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// A Server is one nginx TLS server block.
type Server struct {
	Port int
	Case Case
}

// Nginx is a running nginx.
type Nginx struct {
	Prefix   string
	HTTPPort int // plain HTTP, serving the PKI's www folder (caIssuers)
	Servers  []Server
	cmd      *exec.Cmd
	log      string
}

// Config returns the nginx configuration for servers, with prefix as its
// own folder for the pid, logs and temporary files.
func Config(prefix string, httpPort int, www string, servers []Server, workers int) string {
	var b strings.Builder
	if os.Geteuid() == 0 {
		// Workers run as nobody by default, and test folders are 0700.
		b.WriteString("user root;\n")
	}
	fmt.Fprintf(&b, `worker_processes %d;
pid %[2]s/nginx.pid;
error_log %[2]s/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path %[2]s/tmp/body;
  proxy_temp_path %[2]s/tmp/proxy;
  fastcgi_temp_path %[2]s/tmp/fastcgi;
  uwsgi_temp_path %[2]s/tmp/uwsgi;
  scgi_temp_path %[2]s/tmp/scgi;
  default_type application/octet-stream;
  server { listen 127.0.0.1:%[3]d; root %[4]s; }
`, workers, prefix, httpPort, www)
	for _, s := range servers {
		c := s.Case
		fmt.Fprintf(&b, "  server { # %s\n    listen 127.0.0.1:%d ssl;\n    ssl_certificate %s;\n    ssl_certificate_key %s;\n"+
			"    ssl_protocols %s;\n    ssl_ciphers '%s';\n", c.Name, s.Port, c.CertFile, c.KeyFile, c.Protocols, c.Ciphers)
		if c.OCSPFile != "" {
			fmt.Fprintf(&b, "    ssl_stapling on;\n    ssl_stapling_file %s;\n", c.OCSPFile)
		}
		b.WriteString("    location / { return 200 \"ok\\n\"; }\n  }\n")
	}
	b.WriteString("}\n")
	return b.String()
}

// StartNginx writes the configuration into prefix and starts nginx in the
// foreground (as a child process); call Stop to end it. It returns once
// every port accepts connections.
func StartNginx(nginx, prefix string, httpPort int, www string, servers []Server) (*Nginx, error) {
	if err := os.MkdirAll(filepath.Join(prefix, "tmp"), 0o755); err != nil {
		return nil, err
	}
	conf := filepath.Join(prefix, "nginx.conf")
	if err := os.WriteFile(conf, []byte(Config(prefix, httpPort, www, servers, 1)), 0o644); err != nil {
		return nil, err
	}
	n := &Nginx{Prefix: prefix, HTTPPort: httpPort, Servers: servers, log: filepath.Join(prefix, "error.log")}
	n.cmd = exec.Command(nginx, "-p", prefix, "-c", conf, "-e", n.log, "-g", "daemon off;")
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := os.Create(filepath.Join(prefix, "stdout.log"))
	if err != nil {
		return nil, err
	}
	defer out.Close()
	n.cmd.Stdout, n.cmd.Stderr = out, out
	if err := n.cmd.Start(); err != nil {
		return nil, err
	}
	exited := make(chan error, 1)
	go func() { exited <- n.cmd.Wait() }()
	ports := []int{httpPort}
	for _, s := range servers {
		ports = append(ports, s.Port)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, p := range ports {
		for {
			c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(p), time.Second)
			if err == nil {
				c.Close()
				break
			}
			select {
			case err := <-exited:
				return nil, fmt.Errorf("nginx exited (%v): %s", err, n.logs())
			default:
			}
			if time.Now().After(deadline) {
				n.stop()
				return nil, fmt.Errorf("nginx did not listen on port %d: %s", p, n.logs())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	go func() { <-exited }()
	return n, nil
}

func (n *Nginx) logs() string {
	a, _ := os.ReadFile(n.log)
	b, _ := os.ReadFile(filepath.Join(n.Prefix, "stdout.log"))
	return string(a) + string(b)
}

// Stop ends nginx and its workers.
func (n *Nginx) Stop() error { return n.stop() }

func (n *Nginx) stop() error {
	pgid := n.cmd.Process.Pid
	if err := syscall.Kill(-pgid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	for range 100 {
		if syscall.Kill(-pgid, 0) != nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	syscall.Kill(-pgid, syscall.SIGKILL)
	return nil
}

// Addr returns "127.0.0.1:PORT" of the server for case name.
func (n *Nginx) Addr(name string) string {
	for _, s := range n.Servers {
		if s.Case.Name == name {
			return "127.0.0.1:" + strconv.Itoa(s.Port)
		}
	}
	panic("tlstest: no server for case " + name)
}
