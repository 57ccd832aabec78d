package backup

// Retention policy for "nhscrypt backup forget".
//
// The semantics are those of restic's forget command, documented in
// restic's "Removing snapshots according to a policy"
// (https://restic.readthedocs.io/en/stable/060_forget.html) as of restic
// 0.17 and later: "unlimited" counts, the extra "oldest" snapshot kept when
// a counted rule is not filled, keep-within ignoring snapshots dated in the
// future, keep-tag lists, and the refusal to remove every snapshot of a
// group. restic's --keep-within-{hourly,...} rules are not implemented.

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// KeepUnlimited, as a count in a RetentionPolicy, keeps every hour, day,
// week, month or year that has a snapshot (restic's "unlimited").
const KeepUnlimited = -1

// RetentionSnapshot is what the policy needs to know of a snapshot.
type RetentionSnapshot struct {
	ID    string
	Time  time.Time // calendar buckets use Time's own location
	Host  string
	Paths []string
	Tags  []string
}

// RetentionPolicy says which snapshots of each group to keep; every other
// snapshot of the group is removed. A snapshot is kept if any rule keeps it.
//
// Each count is 0 (rule off), a positive number of snapshots (Last) or of
// calendar buckets that have a snapshot (Hourly to Yearly), or
// KeepUnlimited. Any other negative count is invalid.
type RetentionPolicy struct {
	Last    int // keep the Last most recent snapshots
	Hourly  int // keep the newest snapshot of each of the last Hourly hours that have one
	Daily   int // same for days
	Weekly  int // same for ISO 8601 weeks (Monday to Sunday)
	Monthly int // same for months
	Yearly  int // same for years

	// Within keeps every snapshot taken less than Within before the group's
	// newest snapshot that is not dated in the future. 0 turns it off;
	// negative is invalid.
	Within time.Duration

	// Tags keeps snapshots that match at least one entry. An entry is a
	// comma-separated tag list, as restic's --keep-tag: "a,b" matches
	// snapshots that have both a and b, and "" matches untagged snapshots.
	Tags []string
}

// Empty reports whether p has no rule at all. ApplyRetention refuses an
// empty policy, so that forget without a policy removes nothing.
func (p RetentionPolicy) Empty() bool {
	return p.Last == 0 && p.Hourly == 0 && p.Daily == 0 && p.Weekly == 0 &&
		p.Monthly == 0 && p.Yearly == 0 && p.Within == 0 && len(p.Tags) == 0
}

// ErrEmptyPolicy is returned by ApplyRetention for a policy with no rule.
var ErrEmptyPolicy = errors.New("no retention policy given, no snapshots will be removed")

// ErrInvalidPolicy is wrapped by the error ApplyRetention returns for a
// negative count other than KeepUnlimited or a negative Within.
var ErrInvalidPolicy = errors.New("invalid retention policy")

// RemoveAllError is returned by ApplyRetention when the policy would remove
// every snapshot of a group, which can only happen when its only rules are
// Tags and no snapshot of the group matches them. ApplyRetention then
// returns no decisions at all, so nothing is removed.
type RemoveAllError struct {
	Host  string
	Paths []string // sorted
}

func (e *RemoveAllError) Error() string {
	return fmt.Sprintf("refusing to remove every snapshot of host %q paths %q: none matches the retention policy", e.Host, e.Paths)
}

// RetentionDecision is the fate of one snapshot. Reasons says which rules
// keep it, in restic's words: "last snapshot", "hourly snapshot",
// "daily snapshot", "weekly snapshot", "monthly snapshot", "yearly snapshot",
// the same prefixed by "oldest " (see ApplyRetention), "within 168h0m0s"
// and "has tags [a, b]". Reasons is nil when Keep is false.
type RetentionDecision struct {
	Snapshot RetentionSnapshot
	Keep     bool
	Reasons  []string
}

// ApplyRetention is ApplyRetentionAt at time.Now().
func ApplyRetention(snaps []RetentionSnapshot, p RetentionPolicy) ([]RetentionDecision, error) {
	return ApplyRetentionAt(snaps, p, time.Now())
}

// ApplyRetentionAt groups snaps by host and sorted paths, applies the
// policy to each group on its own, and returns one decision per snapshot:
// groups ordered by host then paths, newest snapshot first within a group
// (equal times ordered by ID, then input order). now only matters to Within:
// the reference is the newest snapshot dated strictly before now, so a
// snapshot dated in the future cannot push the others out of the window
// (and is itself kept).
//
// Within a group, walking from newest to oldest, the Last rule keeps the
// first Last snapshots, and each calendar rule keeps a snapshot whose hour,
// day, ISO week, month or year differs from that of the last snapshot the
// same rule kept, until it has kept its count. A rule that still has count
// left when it reaches the group's oldest snapshot keeps it even if its
// bucket was already kept, with the reason prefixed by "oldest ", so that a
// policy never drops the oldest history before it is full.
//
// It returns ErrEmptyPolicy for an empty policy, an error wrapping
// ErrInvalidPolicy for an invalid one, and *RemoveAllError if a group would
// lose all its snapshots; the decisions are nil with any error.
func ApplyRetentionAt(snaps []RetentionSnapshot, p RetentionPolicy, now time.Time) ([]RetentionDecision, error) {
	if err := p.validate(); err != nil {
		return nil, err
	}
	if p.Empty() {
		return nil, ErrEmptyPolicy
	}

	groups := retentionGroups(snaps)
	out := make([]RetentionDecision, 0, len(snaps))
	for _, g := range groups {
		decisions := p.applyToGroup(g.snaps, now)
		if !slices.ContainsFunc(decisions, func(d RetentionDecision) bool { return d.Keep }) {
			return nil, &RemoveAllError{Host: g.host, Paths: g.paths}
		}
		out = append(out, decisions...)
	}
	return out, nil
}

func (p RetentionPolicy) validate() error {
	for _, c := range []struct {
		name string
		n    int
	}{
		{"keep-last", p.Last},
		{"keep-hourly", p.Hourly},
		{"keep-daily", p.Daily},
		{"keep-weekly", p.Weekly},
		{"keep-monthly", p.Monthly},
		{"keep-yearly", p.Yearly},
	} {
		if c.n < KeepUnlimited {
			return fmt.Errorf("%w: %s is %d, want a count or %d for unlimited", ErrInvalidPolicy, c.name, c.n, KeepUnlimited)
		}
	}
	if p.Within < 0 {
		return fmt.Errorf("%w: keep-within is negative (%v)", ErrInvalidPolicy, p.Within)
	}
	return nil
}

type retentionGroup struct {
	host  string
	paths []string
	snaps []RetentionSnapshot // newest first
}

// retentionGroups splits snaps by host and sorted paths, in a stable order.
func retentionGroups(snaps []RetentionSnapshot) []*retentionGroup {
	byKey := make(map[string]*retentionGroup)
	var groups []*retentionGroup
	for _, s := range snaps {
		paths := slices.Clone(s.Paths)
		slices.Sort(paths)
		// Quoted strings cannot run into each other, so the key is unambiguous.
		key := strconv.Quote(s.Host)
		for _, p := range paths {
			key += strconv.Quote(p)
		}
		g, ok := byKey[key]
		if !ok {
			g = &retentionGroup{host: s.Host, paths: paths}
			byKey[key] = g
			groups = append(groups, g)
		}
		g.snaps = append(g.snaps, s)
	}
	slices.SortFunc(groups, func(a, b *retentionGroup) int {
		return cmp.Or(strings.Compare(a.host, b.host), slices.Compare(a.paths, b.paths))
	})
	for _, g := range groups {
		slices.SortStableFunc(g.snaps, func(a, b RetentionSnapshot) int {
			return cmp.Or(b.Time.Compare(a.Time), strings.Compare(a.ID, b.ID))
		})
	}
	return groups
}

// retentionBucket identifies a calendar bucket, or for the Last rule a
// single snapshot (by its position in the group).
type retentionBucket struct{ a, b, c, d int }

type retentionRule struct {
	left   int // counts still to keep; KeepUnlimited never runs out
	bucket func(t time.Time, nr int) retentionBucket
	reason string

	last    retentionBucket // bucket of the snapshot this rule kept last
	hasLast bool
}

func (p RetentionPolicy) rules() []retentionRule {
	return []retentionRule{
		{left: p.Last, reason: "last snapshot", bucket: func(_ time.Time, nr int) retentionBucket {
			return retentionBucket{a: nr}
		}},
		{left: p.Hourly, reason: "hourly snapshot", bucket: func(t time.Time, _ int) retentionBucket {
			return retentionBucket{t.Year(), int(t.Month()), t.Day(), t.Hour()}
		}},
		{left: p.Daily, reason: "daily snapshot", bucket: func(t time.Time, _ int) retentionBucket {
			return retentionBucket{t.Year(), int(t.Month()), t.Day(), 0}
		}},
		{left: p.Weekly, reason: "weekly snapshot", bucket: func(t time.Time, _ int) retentionBucket {
			y, w := t.ISOWeek()
			return retentionBucket{y, w, 0, 0}
		}},
		{left: p.Monthly, reason: "monthly snapshot", bucket: func(t time.Time, _ int) retentionBucket {
			return retentionBucket{t.Year(), int(t.Month()), 0, 0}
		}},
		{left: p.Yearly, reason: "yearly snapshot", bucket: func(t time.Time, _ int) retentionBucket {
			return retentionBucket{t.Year(), 0, 0, 0}
		}},
	}
}

// applyToGroup decides for one group, sorted newest first.
func (p RetentionPolicy) applyToGroup(group []RetentionSnapshot, now time.Time) []RetentionDecision {
	// The reference for Within is the newest snapshot strictly before now;
	// if there is none, the cutoff lies before every snapshot.
	var latest time.Time
	for _, s := range group {
		if s.Time.After(latest) && s.Time.Before(now) {
			latest = s.Time
		}
	}
	cutoff := latest.Add(-p.Within)

	tagLists := make([][]string, len(p.Tags))
	for i, l := range p.Tags {
		for t := range strings.SplitSeq(l, ",") {
			tagLists[i] = append(tagLists[i], strings.TrimSpace(t))
		}
	}

	rules := p.rules()
	out := make([]RetentionDecision, len(group))
	for nr, s := range group {
		var reasons []string
		for _, l := range tagLists {
			if retentionHasTags(s.Tags, l) {
				reasons = append(reasons, "has tags ["+strings.Join(l, ", ")+"]")
			}
		}
		if p.Within > 0 && s.Time.After(cutoff) {
			reasons = append(reasons, "within "+p.Within.String())
		}
		oldest := nr == len(group)-1
		for i := range rules {
			r := &rules[i]
			if r.left == 0 {
				continue
			}
			b := r.bucket(s.Time, nr)
			same := r.hasLast && b == r.last
			if same && !oldest {
				continue
			}
			reason := r.reason
			if same {
				reason = "oldest " + reason
			}
			r.last, r.hasLast = b, true
			if r.left > 0 {
				r.left--
			}
			reasons = append(reasons, reason)
		}
		out[nr] = RetentionDecision{Snapshot: s, Keep: len(reasons) > 0, Reasons: reasons}
	}
	return out
}

// retentionHasTags reports whether a snapshot with tags matches the tag
// list l: it has every tag of l, or it is untagged and l contains "" (as
// restic's Snapshot.HasTags, which checks the list in order).
func retentionHasTags(tags, l []string) bool {
	for _, t := range l {
		if t == "" && len(tags) == 0 {
			return true
		}
		if !slices.Contains(tags, t) {
			return false
		}
	}
	return true
}
