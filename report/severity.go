package report

import (
	"fmt"
	"strconv"
)

// Severity ranks a [Finding]. The constants are ordered, so severities
// compare with < and >: Info < Warn < Fail. The zero value is Info.
//
// Severity implements [encoding.TextMarshaler] and
// [encoding.TextUnmarshaler], so it appears in JSON as "info", "warn" or
// "fail".
type Severity int

const (
	// Info is a fact worth knowing that needs no action. A report with
	// only Info findings exits with [ExitOK].
	Info Severity = iota
	// Warn is a weakness that should be fixed: exit code [ExitWarnings].
	Warn
	// Fail is a problem that must be fixed: exit code [ExitFailures].
	Fail
)

var severityNames = [...]string{
	Info: "info",
	Warn: "warn",
	Fail: "fail",
}

// valid reports whether s is one of the declared constants.
func (s Severity) valid() bool {
	return s >= Info && s <= Fail
}

// String returns "info", "warn" or "fail", or "Severity(N)" for a value
// that is not one of the constants.
func (s Severity) String() string {
	if !s.valid() {
		return "Severity(" + strconv.Itoa(int(s)) + ")"
	}
	return severityNames[s]
}

// ParseSeverity returns the Severity whose [Severity.String] form is name.
// Matching is exact: "info", "warn" or "fail". Any other name is an error.
func ParseSeverity(name string) (Severity, error) {
	for s, n := range severityNames {
		if n == name {
			return Severity(s), nil
		}
	}
	return 0, fmt.Errorf("unknown severity %q (want info, warn or fail)", name)
}

// MarshalText implements [encoding.TextMarshaler]. It returns an error for a
// value that is not one of the constants.
func (s Severity) MarshalText() ([]byte, error) {
	if !s.valid() {
		return nil, fmt.Errorf("invalid severity %d", int(s))
	}
	return []byte(severityNames[s]), nil
}

// UnmarshalText implements [encoding.TextUnmarshaler] using
// [ParseSeverity]; an unknown name is an error and leaves s unchanged.
func (s *Severity) UnmarshalText(text []byte) error {
	v, err := ParseSeverity(string(text))
	if err != nil {
		return err
	}
	*s = v
	return nil
}
