package etcdfmt

import (
	"bytes"
	"fmt"
	"time"

	"github.com/etcdkit/etcdkit/internal/boltpage"
)

// DBMeta is what a server starting on a db learns from its meta bucket and
// the key bucket's last revision.
type DBMeta struct {
	Finished, Scheduled int64 // compaction revisions
	Term                uint64
	ConsistentIndex     uint64
	Latest              int64 // main revision of the key bucket's last entry
}

// Compacted is the compaction revision: a scheduled compaction is
// finished when a server starts.
func (m DBMeta) Compacted() int64 { return max(m.Finished, m.Scheduled) }

// Current is the revision a server started on the db reports: never
// below the compaction, and 1 for an empty store.
func (m DBMeta) Current() int64 { return max(m.Latest, m.Compacted(), 1) }

// Visit reads one entry of a top-level bucket into m: the key bucket's
// (in revision order, so the last one seen is the latest) and the meta
// bucket's.
func (m *DBMeta) Visit(bucket, k, v []byte) error {
	var err error
	switch {
	case bytes.Equal(bucket, BucketKey):
		var r Revision
		r, _, err = ParseRevKey(k)
		m.Latest = r.Main
		return err
	case !bytes.Equal(bucket, BucketMeta):
		return nil
	case bytes.Equal(k, MetaFinishedCompactRev):
		m.Finished, err = ParseCompactRev(v)
	case bytes.Equal(k, MetaScheduledCompactRev):
		m.Scheduled, err = ParseCompactRev(v)
	case bytes.Equal(k, MetaTerm):
		m.Term, err = ParseUint64(v)
	case bytes.Equal(k, MetaConsistentIndex):
		m.ConsistentIndex, err = ParseUint64(v)
	}
	if err != nil {
		return fmt.Errorf("%w: meta %s: %w", ErrSchema, k, err)
	}
	return nil
}

// PeekMeta reads the meta bucket and the key bucket's last revision of
// the db at path: a few pages, read before a streaming pass that must know
// the compaction first. That pass still checks the whole file; this one
// checks only what it reads. Errors of the file's opening name its path;
// the others name the input as name.
func PeekMeta(path, name string, lockTimeout time.Duration) (DBMeta, error) {
	f, err := boltpage.Open(path, lockTimeout)
	if err != nil {
		return DBMeta{}, err // names the file
	}
	defer f.Close()
	var m DBMeta
	var top []string
	_, err = f.Scan(func(e boltpage.Entry) error {
		if e.Depth == 0 {
			top = append(top, string(e.Key))
			switch {
			case bytes.Equal(e.Key, BucketMeta):
				return nil
			case bytes.Equal(e.Key, BucketKey):
				return boltpage.LastLeaf
			}
			return boltpage.SkipBucket
		}
		if e.Depth != 1 || e.Bucket {
			return nil
		}
		return m.Visit(e.Top, e.Key, e.Value)
	})
	if err == nil {
		err = CheckBuckets(top)
	}
	if err != nil {
		return m, fmt.Errorf("%s: %w", name, err)
	}
	return m, nil
}
