// Package snapshot reads etcd snapshot files (and bare member dbs): the
// `snapshot status` summary that etcdutl prints.
package snapshot

import (
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"strings"
	"time"

	"github.com/coreos/go-semver/semver"
	bolt "go.etcd.io/bbolt"

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
var ErrIntegrity = errors.New("snapshot file integrity check failed")

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

	checkErr := make(chan error, 1)
	go func() { checkErr <- boltdb.Guard(func() error { return Check(db.DB) }) }()

	var st Status
	err = boltdb.Guard(func() (err error) { st, err = hashAll(db.DB); return err })
	if cerr := <-checkErr; cerr != nil {
		return Status{}, fmt.Errorf("%s: %w", path, cerr)
	}
	if err != nil {
		return Status{}, fmt.Errorf("%s: %w", path, err)
	}
	return st, nil
}

// Check runs bolt's consistency check (page reachability, freelist, key
// order) in its own read transaction and folds the problems into one error.
func Check(db *bolt.DB) error {
	tx, err := db.Begin(false)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var msgs []string
	for e := range tx.Check() {
		msgs = append(msgs, e.Error())
	}
	if len(msgs) == 0 {
		return nil
	}
	const show = 3
	n, more := len(msgs), ""
	if n > show {
		more = fmt.Sprintf("; and %d more", n-show)
		msgs = msgs[:show]
	}
	return fmt.Errorf("%w: %d errors found: %s%s", ErrIntegrity, n, strings.Join(msgs, "; "), more)
}

func hashAll(db *bolt.DB) (Status, error) {
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
