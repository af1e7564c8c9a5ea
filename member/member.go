// Package member changes a running cluster's membership: add (as a
// learner first), remove, promote, update, and replace — a dead member
// swapped for a new one in the order that never costs quorum: the new
// member joins as a learner (no vote), the dead one is removed, the
// learner is promoted once etcd says it is in sync. Every step first reads
// the membership, so a replace interrupted anywhere continues from where
// the cluster is when it runs again.
package member

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/etcdkit/etcdkit/cluster"
)

var (
	// ErrNoMember: no member has that name or ID.
	ErrNoMember = errors.New("no such member")
	// ErrHealthy: the member to replace answers; replacing it needs --force.
	ErrHealthy = errors.New("the member is healthy")
	// ErrNotReady: the learner did not catch up in time to be promoted.
	ErrNotReady = errors.New("the learner has not caught up")
)

// unhealthyWait bounds Add's retries of etcd's "unhealthy cluster".
const unhealthyWait = 20 * time.Second

// Find returns the member whose name or hex ID is key.
func Find(ms []*etcdserverpb.Member, key string) (*etcdserverpb.Member, bool) {
	id, idErr := strconv.ParseUint(key, 16, 64)
	for _, m := range ms {
		if m.Name == key || idErr == nil && m.ID == id {
			return m, true
		}
	}
	return nil, false
}

// withPeerURLs returns the member with exactly these peer URLs.
func withPeerURLs(ms []*etcdserverpb.Member, urls []string) (*etcdserverpb.Member, bool) {
	for _, m := range ms {
		a, b := slices.Clone(m.PeerURLs), slices.Clone(urls)
		slices.Sort(a)
		slices.Sort(b)
		if slices.Equal(a, b) {
			return m, true
		}
	}
	return nil, false
}

// StartConfig is how a member added to the cluster must be started: the
// etcd flags (and ETCD_* variables) with the cluster as it will be.
type StartConfig struct {
	Name                     string `json:"name"`
	InitialCluster           string `json:"initialCluster"`
	InitialAdvertisePeerURLs string `json:"initialAdvertisePeerUrls"`
	InitialClusterState      string `json:"initialClusterState"`
}

// Env is etcdctl member add's output: the ETCD_* variables.
func (s StartConfig) Env() []string {
	return []string{
		fmt.Sprintf("ETCD_NAME=%q", s.Name),
		fmt.Sprintf("ETCD_INITIAL_CLUSTER=%q", s.InitialCluster),
		fmt.Sprintf("ETCD_INITIAL_ADVERTISE_PEER_URLS=%q", s.InitialAdvertisePeerURLs),
		fmt.Sprintf("ETCD_INITIAL_CLUSTER_STATE=%q", s.InitialClusterState),
	}
}

// Flags are the same as etcd's command-line flags.
func (s StartConfig) Flags() string {
	return fmt.Sprintf("--name %s --initial-cluster %s --initial-advertise-peer-urls %s --initial-cluster-state %s",
		s.Name, s.InitialCluster, s.InitialAdvertisePeerURLs, s.InitialClusterState)
}

// startConfig is the start configuration of the member named name at
// peerURLs in the membership ms (which holds it): every member by name,
// the new one by its name, as etcd compares it ("member count is unequal"
// is what a different list earns).
func startConfig(ms []*etcdserverpb.Member, newID uint64, name string, peerURLs []string) StartConfig {
	var parts []string
	for _, m := range ms {
		n := m.Name
		if m.ID == newID {
			n = name
		}
		for _, u := range m.PeerURLs {
			parts = append(parts, n+"="+u)
		}
	}
	return StartConfig{Name: name, InitialCluster: strings.Join(parts, ","), InitialAdvertisePeerURLs: strings.Join(peerURLs, ","), InitialClusterState: "existing"}
}

// Add adds a member (a learner unless voter) and returns it with how to
// start it.
// etcd refuses an add ("unhealthy cluster") until its leader has been
// connected to every voter for five seconds, as after a member was removed
// or restarted: Add retries for up to unhealthyWait.
func Add(ctx context.Context, c *cluster.Cluster, name string, peerURLs []string, voter bool) (*etcdserverpb.Member, StartConfig, error) {
	add := c.Client.MemberAddAsLearner
	if voter {
		add = c.Client.MemberAdd
	}
	deadline := time.Now().Add(unhealthyWait)
	for {
		cctx, cancel := context.WithTimeout(ctx, c.Timeout())
		resp, err := add(cctx, peerURLs)
		cancel()
		switch {
		case err == nil:
			return resp.Member, startConfig(resp.Members, resp.Member.ID, name, peerURLs), nil
		case !errors.Is(err, rpctypes.ErrUnhealthy) || time.Now().After(deadline):
			return nil, StartConfig{}, fmt.Errorf("member add %s: %w", strings.Join(peerURLs, ","), err)
		}
		select {
		case <-ctx.Done():
			return nil, StartConfig{}, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// Promote promotes a learner, retrying while etcd says it is not in sync
// yet, until wait passes (0: one try).
func Promote(ctx context.Context, c *cluster.Cluster, id uint64, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		cctx, cancel := context.WithTimeout(ctx, c.Timeout())
		_, err := c.Client.MemberPromote(cctx, id)
		cancel()
		switch {
		case err == nil:
			return nil
		case !errors.Is(err, rpctypes.ErrMemberLearnerNotReady) && !strings.Contains(err.Error(), rpctypes.ErrMemberLearnerNotReady.Error()):
			return fmt.Errorf("member promote %x: %w", id, err)
		case time.Now().After(deadline):
			return fmt.Errorf("%w: member %x (etcd: %v); start it with the flags printed by replace or add, then run promote again", ErrNotReady, id, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// ReplaceOptions say which member goes and which comes.
type ReplaceOptions struct {
	// Target is the name or hex ID of the member to replace.
	Target string
	// Name is the new member's name (default: the target's).
	Name     string
	PeerURLs []string
	// Force replaces a member that still answers.
	Force bool
	// Wait, when non-zero, waits this long for the new member (started by
	// the operator with the printed flags) to catch up, and promotes it.
	Wait time.Duration
	// Step, when set, is told each step as it is done.
	Step func(string)
}

// ReplaceResult says what replace did and how to start the new member.
type ReplaceResult struct {
	Removed  string      `json:"removed,omitempty"` // hex ID of the member removed now
	Learner  string      `json:"learner"`           // hex ID of the new member
	Reused   bool        `json:"reused"`            // it was added by an earlier run
	Promoted bool        `json:"promoted"`
	Start    StartConfig `json:"start"`
}

// markerPrefix keeps, in the cluster itself, which replacements are under
// way: a replace that removed a member and was interrupted before the new
// one was added finds it there when it runs again.
const markerPrefix = "__etcdkit/member-replace/"

// Replace swaps the target for a new member at PeerURLs in the order etcd
// allows with a member down (its reconfiguration check refuses any add
// while a voter is unreachable): remove the target, add the new member as
// a learner, and with Wait promote it once it has caught up. A target that
// still answers is refused without Force. Re-running continues: a marker
// under __etcdkit/member-replace/ remembers a removal until the promotion,
// and a learner with the same peer URLs is reused.
func Replace(ctx context.Context, c *cluster.Cluster, o ReplaceOptions) (ReplaceResult, error) {
	var res ReplaceResult
	step := o.Step
	if step == nil {
		step = func(string) {}
	}
	ms, err := c.Members(ctx)
	if err != nil {
		return res, err
	}
	target, haveTarget := Find(ms, o.Target)
	learner, haveLearner := withPeerURLs(ms, o.PeerURLs)
	if haveTarget && haveLearner && target.ID == learner.ID {
		haveTarget = false // the new member, started under the old name
	}
	marker := markerPrefix + o.Target
	cctx, cancel := context.WithTimeout(ctx, c.Timeout())
	mresp, err := c.Client.Get(cctx, marker)
	cancel()
	if err != nil {
		return res, fmt.Errorf("read %s: %w", marker, err)
	}
	underWay := len(mresp.Kvs) == 1
	name := o.Name
	switch {
	case name != "":
	case haveTarget:
		name = target.Name
	case underWay:
		name = string(mresp.Kvs[0].Value)
	default:
		name = o.Target
	}
	if !haveTarget && !haveLearner && !underWay {
		return res, fmt.Errorf("%w: %q is neither a member's name nor its ID (members: %s)", ErrNoMember, o.Target, names(ms))
	}
	if haveTarget {
		if !o.Force && answers(ctx, c, target) {
			return res, fmt.Errorf("%w: %s (%x) answers on %s; replace a live member only with --force", ErrHealthy, target.Name, target.ID, strings.Join(target.ClientURLs, ","))
		}
		cctx, cancel := context.WithTimeout(ctx, c.Timeout())
		defer cancel()
		if _, err := c.Client.Put(cctx, marker, name); err != nil {
			return res, fmt.Errorf("write %s (it lets an interrupted replace continue): %w", marker, err)
		}
		if _, err := c.Client.MemberRemove(cctx, target.ID); err != nil && !errors.Is(err, rpctypes.ErrMemberNotFound) {
			return res, fmt.Errorf("member remove %x: %w", target.ID, err)
		}
		res.Removed = fmt.Sprintf("%x", target.ID)
		step(fmt.Sprintf("removed %s (%x)", target.Name, target.ID))
	}
	if haveLearner {
		res.Reused = true
		step(fmt.Sprintf("member %x with peer URLs %s is already in the cluster (an earlier run added it)", learner.ID, strings.Join(o.PeerURLs, ",")))
	} else {
		learner, _, err = Add(ctx, c, name, o.PeerURLs, false)
		if err != nil {
			return res, fmt.Errorf("%w (the old member is removed; run this again to add the new one)", err)
		}
		step(fmt.Sprintf("added %s (%x) as a learner at %s", name, learner.ID, strings.Join(o.PeerURLs, ",")))
	}
	res.Learner = fmt.Sprintf("%x", learner.ID)
	if ms, err = c.Members(ctx); err != nil {
		return res, err
	}
	res.Start = startConfig(ms, learner.ID, name, o.PeerURLs)
	if cur, ok := Find(ms, res.Learner); ok && !cur.IsLearner {
		res.Promoted = true
	} else if o.Wait > 0 {
		step("waiting for the new member to catch up, to promote it")
		if err := Promote(ctx, c, learner.ID, o.Wait); err != nil {
			return res, err
		}
		res.Promoted = true
		step(fmt.Sprintf("promoted %s (%x) to a voting member", name, learner.ID))
	}
	if res.Promoted {
		cctx, cancel := context.WithTimeout(ctx, c.Timeout())
		_, err := c.Client.Delete(cctx, marker)
		cancel()
		if err != nil {
			return res, fmt.Errorf("delete %s: %w", marker, err)
		}
	}
	return res, nil
}

// answers says whether a member serves a read on one of its client URLs.
func answers(ctx context.Context, c *cluster.Cluster, m *etcdserverpb.Member) bool {
	for _, u := range m.ClientURLs {
		cli, err := c.ForEndpoint(u)
		if err != nil {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, min(c.Timeout(), 3*time.Second))
		_, err = cli.Status(cctx, u)
		cancel()
		cli.Close()
		if err == nil {
			return true
		}
	}
	return false
}

func names(ms []*etcdserverpb.Member) string {
	var out []string
	for _, m := range ms {
		n := m.Name
		if n == "" {
			n = "(unstarted)"
		}
		out = append(out, fmt.Sprintf("%s=%x", n, m.ID))
	}
	return strings.Join(out, ", ")
}
