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
	Server                uint32 `json:"server"`
	ServerCompactRevision int64  `json:"serverCompactRevision"`
	Compared              bool   `json:"compared"`
	Note                  string `json:"note,omitempty"`
}

// ErrHashKVMismatch reports a snapshot whose HashKV differs from the one
// the member that served it computes: the file is not what the cluster
// holds.
var ErrHashKVMismatch = errors.New("the snapshot's HashKV differs from the member's")

// crossCheck computes the snapshot's HashKV at rev offline while the
// member at endpoint computes its own, and compares them. A compaction
// that ran between the snapshot and the question makes them incomparable:
// recorded in Note, not an error.
func crossCheck(ctx context.Context, cli *clientv3.Client, endpoint, path string, rev int64) (HashKV, error) {
	h := HashKV{Revision: rev}
	type local struct {
		res hashkv.Result
		err error
	}
	done := make(chan local, 1)
	go func() {
		res, err := hashkv.Compute(path, rev, time.Second)
		done <- local{res, err}
	}()
	resp, serr := cli.HashKV(ctx, endpoint, rev)
	l := <-done
	if l.err != nil {
		return h, fmt.Errorf("HashKV of the snapshot: %w", l.err)
	}
	h.Hash, h.CompactRevision = l.res.Hash, l.res.CompactRevision
	switch {
	case errors.Is(serr, rpctypes.ErrCompacted):
		h.Note = "the cluster compacted past the snapshot's revision before the member was asked"
		return h, nil
	case serr != nil:
		return h, fmt.Errorf("HashKV from %s at revision %d: %w", endpoint, rev, serr)
	}
	// A member that never compacted answers -1; the file's scan says 0.
	h.Server, h.ServerCompactRevision = resp.Hash, max(resp.CompactRevision, 0)
	if h.ServerCompactRevision != max(l.res.CompactRevision, 0) {
		h.Note = fmt.Sprintf("a compaction (to %d) ran between the snapshot and the question", resp.CompactRevision)
		return h, nil
	}
	h.Compared = true
	if h.Server != h.Hash {
		return h, fmt.Errorf("%w: at revision %d the snapshot hashes to %d, member %s to %d", ErrHashKVMismatch, rev, h.Hash, endpoint, h.Server)
	}
	return h, nil
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
