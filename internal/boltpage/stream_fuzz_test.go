package boltpage_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/etcdkit/etcdkit/hashkv"
	"github.com/etcdkit/etcdkit/internal/boltpage"
	"github.com/etcdkit/etcdkit/internal/etcdfmt"
)

// FuzzStreamPages: a snapshot stream of any bytes, read by Stream into
// hashkv.Pages and joined by Walk (what backup create does with the member's
// stream), ends in a hash or an error of the kinds a backup maps to its
// exit codes (not bolt, damaged, a compaction race), never a panic, a hang
// (a forged tree naming a page twice) or an allocation the bytes do not
// justify (a meta page claiming 2^32 pages). Seeds: etcd-shaped bolt files
// with an inline key bucket and with one of many pages.
func FuzzStreamPages(f *testing.F) {
	for _, n := range []int{3, 300} {
		f.Add(etcdShapedDB(f, n), int64(n), int64(0))
		f.Add(etcdShapedDB(f, n), int64(n/2+2), int64(2))
	}
	f.Fuzz(func(t *testing.T, b []byte, check, compact int64) {
		p := hashkv.NewPages(check, compact)
		s := boltpage.Stream{Leaf: func(id uint64, page []byte) error { _, err := p.Page(id, page); return err }}
		cut := len(b) / 3
		_, err := s.Write(b[:cut])
		if err == nil {
			_, err = s.Write(b[cut:])
		}
		if err == nil {
			err = s.Finish()
		}
		if err == nil {
			_, err = s.Walk(func(bucket []byte, id uint64, inline []byte) error {
				if string(bucket) != string(etcdfmt.BucketKey) || inline != nil {
					return nil
				}
				return p.Join(id)
			})
		}
		if err == nil {
			_, err = p.Sum(compact)
		}
		if err != nil && !errors.Is(err, boltpage.ErrNotBolt) && !errors.Is(err, boltpage.ErrDamaged) && !errors.Is(err, hashkv.ErrCompactionRaced) {
			t.Fatalf("unexpected error class: %v", err)
		}
	})
}

// etcdShapedDB is a bolt file with etcd's key, meta and lease buckets and
// n revisions of one key, cut to its pages as a snapshot is.
func etcdShapedDB(tb testing.TB, n int) []byte {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "etcd.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		tb.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		k, err := tx.CreateBucket(etcdfmt.BucketKey)
		if err != nil {
			return err
		}
		for r := int64(2); r < int64(n)+2; r++ {
			v := append([]byte{0x0a, 2, '/', 'a', 0x10, 2, 0x18}, byte(r%128), 0x20, byte((r-1)%128), 0x2a, 1, 'v')
			if err := k.Put(etcdfmt.Revision{Main: r}.AppendKey(nil, false), v); err != nil {
				return err
			}
		}
		m, err := tx.CreateBucket(etcdfmt.BucketMeta)
		if err != nil {
			return err
		}
		if err := m.Put(etcdfmt.MetaFinishedCompactRev, etcdfmt.Revision{Main: 2}.AppendKey(nil, false)); err != nil {
			return err
		}
		l, err := tx.CreateBucket(etcdfmt.BucketLease)
		if err != nil {
			return err
		}
		return l.Put(etcdfmt.LeaseKey(5), []byte{0x08, 5})
	})
	if err != nil {
		tb.Fatal(err)
	}
	db.Close()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return b[:min(len(b), 4096*int(etcdfmtPages(b)))]
}

// etcdfmtPages is the meta page's high-water mark of b.
func etcdfmtPages(b []byte) uint64 {
	var s boltpage.Stream
	s.Write(b[:4096])
	return s.Meta.Pgid
}
