package tlscheck_test

import (
	"context"
	"encoding/xml"
	"fmt"
	"maps"
	"os/exec"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/nhscrypt/nhscrypt/internal/testenv"
	"github.com/nhscrypt/nhscrypt/tlscheck"
)

type sslscanXML struct {
	Tests []struct {
		Protocols []struct {
			Type    string `xml:"type,attr"`
			Version string `xml:"version,attr"`
			Enabled string `xml:"enabled,attr"`
		} `xml:"protocol"`
		Ciphers []struct {
			Status  string `xml:"status,attr"`
			Version string `xml:"sslversion,attr"`
			Name    string `xml:"cipher,attr"`
			ID      string `xml:"id,attr"`
		} `xml:"cipher"`
	} `xml:"ssltest"`
}

var sslscanVersions = map[string]tlscheck.Version{
	"ssl3": tlscheck.SSL30, "tls1.0": tlscheck.TLS10, "tls1.1": tlscheck.TLS11, "tls1.2": tlscheck.TLS12, "tls1.3": tlscheck.TLS13,
	"SSLv3": tlscheck.SSL30, "TLSv1.0": tlscheck.TLS10, "TLSv1.1": tlscheck.TLS11, "TLSv1.2": tlscheck.TLS12, "TLSv1.3": tlscheck.TLS13,
}

// verdicts is what both tools must agree on: the protocol versions
// accepted, and the weak classes accepted at each version.
type verdicts struct {
	protocols []tlscheck.Version
	weak      map[tlscheck.Version][]tlscheck.CipherClass
}

func (v verdicts) String() string {
	s := fmt.Sprint(v.protocols)
	for _, k := range slices.Sorted(maps.Keys(v.weak)) {
		s += fmt.Sprintf(" %v:%v", k, v.weak[k])
	}
	return s
}

func sslscanVerdicts(t *testing.T, addr string) verdicts {
	t.Helper()
	out, err := exec.Command("sslscan", "--no-colour", "--xml=-", addr).Output()
	if err != nil {
		t.Fatalf("sslscan %s: %v", addr, err)
	}
	var x sslscanXML
	if err := xml.Unmarshal(out, &x); err != nil || len(x.Tests) != 1 {
		t.Fatalf("sslscan XML: %v", err)
	}
	v := verdicts{weak: map[tlscheck.Version][]tlscheck.CipherClass{}}
	for _, p := range x.Tests[0].Protocols {
		if p.Enabled == "1" {
			if ver, ok := sslscanVersions[p.Type+p.Version]; ok {
				v.protocols = append(v.protocols, ver)
			}
		}
	}
	slices.Sort(v.protocols)
	for _, c := range x.Tests[0].Ciphers {
		ver := sslscanVersions[c.Version]
		if ver == tlscheck.TLS13 {
			continue
		}
		id, err := strconv.ParseUint(c.ID, 0, 16)
		if err != nil {
			t.Fatalf("sslscan cipher id %q", c.ID)
		}
		classes, known := tlscheck.ClassesOf(uint16(id))
		if !known {
			// A suite tlscheck never offers could hide a weak class.
			t.Errorf("%s: sslscan found %s (%s) accepted, which tlscheck's suite table lacks", addr, c.Name, c.ID)
		}
		for _, cl := range classes {
			if !slices.Contains(v.weak[ver], cl) {
				v.weak[ver] = append(v.weak[ver], cl)
			}
		}
	}
	return normalise(v)
}

func normalise(v verdicts) verdicts {
	for k := range v.weak {
		slices.Sort(v.weak[k])
		if len(v.weak[k]) == 0 {
			delete(v.weak, k)
		}
	}
	return v
}

// tlscheck's protocol and weak-cipher verdicts match sslscan's on the
// same nginx endpoints. sslscan enumerates every suite; tlscheck makes one
// offer per class, so the comparison is per version and class.
func TestCompareSSLScan(t *testing.T) {
	testenv.Tool(t, "sslscan")
	pki, ngx := startNginx(t)
	for _, name := range []string{"weak", "valid", "tls12only", "cbconly", "rsa1024"} {
		t.Run(name, func(t *testing.T) {
			addr := ngx.Addr(name)
			start := time.Now()
			want := sslscanVerdicts(t, addr)
			tsslscan := time.Since(start)
			tg, _ := tlscheck.ParseTarget(addr)
			start = time.Now()
			r := tlscheck.CheckEndpoint(context.Background(), tg, tlscheck.Options{Roots: rootPool(t, pki)})
			tours := time.Since(start)
			if r.Err != nil {
				t.Fatal(r.Err)
			}
			got := verdicts{protocols: r.Protocols, weak: map[tlscheck.Version][]tlscheck.CipherClass{}}
			for v, cs := range r.Weak {
				got.weak[v] = slices.Clone(cs)
			}
			got = normalise(got)
			if got.String() != want.String() {
				t.Errorf("verdicts differ:\ntlscheck %v\nsslscan  %v", got, want)
			}
			t.Logf("%s: %v (tlscheck %v, sslscan %v)", name, got, tours.Round(time.Millisecond), tsslscan.Round(time.Millisecond))
		})
	}
}
