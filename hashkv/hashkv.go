// Package hashkv computes etcd's HashKV — the hash the server's HashKV RPC
// returns for a revision — from a bolt file offline, read-only, without
// loading an MVCC store.
package hashkv

import (
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.etcd.io/etcd/server/v3/storage/datadir"

	"github.com/etcdkit/etcdkit/internal/boltdb"
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
func Compute(path string, rev int64, lockTimeout time.Duration) (Result, error) {
	if rev < 0 {
		return Result{}, fmt.Errorf("revision %d: must not be negative", rev)
	}
	db, err := boltdb.OpenMapped(path, lockTimeout, nil, nil)
	if err != nil {
		return Result{}, err
	}
	defer db.Close()
	if err := etcdfmt.CheckBuckets(db.Buckets); err != nil {
		return Result{}, fmt.Errorf("%s: %w", path, err)
	}
	tx, err := db.Begin(false)
	if err != nil {
		return Result{}, fmt.Errorf("%s: %w", path, err)
	}
	defer tx.Rollback()
	var res Result
	err = boltdb.Guard(func() (err error) { res, err = compute(db, tx, rev); return err })
	if err != nil {
		return Result{}, fmt.Errorf("%s: %w", path, err)
	}
	return res, nil
}

// keyState is the newest entry of one key at or below the hash revision.
type keyState struct {
	rev  etcdfmt.Revision
	tomb bool
}

func compute(db *boltdb.DB, tx *bolt.Tx, rev int64) (Result, error) {
	keyB := tx.Bucket(etcdfmt.BucketKey)
	if keyB == nil {
		return Result{}, fmt.Errorf("no %q bucket: not an etcd v3 db", etcdfmt.BucketKey)
	}
	compactRev, currentRev, err := revisions(tx, keyB)
	if err != nil {
		return Result{}, err
	}
	switch {
	case rev > 0 && rev < compactRev:
		return Result{}, fmt.Errorf("revision %d: %w (compact revision is %d; use --rev %d or higher)", rev, ErrCompacted, compactRev, compactRev)
	case rev > currentRev:
		return Result{}, fmt.Errorf("revision %d: %w (current revision is %d)", rev, ErrFutureRev, currentRev)
	case rev == 0:
		rev = currentRev
	}

	// Pass 1: the newest entry of every key at or below rev, which decides
	// which entries at or below the compact revision the index keeps.
	ids := etcdfmt.NewKeyHasher()
	var newest map[etcdfmt.KeyID]keyState
	keepAny := false
	if compactRev > 0 {
		newest = make(map[etcdfmt.KeyID]keyState)
		err := forEachUpTo(db, keyB, rev, func(r etcdfmt.Revision, tomb bool, k, v []byte) error {
			kv, err := etcdfmt.ParseKeyValue(v)
			if err != nil {
				return err
			}
			newest[ids.ID(kv.Key)] = keyState{rev: r, tomb: tomb}
			return nil
		})
		if err != nil {
			return Result{}, err
		}
		for _, s := range newest {
			if !s.tomb {
				keepAny = true
				break
			}
		}
	}

	// Pass 2: the hash.
	h := crc32.New(crc32.MakeTable(crc32.Castagnoli))
	h.Write(etcdfmt.BucketKey)
	err = forEachUpTo(db, keyB, rev, func(r etcdfmt.Revision, tomb bool, k, v []byte) error {
		if r.Main <= compactRev && keepAny {
			kv, err := etcdfmt.ParseKeyValue(v)
			if err != nil {
				return err
			}
			if s := newest[ids.ID(kv.Key)]; tomb || s.tomb || s.rev != r {
				return nil
			}
		}
		if r.Main == compactRev && tomb {
			return nil
		}
		h.Write(k)
		h.Write(v)
		return nil
	})
	if err != nil {
		return Result{}, err
	}
	return Result{Hash: h.Sum32(), HashRevision: rev, CompactRevision: compactRev}, nil
}

// revisions returns the compact and current revisions a server restoring
// this db would have (mvcc store.restore).
func revisions(tx *bolt.Tx, keyB *bolt.Bucket) (compactRev, currentRev int64, err error) {
	compactRev, currentRev = -1, 1
	var scheduled int64
	if meta := tx.Bucket(etcdfmt.BucketMeta); meta != nil {
		if v := meta.Get(etcdfmt.MetaFinishedCompactRev); v != nil {
			if compactRev, err = etcdfmt.ParseCompactRev(v); err != nil {
				return 0, 0, fmt.Errorf("meta %s: %w", etcdfmt.MetaFinishedCompactRev, err)
			}
		}
		if v := meta.Get(etcdfmt.MetaScheduledCompactRev); v != nil {
			if scheduled, err = etcdfmt.ParseCompactRev(v); err != nil {
				return 0, 0, fmt.Errorf("meta %s: %w", etcdfmt.MetaScheduledCompactRev, err)
			}
		}
	}
	latest, err := etcdfmt.LatestRevision(keyB)
	if err != nil {
		return 0, 0, err
	}
	currentRev = max(currentRev, latest, compactRev, scheduled)
	compactRev = max(compactRev, scheduled)
	return compactRev, currentRev, nil
}

// forEachUpTo calls fn for every key-bucket entry with main revision <= rev,
// in revision order.
func forEachUpTo(db *boltdb.DB, b *bolt.Bucket, rev int64, fn func(r etcdfmt.Revision, tomb bool, k, v []byte) error) error {
	c := b.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		r, tomb, err := etcdfmt.ParseRevKey(k)
		if err != nil {
			return err
		}
		if r.Main > rev {
			return nil
		}
		if v == nil {
			return fmt.Errorf("%w: key bucket revision %d_%d is a bucket", etcdfmt.ErrSchema, r.Main, r.Sub)
		}
		db.Touched(len(k) + len(v))
		if err := fn(r, tomb, k, v); err != nil {
			return fmt.Errorf("key bucket revision %d_%d: %w", r.Main, r.Sub, err)
		}
	}
	return nil
}
