package inspect

import (
	"bytes"
	"context"
	"fmt"
	"sort"

	"go.etcd.io/etcd/server/v3/lease/leasepb"
	"google.golang.org/protobuf/proto"

	"github.com/etcdkit/etcdkit/internal/etcdfmt"
)

// Lease is one stored lease and the live keys attached to it.
type Lease struct {
	ID int64
	// TTL is the granted TTL in seconds.
	TTL int64
	// RemainingTTL is what a server started on the db counts down from:
	// the checkpointed remaining TTL, or the granted TTL when the lease was
	// never checkpointed.
	RemainingTTL int64
	// Keys are the live keys attached to the lease, sorted.
	Keys []string
}

// Leases lists the db's leases by ID with their attached live keys: the
// keys whose latest revision is a put with the lease. One checked pass;
// memory grows with the leases and the keys attached to them.
func Leases(ctx context.Context, o *Opened) ([]Lease, int64, error) {
	var leases []Lease
	attached := map[string]int64{}
	keys := func(e keyEntry, _ []byte) error {
		if !e.tomb && e.kv.Lease != 0 {
			attached[string(e.kv.Key)] = e.kv.Lease
		} else {
			delete(attached, string(e.kv.Key))
		}
		return nil
	}
	visit := onKeys(keys, func(bucket, k, v []byte) error {
		switch {
		case bytes.Equal(bucket, etcdfmt.BucketLease):
			id, err := etcdfmt.ParseLeaseKey(k)
			if err != nil {
				return fmt.Errorf("%w: %w", etcdfmt.ErrSchema, err)
			}
			var l leasepb.Lease
			if err := proto.Unmarshal(v, &l); err != nil {
				return fmt.Errorf("%w: lease %016x: %w", etcdfmt.ErrSchema, id, err)
			}
			remaining := l.GetRemainingTTL()
			if remaining <= 0 {
				remaining = l.GetTTL()
			}
			leases = append(leases, Lease{ID: id, TTL: l.GetTTL(), RemainingTTL: remaining})
		}
		return nil
	})
	m, _, err := scan(ctx, o, visit)
	if err != nil {
		return nil, 0, err
	}
	sort.Slice(leases, func(i, j int) bool { return leases[i].ID < leases[j].ID })
	index := make(map[int64]int, len(leases))
	for i, l := range leases {
		index[l.ID] = i
	}
	for k, id := range attached {
		if i, ok := index[id]; ok {
			leases[i].Keys = append(leases[i].Keys, k)
		}
	}
	for i := range leases {
		sort.Strings(leases[i].Keys)
	}
	return leases, m.Current(), nil
}
