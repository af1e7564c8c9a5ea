package inspect

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"

	bolt "go.etcd.io/bbolt"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/proto"

	"github.com/etcdkit/etcdkit/internal/boltdb"
	"github.com/etcdkit/etcdkit/internal/etcdfmt"
)

// Errors of Get, with the messages etcdctl prints for them.
var (
	ErrCompacted = errors.New("etcdserver: mvcc: required revision has been compacted")
	ErrFutureRev = errors.New("etcdserver: mvcc: required revision is a future revision")
)

// KeyRange selects keys as etcd's requests do: RangeEnd empty for Key
// alone, "\x00" for every key from Key on, else [Key, RangeEnd).
type KeyRange struct {
	Key, RangeEnd []byte
}

// Contains says whether k is in the range.
func (r KeyRange) Contains(k []byte) bool {
	switch {
	case len(r.RangeEnd) == 0:
		return bytes.Equal(k, r.Key)
	case len(r.RangeEnd) == 1 && r.RangeEnd[0] == 0:
		return bytes.Compare(k, r.Key) >= 0
	}
	return bytes.Compare(k, r.Key) >= 0 && bytes.Compare(k, r.RangeEnd) < 0
}

// GetOptions is a Range request, as etcdctl get makes it.
type GetOptions struct {
	KeyRange
	// Rev is the revision to read at; 0 is the latest.
	Rev                 int64
	Limit               int64
	KeysOnly, CountOnly bool
	SortTarget          etcdserverpb.RangeRequest_SortTarget
	SortOrder           etcdserverpb.RangeRequest_SortOrder
}

// keyAt is the newest entry of one key at or below the read revision.
type keyAt struct {
	rev  etcdfmt.Revision
	tomb bool
}

// Get answers the Range request etcd would answer from a member started on
// the db: the live keys of the range at the revision, counted, sorted and
// limited as the server does it (etcd's txn.Range), with the header's
// revision the db's current one. The db is read once by the check's scan,
// which also finds, for every key of the range, its newest entry at or
// below the revision (memory grows with the keys matched, not with the db
// or its history); bbolt then reads the values of the keys printed.
// ClusterId and MemberId in the header are 0: a db alone does not say which
// member answers.
func Get(ctx context.Context, o *Opened, opts GetOptions) (*etcdserverpb.RangeResponse, error) {
	var m dbMeta
	newest := map[string]keyAt{}
	visit := onKeys(func(e keyEntry, _ []byte) error {
		if (opts.Rev == 0 || e.rev.Main <= opts.Rev) && opts.Contains(e.kv.Key) {
			newest[string(e.kv.Key)] = keyAt{rev: e.rev, tomb: e.tomb}
		}
		return nil
	}, nil)
	db, err := boltdb.OpenMapped(o.DB, o.LockTimeout, o.Progress, visitor(ctx, &m, visit))
	if err != nil {
		return nil, err
	}
	defer db.Close()
	if err := etcdfmt.CheckBuckets(db.Buckets); err != nil {
		return nil, o.wrap(err)
	}
	current := m.current()
	switch {
	case opts.Rev > current:
		return nil, ErrFutureRev
	case opts.Rev > 0 && opts.Rev < m.compacted():
		return nil, ErrCompacted
	}

	live := make([]string, 0, len(newest))
	for k, at := range newest {
		if !at.tomb {
			live = append(live, k)
		}
	}
	sort.Strings(live)
	resp := &etcdserverpb.RangeResponse{
		Header: &etcdserverpb.ResponseHeader{Revision: current, RaftTerm: m.term},
		Count:  int64(len(live)),
	}
	if opts.CountOnly {
		return resp, nil
	}
	order := opts.SortOrder
	if opts.SortTarget != etcdserverpb.RangeRequest_KEY && order == etcdserverpb.RangeRequest_NONE {
		order = etcdserverpb.RangeRequest_ASCEND
	}
	sorted := order == etcdserverpb.RangeRequest_NONE ||
		opts.SortTarget == etcdserverpb.RangeRequest_KEY && order == etcdserverpb.RangeRequest_ASCEND
	// Without a sort, only the keys printed need their values; a sort
	// needs every key's.
	fetch := live
	if sorted && opts.Limit > 0 && int64(len(fetch)) > opts.Limit {
		fetch = fetch[:opts.Limit]
	}
	err = boltdb.Guard(func() error {
		return db.View(func(tx *bolt.Tx) error {
			b := tx.Bucket(etcdfmt.BucketKey)
			for _, k := range fetch {
				if err := ctx.Err(); err != nil {
					return err
				}
				at := newest[k]
				v := b.Get(at.rev.AppendKey(nil, false))
				kv := &mvccpb.KeyValue{}
				if v == nil {
					return fmt.Errorf("%w: key %q: revision %d_%d is not in the key bucket", etcdfmt.ErrSchema, k, at.rev.Main, at.rev.Sub)
				}
				if err := proto.Unmarshal(v, kv); err != nil {
					return fmt.Errorf("%w: revision %d_%d: %w", etcdfmt.ErrSchema, at.rev.Main, at.rev.Sub, err)
				}
				db.Touched(len(v))
				resp.Kvs = append(resp.Kvs, kv)
			}
			return nil
		})
	})
	if err != nil {
		return nil, o.wrap(err)
	}
	if !sorted {
		sortKVs(resp.Kvs, opts.SortTarget, order)
	}
	if opts.Limit > 0 && int64(len(resp.Kvs)) > opts.Limit {
		resp.Kvs, resp.More = resp.Kvs[:opts.Limit], true
	}
	if sorted && opts.Limit > 0 && resp.Count > opts.Limit {
		resp.More = true
	}
	if opts.KeysOnly {
		for _, kv := range resp.Kvs {
			kv.Value = nil
		}
	}
	return resp, nil
}

// sortKVs sorts as etcd's txn.Range does (sort.Sort on the key-ordered
// list, reversed for DESCEND), so ties come out in the server's order.
func sortKVs(kvs []*mvccpb.KeyValue, target etcdserverpb.RangeRequest_SortTarget, order etcdserverpb.RangeRequest_SortOrder) {
	var less func(a, b *mvccpb.KeyValue) bool
	switch target {
	case etcdserverpb.RangeRequest_VERSION:
		less = func(a, b *mvccpb.KeyValue) bool { return a.Version < b.Version }
	case etcdserverpb.RangeRequest_CREATE:
		less = func(a, b *mvccpb.KeyValue) bool { return a.CreateRevision < b.CreateRevision }
	case etcdserverpb.RangeRequest_MOD:
		less = func(a, b *mvccpb.KeyValue) bool { return a.ModRevision < b.ModRevision }
	case etcdserverpb.RangeRequest_VALUE:
		less = func(a, b *mvccpb.KeyValue) bool { return bytes.Compare(a.Value, b.Value) < 0 }
	default:
		less = func(a, b *mvccpb.KeyValue) bool { return bytes.Compare(a.Key, b.Key) < 0 }
	}
	s := kvSorter{kvs, less}
	if order == etcdserverpb.RangeRequest_DESCEND {
		sort.Sort(sort.Reverse(s))
		return
	}
	sort.Sort(s)
}

type kvSorter struct {
	kvs  []*mvccpb.KeyValue
	less func(a, b *mvccpb.KeyValue) bool
}

func (s kvSorter) Len() int           { return len(s.kvs) }
func (s kvSorter) Swap(i, j int)      { s.kvs[i], s.kvs[j] = s.kvs[j], s.kvs[i] }
func (s kvSorter) Less(i, j int) bool { return s.less(s.kvs[i], s.kvs[j]) }
