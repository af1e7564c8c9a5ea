package restore

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.etcd.io/etcd/server/v3/etcdserver/api/membership"

	"github.com/etcdkit/etcdkit/internal/boltdb"
	"github.com/etcdkit/etcdkit/internal/boltpage"
	"github.com/etcdkit/etcdkit/internal/etcdfmt"
)

// finishDB makes the copied db part of the new cluster, as etcdutl does:
// the old membership is removed and the new members are stored, the
// consistent index and term are set to the WAL's commit, and with bump > 0
// an empty entry at latest+bump is written and marked as the scheduled
// compaction, so etcd compacts everything below it at start-up. It returns
// the latest revision. f is closed.
func finishDB(f *os.File, cl *membership.RaftCluster, commit, term, bump uint64) (latest int64, err error) {
	path := f.Name()
	err = boltpage.StoreEmptyFreelist(f)
	if err == nil {
		err = f.Close()
	} else {
		f.Close()
	}
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	db, err := bolt.Open(path, dbPerm, &bolt.Options{NoFreelistSync: true, Timeout: time.Second})
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	err = boltdb.Guard(func() error {
		return db.Update(func(tx *bolt.Tx) error {
			var err error
			latest, err = editDB(tx, cl, commit, term, bump)
			return err
		})
	})
	if cerr := db.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return latest, nil
}

func editDB(tx *bolt.Tx, cl *membership.RaftCluster, commit, term, bump uint64) (int64, error) {
	meta, keys := tx.Bucket(etcdfmt.BucketMeta), tx.Bucket(etcdfmt.BucketKey)
	if meta == nil || keys == nil {
		return 0, fmt.Errorf("%w: the bolt file has no %q or %q bucket", ErrNotEtcd, etcdfmt.BucketMeta, etcdfmt.BucketKey)
	}
	for _, name := range [][]byte{etcdfmt.BucketMembers, etcdfmt.BucketMembersRemoved} {
		if err := clearBucket(tx, name); err != nil {
			return 0, err
		}
	}
	members, err := tx.CreateBucketIfNotExists(etcdfmt.BucketMembers)
	if err != nil {
		return 0, err
	}
	for _, m := range cl.Members() {
		v, err := json.Marshal(m)
		if err != nil {
			return 0, err
		}
		if err := members.Put(etcdfmt.MemberKey(uint64(m.ID)), v); err != nil {
			return 0, err
		}
	}

	main, err := etcdfmt.LatestRevision(keys)
	if err != nil {
		return 0, err
	}
	latest := etcdfmt.Revision{Main: main}
	if bump > 0 {
		if bump > uint64(math.MaxInt64-latest.Main) {
			return 0, fmt.Errorf("%w: --bump-revision %d: revision %d plus it passes the largest revision, %d", ErrConfig, bump, latest.Main, int64(math.MaxInt64))
		}
		latest = etcdfmt.Revision{Main: latest.Main + int64(bump)}
		rev := latest.AppendKey(nil, false)
		if err := keys.Put(rev, []byte{}); err != nil {
			return 0, err
		}
		if err := meta.Put(etcdfmt.MetaScheduledCompactRev, rev); err != nil {
			return 0, err
		}
	}
	if err := meta.Put(etcdfmt.MetaConsistentIndex, etcdfmt.Uint64Value(commit)); err != nil {
		return 0, err
	}
	if err := meta.Put(etcdfmt.MetaTerm, etcdfmt.Uint64Value(term)); err != nil {
		return 0, err
	}
	return latest.Main, nil
}

// clearBucket deletes every key of a bucket, leaving the bucket in place.
func clearBucket(tx *bolt.Tx, name []byte) error {
	b := tx.Bucket(name)
	if b == nil {
		return nil
	}
	var keys [][]byte
	if err := b.ForEach(func(k, _ []byte) error {
		keys = append(keys, append([]byte(nil), k...))
		return nil
	}); err != nil {
		return err
	}
	for _, k := range keys {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}
