// Package compact compacts a running cluster's key history by an explicit
// revision or by a policy (keep the last N revisions, or the last D of
// time), never past the newest backup it knows of unless forced.
//
// etcd keeps no record of when a revision was written. To map a duration to
// a revision, etcdkit keeps a revision clock in the cluster itself: the key
// __etcdkit/revision-clock holds (time, revision) samples that every
// compact run and the scheduler add. A duration can be honoured once the
// clock reaches back that far.
package compact

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/cluster"
)

// ClockKey is where the revision clock lives.
const ClockKey = "__etcdkit/revision-clock"

// Errors a caller maps to exit codes.
var (
	// ErrPastBackup: the compaction would remove history newer than the
	// newest backup.
	ErrPastBackup = errors.New("refusing to compact past the newest backup")
	// ErrNoClock: no revision is known from long enough ago.
	ErrNoClock = errors.New("no revision known from that long ago")
	// ErrPolicy: the policy is not one of revision, keep-revisions and
	// keep-duration.
	ErrPolicy = errors.New("bad compaction policy")
)

// Policy says how far to compact: exactly one of Revision, KeepRevisions
// and KeepDuration.
type Policy struct {
	Revision      int64
	KeepRevisions int64
	KeepDuration  time.Duration
	// Physical waits until the compaction has removed the history from
	// the backend.
	Physical bool
	// BackupRevision, when not 0, is the newest backup's revision: the
	// compaction may not go past it unless Force.
	BackupRevision int64
	Force          bool
	// ClampToBackup compacts to the backup's revision instead of refusing
	// when the policy would go past it (the scheduler's choice).
	ClampToBackup bool
}

// Result reports a compaction.
type Result struct {
	Revision        int64         `json:"revision"`        // compacted to
	CurrentRevision int64         `json:"currentRevision"` // when it started
	PreviousCompact int64         `json:"previousCompact"`
	Compacted       bool          `json:"compacted"` // false: nothing to do
	Physical        bool          `json:"physical"`
	Took            time.Duration `json:"took"`
}

// Compact applies the policy to the cluster.
func Compact(ctx context.Context, c *cluster.Cluster, p Policy) (Result, error) {
	start := time.Now()
	var res Result
	set := 0
	for _, b := range []bool{p.Revision > 0, p.KeepRevisions > 0, p.KeepDuration > 0} {
		if b {
			set++
		}
	}
	if set != 1 {
		return res, fmt.Errorf("%w: give exactly one of a revision, a number of revisions to keep, a duration to keep", ErrPolicy)
	}
	samples, err := RecordClock(ctx, c)
	if err != nil {
		return res, err
	}
	res.CurrentRevision = samples[len(samples)-1].Revision
	if res.PreviousCompact, err = c.CompactRevision(ctx); err != nil {
		return res, fmt.Errorf("%w: %w", cluster.ErrUnreachable, err)
	}
	switch {
	case p.Revision > 0:
		res.Revision = p.Revision
	case p.KeepRevisions > 0:
		res.Revision = res.CurrentRevision - p.KeepRevisions
	default:
		cutoff := time.Now().Add(-p.KeepDuration)
		res.Revision = revisionAt(samples, cutoff)
		if res.Revision == 0 {
			return res, fmt.Errorf("%w: the revision clock starts %s, after %s; etcdkit learns when revisions were written from each compact and scheduler run: run again later or use --keep-revisions",
				ErrNoClock, samples[0].Time.Format(time.RFC3339), cutoff.Format(time.RFC3339))
		}
	}
	if res.Revision > res.CurrentRevision {
		return res, fmt.Errorf("%w: revision %d is past the current revision %d", ErrPolicy, res.Revision, res.CurrentRevision)
	}
	if p.BackupRevision > 0 && res.Revision > p.BackupRevision && p.ClampToBackup && !p.Force {
		res.Revision = p.BackupRevision
	}
	if p.BackupRevision > 0 && res.Revision > p.BackupRevision && !p.Force {
		return res, fmt.Errorf("%w: compacting to %d would remove history after the newest backup (revision %d); compact to at most %d, take a backup first, or pass --force",
			ErrPastBackup, res.Revision, p.BackupRevision, p.BackupRevision)
	}
	if res.Revision <= res.PreviousCompact {
		res.Revision = res.PreviousCompact
		res.Took = time.Since(start)
		return res, nil // already compacted that far
	}
	var opts []clientv3.CompactOption
	timeout := c.Timeout()
	if p.Physical {
		opts = append(opts, clientv3.WithCompactPhysical())
		timeout += 10 * time.Minute // removing a large history takes its time
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if _, err := c.Client.Compact(cctx, res.Revision, opts...); err != nil {
		if errors.Is(err, rpctypes.ErrCompacted) {
			res.Took = time.Since(start)
			return res, nil // someone compacted meanwhile
		}
		return res, fmt.Errorf("compact to %d: %w", res.Revision, err)
	}
	res.Compacted, res.Physical, res.Took = true, p.Physical, time.Since(start)
	return res, nil
}

// Sample is one reading of the revision clock.
type Sample struct {
	Time     time.Time `json:"t"`
	Revision int64     `json:"r"`
}

const (
	clockEvery = time.Minute // at most one sample per minute
	clockKeep  = 1000        // samples kept; older ones are thinned
)

// RecordClock adds the current revision to the revision clock (at most
// once a minute; older samples are thinned so the clock reaches back
// further at coarser steps) and returns the samples, oldest first, the last
// one the current revision.
func RecordClock(ctx context.Context, c *cluster.Cluster) ([]Sample, error) {
	ctx, cancel := context.WithTimeout(ctx, c.Timeout())
	defer cancel()
	for attempt := 0; ; attempt++ {
		resp, err := c.Client.Get(ctx, ClockKey)
		if err != nil {
			return nil, fmt.Errorf("%w: read the revision clock: %w", cluster.ErrUnreachable, err)
		}
		var samples []Sample
		var modRev int64
		if len(resp.Kvs) > 0 {
			modRev = resp.Kvs[0].ModRevision
			_ = json.Unmarshal(resp.Kvs[0].Value, &samples) // a damaged clock starts over
		}
		now := Sample{Time: time.Now().UTC().Truncate(time.Second), Revision: resp.Header.Revision}
		if n := len(samples); n > 0 && now.Time.Sub(samples[n-1].Time) < clockEvery {
			return append(samples, now), nil
		}
		samples = thin(append(samples, now))
		b, _ := json.Marshal(samples)
		txn, err := c.Client.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(ClockKey), "=", modRev)).
			Then(clientv3.OpPut(ClockKey, string(b))).Commit()
		if err != nil {
			// Best effort: a cluster out of space (NOSPACE) refuses the
			// write but must still be compacted.
			samples[len(samples)-1] = now
			return samples, nil
		}
		if txn.Succeeded || attempt >= 3 {
			samples[len(samples)-1].Revision = txn.Header.Revision
			return samples, nil
		}
	}
}

// thin drops every other sample of the older half while there are too
// many, so that the clock covers a long time at decreasing resolution.
func thin(s []Sample) []Sample {
	for len(s) > clockKeep {
		half := len(s) / 2
		var kept []Sample
		for i := 0; i < half; i += 2 {
			kept = append(kept, s[i])
		}
		s = append(kept, s[half:]...)
	}
	return s
}

// revisionAt returns the revision of the newest sample taken at or before
// t, or 0 if the clock does not reach back that far.
func revisionAt(s []Sample, t time.Time) int64 {
	i := sort.Search(len(s), func(i int) bool { return s[i].Time.After(t) })
	if i == 0 {
		return 0
	}
	return s[i-1].Revision
}
