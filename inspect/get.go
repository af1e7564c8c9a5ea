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
	lk, err := findLive(ctx, o, opts.Contains, opts.Rev)
	if err != nil {
		return nil, err
	}
	defer lk.db.Close()
	resp := &etcdserverpb.RangeResponse{
		Header: &etcdserverpb.ResponseHeader{Revision: lk.meta.Current(), RaftTerm: lk.meta.Term},
		Count:  int64(len(lk.live)),
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
	fetch := lk.live
	if sorted && opts.Limit > 0 && int64(len(fetch)) > opts.Limit {
		fetch = fetch[:opts.Limit]
	}
	err = lk.values(ctx, fetch, func(kv *mvccpb.KeyValue) error {
		resp.Kvs = append(resp.Kvs, kv)
		return nil
	})
	if err != nil {
		return nil, err
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

// liveKeys is a checked pass's answer to "which keys of a range live at
// a revision": the open db, its meta, every matched key's newest entry at
// or below the revision, and the live ones in key order.
type liveKeys struct {
	o      *Opened
	db     *boltdb.DB
	meta   dbMeta
	newest map[string]keyAt
	live   []string
}

// findLive reads the db once through the check, keeping of the keys
// match accepts their newest entry at or below rev (0: the latest): memory grows
// with the keys matched, not with the db or its history. A rev past the
// current one or below the compaction is refused as the server refuses it.
func findLive(ctx context.Context, o *Opened, match func(key []byte) bool, rev int64) (*liveKeys, error) {
	lk := &liveKeys{o: o, newest: map[string]keyAt{}}
	visit := onKeys(func(e keyEntry, _ []byte) error {
		if (rev == 0 || e.rev.Main <= rev) && match(e.kv.Key) {
			lk.newest[string(e.kv.Key)] = keyAt{rev: e.rev, tomb: e.tomb}
		}
		return nil
	}, nil)
	db, err := boltdb.OpenMapped(o.DB, o.LockTimeout, o.Progress, visitor(ctx, &lk.meta, visit))
	if err != nil {
		return nil, err
	}
	lk.db = db
	err = etcdfmt.CheckBuckets(db.Buckets)
	switch current := lk.meta.Current(); {
	case err != nil:
		err = o.wrap(err)
	case rev > current:
		err = ErrFutureRev
	case rev > 0 && rev < lk.meta.Compacted():
		err = ErrCompacted
	}
	if err != nil {
		db.Close()
		return nil, err
	}
	lk.live = make([]string, 0, len(lk.newest))
	for k, at := range lk.newest {
		if !at.tomb {
			lk.live = append(lk.live, k)
		}
	}
	sort.Strings(lk.live)
	return lk, nil
}

// values looks up the stored KeyValue of each of keys (all in newest) and
// passes it to fn, one at a time.
func (lk *liveKeys) values(ctx context.Context, keys []string, fn func(*mvccpb.KeyValue) error) error {
	err := boltdb.Guard(func() error {
		return lk.db.View(func(tx *bolt.Tx) error {
			b := tx.Bucket(etcdfmt.BucketKey)
			for _, k := range keys {
				if err := ctx.Err(); err != nil {
					return err
				}
				at := lk.newest[k]
				v := b.Get(at.rev.AppendKey(nil, false))
				if v == nil {
					return fmt.Errorf("%w: key %q: revision %d_%d is not in the key bucket", etcdfmt.ErrSchema, k, at.rev.Main, at.rev.Sub)
				}
				kv := &mvccpb.KeyValue{}
				if err := proto.Unmarshal(v, kv); err != nil {
					return fmt.Errorf("%w: revision %d_%d: %w", etcdfmt.ErrSchema, at.rev.Main, at.rev.Sub, err)
				}
				lk.db.Touched(len(v))
				if err := fn(kv); err != nil {
					return callerError{err}
				}
			}
			return nil
		})
	})
	var ce callerError
	switch {
	case errors.As(err, &ce):
		return ce.err
	case err != nil:
		return lk.o.wrap(err)
	}
	return nil
}

// callerError carries a callback's own error through bbolt untouched.
type callerError struct{ err error }

func (e callerError) Error() string { return e.err.Error() }

// RangeOptions select what Range streams: the live keys of the range at
// Rev (0: the latest), those Filter (when set) keeps.
type RangeOptions struct {
	KeyRange
	Rev    int64
	Filter func(key []byte) bool
}

// Range streams the KeyValues Get would return for the range at the
// revision, in key order, one at a time: memory holds the matched keys,
// never their values. It returns the db's current revision.
func Range(ctx context.Context, o *Opened, opts RangeOptions, fn func(*mvccpb.KeyValue) error) (int64, error) {
	lk, err := findLive(ctx, o, func(k []byte) bool {
		return opts.Contains(k) && (opts.Filter == nil || opts.Filter(k))
	}, opts.Rev)
	if err != nil {
		return 0, err
	}
	defer lk.db.Close()
	return lk.meta.Current(), lk.values(ctx, lk.live, fn)
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
