// Package snapshot reads etcd snapshot files (and bare member dbs): the
// `snapshot status` summary that etcdutl prints.
package snapshot

import (
	"bytes"
	"fmt"
	"hash"
	"hash/crc32"
	"time"

	"github.com/coreos/go-semver/semver"

	"github.com/etcdkit/etcdkit/internal/boltpage"
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
var ErrIntegrity = boltpage.ErrIntegrity

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ReadStatus computes the status of the bolt file at path exactly as etcdutl
// 3.7 does: HASH is CRC-32C over every bucket (name, then keys and values) in
// order, REVISION the main revision of the last key-bucket entry, TOTAL KEYS
// the number of live keys after replaying puts and tombstones, TOTAL SIZE
// bolt's tx.Size(), VERSION meta/storageVersion. It reads the file once with
// pread (boltpage.File.Scan), which also runs bolt's consistency checks, so its
// memory does not grow with the file. The file is opened read-only and never
// modified.
func ReadStatus(path string, lockTimeout time.Duration) (Status, error) {
	return ReadStatusWith(path, StatusOptions{LockTimeout: lockTimeout})
}

// StatusOptions tune ReadStatusWith.
type StatusOptions struct {
	// LockTimeout bounds the wait for the lock of a db held by a running
	// etcd (0 waits forever).
	LockTimeout time.Duration
	// Progress, when set, is told the bytes read so far and in all.
	Progress func(done, total int64)
}

// ReadStatusWith is ReadStatus with progress reports.
func ReadStatusWith(path string, opts StatusOptions) (Status, error) {
	f, err := boltpage.Open(path, opts.LockTimeout)
	if err != nil {
		return Status{}, err
	}
	defer f.Close()
	f.Progress = opts.Progress
	st := Status{TotalSize: f.TotalSize()}
	var live liveCounter
	if m, err := etcdfmt.PeekMeta(path, path, opts.LockTimeout); err == nil && m.Scheduled <= m.Finished {
		live = &versionCount{compacted: m.Finished}
	} else { // a compaction under way (or unreadable meta): the set
		live = newLiveSet()
	}
	h := newStatusHasher(&st, live)
	_, err = f.Scan(h.entry)
	st.TotalKey = h.live.close()
	if err == nil {
		err = etcdfmt.CheckBuckets(h.top)
	}
	if err != nil {
		return Status{}, fmt.Errorf("%s: %w", path, err)
	}
	h.run.Flush()
	st.Hash = h.crc.Sum32()
	return st, nil
}

// statusHasher folds the entries of a scan into a Status.
type statusHasher struct {
	st     *Status
	crc    hash.Hash32
	live   liveCounter
	run    boltpage.PageRun // into crc
	bucket []byte           // the top-level bucket being read
	top    []string         // the top-level buckets
}

func newStatusHasher(st *Status, live liveCounter) *statusHasher {
	h := &statusHasher{st: st, crc: crc32.New(castagnoli), live: live}
	h.run.Write = func(b []byte) { h.crc.Write(b) }
	return h
}

func (h *statusHasher) entry(e boltpage.Entry) error {
	switch e.Depth {
	case 0:
		if !e.Bucket {
			return fmt.Errorf("%w: top-level entry %q is not a bucket", etcdfmt.ErrSchema, e.Key)
		}
		h.top = append(h.top, string(e.Key))
		h.run.Flush()
		h.crc.Write(e.Key)
		h.bucket = append(h.bucket[:0], e.Key...)
		return nil
	case 1:
	default:
		return nil // etcd nests no buckets; etcdutl's hash does not descend
	}
	h.run.Add(e)
	switch {
	case bytes.Equal(h.bucket, etcdfmt.BucketMeta) && bytes.Equal(e.Key, etcdfmt.MetaStorageVersion):
		if v, err := semver.NewVersion(string(e.Value)); err == nil {
			h.st.Version = v.String()
		}
	case bytes.Equal(h.bucket, etcdfmt.BucketKey):
		if e.Bucket {
			return fmt.Errorf("%w: bucket %q: entry %q is a bucket", etcdfmt.ErrSchema, h.bucket, e.Key)
		}
		rev, tomb, err := etcdfmt.ParseRevKey(e.Key)
		if err != nil {
			return fmt.Errorf("bucket %q: %w", h.bucket, err)
		}
		h.st.Revision = rev.Main
		kv, err := etcdfmt.ParseKeyValue(e.Value)
		if err != nil {
			return fmt.Errorf("bucket %q: revision %d_%d: %w", h.bucket, rev.Main, rev.Sub, err)
		}
		h.live.add(kv, rev.Main, tomb)
	}
	return nil
}

// liveCounter counts the live keys while the key bucket is replayed in
// revision order, as etcdutl does: a put makes its key live, a tombstone
// removes it.
type liveCounter interface {
	add(kv etcdfmt.KeyValue, main int64, tomb bool)
	close() int
}

// versionCount counts the live keys with no set, from what each entry says
// of its key, on a db whose compaction at C is finished (or never ran): at
// or below C etcd has kept at most one entry per key, its newest, live
// unless a tombstone; above C a put of version 1 creates a key and a
// tombstone deletes one. That is the set's count in constant memory, and
// without hashing a key per entry.
type versionCount struct {
	compacted int64
	n         int
}

func (c *versionCount) add(kv etcdfmt.KeyValue, main int64, tomb bool) {
	switch {
	case main <= c.compacted:
		if !tomb {
			c.n++
		}
	case tomb:
		c.n--
	case kv.Version == 1:
		c.n++
	}
}

func (c *versionCount) close() int { return max(c.n, 0) }

// liveSet is the liveCounter of a db whose compaction is not finished (so
// a key may still have several entries at or below it): the set of live
// keys' fingerprints. The set is
// updated in batches on a goroutine of its own, so the map work (a third of
// the CPU time of a status) overlaps the reading and hashing.
type liveSet struct {
	ids   etcdfmt.KeyHasher
	batch []keyOp
	todo  chan []keyOp
	spare chan []keyOp
	count chan int
}

type keyOp struct {
	id   uint64 // etcdfmt.KeyHasher.ID64: a count needs no more
	tomb bool
}

const liveBatch = 4096

func newLiveSet() *liveSet {
	l := &liveSet{ids: etcdfmt.NewKeyHasher(), todo: make(chan []keyOp, 4), spare: make(chan []keyOp, 4), count: make(chan int)}
	l.batch = make([]keyOp, 0, liveBatch)
	go func() {
		live := make(map[uint64]struct{})
		for ops := range l.todo {
			for _, op := range ops {
				if op.tomb {
					delete(live, op.id)
				} else {
					live[op.id] = struct{}{}
				}
			}
			select {
			case l.spare <- ops[:0]:
			default:
			}
		}
		l.count <- len(live)
	}()
	return l
}

func (l *liveSet) add(kv etcdfmt.KeyValue, _ int64, tomb bool) {
	l.batch = append(l.batch, keyOp{l.ids.ID64(kv.Key), tomb})
	if len(l.batch) == liveBatch {
		l.todo <- l.batch
		select {
		case l.batch = <-l.spare:
		default:
			l.batch = make([]keyOp, 0, liveBatch)
		}
	}
}

// close applies the last batch, stops the goroutine and returns the number
// of live keys.
func (l *liveSet) close() int {
	l.todo <- l.batch
	close(l.todo)
	return <-l.count
}
