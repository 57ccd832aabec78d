// Command tlsfixture serves many nginx TLS endpoints for bench/tls.sh,
// and compares nhscrypt's verdicts with sslscan's.
//
//	tlsfixture -dir DIR -n 50      generate the PKI, start nginx (daemon),
//	                               write DIR/targets.txt and DIR/root.pem
//	tlsfixture -dir DIR -compare   compare DIR/nhscrypt.json with
//	                               DIR/sslscan/*.xml; exit 1 on disagreement
//
// nginx is stopped with: kill $(cat DIR/nginx/nginx.pid)
package main

import (
	"encoding/json"
	"encoding/xml"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/nhscrypt/nhscrypt/report"
	"github.com/nhscrypt/nhscrypt/tlscheck"
	"github.com/nhscrypt/nhscrypt/tlscheck/tlstest"
)

func main() {
	dir := flag.String("dir", "", "work folder")
	n := flag.Int("n", 50, "endpoints")
	compare := flag.Bool("compare", false, "compare nhscrypt.json with sslscan/*.xml")
	flag.Parse()
	if *dir == "" {
		fmt.Fprintln(os.Stderr, "tlsfixture: -dir is required")
		os.Exit(2)
	}
	var err error
	if *compare {
		err = compareVerdicts(*dir)
	} else {
		err = serve(*dir, *n)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "tlsfixture:", err)
		os.Exit(1)
	}
}

func serve(dir string, n int) error {
	ports, err := tlstest.FreePorts(n + 1)
	if err != nil {
		return err
	}
	pki, err := tlstest.Generate(filepath.Join(dir, "pki"), fmt.Sprintf("http://127.0.0.1:%d", ports[0]), tlstest.Cases())
	if err != nil {
		return err
	}
	var servers []tlstest.Server
	var targets []string
	for i := range n {
		c := pki.Cases[i%len(pki.Cases)]
		servers = append(servers, tlstest.Server{Port: ports[i+1], Case: c})
		targets = append(targets, fmt.Sprintf("127.0.0.1:%d %s", ports[i+1], c.Name))
	}
	prefix := filepath.Join(dir, "nginx")
	os.MkdirAll(filepath.Join(prefix, "tmp"), 0o755)
	conf := filepath.Join(prefix, "nginx.conf")
	if err := os.WriteFile(conf, []byte(tlstest.Config(prefix, ports[0], filepath.Join(pki.Dir, "www"), servers, 2)), 0o644); err != nil {
		return err
	}
	nginx := "nginx"
	if _, err := exec.LookPath(nginx); err != nil {
		nginx = "/usr/sbin/nginx"
	}
	if out, err := exec.Command(nginx, "-p", prefix, "-c", conf, "-e", filepath.Join(prefix, "error.log")).CombinedOutput(); err != nil {
		return fmt.Errorf("nginx: %v\n%s", err, out)
	}
	root, _ := os.ReadFile(pki.RootFile)
	os.WriteFile(filepath.Join(dir, "root.pem"), root, 0o644)
	return os.WriteFile(filepath.Join(dir, "targets.txt"), []byte(strings.Join(targets, "\n")+"\n"), 0o644)
}

// compareVerdicts checks, per endpoint, that nhscrypt's TLS-PROTO-* and
// TLS-CIPHER-WEAK/NO-FS findings say what sslscan's enumeration says.
func compareVerdicts(dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, "nhscrypt.json"))
	if err != nil {
		return err
	}
	var rep report.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		return err
	}
	ours := map[string][]string{}
	for _, f := range rep.Findings {
		switch f.ID {
		case tlscheck.IDProtoSSL3, tlscheck.IDProtoTLS10, tlscheck.IDProtoTLS11, tlscheck.IDNoTLS13, tlscheck.IDCipherNoFS:
			ours[f.Subject] = append(ours[f.Subject], f.ID)
		case tlscheck.IDCipherWeak:
			for _, c := range strings.Split(f.Evidence["classes"], ",") {
				ours[f.Subject] = append(ours[f.Subject], "weak:"+c)
			}
		}
	}
	files, _ := filepath.Glob(filepath.Join(dir, "sslscan", "*.xml"))
	agree := 0
	for _, p := range files {
		addr := strings.TrimSuffix(filepath.Base(p), ".xml")
		theirs, err := sslscanVerdict(p)
		if err != nil {
			return err
		}
		o := ours[addr]
		slices.Sort(o)
		o = slices.Compact(o)
		if slices.Equal(o, theirs) {
			agree++
		} else {
			fmt.Printf("DISAGREE %s: nhscrypt %v, sslscan %v\n", addr, o, theirs)
		}
	}
	fmt.Printf("verdicts agree on %d/%d endpoints\n", agree, len(files))
	if agree != len(files) {
		return fmt.Errorf("%d endpoints disagree", len(files)-agree)
	}
	return nil
}

func sslscanVerdict(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var x struct {
		Protocols []struct {
			Type    string `xml:"type,attr"`
			Version string `xml:"version,attr"`
			Enabled string `xml:"enabled,attr"`
		} `xml:"ssltest>protocol"`
		Ciphers []struct {
			Version string `xml:"sslversion,attr"`
			ID      string `xml:"id,attr"`
		} `xml:"ssltest>cipher"`
	}
	if err := xml.Unmarshal(b, &x); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var v []string
	tls13 := false
	for _, p := range x.Protocols {
		if p.Enabled != "1" {
			continue
		}
		switch p.Type + p.Version {
		case "ssl3":
			v = append(v, tlscheck.IDProtoSSL3)
		case "tls1.0":
			v = append(v, tlscheck.IDProtoTLS10)
		case "tls1.1":
			v = append(v, tlscheck.IDProtoTLS11)
		case "tls1.3":
			tls13 = true
		}
	}
	if !tls13 {
		v = append(v, tlscheck.IDNoTLS13)
	}
	for _, c := range x.Ciphers {
		if c.Version == "TLSv1.3" {
			continue
		}
		id, err := strconv.ParseUint(c.ID, 0, 16)
		if err != nil {
			return nil, fmt.Errorf("%s: cipher id %q", path, c.ID)
		}
		classes, known := tlscheck.ClassesOf(uint16(id))
		if !known {
			v = append(v, "unknown-suite:"+c.ID)
		}
		for _, cl := range classes {
			if cl == tlscheck.ClassNoFS {
				v = append(v, tlscheck.IDCipherNoFS)
			} else {
				v = append(v, "weak:"+string(cl))
			}
		}
	}
	slices.Sort(v)
	return slices.Compact(v), nil
}
