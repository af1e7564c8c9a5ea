package inspect

import (
	"bytes"
	"context"
	"fmt"

	"github.com/etcdkit/etcdkit/internal/boltpage"
	"github.com/etcdkit/etcdkit/internal/etcdfmt"
)

// dbMeta is what a server starting on a db learns from its meta bucket
// and the key bucket's last revision.
type dbMeta struct {
	finished, scheduled int64 // compaction revisions
	term                uint64
	consistentIndex     uint64
	latest              int64 // main revision of the key bucket's last entry
}

// compacted is the compaction revision: a scheduled compaction is
// finished when a server starts.
func (m dbMeta) compacted() int64 { return max(m.finished, m.scheduled) }

// current is the revision a server started on the db reports: never
// below the compaction, and 1 for an empty store.
func (m dbMeta) current() int64 { return max(m.latest, m.compacted(), 1) }

// visit reads one entry of a top-level bucket into m.
func (m *dbMeta) visit(bucket, k, v []byte) error {
	var err error
	switch {
	case bytes.Equal(bucket, etcdfmt.BucketKey):
		var r etcdfmt.Revision
		r, _, err = etcdfmt.ParseRevKey(k)
		m.latest = r.Main // the key bucket is in revision order
		return err
	case !bytes.Equal(bucket, etcdfmt.BucketMeta):
		return nil
	case bytes.Equal(k, etcdfmt.MetaFinishedCompactRev):
		m.finished, err = etcdfmt.ParseCompactRev(v)
	case bytes.Equal(k, etcdfmt.MetaScheduledCompactRev):
		m.scheduled, err = etcdfmt.ParseCompactRev(v)
	case bytes.Equal(k, etcdfmt.MetaTerm):
		m.term, err = etcdfmt.ParseUint64(v)
	case bytes.Equal(k, etcdfmt.MetaConsistentIndex):
		m.consistentIndex, err = etcdfmt.ParseUint64(v)
	}
	if err != nil {
		return fmt.Errorf("%w: meta %s: %w", etcdfmt.ErrSchema, k, err)
	}
	return nil
}

// visitor adapts a per-bucket visit to the scanner's entries: visit sees
// every entry of a top-level bucket (not those of nested buckets) with
// the bucket's name, after m has read it. The context is checked every
// few thousand entries.
func visitor(ctx context.Context, m *dbMeta, visit func(bucket, k, v []byte) error) func(boltpage.Entry) error {
	n := 0
	return func(e boltpage.Entry) error {
		if e.Depth == 0 {
			return ctx.Err()
		}
		if e.Depth != 1 || e.Bucket {
			return nil
		}
		if n++; n%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if err := m.visit(e.Top, e.Key, e.Value); err != nil {
			return err
		}
		if visit != nil {
			return visit(e.Top, e.Key, e.Value)
		}
		return nil
	}
}

// scan reads the db once through the pread scanner's check (what verify
// checks of the bolt file) and passes every entry of a top-level bucket
// to visit. What visit saw counts only when scan returns nil.
func scan(ctx context.Context, o *Opened, visit func(bucket, k, v []byte) error) (dbMeta, boltpage.Pages, error) {
	var m dbMeta
	top, pages, err := boltpage.CheckPages(o.DB, o.LockTimeout, o.Progress, visitor(ctx, &m, visit))
	if err != nil {
		return m, pages, err // names the file
	}
	if err := etcdfmt.CheckBuckets(top); err != nil {
		return m, pages, o.wrap(err)
	}
	return m, pages, nil
}

// peekMeta reads the meta bucket and the key bucket's last revision: a
// few pages, before a streaming scan that must know the compaction first.
// The scan that follows still checks the whole file.
func peekMeta(o *Opened) (dbMeta, error) {
	f, err := boltpage.Open(o.DB, o.LockTimeout)
	if err != nil {
		return dbMeta{}, err // names the file
	}
	defer f.Close()
	var m dbMeta
	var top []string
	visit := visitor(context.Background(), &m, nil)
	_, err = f.Scan(func(e boltpage.Entry) error {
		if e.Depth == 0 {
			top = append(top, string(e.Key))
			switch {
			case bytes.Equal(e.Key, etcdfmt.BucketMeta):
			case bytes.Equal(e.Key, etcdfmt.BucketKey):
				_ = visit(e)
				return boltpage.LastLeaf
			default:
				return boltpage.SkipBucket
			}
		}
		return visit(e)
	})
	if err == nil {
		err = etcdfmt.CheckBuckets(top)
	}
	if err != nil {
		return m, o.wrap(err)
	}
	return m, nil
}

// wrap names the input in an error, once.
func (o *Opened) wrap(err error) error {
	return fmt.Errorf("%s: %w", o.Name, err)
}

// keyEntry is a decoded entry of the key bucket: its revision, whether it
// is a tombstone, and the stored KeyValue's key and scalar fields.
type keyEntry struct {
	rev  etcdfmt.Revision
	tomb bool
	kv   etcdfmt.KeyValue
}

func parseKeyEntry(k, v []byte) (keyEntry, error) {
	r, tomb, err := etcdfmt.ParseRevKey(k)
	if err != nil {
		return keyEntry{}, err
	}
	kv, err := etcdfmt.ParseKeyValue(v)
	if err != nil {
		return keyEntry{}, fmt.Errorf("key bucket revision %d_%d: %w", r.Main, r.Sub, err)
	}
	return keyEntry{rev: r, tomb: tomb, kv: kv}, nil
}

// onKeys is a scan visitor that passes the key bucket's entries, decoded,
// to fn (with the raw value) and the other buckets' entries to other (when
// not nil).
func onKeys(fn func(e keyEntry, v []byte) error, other func(bucket, k, v []byte) error) func(bucket, k, v []byte) error {
	return func(bucket, k, v []byte) error {
		if !bytes.Equal(bucket, etcdfmt.BucketKey) {
			if other != nil {
				return other(bucket, k, v)
			}
			return nil
		}
		e, err := parseKeyEntry(k, v)
		if err != nil {
			return err
		}
		return fn(e, v)
	}
}
