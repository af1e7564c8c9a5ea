package save

import (
	"bytes"
	"fmt"
	"math"

	"github.com/etcdkit/etcdkit/hashkv"
	"github.com/etcdkit/etcdkit/internal/boltpage"
	"github.com/etcdkit/etcdkit/internal/etcdfmt"
)

// streamFacts reads a snapshot's facts as it streams past, with nothing
// on disk: its revision (the key bucket's last entry), its leases, its
// compaction and its HashKV. Leaf pages are summarised as they come (the
// key bucket's into hashkv.Pages, the others as a count and any meta
// bucket values) and joined once the whole file has come and its trees
// can be walked.
type streamFacts struct {
	boltpage.Stream
	pages  *hashkv.Pages
	others map[uint64]otherLeaf
}

// otherLeaf is a leaf page that holds no revisions.
type otherLeaf struct {
	count   int
	hasMeta bool
	meta    etcdfmt.DBMeta
}

// snapshotFacts is what a snapshot stream says of itself.
type snapshotFacts struct {
	hashkv.PageResult
	Leases int64
}

func newStreamFacts(checkRev, compactRev int64) *streamFacts {
	f := &streamFacts{pages: hashkv.NewPages(checkRev, compactRev), others: map[uint64]otherLeaf{}}
	f.Leaf = f.leaf
	return f
}

func (f *streamFacts) leaf(id uint64, p []byte) error {
	if ok, err := f.pages.Page(id, p); ok || err != nil {
		return err
	}
	f.others[id] = otherOf(p)
	return nil
}

// otherOf counts a page's entries and reads the meta bucket's values in it.
func otherOf(p []byte) otherLeaf {
	var o otherLeaf
	boltpage.LeafEntries(p, func(_ uint32, k, v []byte) error {
		o.count++
		if isMetaKey(k) && o.meta.Visit(etcdfmt.BucketMeta, k, v) == nil {
			o.hasMeta = true
		}
		return nil
	})
	return o
}

func isMetaKey(k []byte) bool {
	for _, m := range [][]byte{etcdfmt.MetaFinishedCompactRev, etcdfmt.MetaScheduledCompactRev, etcdfmt.MetaConsistentIndex, etcdfmt.MetaTerm} {
		if bytes.Equal(k, m) {
			return true
		}
	}
	return false
}

// finish walks the trees once the stream ended and joins the summaries.
func (f *streamFacts) finish() (snapshotFacts, error) {
	var res snapshotFacts
	if err := f.Finish(); err != nil {
		return res, err
	}
	var meta etcdfmt.DBMeta
	top, err := f.Walk(func(bucket []byte, id uint64, inline []byte) error {
		switch {
		case bytes.Equal(bucket, etcdfmt.BucketKey):
			if o, ok := f.others[id]; ok && o.count == 0 || inline != nil && otherOf(inline).count == 0 {
				return nil // an empty key bucket: a new cluster
			}
			if inline != nil {
				id = f.Meta.Pgid // no page of the file has this id
				if id > math.MaxUint32 {
					return fmt.Errorf("%w: %d pages", boltpage.ErrDamaged, id)
				}
				if ok, err := f.pages.Page(id, inline); err != nil || !ok {
					return fmt.Errorf("%w: the inline key bucket does not hold revisions", boltpage.ErrDamaged)
				}
			}
			return f.pages.Join(id)
		case bytes.Equal(bucket, etcdfmt.BucketLease), bytes.Equal(bucket, etcdfmt.BucketMeta):
			o, ok := f.others[id]
			if inline != nil {
				o, ok = otherOf(inline), true
			}
			if !ok {
				return fmt.Errorf("%w: page %d of bucket %q holds revisions", boltpage.ErrDamaged, id, bucket)
			}
			if bytes.Equal(bucket, etcdfmt.BucketLease) {
				res.Leases += int64(o.count)
			} else if o.hasMeta {
				meta = mergeMeta(meta, o.meta)
			}
		}
		return nil
	})
	if err != nil {
		return res, err
	}
	if err := etcdfmt.CheckBuckets(top); err != nil {
		return res, err
	}
	res.PageResult, err = f.pages.Sum(meta.Compacted())
	return res, err
}

// mergeMeta takes the values a meta bucket page holds; each key is in one
// page.
func mergeMeta(m, p etcdfmt.DBMeta) etcdfmt.DBMeta {
	m.Finished, m.Scheduled = max(m.Finished, p.Finished), max(m.Scheduled, p.Scheduled)
	m.Term, m.ConsistentIndex = max(m.Term, p.Term), max(m.ConsistentIndex, p.ConsistentIndex)
	return m
}
