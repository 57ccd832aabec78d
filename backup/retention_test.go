package backup_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // Europe/London for the DST calendar, whatever the host has

	"github.com/nhscrypt/nhscrypt/backup"
)

// retentionNow is the "now" of every test: after all test snapshots except
// the ones deliberately dated in the future.
var retentionNow = time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)

func mustParse(t testing.TB, layout, s string, loc *time.Location) time.Time {
	t.Helper()
	tm, err := time.ParseInLocation(layout, s, loc)
	if err != nil {
		t.Fatal(err)
	}
	return tm
}

// keptReasons maps the ID of every kept snapshot to its reasons and checks
// that removed snapshots have no reasons.
func keptReasons(t *testing.T, ds []backup.RetentionDecision) map[string][]string {
	t.Helper()
	got := make(map[string][]string)
	for _, d := range ds {
		if d.Keep != (len(d.Reasons) > 0) {
			t.Errorf("%s: Keep=%v with reasons %q", d.Snapshot.ID, d.Keep, d.Reasons)
		}
		if d.Keep {
			got[d.Snapshot.ID] = d.Reasons
		}
	}
	return got
}

// smallCalendar is one group of ten snapshots, worked by hand below.
// ISO weeks: 2024-01-01 (Mon) .. 2024-01-07 (Sun) is 2024-W01, 2024-01-08 is
// 2024-W02, 2024-01-31 and 2024-02-01 are 2024-W05, and both 2024-12-30 and
// 2025-01-02 are in 2025-W01 (different years, same week).
func smallCalendar(t testing.TB) []backup.RetentionSnapshot {
	in := []struct{ id, time, tags string }{
		{"a", "2024-01-01 09:00", ""},
		{"b", "2024-01-01 18:00", ""},
		{"c", "2024-01-03 10:00", "manual"},
		{"d", "2024-01-07 23:30", ""},
		{"e", "2024-01-08 00:30", ""},
		{"f", "2024-01-08 00:45", ""},
		{"g", "2024-01-31 12:00", "manual,pre-upgrade"},
		{"h", "2024-02-01 12:00", ""},
		{"i", "2024-12-30 08:00", ""},
		{"j", "2025-01-02 08:00", ""},
	}
	var out []backup.RetentionSnapshot
	// Shuffled on purpose: ApplyRetention must sort.
	for _, k := range []int{3, 9, 0, 5, 7, 1, 8, 2, 6, 4} {
		s := backup.RetentionSnapshot{
			ID:    in[k].id,
			Time:  mustParse(t, "2006-01-02 15:04", in[k].time, time.UTC),
			Host:  "mopped",
			Paths: []string{"/home/user/work"},
		}
		if in[k].tags != "" {
			s.Tags = strings.Split(in[k].tags, ",")
		}
		out = append(out, s)
	}
	return out
}

func TestApplyRetentionSmallCalendar(t *testing.T) {
	const (
		last    = "last snapshot"
		hourly  = "hourly snapshot"
		daily   = "daily snapshot"
		weekly  = "weekly snapshot"
		monthly = "monthly snapshot"
		yearly  = "yearly snapshot"
	)
	r := func(rs ...string) []string { return rs }
	all := func(reason string, except ...string) map[string][]string {
		m := make(map[string][]string)
		for _, id := range strings.Split("abcdefghij", "") {
			if !slices.Contains(except, id) {
				m[id] = r(reason)
			}
		}
		return m
	}
	hourlyAll := all(hourly, "e")
	dailyAll := all(daily, "e")
	dailyAll["a"] = r("oldest " + daily)
	untagged := all("has tags []", "c", "g")

	// Newest first: j i h g f e d c b a.
	tests := []struct {
		name string
		p    backup.RetentionPolicy
		want map[string][]string
	}{
		{"last 3", backup.RetentionPolicy{Last: 3},
			map[string][]string{"j": r(last), "i": r(last), "h": r(last)}},
		{"last unlimited", backup.RetentionPolicy{Last: backup.KeepUnlimited}, all(last)},
		{"last more than snapshots", backup.RetentionPolicy{Last: 50}, all(last)},
		{"hourly 3", backup.RetentionPolicy{Hourly: 3},
			map[string][]string{"j": r(hourly), "i": r(hourly), "h": r(hourly)}},
		// e (00:30) shares its hour with the newer f (00:45).
		{"hourly unlimited", backup.RetentionPolicy{Hourly: -1}, hourlyAll},
		{"daily 4", backup.RetentionPolicy{Daily: 4},
			map[string][]string{"j": r(daily), "i": r(daily), "h": r(daily), "g": r(daily)}},
		// a shares 2024-01-01 with b but is the group's oldest snapshot and
		// the rule is not full, so it is kept as well.
		{"daily unlimited", backup.RetentionPolicy{Daily: -1}, dailyAll},
		{"weekly 3", backup.RetentionPolicy{Weekly: 3},
			map[string][]string{"j": r(weekly), "h": r(weekly), "f": r(weekly)}},
		{"weekly 10 not full keeps oldest", backup.RetentionPolicy{Weekly: 10},
			map[string][]string{"j": r(weekly), "h": r(weekly), "f": r(weekly), "d": r(weekly), "a": r("oldest " + weekly)}},
		{"monthly 2", backup.RetentionPolicy{Monthly: 2},
			map[string][]string{"j": r(monthly), "i": r(monthly)}},
		{"monthly 4 exactly full", backup.RetentionPolicy{Monthly: 4},
			map[string][]string{"j": r(monthly), "i": r(monthly), "h": r(monthly), "g": r(monthly)}},
		{"monthly 5 not full keeps oldest", backup.RetentionPolicy{Monthly: 5},
			map[string][]string{"j": r(monthly), "i": r(monthly), "h": r(monthly), "g": r(monthly), "a": r("oldest " + monthly)}},
		{"yearly 2", backup.RetentionPolicy{Yearly: 2},
			map[string][]string{"j": r(yearly), "i": r(yearly)}},
		{"yearly 5", backup.RetentionPolicy{Yearly: 5},
			map[string][]string{"j": r(yearly), "i": r(yearly), "a": r("oldest " + yearly)}},
		{"yearly unlimited", backup.RetentionPolicy{Yearly: -1},
			map[string][]string{"j": r(yearly), "i": r(yearly), "a": r("oldest " + yearly)}},
		{"union of calendar rules", backup.RetentionPolicy{Daily: 2, Weekly: 2, Monthly: 3, Yearly: 1},
			map[string][]string{
				"j": r(daily, weekly, monthly, yearly),
				"i": r(daily, monthly),
				"h": r(weekly, monthly),
			}},
		{"last and monthly", backup.RetentionPolicy{Last: 1, Monthly: 4},
			map[string][]string{"j": r(last, monthly), "i": r(monthly), "h": r(monthly), "g": r(monthly)}},
		// i is exactly 72h before j: "within" is strict, as in restic.
		{"within boundary excluded", backup.RetentionPolicy{Within: 72 * time.Hour},
			map[string][]string{"j": r("within 72h0m0s")}},
		{"within boundary plus 1s", backup.RetentionPolicy{Within: 72*time.Hour + time.Second},
			map[string][]string{"j": r("within 72h0m1s"), "i": r("within 72h0m1s")}},
		{"keep-tag", backup.RetentionPolicy{Tags: []string{"manual"}},
			map[string][]string{"c": r("has tags [manual]"), "g": r("has tags [manual]")}},
		{"keep-tag list is AND, spaces trimmed", backup.RetentionPolicy{Tags: []string{" manual , pre-upgrade"}},
			map[string][]string{"g": r("has tags [manual, pre-upgrade]")}},
		{"keep-tag lists are OR", backup.RetentionPolicy{Tags: []string{"pre-upgrade", "manual"}},
			map[string][]string{"c": r("has tags [manual]"), "g": r("has tags [pre-upgrade]", "has tags [manual]")}},
		{"keep-tag empty matches untagged", backup.RetentionPolicy{Tags: []string{""}}, untagged},
		{"reason order: tags, within, counted rules", backup.RetentionPolicy{Tags: []string{"manual"}, Within: 24 * time.Hour, Last: 1, Daily: 1},
			map[string][]string{
				"j": r("within 24h0m0s", last, daily),
				"c": r("has tags [manual]"),
				"g": r("has tags [manual]"),
			}},
		{"keep-tag plus last", backup.RetentionPolicy{Tags: []string{"nosuch"}, Last: 1},
			map[string][]string{"j": r(last)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ds, err := backup.ApplyRetentionAt(smallCalendar(t), tt.p, retentionNow)
			if err != nil {
				t.Fatal(err)
			}
			var order []string
			for _, d := range ds {
				order = append(order, d.Snapshot.ID)
			}
			if got := strings.Join(order, ""); got != "jihgfedcba" {
				t.Errorf("decision order %q, want newest first %q", got, "jihgfedcba")
			}
			if got := keptReasons(t, ds); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("kept:\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

// restic's documentation, "Removing snapshots according to a policy"
// (doc/060_forget.rst, https://restic.readthedocs.io/en/stable/060_forget.html):
// backups every weekday for two weeks, an extra one on Fridays, none on the
// second Wednesday; "restic forget --keep-daily 5" keeps one snapshot for
// each of the last five days that have one:
//
//	8a603ddf  2025-04-25 23:00:00  daily snapshot
//	fb8b1418  2025-04-28 11:00:00  daily snapshot
//	1db188b4  2025-04-29 11:00:00  daily snapshot
//	7baa4f28  2025-05-01 11:00:00  daily snapshot
//	ad72e262  2025-05-02 23:00:00  daily snapshot
//
// and removes the other six. (The doc's "keep" table prints ID 8a603ddf
// next to 23:00, the time of ae33bf10 in its snapshot list; this test goes
// by the times.)
func resticDocCalendar(t testing.TB) []backup.RetentionSnapshot {
	var out []backup.RetentionSnapshot
	for _, l := range []string{
		"60e5c031 2025-04-21 11:00:00",
		"1dccffe9 2025-04-22 11:00:00",
		"90a5c949 2025-04-23 11:00:00",
		"79580708 2025-04-24 11:00:00",
		"8a603ddf 2025-04-25 11:00:00",
		"ae33bf10 2025-04-25 23:00:00",
		"fb8b1418 2025-04-28 11:00:00",
		"1db188b4 2025-04-29 11:00:00",
		"7baa4f28 2025-05-01 11:00:00",
		"05c48af3 2025-05-02 11:00:00",
		"ad72e262 2025-05-02 23:00:00",
	} {
		id, ts, _ := strings.Cut(l, " ")
		out = append(out, backup.RetentionSnapshot{
			ID:    id,
			Time:  mustParse(t, time.DateTime, ts, time.UTC),
			Host:  "mopped",
			Paths: []string{"/home/user/work"},
		})
	}
	return out
}

func TestApplyRetentionResticDocExample(t *testing.T) {
	ds, err := backup.ApplyRetentionAt(resticDocCalendar(t), backup.RetentionPolicy{Daily: 5}, retentionNow)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{ // kept times, newest first
		"2025-05-02 23:00:00",
		"2025-05-01 11:00:00",
		"2025-04-29 11:00:00",
		"2025-04-28 11:00:00",
		"2025-04-25 23:00:00",
	}
	var got []string
	for _, d := range ds {
		if d.Keep {
			got = append(got, d.Snapshot.Time.Format(time.DateTime))
			if !slices.Equal(d.Reasons, []string{"daily snapshot"}) {
				t.Errorf("%s: reasons %q, want [daily snapshot]", d.Snapshot.ID, d.Reasons)
			}
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("kept %q\nwant %q", got, want)
	}
	if removed := len(ds) - len(got); removed != 6 {
		t.Errorf("removed %d snapshots, want 6", removed)
	}
}

// restic's documentation, same section: "suppose you make one backup every
// day for 100 years. Then forget --keep-daily 7 --keep-weekly 5
// --keep-monthly 12 --keep-yearly 75 would keep the most recent 7 daily
// snapshots and 4 last-day-of-the-week ones (since the 7 dailies already
// include 1 weekly). Additionally, 12 or 11 last-day-of-the-month snapshots
// [...] And finally 75 or 74 last-day-of-the-year snapshots". With the last
// backup on Sunday 2024-12-29, by hand: dailies 12-23..12-29 (all in
// 2024-W52); weeklies 12-29 (already daily), 12-22, 12-15, 12-08, 12-01;
// monthlies 12-29 (already), 11-30 back to 2024-01-31; yearlies 2024-12-29
// (already), 2023-12-31 back to 1950-12-31. 7+4+11+74 = 96.
func TestApplyRetentionResticDocHundredYears(t *testing.T) {
	var snaps []backup.RetentionSnapshot
	end := time.Date(2024, 12, 29, 12, 0, 0, 0, time.UTC)
	for d := time.Date(1925, 1, 1, 12, 0, 0, 0, time.UTC); !d.After(end); d = d.AddDate(0, 0, 1) {
		snaps = append(snaps, backup.RetentionSnapshot{ID: d.Format(time.DateOnly), Time: d, Host: "h", Paths: []string{"/"}})
	}
	p := backup.RetentionPolicy{Daily: 7, Weekly: 5, Monthly: 12, Yearly: 75}
	ds, err := backup.ApplyRetentionAt(snaps, p, retentionNow)
	if err != nil {
		t.Fatal(err)
	}
	perReason := make(map[string]int)
	onlyReason := make(map[string]int) // kept snapshots whose first reason is this one
	kept := 0
	for _, d := range ds {
		for _, r := range d.Reasons {
			perReason[r]++
		}
		if d.Keep {
			kept++
			onlyReason[d.Reasons[0]]++
		}
	}
	wantPer := map[string]int{"daily snapshot": 7, "weekly snapshot": 5, "monthly snapshot": 12, "yearly snapshot": 75}
	if !reflect.DeepEqual(perReason, wantPer) {
		t.Errorf("reasons counted %v, want %v", perReason, wantPer)
	}
	wantFirst := map[string]int{"daily snapshot": 7, "weekly snapshot": 4, "monthly snapshot": 11, "yearly snapshot": 74}
	if !reflect.DeepEqual(onlyReason, wantFirst) {
		t.Errorf("new snapshots per rule %v, want %v", onlyReason, wantFirst)
	}
	if kept != 96 {
		t.Errorf("kept %d snapshots, want 96", kept)
	}
}

func TestApplyRetentionEmptyPolicy(t *testing.T) {
	for _, p := range []backup.RetentionPolicy{{}, {Tags: []string{}}} {
		if !p.Empty() {
			t.Errorf("%+v: Empty() = false", p)
		}
		for _, snaps := range [][]backup.RetentionSnapshot{nil, smallCalendar(t)} {
			ds, err := backup.ApplyRetentionAt(snaps, p, retentionNow)
			if !errors.Is(err, backup.ErrEmptyPolicy) || ds != nil {
				t.Errorf("%+v on %d snapshots: got %v, %v; want nil, ErrEmptyPolicy", p, len(snaps), ds, err)
			}
		}
	}
	for _, p := range []backup.RetentionPolicy{
		{Last: 1}, {Hourly: 1}, {Daily: -1}, {Weekly: 2}, {Monthly: 3}, {Yearly: 4},
		{Within: time.Nanosecond}, {Tags: []string{""}}, {Last: -5},
	} {
		if p.Empty() {
			t.Errorf("%+v: Empty() = true", p)
		}
	}
}

func TestApplyRetentionInvalidPolicy(t *testing.T) {
	for _, p := range []backup.RetentionPolicy{
		{Last: -2}, {Hourly: -3}, {Daily: -2}, {Weekly: -100}, {Monthly: -2, Daily: 3}, {Yearly: -2},
		{Within: -time.Nanosecond}, {Within: -time.Hour, Last: 1},
	} {
		ds, err := backup.ApplyRetentionAt(smallCalendar(t), p, retentionNow)
		if !errors.Is(err, backup.ErrInvalidPolicy) || ds != nil {
			t.Errorf("%+v: got %d decisions, %v; want ErrInvalidPolicy", p, len(ds), err)
		}
	}
}

func TestApplyRetentionNoSnapshots(t *testing.T) {
	ds, err := backup.ApplyRetentionAt(nil, backup.RetentionPolicy{Last: 1}, retentionNow)
	if err != nil || len(ds) != 0 {
		t.Errorf("got %v, %v; want no decisions and no error", ds, err)
	}
}

// A keep-tag policy that matches nothing in a group would remove the whole
// group: refused, like restic's "refusing to delete last snapshot of
// snapshot group".
func TestApplyRetentionRefusesToRemoveGroup(t *testing.T) {
	snaps := smallCalendar(t)
	other := backup.RetentionSnapshot{ID: "z", Time: retentionNow.Add(-time.Hour), Host: "kasimir", Paths: []string{"/srv", "/etc"}, Tags: []string{"manual"}}
	snaps = append(snaps, other)

	_, err := backup.ApplyRetentionAt(snaps, backup.RetentionPolicy{Tags: []string{"manual"}}, retentionNow)
	if err != nil {
		t.Fatalf("every group has a match: %v", err)
	}
	ds, err := backup.ApplyRetentionAt(snaps, backup.RetentionPolicy{Tags: []string{"pre-upgrade"}}, retentionNow)
	var rae *backup.RemoveAllError
	if !errors.As(err, &rae) || ds != nil {
		t.Fatalf("got %d decisions, %v; want *RemoveAllError", len(ds), err)
	}
	if rae.Host != "kasimir" || !slices.Equal(rae.Paths, []string{"/etc", "/srv"}) {
		t.Errorf("error names host %q paths %q, want kasimir [/etc /srv]", rae.Host, rae.Paths)
	}
	if !strings.Contains(err.Error(), `"kasimir"`) {
		t.Errorf("error %q does not name the host", err)
	}
}

// Groups are independent, ordered by host then sorted paths, and paths are
// compared as a set regardless of their order in a snapshot.
func TestApplyRetentionGroups(t *testing.T) {
	at := func(h int) time.Time { return retentionNow.Add(-time.Duration(h) * time.Hour) }
	paths := []string{"/y", "/x"}
	snaps := []backup.RetentionSnapshot{
		{ID: "b1", Time: at(1), Host: "b", Paths: paths},
		{ID: "a1", Time: at(5), Host: "a", Paths: []string{"/z"}},
		{ID: "b2", Time: at(2), Host: "b", Paths: []string{"/x", "/y"}},
		{ID: "a2", Time: at(3), Host: "a", Paths: []string{"/z"}},
		{ID: "a3", Time: at(4), Host: "a", Paths: []string{"/a"}},
		{ID: "b3", Time: at(9), Host: "b", Paths: []string{"/x"}},
		{ID: "c1", Time: at(9), Host: "", Paths: nil},
	}
	ds, err := backup.ApplyRetentionAt(snaps, backup.RetentionPolicy{Last: 1}, retentionNow)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range ds {
		s := d.Snapshot.ID
		if d.Keep {
			s += "+"
		}
		got = append(got, s)
	}
	want := []string{"c1+", "a3+", "a2+", "a1", "b3+", "b1+", "b2"}
	if !slices.Equal(got, want) {
		t.Errorf("decisions %q, want %q", got, want)
	}
	if !slices.Equal(paths, []string{"/y", "/x"}) {
		t.Errorf("caller's Paths modified: %q", paths)
	}
}

// Equal times are ordered by ID, whatever the input order, so the result
// does not depend on how a backend lists snapshots.
func TestApplyRetentionTiesByID(t *testing.T) {
	tm := retentionNow.Add(-time.Hour)
	mk := func(id string) backup.RetentionSnapshot {
		return backup.RetentionSnapshot{ID: id, Time: tm, Host: "h"}
	}
	for _, in := range [][]backup.RetentionSnapshot{
		{mk("x"), mk("m"), mk("a")},
		{mk("a"), mk("x"), mk("m")},
	} {
		ds, err := backup.ApplyRetentionAt(in, backup.RetentionPolicy{Last: 1}, retentionNow)
		if err != nil {
			t.Fatal(err)
		}
		if ds[0].Snapshot.ID != "a" || !ds[0].Keep || ds[1].Keep || ds[2].Keep {
			t.Errorf("got %+v, want only a kept", ds)
		}
	}
}

// Buckets are taken in the location the snapshot's time carries, as restic
// does with the time recorded in the snapshot: 23:30 and 01:00 at UTC-5
// are different days there but the same day in UTC.
func TestApplyRetentionOwnLocation(t *testing.T) {
	est := time.FixedZone("EST", -5*3600)
	snaps := []backup.RetentionSnapshot{
		{ID: "s1", Time: time.Date(2024, 3, 11, 1, 0, 0, 0, est), Host: "h"},
		{ID: "s2", Time: time.Date(2024, 3, 10, 23, 30, 0, 0, est), Host: "h"},
		{ID: "s3", Time: time.Date(2024, 3, 1, 12, 0, 0, 0, est), Host: "h"},
	}
	ds, err := backup.ApplyRetentionAt(snaps, backup.RetentionPolicy{Daily: 5}, retentionNow)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{"s1": {"daily snapshot"}, "s2": {"daily snapshot"}, "s3": {"daily snapshot"}}
	if got := keptReasons(t, ds); !reflect.DeepEqual(got, want) {
		t.Errorf("kept %q, want %q", got, want)
	}
}

// keep-within is measured from the newest snapshot that is not in the
// future, so a snapshot dated years ahead (a wrong clock, or a forged
// snapshot in an append-only repository) cannot push the real ones out of
// the window; it is kept itself. If every snapshot is in the future, all
// are kept.
func TestApplyRetentionWithinIgnoresFuture(t *testing.T) {
	at := func(d time.Duration) backup.RetentionSnapshot {
		return backup.RetentionSnapshot{ID: d.String(), Time: retentionNow.Add(d), Host: "h"}
	}
	snaps := []backup.RetentionSnapshot{at(-time.Hour), at(-2 * time.Hour), at(-50 * time.Hour), at(5 * 365 * 24 * time.Hour)}
	ds, err := backup.ApplyRetentionAt(snaps, backup.RetentionPolicy{Within: 24 * time.Hour}, retentionNow)
	if err != nil {
		t.Fatal(err)
	}
	w := []string{"within 24h0m0s"}
	want := map[string][]string{"-1h0m0s": w, "-2h0m0s": w, "43800h0m0s": w}
	if got := keptReasons(t, ds); !reflect.DeepEqual(got, want) {
		t.Errorf("kept %q, want %q", got, want)
	}

	// A snapshot dated exactly now counts as in the future: the reference
	// is the one 2h ago, so the one 2h30m ago is within 1h of it.
	edge := []backup.RetentionSnapshot{at(0), at(-2 * time.Hour), at(-150 * time.Minute), at(-190 * time.Minute)}
	ds, err = backup.ApplyRetentionAt(edge, backup.RetentionPolicy{Within: time.Hour}, retentionNow)
	if err != nil {
		t.Fatal(err)
	}
	w = []string{"within 1h0m0s"}
	want = map[string][]string{"0s": w, "-2h0m0s": w, "-2h30m0s": w}
	if got := keptReasons(t, ds); !reflect.DeepEqual(got, want) {
		t.Errorf("snapshot at now: kept %q, want %q", got, want)
	}

	future := []backup.RetentionSnapshot{at(time.Hour), at(1000 * time.Hour)}
	ds, err = backup.ApplyRetentionAt(future, backup.RetentionPolicy{Within: time.Hour}, retentionNow)
	if err != nil {
		t.Fatal(err)
	}
	if got := keptReasons(t, ds); len(got) != 2 {
		t.Errorf("all-future group: kept %q, want both", got)
	}

	// ApplyRetention uses the real clock: these are all in the past.
	ds, err = backup.ApplyRetention(snaps[:3], backup.RetentionPolicy{Within: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if got := keptReasons(t, ds); len(got) != 2 {
		t.Errorf("ApplyRetention: kept %q, want the two within 24h of the newest", got)
	}
}

// bigCalendar has three groups:
//   - alpha /etc,/home: one snapshot every 6 hours (UTC) from 2023-07-01 to
//     2024-12-31 18:00, paths listed in either order;
//   - alpha /srv: 400 random times in the same span, some in bursts of three
//     within a minute, a tenth tagged "manual";
//   - beta /: 600 random times in Europe/London (DST), bursts, tags, and one
//     snapshot dated 2030 (in the future).
func bigCalendar(t testing.TB) []backup.RetentionSnapshot {
	london, err := time.LoadLocation("Europe/London")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2023, 7, 1, 0, 0, 0, 0, time.UTC)
	end := time.Date(2024, 12, 31, 18, 0, 0, 0, time.UTC)
	var out []backup.RetentionSnapshot
	for i, tm := 0, start; !tm.After(end); i, tm = i+1, tm.Add(6*time.Hour) {
		paths := []string{"/etc", "/home"}
		if i%2 == 1 {
			paths = []string{"/home", "/etc"}
		}
		out = append(out, backup.RetentionSnapshot{ID: fmt.Sprintf("alpha-%04d", i), Time: tm, Host: "alpha", Paths: paths})
	}
	rng := rand.New(rand.NewPCG(1, 2))
	span := end.Sub(start)
	irregular := func(host string, paths []string, n int, loc *time.Location) {
		for i := 0; i < n; {
			tm := start.Add(time.Duration(rng.Int64N(int64(span)))).In(loc)
			burst := 1
			if rng.IntN(10) == 0 {
				burst = 3
			}
			for range burst {
				s := backup.RetentionSnapshot{ID: fmt.Sprintf("%s%s-%04d", host, paths[0], i), Time: tm, Host: host, Paths: paths}
				if rng.IntN(10) == 0 {
					s.Tags = []string{"manual"}
				}
				out = append(out, s)
				tm = tm.Add(time.Duration(rng.IntN(20)) * time.Second)
				i++
			}
		}
	}
	irregular("alpha", []string{"/srv"}, 400, time.UTC)
	irregular("beta", []string{"/"}, 600, london)
	out = append(out, backup.RetentionSnapshot{ID: "beta-future", Time: time.Date(2030, 1, 1, 0, 0, 0, 0, london), Host: "beta", Paths: []string{"/"}})
	return out
}

// The regular group with restic's documented example policy, by hand: the
// last 7 days at 18:00; weeks 2025-W01 (Tue 12-31) and 2024-W52 (Sun
// 12-29) are already dailies, so weekly adds 12-22, 12-15, 12-08; monthly
// adds the last day of each month from 2024-11 back to 2024-01; yearly adds
// 2023-12-31 and, having fewer than 75 years, the group's oldest snapshot.
func TestApplyRetentionBigCalendarByHand(t *testing.T) {
	p := backup.RetentionPolicy{Daily: 7, Weekly: 5, Monthly: 12, Yearly: 75}
	ds, err := backup.ApplyRetentionAt(bigCalendar(t), p, retentionNow)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"2024-12-31 18:00 daily snapshot,weekly snapshot,monthly snapshot,yearly snapshot",
		"2024-12-30 18:00 daily snapshot",
		"2024-12-29 18:00 daily snapshot,weekly snapshot",
		"2024-12-28 18:00 daily snapshot",
		"2024-12-27 18:00 daily snapshot",
		"2024-12-26 18:00 daily snapshot",
		"2024-12-25 18:00 daily snapshot",
		"2024-12-22 18:00 weekly snapshot",
		"2024-12-15 18:00 weekly snapshot",
		"2024-12-08 18:00 weekly snapshot",
		"2024-11-30 18:00 monthly snapshot",
		"2024-10-31 18:00 monthly snapshot",
		"2024-09-30 18:00 monthly snapshot",
		"2024-08-31 18:00 monthly snapshot",
		"2024-07-31 18:00 monthly snapshot",
		"2024-06-30 18:00 monthly snapshot",
		"2024-05-31 18:00 monthly snapshot",
		"2024-04-30 18:00 monthly snapshot",
		"2024-03-31 18:00 monthly snapshot",
		"2024-02-29 18:00 monthly snapshot",
		"2024-01-31 18:00 monthly snapshot",
		"2023-12-31 18:00 yearly snapshot",
		"2023-07-01 00:00 oldest yearly snapshot",
	}
	var got []string
	for _, d := range ds {
		if d.Keep && d.Snapshot.Host == "alpha" && len(d.Snapshot.Paths) == 2 {
			got = append(got, d.Snapshot.Time.Format("2006-01-02 15:04 ")+strings.Join(d.Reasons, ","))
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("kept:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestApplyRetentionBigCalendarInvariants(t *testing.T) {
	snaps := bigCalendar(t)
	for _, p := range []backup.RetentionPolicy{
		{Last: 10},
		{Last: -1},
		{Hourly: 48},
		{Hourly: 1000000},
		{Daily: 7, Weekly: 5, Monthly: 12, Yearly: 75},
		{Daily: -1},
		{Weekly: -1, Monthly: 6},
		{Monthly: 17},
		{Monthly: 18},
		{Monthly: 19},
		{Within: 30 * 24 * time.Hour, Monthly: -1},
		{Within: 5 * time.Minute},
		{Tags: []string{"manual"}, Daily: 3},
		{Tags: []string{"", "manual"}},
		{Last: 3, Hourly: 5, Daily: 5, Weekly: 5, Monthly: 5, Yearly: 5},
	} {
		t.Run(fmt.Sprintf("%+v", p), func(t *testing.T) {
			ds, err := backup.ApplyRetentionAt(snaps, p, retentionNow)
			if err != nil {
				t.Fatal(err)
			}
			checkRetention(t, snaps, p, retentionNow, ds)
		})
	}
}

// retentionGroupKey is the group of s as the tests see it.
func retentionGroupKey(s backup.RetentionSnapshot) []string {
	paths := slices.Clone(s.Paths)
	slices.Sort(paths)
	return append([]string{s.Host}, paths...)
}

// checkRetention checks the decisions ds for snaps against every property
// of the policy: one decision per snapshot, group order, and per group the
// rule-by-rule invariants of checkRetentionGroup. It also checks that each
// group decided alone gives the same decisions.
func checkRetention(t *testing.T, snaps []backup.RetentionSnapshot, p backup.RetentionPolicy, now time.Time, ds []backup.RetentionDecision) {
	t.Helper()
	if len(ds) != len(snaps) {
		t.Fatalf("%d decisions for %d snapshots", len(ds), len(snaps))
	}
	count := make(map[string]int)
	for _, s := range snaps {
		count[s.ID]++
	}
	for _, d := range ds {
		count[d.Snapshot.ID]--
	}
	for id, n := range count {
		if n != 0 {
			t.Fatalf("snapshot %s: %d decisions too few", id, n)
		}
	}

	inputs := make(map[string][]backup.RetentionSnapshot) // input order
	for _, s := range snaps {
		k := fmt.Sprintf("%q", retentionGroupKey(s))
		inputs[k] = append(inputs[k], s)
	}
	for start := 0; start < len(ds); {
		key := retentionGroupKey(ds[start].Snapshot)
		end := start + 1
		for end < len(ds) && slices.Equal(retentionGroupKey(ds[end].Snapshot), key) {
			end++
		}
		if end < len(ds) && slices.Compare(key, retentionGroupKey(ds[end].Snapshot)) >= 0 {
			t.Fatalf("group %q comes before group %q", key, retentionGroupKey(ds[end].Snapshot))
		}
		group := ds[start:end]
		checkRetentionGroup(t, p, now, group)

		alone, err := backup.ApplyRetentionAt(inputs[fmt.Sprintf("%q", key)], p, now)
		if err != nil || !reflect.DeepEqual(alone, group) {
			t.Errorf("group %q decided alone differs (err %v)", key, err)
		}
		start = end
	}
}

type retentionRuleSpec struct {
	reason string
	n      int
	bucket func(time.Time) string
}

func retentionRuleSpecs(p backup.RetentionPolicy) []retentionRuleSpec {
	return []retentionRuleSpec{
		{"hourly snapshot", p.Hourly, func(t time.Time) string { return t.Format("2006-01-02 15") }},
		{"daily snapshot", p.Daily, func(t time.Time) string { return t.Format(time.DateOnly) }},
		{"weekly snapshot", p.Weekly, func(t time.Time) string {
			y, w := t.ISOWeek()
			return fmt.Sprintf("%04d-W%02d", y, w)
		}},
		{"monthly snapshot", p.Monthly, func(t time.Time) string { return t.Format("2006-01") }},
		{"yearly snapshot", p.Yearly, func(t time.Time) string { return t.Format("2006") }},
	}
}

// checkRetentionGroup checks one group's decisions, which must be sorted
// newest first and use one location, so that calendar buckets are
// contiguous runs. It rebuilds the reasons each snapshot must have:
//   - keep-tag: exactly the snapshots matching a tag list;
//   - keep-within: exactly the snapshots after the newest non-future
//     snapshot minus Within;
//   - keep-last N: exactly the first min(N, size) snapshots;
//   - each calendar rule with N buckets: the newest snapshot of each of the
//     newest min(N, number of buckets) buckets, so no bucket twice, and the
//     group's oldest snapshot as "oldest …" if the rule was not full and
//     did not already keep it;
//
// and requires Reasons to be exactly those (union semantics), in that order.
func checkRetentionGroup(t *testing.T, p backup.RetentionPolicy, now time.Time, group []backup.RetentionDecision) {
	t.Helper()
	n := len(group)
	for i := 1; i < n; i++ {
		if group[i].Snapshot.Time.After(group[i-1].Snapshot.Time) {
			t.Fatalf("%s is newer than %s but comes after it", group[i].Snapshot.ID, group[i-1].Snapshot.ID)
		}
	}
	want := make([][]string, n)

	for _, l := range p.Tags {
		var list []string
		for tag := range strings.SplitSeq(l, ",") {
			list = append(list, strings.TrimSpace(tag))
		}
		for i, d := range group {
			match := true
			for _, tag := range list {
				if tag == "" && len(d.Snapshot.Tags) == 0 {
					break
				}
				if !slices.Contains(d.Snapshot.Tags, tag) {
					match = false
					break
				}
			}
			if match {
				want[i] = append(want[i], "has tags ["+strings.Join(list, ", ")+"]")
			}
		}
	}

	if p.Within > 0 {
		var ref time.Time
		for _, d := range group {
			if d.Snapshot.Time.Before(now) && d.Snapshot.Time.After(ref) {
				ref = d.Snapshot.Time
			}
		}
		for i, d := range group {
			if d.Snapshot.Time.After(ref.Add(-p.Within)) {
				want[i] = append(want[i], "within "+p.Within.String())
			}
		}
	}

	if p.Last != 0 {
		k := n
		if p.Last > 0 {
			k = min(p.Last, n)
		}
		for i := range k {
			want[i] = append(want[i], "last snapshot")
		}
	}

	for _, r := range retentionRuleSpecs(p) {
		if r.n == 0 || n == 0 {
			continue
		}
		// Newest snapshot of each bucket, newest bucket first.
		var newest []int
		seen := make(map[string]bool)
		for i, d := range group {
			b := r.bucket(d.Snapshot.Time)
			if !seen[b] {
				seen[b] = true
				newest = append(newest, i)
			}
		}
		k := len(newest)
		if r.n > 0 {
			k = min(r.n, k)
		}
		kept := newest[:k]
		for _, i := range kept {
			want[i] = append(want[i], r.reason)
		}
		if (r.n < 0 || len(newest) < r.n) && !slices.Contains(kept, n-1) {
			want[n-1] = append(want[n-1], "oldest "+r.reason)
		}

		// The same, stated as the invariants they imply, on the result.
		var got []int
		perBucket := make(map[string]int)
		for i, d := range group {
			if slices.Contains(d.Reasons, r.reason) {
				got = append(got, i)
				perBucket[r.bucket(d.Snapshot.Time)]++
				if i > 0 && r.bucket(group[i-1].Snapshot.Time) == r.bucket(d.Snapshot.Time) {
					t.Errorf("%s: %s kept but a newer snapshot %s is in its bucket", r.reason, d.Snapshot.ID, group[i-1].Snapshot.ID)
				}
			}
			if slices.Contains(d.Reasons, "oldest "+r.reason) && i != n-1 {
				t.Errorf("%s: oldest reason on %s, which is not the oldest", r.reason, d.Snapshot.ID)
			}
		}
		for b, c := range perBucket {
			if c > 1 {
				t.Errorf("%s: bucket %s kept %d times", r.reason, b, c)
			}
		}
		if len(got) != k {
			t.Errorf("%s: kept %d, want %d (N=%d, %d buckets)", r.reason, len(got), k, r.n, len(newest))
		}
	}

	for i, d := range group {
		if !slices.Equal(d.Reasons, want[i]) {
			t.Errorf("%s (%s): reasons %q, want %q", d.Snapshot.ID, d.Snapshot.Time, d.Reasons, want[i])
		}
		if d.Keep != (len(want[i]) > 0) {
			t.Errorf("%s: Keep=%v, want %v", d.Snapshot.ID, d.Keep, len(want[i]) > 0)
		}
	}
}

// FuzzApplyRetention decodes snapshots from data (6 bytes each: minutes
// since 2022 over three years, host and paths and tags selectors; one
// location per host, so calendar buckets are contiguous) and checks: no
// panic; the documented errors and only those; one decision per snapshot;
// keep-last N keeps at least min(N, group size) in each group; and every
// invariant of checkRetention.
func FuzzApplyRetention(f *testing.F) {
	seed := make([]byte, 0, 6*64)
	for i := range 64 {
		seed = binary.BigEndian.AppendUint32(seed, uint32(i*i*997))
		seed = append(seed, byte(i*7), byte(i*13))
	}
	f.Add(seed, int8(3), int8(0), int8(7), int8(4), int8(12), int8(-1), int64(0), "")
	f.Add(seed, int8(0), int8(24), int8(0), int8(0), int8(0), int8(0), int64(48*time.Hour), "x")
	f.Add(seed, int8(0), int8(0), int8(0), int8(0), int8(0), int8(0), int64(0), "x,y")
	f.Add(seed[:60], int8(-1), int8(-1), int8(-1), int8(-1), int8(-1), int8(-1), int64(time.Minute), ",")
	f.Add(seed, int8(0), int8(0), int8(0), int8(0), int8(0), int8(0), int64(0), "\x00")
	f.Add([]byte{}, int8(1), int8(0), int8(0), int8(0), int8(0), int8(0), int64(0), "")
	f.Add(seed[:12], int8(-2), int8(0), int8(0), int8(0), int8(0), int8(0), int64(0), "")

	locs := []*time.Location{time.UTC, time.FixedZone("EST", -5*3600), time.FixedZone("IST", 5*3600+1800)}
	base := time.Date(2022, 1, 1, 0, 0, 0, 0, time.UTC)
	now := base.AddDate(2, 6, 0) // some snapshots are in the future
	f.Fuzz(func(t *testing.T, data []byte, last, hourly, daily, weekly, monthly, yearly int8, within int64, tag string) {
		var snaps []backup.RetentionSnapshot
		for i := 0; i+6 <= len(data) && len(snaps) < 500; i += 6 {
			mins := binary.BigEndian.Uint32(data[i:]) % (3 * 366 * 24 * 60)
			host := int(data[i+4] % 3)
			s := backup.RetentionSnapshot{
				ID:   fmt.Sprintf("s%03d", len(snaps)),
				Time: base.Add(time.Duration(mins) * time.Minute).In(locs[host]),
				Host: string(rune('a' + host)),
			}
			switch data[i+5] % 3 {
			case 1:
				s.Paths = []string{"/a"}
			case 2:
				s.Paths = []string{"/b", "/a"}
			}
			switch (data[i+5] >> 2) % 4 {
			case 1:
				s.Tags = []string{"x"}
			case 2:
				s.Tags = []string{"y"}
			case 3:
				s.Tags = []string{"x", "y"}
			}
			snaps = append(snaps, s)
		}
		p := backup.RetentionPolicy{
			Last: int(last), Hourly: int(hourly), Daily: int(daily),
			Weekly: int(weekly), Monthly: int(monthly), Yearly: int(yearly),
			Within: time.Duration(within),
		}
		if tag != "" {
			p.Tags = []string{tag}
		}

		ds, err := backup.ApplyRetentionAt(snaps, p, now)
		invalid := slices.ContainsFunc([]int{p.Last, p.Hourly, p.Daily, p.Weekly, p.Monthly, p.Yearly},
			func(n int) bool { return n < -1 }) || p.Within < 0
		var rae *backup.RemoveAllError
		switch {
		case invalid:
			if !errors.Is(err, backup.ErrInvalidPolicy) || ds != nil {
				t.Fatalf("invalid policy %+v: got %d decisions, %v", p, len(ds), err)
			}
			return
		case p.Empty():
			if !errors.Is(err, backup.ErrEmptyPolicy) || ds != nil {
				t.Fatalf("empty policy: got %d decisions, %v", len(ds), err)
			}
			return
		case errors.As(err, &rae):
			onlyTags := backup.RetentionPolicy{Tags: p.Tags}
			if !reflect.DeepEqual(p, onlyTags) || ds != nil {
				t.Fatalf("RemoveAllError for %+v with %d decisions", p, len(ds))
			}
			return
		case err != nil:
			t.Fatalf("unexpected error %v", err)
		}
		checkRetention(t, snaps, p, now, ds)

		if p.Last > 0 {
			groups := make(map[string][2]int) // size, kept
			for _, d := range ds {
				k := fmt.Sprintf("%q", retentionGroupKey(d.Snapshot))
				g := groups[k]
				g[0]++
				if d.Keep {
					g[1]++
				}
				groups[k] = g
			}
			for k, g := range groups {
				if g[1] < min(p.Last, g[0]) {
					t.Errorf("group %s: kept %d of %d with Last=%d", k, g[1], g[0], p.Last)
				}
			}
		}
	})
}

// restic's documented example (see TestApplyRetentionResticDocExample).
func ExampleApplyRetentionAt() {
	var snaps []backup.RetentionSnapshot
	for _, ts := range []string{
		"2025-04-21 11:00", "2025-04-22 11:00", "2025-04-23 11:00", "2025-04-24 11:00",
		"2025-04-25 11:00", "2025-04-25 23:00", "2025-04-28 11:00", "2025-04-29 11:00",
		"2025-05-01 11:00", "2025-05-02 11:00", "2025-05-02 23:00",
	} {
		tm, _ := time.Parse("2006-01-02 15:04", ts)
		snaps = append(snaps, backup.RetentionSnapshot{ID: ts, Time: tm, Host: "mopped", Paths: []string{"/home/user/work"}})
	}
	now := time.Date(2025, 5, 3, 0, 0, 0, 0, time.UTC)
	decisions, err := backup.ApplyRetentionAt(snaps, backup.RetentionPolicy{Daily: 5}, now)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, d := range decisions {
		verb := "remove"
		if d.Keep {
			verb = "keep  "
		}
		fmt.Println(verb, d.Snapshot.ID, d.Reasons)
	}

	_, err = backup.ApplyRetentionAt(snaps, backup.RetentionPolicy{}, now)
	fmt.Println(err)
	// Output:
	// keep   2025-05-02 23:00 [daily snapshot]
	// remove 2025-05-02 11:00 []
	// keep   2025-05-01 11:00 [daily snapshot]
	// keep   2025-04-29 11:00 [daily snapshot]
	// keep   2025-04-28 11:00 [daily snapshot]
	// keep   2025-04-25 23:00 [daily snapshot]
	// remove 2025-04-25 11:00 []
	// remove 2025-04-24 11:00 []
	// remove 2025-04-23 11:00 []
	// remove 2025-04-22 11:00 []
	// remove 2025-04-21 11:00 []
	// no retention policy given, no snapshots will be removed
}
