package backup

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"
)

// Forget applies a retention policy to the trusted snapshots and removes
// the snapshot objects it does not keep (their data goes with Prune).
// Snapshots that are not trusted are left alone. With dryRun nothing is
// removed.
// Snapshots that cannot be removed yet (an object lock) are returned in
// notRemoved; the rest are still removed.
func (r *Repository) Forget(ctx context.Context, p RetentionPolicy, t Trust, dryRun bool) (decisions []RetentionDecision, notRemoved []Warning, err error) {
	snaps, _, err := r.Snapshots(ctx, t)
	if err != nil {
		return nil, nil, err
	}
	var rs []RetentionSnapshot
	for _, s := range snaps {
		rs = append(rs, RetentionSnapshot{ID: s.ID, Time: s.Time, Host: s.Host, Paths: s.Paths, Tags: s.Tags})
	}
	decisions, err = ApplyRetention(rs, p)
	if err != nil {
		return nil, nil, err
	}
	if dryRun {
		return decisions, nil, nil
	}
	for _, d := range decisions {
		if d.Keep {
			continue
		}
		err := r.Backend.Remove(ctx, Handle{Type: SnapshotFile, Name: d.Snapshot.ID})
		switch {
		case err == nil, errors.Is(err, ErrNotFound):
		case errors.Is(err, ErrObjectLocked):
			notRemoved = append(notRemoved, Warning{Path: "snapshots/" + d.Snapshot.ID, Message: err.Error()})
		default:
			return decisions, notRemoved, fmt.Errorf("removing snapshot %s: %w", short(d.Snapshot.ID), err)
		}
	}
	return decisions, notRemoved, nil
}

// PruneResult says what Prune removed.
type PruneResult struct {
	Removed      []ObjectRef `json:"removed"`
	RemovedBytes int64       `json:"removed_bytes"`
	Referenced   int         `json:"referenced"`
	// Young lists unreferenced objects kept because they are newer than
	// the grace period: a run on another host may be about to name them.
	Young int `json:"young"`
	// NotRemoved lists objects the backend refused to delete (for
	// example under an object lock), with why.
	NotRemoved []Warning `json:"not_removed"`
}

// Prune removes data objects and manifests that no snapshot names and that
// are older than grace. Every snapshot object counts, trusted or not, so
// nothing a snapshot needs is removed; a snapshot that cannot be read
// stops the prune. It needs no private key.
func (r *Repository) Prune(ctx context.Context, grace time.Duration, dryRun bool) (*PruneResult, error) {
	ids, err := r.SnapshotIDs(ctx)
	if err != nil {
		return nil, err
	}
	ref := map[string]bool{}
	for _, id := range ids {
		s, err := r.LoadSnapshot(ctx, id, Trust{AllowUnsigned: true})
		if err != nil {
			return nil, fmt.Errorf("prune stopped, as it cannot tell what %w needs", err)
		}
		ref[s.Manifest.Name] = true
		for _, o := range s.Objects {
			ref[o.Name] = true
		}
	}
	res := &PruneResult{Referenced: len(ref)}
	cutoff := time.Now().Add(-grace)
	for _, t := range []FileType{DataFile, ManifestFile} {
		var drop []FileInfo
		err := r.Backend.List(ctx, t, func(fi FileInfo) error {
			if ref[fi.Name] {
				return nil
			}
			if fi.ModTime.After(cutoff) {
				res.Young++
				return nil
			}
			drop = append(drop, fi)
			return nil
		})
		if err != nil {
			return nil, err
		}
		sort.Slice(drop, func(i, j int) bool { return drop[i].Name < drop[j].Name })
		for _, fi := range drop {
			if !dryRun {
				if err := r.Backend.Remove(ctx, Handle{Type: t, Name: fi.Name}); err != nil && !errors.Is(err, ErrNotFound) {
					if ctx.Err() != nil {
						return res, ctx.Err()
					}
					res.NotRemoved = append(res.NotRemoved, Warning{Path: string(t) + "/" + fi.Name, Message: err.Error()})
					continue
				}
			}
			res.Removed = append(res.Removed, ObjectRef{Name: fi.Name, Size: fi.Size})
			res.RemovedBytes += fi.Size
		}
	}
	return res, nil
}
