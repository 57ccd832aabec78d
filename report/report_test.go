package report

import (
	"bytes"
	"encoding"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

var (
	_ encoding.TextMarshaler   = Info
	_ encoding.TextUnmarshaler = (*Severity)(nil)
	_ json.Marshaler           = Report{}
)

func TestSeverityOrder(t *testing.T) {
	if !(Info < Warn && Warn < Fail) {
		t.Fatalf("severities not ordered: Info=%d Warn=%d Fail=%d", Info, Warn, Fail)
	}
	var zero Severity
	if zero != Info {
		t.Errorf("zero Severity = %v, want info", zero)
	}
}

func TestSeverityStringRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		s    Severity
		name string
	}{{Info, "info"}, {Warn, "warn"}, {Fail, "fail"}} {
		if got := tc.s.String(); got != tc.name {
			t.Errorf("%d.String() = %q, want %q", int(tc.s), got, tc.name)
		}
		p, err := ParseSeverity(tc.name)
		if err != nil || p != tc.s {
			t.Errorf("ParseSeverity(%q) = %v, %v; want %v, nil", tc.name, p, err, tc.s)
		}
		text, err := tc.s.MarshalText()
		if err != nil || string(text) != tc.name {
			t.Errorf("%v.MarshalText() = %q, %v", tc.s, text, err)
		}
		b, err := json.Marshal(tc.s)
		if err != nil || string(b) != `"`+tc.name+`"` {
			t.Errorf("json.Marshal(%v) = %s, %v; want %q", tc.s, b, err, tc.name)
		}
		var back Severity = -1
		if err := json.Unmarshal(b, &back); err != nil || back != tc.s {
			t.Errorf("json.Unmarshal(%s) = %v, %v; want %v", b, back, err, tc.s)
		}
	}
}

func TestSeverityInvalid(t *testing.T) {
	for _, name := range []string{"", "INFO", "Warn", "error", "warning", " fail", "3"} {
		if s, err := ParseSeverity(name); err == nil {
			t.Errorf("ParseSeverity(%q) = %v, nil; want error", name, s)
		}
		s := Warn
		if err := json.Unmarshal([]byte(`"`+name+`"`), &s); err == nil {
			t.Errorf("json.Unmarshal(%q) succeeded with %v; want error", name, s)
		}
		if s != Warn {
			t.Errorf("failed unmarshal of %q changed value to %v", name, s)
		}
	}
	if got := Severity(7).String(); got != "Severity(7)" {
		t.Errorf("Severity(7).String() = %q", got)
	}
	if _, err := json.Marshal(Severity(-1)); err == nil {
		t.Error("json.Marshal(Severity(-1)) succeeded; want error")
	}
}

func TestValidID(t *testing.T) {
	for _, tc := range []struct {
		id   string
		want bool
	}{
		{"LUKS-PBKDF-WEAK", true},
		{"TLS-CERT-EXPIRED", true},
		{"AB-C", true},
		{"TLS-V1-0", true},
		{"LUKS2-KEYSLOT-3DES", true},
		{"A-1", true},
		{"", false},
		{"LUKS", false},
		{"LUKS-", false},
		{"-LUKS-WEAK", false},
		{"LUKS--WEAK", false},
		{"luks-pbkdf-weak", false},
		{"Luks-Pbkdf", false},
		{"1LUKS-WEAK", false},
		{"LUKS_PBKDF_WEAK", false},
		{"LUKS PBKDF", false},
		{"LUKS-PBKDF-WEAK\n", false},
		{"LUKS-ÄRGER", false},
	} {
		if got := ValidID(tc.id); got != tc.want {
			t.Errorf("ValidID(%q) = %v, want %v", tc.id, got, tc.want)
		}
	}
}

func TestAddPanics(t *testing.T) {
	for _, f := range []Finding{
		{ID: "bad id", Severity: Warn},
		{ID: "", Severity: Info},
		{ID: "LUKS-OK", Severity: Severity(9)},
	} {
		t.Run(f.ID, func(t *testing.T) {
			var r Report
			defer func() {
				if recover() == nil {
					t.Errorf("Add(%+v) did not panic", f)
				}
				if len(r.Findings) != 0 {
					t.Errorf("Add(%+v) added a finding before panicking", f)
				}
			}()
			r.Add(f)
		})
	}
}

func TestAdd(t *testing.T) {
	var r Report
	f := Finding{ID: "LUKS-PBKDF-WEAK", Severity: Warn, Subject: "/dev/sda2"}
	r.Add(f)
	if len(r.Findings) != 1 || !reflect.DeepEqual(r.Findings[0], f) {
		t.Fatalf("Findings = %+v, want [%+v]", r.Findings, f)
	}
}

func reportOf(sevs ...Severity) *Report {
	r := &Report{Tool: "nhscrypt"}
	for _, s := range sevs {
		r.Add(Finding{ID: "TEST-" + strings.ToUpper(s.String()), Severity: s, Subject: "x"})
	}
	return r
}

func TestExitCode(t *testing.T) {
	for _, tc := range []struct {
		name string
		sevs []Severity
		want int
		max  Severity
	}{
		{"none", nil, ExitOK, 0},
		{"info", []Severity{Info, Info}, ExitOK, Info},
		{"warn", []Severity{Warn}, ExitWarnings, Warn},
		{"info+warn", []Severity{Info, Warn, Info}, ExitWarnings, Warn},
		{"fail", []Severity{Fail}, ExitFailures, Fail},
		{"warn+fail", []Severity{Warn, Fail, Warn}, ExitFailures, Fail},
		{"fail+info", []Severity{Fail, Info}, ExitFailures, Fail},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := reportOf(tc.sevs...)
			if got := r.ExitCode(); got != tc.want {
				t.Errorf("ExitCode() = %d, want %d", got, tc.want)
			}
			m, ok := r.Max()
			if ok != (len(tc.sevs) > 0) || m != tc.max {
				t.Errorf("Max() = %v, %v; want %v, %v", m, ok, tc.max, len(tc.sevs) > 0)
			}
		})
	}
	if ExitOK != 0 || ExitWarnings != 3 || ExitFailures != 4 {
		t.Errorf("exit codes = %d, %d, %d; want 0, 3, 4 (docs/exit-codes.md)", ExitOK, ExitWarnings, ExitFailures)
	}
}

func TestCounts(t *testing.T) {
	r := reportOf(Info, Warn, Fail, Fail, Info, Info)
	want := Counts{Info: 3, Warn: 1, Fail: 2}
	if got := r.Counts(); got != want {
		t.Errorf("Counts() = %+v, want %+v", got, want)
	}
	if got := want.Total(); got != 6 {
		t.Errorf("Total() = %d, want 6", got)
	}
}

func TestSorted(t *testing.T) {
	var r Report
	add := func(sev Severity, subject, id, msg string) {
		r.Add(Finding{ID: id, Severity: sev, Subject: subject, Message: msg})
	}
	add(Info, "/dev/sda1", "LUKS-A", "1")
	add(Warn, "/dev/sdb", "LUKS-A", "2")
	add(Fail, "/dev/sdb", "LUKS-B", "3")
	add(Warn, "/dev/sda1", "LUKS-C", "4")
	add(Warn, "/dev/sda1", "LUKS-B", "5")
	add(Fail, "/dev/sda1", "LUKS-Z", "6")
	add(Warn, "/dev/sda1", "LUKS-B", "7") // equal keys to "5": stays after it
	orig := append([]Finding(nil), r.Findings...)

	var got []string
	for _, f := range r.Sorted() {
		got = append(got, f.Message)
	}
	want := []string{"6", "3", "5", "7", "4", "2", "1"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Sorted() order = %v, want %v", got, want)
	}
	if !reflect.DeepEqual(r.Findings, orig) {
		t.Error("Sorted() reordered r.Findings")
	}
	if s := (&Report{}).Sorted(); len(s) != 0 {
		t.Errorf("empty Sorted() = %v", s)
	}
}

func sampleReport() *Report {
	r := &Report{
		Tool:    "nhscrypt",
		Command: "luks check",
		Host:    "db1",
		Started: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC),
		Checked: []string{"/dev/sda2", "/dev/sdb1"},
	}
	r.Add(Finding{ID: "LUKS-VERSION-1", Severity: Info, Subject: "/dev/sdb1", Message: "LUKS1 header"})
	r.Add(Finding{
		ID: "LUKS-PBKDF-WEAK", Severity: Warn, Subject: "/dev/sda2",
		Message:  "keyslot 0 uses pbkdf2",
		Remedy:   "cryptsetup luksConvertKey --pbkdf argon2id /dev/sda2",
		Evidence: map[string]string{"pbkdf": "pbkdf2", "iterations": "1000"},
	})
	r.Add(Finding{ID: "LUKS-CIPHER-WEAK", Severity: Fail, Subject: "/dev/sdb1", Message: "cipher aes-cbc-plain"})
	return r
}

func TestWriteText(t *testing.T) {
	var buf bytes.Buffer
	if err := sampleReport().WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	want := []string{
		"SEVERITY  ID                SUBJECT    MESSAGE",
		"fail      LUKS-CIPHER-WEAK  /dev/sdb1  cipher aes-cbc-plain",
		"warn      LUKS-PBKDF-WEAK   /dev/sda2  keyslot 0 uses pbkdf2",
		"                                       remedy: cryptsetup luksConvertKey --pbkdf argon2id /dev/sda2",
		"info      LUKS-VERSION-1    /dev/sdb1  LUKS1 header",
		"3 findings: 1 fail, 1 warn, 1 info",
	}
	if !reflect.DeepEqual(lines, want) {
		t.Errorf("WriteText output:\n%s\nwant:\n%s", out, strings.Join(want, "\n"))
	}
	if strings.Contains(out, "iterations") {
		t.Error("WriteText printed evidence")
	}

	// Same report built in another order prints the same text.
	r := sampleReport()
	for i, j := 0, len(r.Findings)-1; i < j; i, j = i+1, j-1 {
		r.Findings[i], r.Findings[j] = r.Findings[j], r.Findings[i]
	}
	var buf2 bytes.Buffer
	if err := r.WriteText(&buf2); err != nil {
		t.Fatal(err)
	}
	if buf2.String() != out {
		t.Errorf("WriteText depends on insertion order:\n%s\nvs\n%s", buf2.String(), out)
	}
}

func TestWriteTextEmpty(t *testing.T) {
	for _, tc := range []struct {
		checked []string
		want    string
	}{
		{nil, "no findings (0 subjects checked)\n"},
		{[]string{"a"}, "no findings (1 subject checked)\n"},
		{[]string{"a", "b", "c"}, "no findings (3 subjects checked)\n"},
	} {
		var buf bytes.Buffer
		r := &Report{Tool: "nhscrypt", Checked: tc.checked}
		if err := r.WriteText(&buf); err != nil {
			t.Fatal(err)
		}
		if buf.String() != tc.want {
			t.Errorf("WriteText = %q, want %q", buf.String(), tc.want)
		}
	}
}

func TestWriteTextSingular(t *testing.T) {
	var buf bytes.Buffer
	if err := reportOf(Info).WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(buf.String(), "\n1 finding: 0 fail, 0 warn, 1 info\n") {
		t.Errorf("summary wrong:\n%s", buf.String())
	}
}

func TestWriteTextEscapes(t *testing.T) {
	var r Report
	r.Add(Finding{
		ID: "TLS-CERT-EXPIRED", Severity: Fail,
		Subject: "evil\thost\n:443",
		Message: "CN \"x\" \x1b[31mred\xff",
		Remedy:  "renew\r\nit",
	})
	var buf bytes.Buffer
	if err := r.WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if strings.ContainsAny(out, "\t\r\x1b") || strings.IndexByte(out, 0xff) >= 0 {
		t.Errorf("control bytes reached output: %q", out)
	}
	for _, want := range []string{`evil\thost\n:443`, `CN "x" \x1b[31mred\xff`, `remedy: renew\r\nit`} {
		if !strings.Contains(out, want) {
			t.Errorf("output %q lacks %q", out, want)
		}
	}
	if n := strings.Count(out, "\n"); n != 4 {
		t.Errorf("output has %d lines, want 4: %q", n, out)
	}
}

// decoded is the JSON shape WriteJSON promises.
type decoded struct {
	Report
	Counts   *Counts `json:"counts"`
	ExitCode *int    `json:"exit_code"`
}

func TestWriteJSON(t *testing.T) {
	r := sampleReport()
	var buf bytes.Buffer
	if err := r.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.Bytes()
	if !bytes.HasSuffix(out, []byte("}\n")) || bytes.Count(out, []byte("\n")) < 5 {
		t.Errorf("not one indented object with trailing newline:\n%s", out)
	}

	var d decoded
	dec := json.NewDecoder(bytes.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("decoding %s: %v", out, err)
	}
	if !reflect.DeepEqual(d.Findings, r.Sorted()) {
		t.Errorf("findings round trip:\n got %+v\nwant %+v", d.Findings, r.Sorted())
	}
	if d.Tool != r.Tool || d.Command != r.Command || d.Host != r.Host ||
		!d.Started.Equal(r.Started) || !reflect.DeepEqual(d.Checked, r.Checked) {
		t.Errorf("report fields round trip: got %+v", d.Report)
	}
	if d.Counts == nil || *d.Counts != (Counts{Info: 1, Warn: 1, Fail: 1}) {
		t.Errorf("counts = %+v", d.Counts)
	}
	if d.ExitCode == nil || *d.ExitCode != ExitFailures {
		t.Errorf("exit_code = %v, want %d", d.ExitCode, ExitFailures)
	}
	for _, want := range []string{`"severity": "warn"`, `"iterations": "1000"`, `"started": "2025-03-01T12:00:00Z"`} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("output lacks %s:\n%s", want, out)
		}
	}

	// Decoding straight into a Report works too.
	var back Report
	if err := json.Unmarshal(out, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back.Findings, r.Sorted()) {
		t.Errorf("Report round trip findings = %+v", back.Findings)
	}
}

func TestWriteJSONEmpty(t *testing.T) {
	r := &Report{Tool: "nhscrypt"}
	var buf bytes.Buffer
	if err := r.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if !strings.Contains(out, `"findings": []`) || strings.Contains(out, "null") {
		t.Errorf("empty findings not []:\n%s", out)
	}
	for _, absent := range []string{`"command"`, `"host"`, `"checked"`} {
		if strings.Contains(out, absent) {
			t.Errorf("omitempty field %s present:\n%s", absent, out)
		}
	}
	var m map[string]any
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	if m["exit_code"] != float64(0) {
		t.Errorf("exit_code = %v, want 0", m["exit_code"])
	}
	if !reflect.DeepEqual(m["counts"], map[string]any{"info": 0.0, "warn": 0.0, "fail": 0.0}) {
		t.Errorf("counts = %v", m["counts"])
	}

	// json.Marshal of a Report value gives the same document.
	b, err := json.Marshal(*r)
	if err != nil {
		t.Fatal(err)
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	if string(b) != compact.String() {
		t.Errorf("json.Marshal = %s\nWriteJSON   = %s", b, compact.String())
	}
}

func TestWriteJSONWarnExit(t *testing.T) {
	var buf bytes.Buffer
	if err := reportOf(Info, Warn).WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	var d decoded
	if err := json.Unmarshal(buf.Bytes(), &d); err != nil {
		t.Fatal(err)
	}
	if d.ExitCode == nil || *d.ExitCode != ExitWarnings {
		t.Errorf("exit_code = %v, want %d", d.ExitCode, ExitWarnings)
	}
}

func TestWriteJSONInvalidSeverity(t *testing.T) {
	// Add refuses a bad severity, but Findings is an exported field.
	r := &Report{Findings: []Finding{{ID: "X-Y", Severity: Severity(42)}}}
	if err := r.WriteJSON(&bytes.Buffer{}); err == nil {
		t.Error("WriteJSON with invalid severity succeeded")
	}
}

func FuzzParseSeverity(f *testing.F) {
	for _, s := range []string{"info", "warn", "fail", "", "WARN", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		s, err := ParseSeverity(name)
		if err != nil {
			if s != 0 {
				t.Errorf("ParseSeverity(%q) = %v with error", name, s)
			}
			return
		}
		if s.String() != name {
			t.Errorf("ParseSeverity(%q) = %v, does not round trip", name, s)
		}
	})
}

func FuzzValidID(f *testing.F) {
	for _, s := range []string{"LUKS-PBKDF-WEAK", "A-1", "LUKS", "a-b", "A--B", "-A-B"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		if !ValidID(id) {
			return
		}
		parts := strings.Split(id, "-")
		if len(parts) < 2 || id[0] < 'A' || id[0] > 'Z' {
			t.Errorf("ValidID(%q) = true", id)
		}
		for _, p := range parts {
			if p == "" || strings.Trim(p, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") != "" {
				t.Errorf("ValidID(%q) = true, bad part %q", id, p)
			}
		}
	})
}
