// Package rollingdefrag defragments the members of a running cluster one at
// a time (etcdctl defrag, made safe): learners skipped, followers first and
// the leader last (optionally after moving leadership), each only when every
// member is healthy and caught up before and after it, and only if the
// member's rule holds: a condition over its sizes in a small expression
// language (Rule). alarm's NOSPACE recovery and the scheduler use it; the
// offline rewrite of a stopped member's db is package defrag.
package rollingdefrag

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/etcdkit/etcdkit/cluster"
	"github.com/etcdkit/etcdkit/compact"
)

// ErrUnhealthy reports a cluster that is not healthy or caught up enough
// to take a member out for defragmentation.
var ErrUnhealthy = cluster.ErrUnhealthy

// Options tune a rolling defrag of a running cluster.
type Options struct {
	Rule            *Rule // nil: every member
	Compact         bool  // compact to the current revision first
	DryRun          bool
	ContinueOnError bool
	MoveLeader      bool // move leadership away before defragmenting the leader
	// MaxIndexGap is how far a member's applied index may trail the
	// highest raft index for the cluster to count as caught up.
	MaxIndexGap uint64
	// ReadyTimeout bounds each wait for the cluster to be healthy and
	// caught up, before and after each member.
	ReadyTimeout time.Duration
	// Quota is assumed for members that do not report theirs.
	Quota int64
	// IgnoreAlarms lets members with active alarms count as healthy (to
	// recover from NOSPACE, which is exactly such an alarm).
	IgnoreAlarms bool
	// Log, when set, receives one line per step.
	Log func(format string, args ...any)
}

// MemberResult is what happened to one member.
type MemberResult struct {
	Endpoint string        `json:"endpoint"`
	Name     string        `json:"name"`
	ID       string        `json:"id"`
	Action   string        `json:"action"` // defragmented, skipped, would defragment, failed
	Reason   string        `json:"reason,omitempty"`
	Before   int64         `json:"sizeBefore"`
	InUse    int64         `json:"sizeInUse"`
	After    int64         `json:"sizeAfter,omitempty"`
	Took     time.Duration `json:"took,omitempty"`
	Error    string        `json:"error,omitempty"`
}

// Actions of MemberResult.
const (
	Defragmented    = "defragmented"
	Skipped         = "skipped"
	WouldDefragment = "would defragment"
	Failed          = "failed"
)

func (o *Options) defaults() {
	if o.MaxIndexGap == 0 {
		o.MaxIndexGap = 1000
	}
	if o.ReadyTimeout == 0 {
		o.ReadyTimeout = time.Minute
	}
	if o.Log == nil {
		o.Log = func(string, ...any) {}
	}
	if o.Rule == nil {
		o.Rule = &Rule{}
	}
}

// Rolling defragments the members of a running cluster one at a time:
// learners are skipped, followers go first and the leader last (with
// MoveLeader, leadership moves to a caught-up follower first). Before each
// member every member must be healthy and caught up; after it, the
// cluster must be so again before the next. The rule decides per member.
func Run(ctx context.Context, c *cluster.Cluster, opts Options) ([]MemberResult, error) {
	opts.defaults()
	if opts.Compact && !opts.DryRun {
		st := c.Status(ctx, opts.Quota)
		var rev int64
		for _, s := range st {
			rev = max(rev, s.Revision)
		}
		if rev > 0 {
			opts.Log("compacting to revision %d", rev)
			if _, err := compact.Compact(ctx, c, compact.Policy{Revision: rev, Physical: true}); err != nil {
				return nil, err
			}
			settle(ctx, c, opts)
		}
	}
	st, err := waitReady(ctx, c, opts)
	if err != nil {
		return nil, err
	}
	// Followers by endpoint, then the leader.
	sort.SliceStable(st, func(i, j int) bool {
		if st[i].IsLeader != st[j].IsLeader {
			return !st[i].IsLeader
		}
		return st[i].Endpoint < st[j].Endpoint
	})
	var results []MemberResult
	var firstErr error
	for _, m := range st {
		// The gate before this member, and its sizes as they are now:
		// earlier members' defrags and the compaction's background work
		// have changed them.
		var fresh []cluster.MemberStatus
		var readyErr error
		if !opts.DryRun {
			fresh, readyErr = waitReady(ctx, c, opts)
			for _, s := range fresh {
				if s.Endpoint == m.Endpoint && s.OK() {
					m = s
				}
			}
		}
		r := MemberResult{Endpoint: m.Endpoint, Name: m.Name, ID: m.ID, Before: m.DBSize, InUse: m.DBSizeInUse}
		vars := memberVars(m)
		do, err := opts.Rule.Eval(vars)
		switch {
		case m.IsLearner:
			r.Action, r.Reason = Skipped, "learner"
		case err != nil:
			return results, err
		case !do:
			r.Action, r.Reason = Skipped, "rule is false: "+formatVars(vars)
		case opts.DryRun:
			r.Action, r.Reason = WouldDefragment, formatVars(vars)
		default:
			err = defragMember(ctx, c, m, fresh, readyErr, opts, &r)
		}
		opts.Log("%s (%s): %s %s", m.Name, m.Endpoint, r.Action, r.Reason)
		results = append(results, r)
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			if !opts.ContinueOnError {
				return results, err
			}
		}
	}
	return results, firstErr
}

// defragMember moves leadership if asked, runs the Defragment RPC on the
// member and waits for the cluster again. st and readyErr are the outcome
// of the readiness gate before it.
func defragMember(ctx context.Context, c *cluster.Cluster, m cluster.MemberStatus, st []cluster.MemberStatus, readyErr error, opts Options, r *MemberResult) error {
	fail := func(err error) error {
		r.Action, r.Error = Failed, err.Error()
		return fmt.Errorf("%s (%s): %w", m.Name, m.Endpoint, err)
	}
	if readyErr != nil {
		return fail(readyErr)
	}
	if opts.MoveLeader && isLeader(st, m.Endpoint) {
		if err := moveLeader(ctx, c, st, m, opts); err != nil {
			return fail(err)
		}
	}
	cli, err := c.ForEndpoint(m.Endpoint)
	if err != nil {
		return fail(err)
	}
	defer cli.Close()
	// The member blocks while it rewrites its db: allow for a slow disk.
	dctx, cancel := context.WithTimeout(ctx, c.Timeout()+time.Minute+time.Duration(m.DBSize/(8<<20))*time.Second)
	defer cancel()
	start := time.Now()
	if _, err := cli.Defragment(dctx, m.Endpoint); err != nil {
		return fail(fmt.Errorf("defragment: %w", err))
	}
	r.Took = time.Since(start)
	st, err = waitReady(ctx, c, opts)
	if err != nil {
		return fail(fmt.Errorf("after the defrag: %w", err))
	}
	for _, s := range st {
		if s.Endpoint == m.Endpoint {
			r.After = s.DBSize
		}
	}
	r.Action = Defragmented
	r.Reason = fmt.Sprintf("%d -> %d bytes", r.Before, r.After)
	return nil
}

func isLeader(st []cluster.MemberStatus, ep string) bool {
	for _, s := range st {
		if s.Endpoint == ep {
			return s.IsLeader
		}
	}
	return false
}

// moveLeader hands leadership from m to the follower with the highest
// applied index and waits until the cluster reports the new leader.
func moveLeader(ctx context.Context, c *cluster.Cluster, st []cluster.MemberStatus, m cluster.MemberStatus, opts Options) error {
	var target *cluster.MemberStatus
	for i, s := range st {
		if s.IsLearner || s.IsLeader || !s.OK() {
			continue
		}
		if target == nil || s.RaftAppliedIndex > target.RaftAppliedIndex {
			target = &st[i]
		}
	}
	if target == nil {
		opts.Log("no follower to move leadership to; defragmenting the leader in place")
		return nil
	}
	opts.Log("moving leadership from %s to %s", m.Name, target.Name)
	cli, err := c.ForEndpoint(m.Endpoint)
	if err != nil {
		return err
	}
	defer cli.Close()
	mctx, cancel := context.WithTimeout(ctx, c.Timeout())
	defer cancel()
	if _, err := cli.MoveLeader(mctx, target.MemberID); err != nil {
		return fmt.Errorf("move leader to %s: %w", target.Name, err)
	}
	deadline := time.Now().Add(opts.ReadyTimeout)
	for time.Now().Before(deadline) {
		if isLeader(c.Status(ctx, opts.Quota), target.Endpoint) {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s did not become leader", target.Name)
}

// SettleKey is written and deleted after a compaction: bolt returns the
// pages a compaction freed to its freelist only when a later write
// transaction begins, so until something is written the members report
// their old in-use sizes, and a rule would see no free space.
const SettleKey = "__etcdkit/settle"

// settle writes SettleKey until no member's in-use size changes any more
// (at most ten rounds): a physical compaction waits only for the member
// that served it, and the others' freed pages show only after a write.
func settle(ctx context.Context, c *cluster.Cluster, opts Options) {
	prev := map[string]int64{}
	for round := 0; round < 10; round++ {
		wctx, cancel := context.WithTimeout(ctx, c.Timeout())
		_, err := c.Client.Put(wctx, SettleKey, "")
		if err == nil {
			_, err = c.Client.Delete(wctx, SettleKey)
		}
		cancel()
		if err != nil {
			return // a cluster out of space takes no writes; its sizes are what they are
		}
		time.Sleep(200 * time.Millisecond)
		changed := false
		for _, s := range c.Status(ctx, opts.Quota) {
			if p, ok := prev[s.Endpoint]; !ok || p != s.DBSizeInUse {
				changed = true
			}
			prev[s.Endpoint] = s.DBSizeInUse
		}
		if !changed && round >= 2 {
			return
		}
	}
}

// waitReady waits until every member answers, is healthy and has applied
// within MaxIndexGap of the highest raft index, and returns the statuses.
func waitReady(ctx context.Context, c *cluster.Cluster, opts Options) ([]cluster.MemberStatus, error) {
	deadline := time.Now().Add(opts.ReadyTimeout)
	for {
		st, why := ready(ctx, c, opts)
		if why == "" {
			return st, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return st, fmt.Errorf("%w: %s (waited %s)", ErrUnhealthy, why, opts.ReadyTimeout)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func ready(ctx context.Context, c *cluster.Cluster, opts Options) ([]cluster.MemberStatus, string) {
	st := c.Status(ctx, opts.Quota)
	var maxIndex uint64
	for _, s := range st {
		if !s.OK() {
			return st, fmt.Sprintf("%s does not answer: %s", s.Endpoint, s.Error)
		}
		maxIndex = max(maxIndex, s.RaftIndex)
	}
	for _, s := range st {
		if gap := maxIndex - s.RaftAppliedIndex; s.RaftAppliedIndex < maxIndex && gap > opts.MaxIndexGap {
			return st, fmt.Sprintf("%s has applied %d entries less than the newest raft index", s.Endpoint, gap)
		}
	}
	for _, h := range c.Health(ctx) {
		if !h.Healthy && !(opts.IgnoreAlarms && strings.HasPrefix(h.Error, "active alarm")) {
			return st, fmt.Sprintf("%s is unhealthy: %s", h.Endpoint, h.Error)
		}
	}
	return st, ""
}
