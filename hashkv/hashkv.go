// Package hashkv computes etcd's HashKV — the hash the server's HashKV RPC
// returns for a revision — from a bolt file offline, read-only, without
// loading an MVCC store.
package hashkv

import (
	"bytes"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"math"
	"os"
	"time"

	"go.etcd.io/etcd/server/v3/storage/datadir"

	"github.com/etcdkit/etcdkit/internal/boltpage"
	"github.com/etcdkit/etcdkit/internal/etcdfmt"
)

// Result is the hash of the key space up to HashRevision, with etcdutl's JSON
// field names.
type Result struct {
	Hash            uint32 `json:"hash"`
	HashRevision    int64  `json:"hashRevision"`
	CompactRevision int64  `json:"compactRevision"`
}

var (
	// ErrCompacted reports a revision below the db's compact revision.
	ErrCompacted = errors.New("required revision has been compacted")
	// ErrFutureRev reports a revision above the db's current revision.
	ErrFutureRev = errors.New("required revision is a future revision")
)

// DBPath returns the bolt file for path: path itself for a file, or
// member/snap/db inside an etcd data dir.
func DBPath(path string) string {
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return datadir.ToBackendFileName(path)
	}
	return path
}

// Compute returns the HashKV of the db at path at revision rev (0: the
// current revision). It reproduces the server's algorithm (mvcc hashByRev):
// CRC-32C seeded with the bucket name "key", then every key-bucket entry up
// to rev, except that entries at or below the compact revision count only if
// the key index at rev keeps them, and a tombstone exactly at the compact
// revision never counts. The compact revision is the larger of the finished
// and scheduled ones, as a server starting on this db would use after
// finishing a pending compaction. Nothing is written to the file.
//
// The file is read once, through the pread scanner's check (boltpage.Check,
// what verify checks), after a peek at its meta bucket (a few pages); it is
// never mapped.
func Compute(path string, rev int64, lockTimeout time.Duration) (Result, error) {
	if rev < 0 {
		return Result{}, fmt.Errorf("revision %d: must not be negative", rev)
	}
	if fi, err := os.Stat(path); err != nil {
		return Result{}, err
	} else if fi.IsDir() {
		return Result{}, fmt.Errorf("%s: %w: it is a directory", path, boltpage.ErrNotBolt)
	}
	meta, err := etcdfmt.PeekMeta(path, path, lockTimeout)
	if err != nil {
		return Result{}, err
	}
	compactRev, currentRev := meta.Compacted(), meta.Current()
	switch {
	case rev > 0 && rev < compactRev:
		return Result{}, fmt.Errorf("%s: revision %d: %w (compact revision is %d; use --rev %d or higher)", path, rev, ErrCompacted, compactRev, compactRev)
	case rev > currentRev:
		return Result{}, fmt.Errorf("%s: revision %d: %w (current revision is %d)", path, rev, ErrFutureRev, currentRev)
	case rev == 0:
		rev = currentRev
	}
	h := newHasher(rev, compactRev)
	top, err := boltpage.Check(path, lockTimeout, nil, func(e boltpage.Entry) error {
		if e.Depth != 1 || e.Bucket || !bytes.Equal(e.Top, etcdfmt.BucketKey) {
			return nil
		}
		return h.entry(e.Key, e.Value)
	})
	if err != nil {
		return Result{}, err // names the file
	}
	if err := etcdfmt.CheckBuckets(top); err != nil {
		return Result{}, fmt.Errorf("%s: %w", path, err)
	}
	return Result{Hash: h.sum(), HashRevision: rev, CompactRevision: compactRev}, nil
}

// hasher computes etcd's hashByRev over the key bucket's entries as one
// pass of the scanner meets them, in revision order. Entries above the
// compact revision always count: they go into a running CRC. Whether an
// entry at or below it counts depends on whether a newer entry of its key
// (up to the hash revision) follows, known only later: each such entry
// keeps its own CRC and length, and sum joins the CRCs in order
// (crc32Combine). Memory is 12 bytes per entry at or below the compaction
// (after a physical compaction about one per key) plus a map entry per
// key, as the server's index.
type hasher struct {
	rev, compactRev int64
	ids             etcdfmt.KeyHasher
	newest          map[etcdfmt.KeyID]newest
	early           []earlyEntry
	tail            hash.Hash32
	tailLen         int64
}

// newest is a key's newest entry so far: its index in early (-1 when it
// is above the compaction) and whether it is a tombstone.
type newest struct {
	early int32
	tomb  bool
}

// earlyEntry is an entry at or below the compact revision.
type earlyEntry struct {
	crc, n uint32
	// tomb, superseded (a newer entry of its key follows) and atCompact
	// (its main revision is the compact revision).
	tomb, superseded, atCompact bool
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func newHasher(rev, compactRev int64) *hasher {
	h := &hasher{rev: rev, compactRev: compactRev, tail: crc32.New(castagnoli)}
	if compactRev > 0 {
		h.ids, h.newest = etcdfmt.NewKeyHasher(), map[etcdfmt.KeyID]newest{}
	}
	return h
}

func (h *hasher) entry(k, v []byte) error {
	r, tomb, err := etcdfmt.ParseRevKey(k)
	if err != nil {
		return err
	}
	if r.Main > h.rev {
		return nil
	}
	if h.compactRev > 0 {
		kv, err := etcdfmt.ParseKeyValue(v)
		if err != nil {
			return fmt.Errorf("key bucket revision %d_%d: %w", r.Main, r.Sub, err)
		}
		id := h.ids.ID(kv.Key)
		if prev, ok := h.newest[id]; ok && prev.early >= 0 {
			h.early[prev.early].superseded = true
		}
		if r.Main <= h.compactRev {
			if len(h.early) == math.MaxInt32 {
				return fmt.Errorf("key bucket: more than %d entries at or below the compact revision", math.MaxInt32)
			}
			c := crcOf(k, v)
			h.newest[id] = newest{early: int32(len(h.early)), tomb: tomb}
			h.early = append(h.early, earlyEntry{crc: c, n: uint32(len(k) + len(v)), tomb: tomb, atCompact: r.Main == h.compactRev})
			return nil
		}
		h.newest[id] = newest{early: -1, tomb: tomb}
	}
	h.tail.Write(k)
	h.tail.Write(v)
	h.tailLen += int64(len(k) + len(v))
	return nil
}

// sum is the server's hash: CRC-32C seeded with the bucket name "key",
// then the early entries the key index keeps (when any key lives: each
// key's newest entry, if not a tombstone; a tombstone exactly at the
// compact revision never), then every later one.
func (h *hasher) sum() uint32 {
	crc := crc32.Update(0, castagnoli, etcdfmt.BucketKey)
	keepAny := false
	for _, s := range h.newest {
		if !s.tomb {
			keepAny = true
			break
		}
	}
	for _, e := range h.early {
		if kept(keepAny, e.tomb, e.superseded, e.atCompact) {
			crc = crc32Combine(crc, e.crc, int64(e.n))
		}
	}
	return crc32Combine(crc, h.tail.Sum32(), h.tailLen)
}

// kept is the key index's rule for an entry at or below the compact
// revision (mvcc keyIndex.keep at the hash revision): when any key lives,
// only a key's newest entry counts, and not if it is a tombstone; a
// tombstone exactly at the compact revision never counts.
func kept(keepAny, tomb, superseded, atCompact bool) bool {
	return !(keepAny && (tomb || superseded) || atCompact && tomb)
}

// crcOf is the CRC-32C of one entry, key then value, as the server hashes
// it.
func crcOf(k, v []byte) uint32 {
	return crc32.Update(crc32.Update(0, castagnoli, k), castagnoli, v)
}
