// Package snapshot reads etcd snapshot files (and bare member dbs): the
// `snapshot status` summary that etcdutl prints.
package snapshot

import (
	"bytes"
	"fmt"
	"hash/crc32"
	"time"

	"github.com/coreos/go-semver/semver"

	"github.com/etcdkit/etcdkit/internal/boltdb"
	"github.com/etcdkit/etcdkit/internal/etcdfmt"
)

// Status is the summary of a snapshot, with etcdutl's JSON field names.
type Status struct {
	Hash      uint32 `json:"hash"`
	Revision  int64  `json:"revision"`
	TotalKey  int    `json:"totalKey"`
	TotalSize int64  `json:"totalSize"`
	Version   string `json:"version"`
}

// ErrIntegrity reports a bolt file that fails bolt's consistency check.
var ErrIntegrity = boltdb.ErrIntegrity

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ReadStatus computes the status of the bolt file at path exactly as etcdutl
// 3.7 does: HASH is CRC-32C over every bucket (name, then keys and values) in
// order, REVISION the main revision of the last key-bucket entry, TOTAL KEYS
// the number of live keys after replaying puts and tombstones, TOTAL SIZE
// bolt's tx.Size(), VERSION meta/storageVersion. Bolt's consistency check runs
// in a second read transaction concurrently with the hashing pass. The file
// is opened read-only and never modified.
func ReadStatus(path string, lockTimeout time.Duration) (Status, error) {
	db, err := boltdb.OpenReadOnly(path, lockTimeout)
	if err != nil {
		return Status{}, err
	}
	defer db.Close()

	var checkErr error
	checkDone := make(chan struct{})
	go func() {
		defer close(checkDone)
		checkErr = boltdb.Check(path)
	}()

	var st Status
	err = boltdb.Guard(func() (err error) { st, err = hashAll(db); return err })
	<-checkDone
	if cerr := checkErr; cerr != nil {
		return Status{}, fmt.Errorf("%s: %w", path, cerr)
	}
	if err != nil {
		return Status{}, fmt.Errorf("%s: %w", path, err)
	}
	return st, nil
}

func hashAll(db *boltdb.DB) (Status, error) {
	var st Status
	tx, err := db.Begin(false)
	if err != nil {
		return st, err
	}
	defer tx.Rollback()

	st.TotalSize = tx.Size()
	if meta := tx.Bucket(etcdfmt.BucketMeta); meta != nil {
		if v, err := semver.NewVersion(string(meta.Get(etcdfmt.MetaStorageVersion))); err == nil {
			st.Version = v.String()
		}
	}

	h := crc32.New(castagnoli)
	ids := etcdfmt.NewKeyHasher()
	live := make(map[etcdfmt.KeyID]struct{})
	c := tx.Cursor()
	for name, _ := c.First(); name != nil; name, _ = c.Next() {
		b := tx.Bucket(name)
		if b == nil {
			return st, fmt.Errorf("top-level entry %q is not a bucket", name)
		}
		h.Write(name)
		isKey := bytes.Equal(name, etcdfmt.BucketKey)
		err := b.ForEach(func(k, v []byte) error {
			h.Write(k)
			h.Write(v)
			db.Touched(len(k) + len(v))
			if !isKey {
				return nil
			}
			rev, tomb, err := etcdfmt.ParseRevKey(k)
			if err != nil {
				return err
			}
			st.Revision = rev.Main
			kv, err := etcdfmt.ParseKeyValue(v)
			if err != nil {
				return fmt.Errorf("key bucket revision %d_%d: %w", rev.Main, rev.Sub, err)
			}
			id := ids.ID(kv.Key)
			if tomb {
				delete(live, id)
			} else {
				live[id] = struct{}{}
			}
			return nil
		})
		if err != nil {
			return st, fmt.Errorf("bucket %q: %w", name, err)
		}
	}
	st.TotalKey = len(live)
	st.Hash = h.Sum32()
	return st, nil
}
