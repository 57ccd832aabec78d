// Package report holds the data every nhscrypt checker returns: the
// disk and LUKS checks, the TLS checks and the audit all produce a
// [Report] made of [Finding] values.
//
// Findings are data, errors are failures. A weak PBKDF on a keyslot or an
// expired certificate is a Finding with a [Severity], a stable ID such as
// LUKS-PBKDF-WEAK, the subject it is about and, where there is one, a
// remedy. Being unable to check at all (a header that cannot be read, an
// endpoint that cannot be reached) is an error returned beside the report,
// never a Finding.
//
// No checker prints its findings itself: they reach the user only through
// a Report, rendered by [Report.WriteText] or [Report.WriteJSON], and the
// process exit status comes from [Report.ExitCode].
package report

import (
	"cmp"
	"fmt"
	"slices"
	"time"
)

// Exit codes returned by [Report.ExitCode]. They match docs/exit-codes.md
// and the exit-code table in internal/cli; change all three together.
const (
	// ExitOK means no finding of severity Warn or above.
	ExitOK = 0
	// ExitWarnings means the worst finding is a Warn.
	ExitWarnings = 3
	// ExitFailures means at least one finding is a Fail.
	ExitFailures = 4
)

// A Finding is one result of a check.
type Finding struct {
	// ID is a stable identifier for the kind of finding, such as
	// LUKS-PBKDF-WEAK or TLS-CERT-EXPIRED; see [ValidID]. Scripts and
	// policies match on it, so it never changes once released.
	ID string `json:"id"`
	// Severity ranks the finding.
	Severity Severity `json:"severity"`
	// Subject names the object the finding is about, such as "/dev/sda2"
	// or "127.0.0.1:443".
	Subject string `json:"subject"`
	// Message says what was found, in one line.
	Message string `json:"message"`
	// Remedy says how to fix it, when there is a fix to suggest.
	Remedy string `json:"remedy,omitempty"`
	// Evidence holds the key facts behind the finding, such as
	// {"pbkdf": "pbkdf2", "iterations": "1000"}. Evidence is printed and
	// written to JSON: it must never hold secrets (keys, passphrases,
	// tokens, key material or anything derived from them).
	Evidence map[string]string `json:"evidence,omitempty"`
}

// ValidID reports whether id is a well-formed finding ID: two or more
// non-empty parts of upper-case ASCII letters and digits joined by single
// hyphens, starting with a letter. LUKS-PBKDF-WEAK and TLS-CERT-EXPIRED
// are valid; luks-pbkdf-weak, LUKS, LUKS--WEAK and 1LUKS-WEAK are not.
func ValidID(id string) bool {
	if id == "" || id[0] < 'A' || id[0] > 'Z' {
		return false
	}
	parts, partLen := 1, 0
	for i := 0; i < len(id); i++ {
		switch c := id[i]; {
		case c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
			partLen++
		case c == '-':
			if partLen == 0 {
				return false
			}
			parts++
			partLen = 0
		default:
			return false
		}
	}
	return parts >= 2 && partLen > 0
}

// Report is the result of one checker run: what was checked and what was
// found. The zero value is an empty report ready for [Report.Add].
type Report struct {
	// Tool is the program that made the report, normally "nhscrypt".
	Tool string `json:"tool"`
	// Command is the command that ran, such as "luks check".
	Command string `json:"command,omitempty"`
	// Host is the machine the checks ran on, when relevant.
	Host string `json:"host,omitempty"`
	// Started is when the run began.
	Started time.Time `json:"started"`
	// Findings are the results, in the order they were added. Use
	// [Report.Sorted] for display order.
	Findings []Finding `json:"findings"`
	// Checked lists every subject that was checked, including those with
	// no findings, so a clean result can be told from no result.
	Checked []string `json:"checked,omitempty"`
}

// Add appends f to the report's findings.
//
// Add panics if f.ID is not a valid ID (see [ValidID]) or f.Severity is not
// one of Info, Warn and Fail. Both come from the checker's code, not from
// its input, so a bad one is a programmer error.
func (r *Report) Add(f Finding) {
	if !ValidID(f.ID) {
		panic(fmt.Sprintf("report: invalid finding ID %q", f.ID))
	}
	if !f.Severity.valid() {
		panic(fmt.Sprintf("report: finding %s has invalid severity %d", f.ID, int(f.Severity)))
	}
	r.Findings = append(r.Findings, f)
}

// Sorted returns a copy of the findings, most severe first, then by
// subject, then by ID. Findings equal in all three keep the order they
// were added in. The Finding values are copied; their Evidence maps are
// shared with the report.
func (r *Report) Sorted() []Finding {
	s := slices.Clone(r.Findings)
	slices.SortStableFunc(s, func(a, b Finding) int {
		if c := cmp.Compare(b.Severity, a.Severity); c != 0 {
			return c
		}
		if c := cmp.Compare(a.Subject, b.Subject); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
	return s
}

// Max returns the highest severity among the findings. It returns false
// when there are no findings.
func (r *Report) Max() (Severity, bool) {
	if len(r.Findings) == 0 {
		return 0, false
	}
	m := r.Findings[0].Severity
	for _, f := range r.Findings[1:] {
		m = max(m, f.Severity)
	}
	return m, true
}

// Counts is the number of findings of each severity.
type Counts struct {
	Info int `json:"info"`
	Warn int `json:"warn"`
	Fail int `json:"fail"`
}

// Total returns the sum of the counts.
func (c Counts) Total() int { return c.Info + c.Warn + c.Fail }

// Counts returns the number of findings of each severity.
func (r *Report) Counts() Counts {
	var c Counts
	for _, f := range r.Findings {
		switch f.Severity {
		case Info:
			c.Info++
		case Warn:
			c.Warn++
		case Fail:
			c.Fail++
		}
	}
	return c
}

// ExitCode returns the process exit status for the report: [ExitFailures]
// if any finding is a Fail, [ExitWarnings] if the worst is a Warn, and
// [ExitOK] otherwise (no findings, or Info findings only).
func (r *Report) ExitCode() int {
	m, ok := r.Max()
	switch {
	case !ok || m < Warn:
		return ExitOK
	case m == Warn:
		return ExitWarnings
	default:
		return ExitFailures
	}
}
