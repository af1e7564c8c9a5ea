// Package alarm lists and disarms a cluster's alarms and recovers from
// NOSPACE: the alarm etcd raises when its db reaches the backend quota,
// after which it refuses every write until an operator frees space and
// disarms it.
package alarm

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/cluster"
	"github.com/etcdkit/etcdkit/compact"
	"github.com/etcdkit/etcdkit/rollingdefrag"
)

// Alarm is one active alarm.
type Alarm struct {
	MemberID string `json:"memberId"`
	Alarm    string `json:"alarm"` // NOSPACE, CORRUPT
}

// List returns the cluster's active alarms.
func List(ctx context.Context, c *cluster.Cluster) ([]Alarm, error) {
	ctx, cancel := context.WithTimeout(ctx, c.Timeout())
	defer cancel()
	return walk(ctx, c, "", func(*etcdserverpb.AlarmMember) error { return nil })
}

// walk calls fn for each active alarm of type only ("" for all) and
// returns those fn accepted.
func walk(ctx context.Context, c *cluster.Cluster, only string, fn func(*etcdserverpb.AlarmMember) error) ([]Alarm, error) {
	as, err := c.Alarms(ctx)
	if err != nil {
		return nil, err
	}
	var out []Alarm
	for _, a := range as {
		if only != "" && a.GetAlarm().String() != only {
			continue
		}
		if err := fn(a); err != nil {
			return out, err
		}
		out = append(out, Alarm{MemberID: fmt.Sprintf("%x", a.GetMemberID()), Alarm: a.GetAlarm().String()})
	}
	return out, nil
}

// Disarm disarms every active alarm of the given type ("" for all) and
// returns those it disarmed.
func Disarm(ctx context.Context, c *cluster.Cluster, only string) ([]Alarm, error) {
	ctx, cancel := context.WithTimeout(ctx, c.Timeout())
	defer cancel()
	return walk(ctx, c, only, func(a *etcdserverpb.AlarmMember) error {
		if _, err := c.Client.AlarmDisarm(ctx, (*clientv3.AlarmMember)(a)); err != nil {
			return fmt.Errorf("disarm %s on %x: %w", a.GetAlarm(), a.GetMemberID(), err)
		}
		return nil
	})
}

// probeKey is written and deleted to prove that the cluster takes writes.
const probeKey = "__etcdkit/nospace-probe"

// ErrStillFull reports that the cluster refuses writes after recovery: its
// live data alone exceeds the quota.
var ErrStillFull = errors.New("the cluster still refuses writes")

// Recovery reports a NOSPACE recovery.
type Recovery struct {
	Alarms    []Alarm                      `json:"alarmsBefore"`
	Compacted int64                        `json:"compactedTo"`
	Defrag    []rollingdefrag.MemberResult `json:"defrag"`
	Disarmed  []Alarm                      `json:"disarmed"`
	WriteOK   bool                         `json:"writeOk"`
	Took      time.Duration                `json:"took"`
}

// RecoverNoSpace frees space and lifts NOSPACE: it compacts to the current
// revision (compaction is allowed under NOSPACE), defragments every member
// in turn, disarms the NOSPACE alarms, and proves that a write succeeds.
func RecoverNoSpace(ctx context.Context, c *cluster.Cluster, opts rollingdefrag.Options) (Recovery, error) {
	start := time.Now()
	var rec Recovery
	var err error
	if rec.Alarms, err = List(ctx, c); err != nil {
		return rec, err
	}
	gctx, cancel := context.WithTimeout(ctx, c.Timeout())
	cur, err := c.Client.Get(gctx, probeKey, clientv3.WithCountOnly())
	cancel()
	if err != nil {
		return rec, fmt.Errorf("%w: %w", cluster.ErrUnreachable, err)
	}
	res, err := compact.Compact(ctx, c, compact.Policy{Revision: cur.Header.Revision, Physical: true})
	if err != nil {
		return rec, fmt.Errorf("compact: %w", err)
	}
	rec.Compacted = res.Revision
	opts.IgnoreAlarms, opts.Rule, opts.Compact = true, nil, false
	if rec.Defrag, err = rollingdefrag.Run(ctx, c, opts); err != nil {
		return rec, fmt.Errorf("defrag: %w", err)
	}
	if rec.Disarmed, err = Disarm(ctx, c, etcdserverpb.AlarmType_NOSPACE.String()); err != nil {
		return rec, err
	}
	wctx, cancel := context.WithTimeout(ctx, c.Timeout())
	defer cancel()
	if _, err := c.Client.Put(wctx, probeKey, time.Now().UTC().Format(time.RFC3339)); err != nil {
		return rec, fmt.Errorf("%w: %w; the live data may exceed the quota: delete data or raise --quota-backend-bytes, then run this again", ErrStillFull, err)
	}
	if _, err := c.Client.Delete(wctx, probeKey); err != nil {
		return rec, fmt.Errorf("%w: %w", ErrStillFull, err)
	}
	rec.WriteOK, rec.Took = true, time.Since(start)
	return rec, nil
}
