package report

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"unicode"
	"unicode/utf8"
)

// WriteText writes the report to w as an aligned table with the columns
// SEVERITY, ID, SUBJECT and MESSAGE, in [Report.Sorted] order. A finding
// with a remedy is followed by a line "remedy: ..." indented to the MESSAGE
// column. A summary line ends the output: "3 findings: 1 fail, 1 warn,
// 1 info", or "no findings (N subjects checked)" when there are none, in
// which case the table is omitted. Evidence is not printed; use
// [Report.WriteJSON] for it.
//
// Control characters and other non-printable runes in the fields are
// written escaped (as in a Go string literal), so a hostile subject or
// message cannot break the table or the terminal.
func (r *Report) WriteText(w io.Writer) error {
	if len(r.Findings) == 0 {
		_, err := fmt.Fprintf(w, "no findings (%s checked)\n", plural(len(r.Checked), "subject"))
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SEVERITY\tID\tSUBJECT\tMESSAGE")
	for _, f := range r.Sorted() {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n",
			f.Severity, clean(f.ID), clean(f.Subject), clean(f.Message))
		if f.Remedy != "" {
			// Empty leading cells keep the line in the table's column
			// blocks, so it does not split the alignment of the rows
			// around it; the remedy, as the last cell, adds no width.
			fmt.Fprintf(tw, "\t\t\tremedy: %s\n", clean(f.Remedy))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	c := r.Counts()
	_, err := fmt.Fprintf(w, "%s: %d fail, %d warn, %d info\n",
		plural(c.Total(), "finding"), c.Fail, c.Warn, c.Info)
	return err
}

// plural returns "1 thing" or "n things".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.Itoa(n) + " " + noun + "s"
}

// clean escapes runes that are not printable (tabs, newlines, terminal
// escapes) and bytes that are not valid UTF-8, as a Go string literal
// would, so that s stays on one line and in one cell. Printable text,
// quotes and backslashes included, is left as it is.
func clean(s string) string {
	if utf8.ValidString(s) && strings.IndexFunc(s, isUnsafe) < 0 {
		return s
	}
	var b strings.Builder
	for len(s) > 0 {
		r, n := utf8.DecodeRuneInString(s)
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, `\x%02x`, s[0])
		case isUnsafe(r):
			q := strconv.QuoteRuneToASCII(r)
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteString(s[:n])
		}
		s = s[n:]
	}
	return b.String()
}

func isUnsafe(r rune) bool { return !unicode.IsPrint(r) }

// MarshalJSON encodes the report as [Report.WriteJSON] does, without the
// indentation: the Report fields with the findings in [Report.Sorted]
// order and never null, plus "counts" (a [Counts]) and "exit_code" (from
// [Report.ExitCode]). Decoding that JSON back into a Report ignores the
// two extra fields.
func (r Report) MarshalJSON() ([]byte, error) {
	// fields has Report's fields but not its methods, so encoding it
	// does not recurse into this MarshalJSON.
	type fields Report
	j := struct {
		fields
		Counts   Counts `json:"counts"`
		ExitCode int    `json:"exit_code"`
	}{fields(r), r.Counts(), r.ExitCode()}
	j.Findings = r.Sorted()
	if j.Findings == nil {
		j.Findings = []Finding{}
	}
	return json.Marshal(j)
}

// WriteJSON writes the report to w as one indented JSON object followed
// by a newline; see [Report.MarshalJSON] for its fields. It returns an
// error if a finding has an invalid severity.
func (r *Report) WriteJSON(w io.Writer) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}
