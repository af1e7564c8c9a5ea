package save

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/hashkv"
	"github.com/etcdkit/etcdkit/internal/boltpage"
	"github.com/etcdkit/etcdkit/internal/etcdfmt"
)

// HashKV is independent evidence that a snapshot holds what the cluster
// holds: the snapshot's HashKV at its revision, computed offline from the
// file, and the answer of the member that served it for the same revision.
type HashKV struct {
	Revision        int64  `json:"revision"`
	CompactRevision int64  `json:"compactRevision"`
	Hash            uint32 `json:"hash"`
	// Server and ServerCompactRevision are the member's answer. The two
	// hashes are comparable only over the same compaction; Compared says
	// they were compared (and so matched), Note why not.
	// CheckRevision is the revision the member was asked for (the one it
	// had when the snapshot started): Server is its hash there, and the
	// snapshot's own at it matched. Older manifests lack it: Revision.
	CheckRevision         int64  `json:"checkRevision,omitzero"`
	Server                uint32 `json:"server"`
	ServerCompactRevision int64  `json:"serverCompactRevision"`
	Compared              bool   `json:"compared"`
	Note                  string `json:"note,omitempty"`
}

// ErrHashKVMismatch reports a snapshot whose HashKV differs from the one
// the member that served it computes: the file is not what the cluster
// holds.
var ErrHashKVMismatch = errors.New("the snapshot's HashKV differs from the member's")

// memberHash is the member's answer to HashKV at rev.
type memberHash struct {
	rev     int64
	resp    *clientv3.HashKVResponse
	err     error
	skipped bool // not asked
}

// probeKey is read (counted, never written) to learn a member's revision
// and compaction before its snapshot.
const probeKey = "\x00etcdkit-probe"

// probe returns the member's revision and its compact revision before a
// snapshot: the revision its hash is asked for meanwhile, and the one the
// stream's hash needs to tell the entries the key index may drop. No RPC
// returns the compact revision cheaply, so it is found by bisection: the
// lowest revision a serializable read of one key is not refused at (about
// 30 reads of the member's index). A compaction at revision 1 reads as
// none (0), which a snapshot that says otherwise notes as incomparable.
func probe(ctx context.Context, cli *clientv3.Client) (rev, compact int64, err error) {
	readable := func(r int64) (bool, error) {
		opts := []clientv3.OpOption{clientv3.WithSerializable(), clientv3.WithCountOnly()}
		if r > 0 {
			opts = append(opts, clientv3.WithRev(r))
		}
		resp, err := cli.Get(ctx, probeKey, opts...)
		switch {
		case errors.Is(err, rpctypes.ErrCompacted):
			return false, nil
		case err != nil:
			return false, err
		}
		if r == 0 {
			rev = resp.Header.Revision
		}
		return true, nil
	}
	if _, err := readable(0); err != nil {
		return 0, 0, err
	}
	if ok, err := readable(1); ok || err != nil || rev <= 1 {
		return rev, 0, err
	}
	lo, hi := int64(1), rev // lo is refused, hi is not
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		ok, err := readable(mid)
		if err != nil {
			return 0, 0, err
		}
		if ok {
			hi = mid
		} else {
			lo = mid
		}
	}
	return rev, hi, nil
}

// compareHash records the snapshot's HashKV and compares it, at the
// revision the member was asked for, with the member's answer. A
// compaction that ran meanwhile makes them incomparable: recorded in
// Note, not an error.
func compareHash(endpoint string, f hashkv.PageResult, raced bool, mh memberHash) (HashKV, error) {
	h := HashKV{Revision: f.Revision, CompactRevision: f.CompactRevision, Hash: f.Hash, CheckRevision: mh.rev}
	if raced {
		return HashKV{Note: "a compaction ran while the snapshot was taken; its HashKV was not computed"}, nil
	}
	switch {
	case mh.skipped:
		h.Note = "the member's HashKV was not asked for (--member-hashkv=false)"
		return h, nil
	case errors.Is(mh.err, rpctypes.ErrCompacted):
		h.Note = "the cluster compacted past the revision the member was asked for"
		return h, nil
	case mh.err != nil:
		return h, fmt.Errorf("HashKV from %s at revision %d: %w", endpoint, mh.rev, mh.err)
	}
	// A member that never compacted answers -1; the snapshot's meta says 0.
	h.Server, h.ServerCompactRevision = mh.resp.Hash, max(mh.resp.CompactRevision, 0)
	if h.ServerCompactRevision != f.CompactRevision {
		h.Note = fmt.Sprintf("a compaction (to %d) ran between the snapshot and the question", mh.resp.CompactRevision)
		return h, nil
	}
	h.Compared = true
	if h.Server != f.CheckHash {
		return h, fmt.Errorf("%w: at revision %d the snapshot hashes to %d, member %s to %d", ErrHashKVMismatch, mh.rev, f.CheckHash, endpoint, h.Server)
	}
	return h, nil
}

// countKeys asks the member for its live keys at rev: the count when a
// compaction raced the snapshot and its stream cannot tell.
func countKeys(ctx context.Context, cli *clientv3.Client, endpoint string, rev int64) (int64, error) {
	resp, err := cli.Get(ctx, "", clientv3.WithPrefix(), clientv3.WithCountOnly(), clientv3.WithSerializable(), clientv3.WithRev(max(rev, 1)))
	if err != nil {
		return 0, fmt.Errorf("a compaction ran during the snapshot, and counting its keys at revision %d on %s failed: %w (take the snapshot again)", rev, endpoint, err)
	}
	return resp.Count, nil
}

// Facts reads, in the scanner's checked pass over the snapshot, its
// revision (of the key bucket's last entry: the snapshot's own, which a
// separate read of the cluster would race with writes), its live keys and
// its leases, for a drill to compare with the member booted on a restore.
func Facts(path string) (rev, keys, leases int64, err error) {
	ids := etcdfmt.NewKeyHasher()
	live := map[etcdfmt.KeyID]bool{}
	top, err := boltpage.Check(path, time.Second, nil, func(e boltpage.Entry) error {
		if e.Depth != 1 || e.Bucket {
			return nil
		}
		switch {
		case bytes.Equal(e.Top, etcdfmt.BucketKey):
			r, tomb, err := etcdfmt.ParseRevKey(e.Key)
			if err != nil {
				return err
			}
			kv, err := etcdfmt.ParseKeyValue(e.Value)
			if err != nil {
				return err
			}
			rev = r.Main
			live[ids.ID(kv.Key)] = !tomb
		case bytes.Equal(e.Top, etcdfmt.BucketLease):
			leases++
		}
		return nil
	})
	if err == nil {
		err = etcdfmt.CheckBuckets(top)
	}
	for _, l := range live {
		if l {
			keys++
		}
	}
	return rev, keys, leases, err
}
