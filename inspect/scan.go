package inspect

import (
	"bytes"
	"context"
	"fmt"

	"github.com/etcdkit/etcdkit/internal/boltpage"
	"github.com/etcdkit/etcdkit/internal/etcdfmt"
)

// dbMeta is the meta bucket's facts and the latest revision.
type dbMeta = etcdfmt.DBMeta

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
		if err := m.Visit(e.Top, e.Key, e.Value); err != nil {
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
func peekMeta(o *Opened) (dbMeta, error) {
	return etcdfmt.PeekMeta(o.DB, o.Name, o.LockTimeout)
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
