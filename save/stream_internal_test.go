package save

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/etcdkit/etcdkit/cluster"
	"github.com/etcdkit/etcdkit/hashkv"
	"github.com/etcdkit/etcdkit/internal/boltpage"
	"github.com/etcdkit/etcdkit/internal/etcdfmt"
	"github.com/etcdkit/etcdkit/internal/testetcd"
)

// streamed feeds the file to a stream summary in random pieces, as a
// snapshot stream brings it.
func streamed(t *testing.T, path string, check, compact int64) (snapshotFacts, error) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// bbolt's own files are longer than their pages; a snapshot is not.
	m := testetcd.Must(boltpage.ReadMeta(bytes.NewReader(b)))(t)
	b = b[:min(int64(len(b)), int64(m.Pgid)*int64(m.PageSize)+32)]
	f := newStreamFacts(check, compact)
	rng := rand.New(rand.NewPCG(uint64(len(b)), uint64(check)))
	for len(b) > 0 {
		n := min(len(b), 1+rng.IntN(70000))
		if _, err := f.Write(b[:n]); err != nil {
			return snapshotFacts{}, err
		}
		b = b[n:]
	}
	return f.finish()
}

// fileFacts is what the checked file scan (Facts, hashkv.Compute) says.
func fileFacts(t *testing.T, path string, check int64) (rev, keys, leases int64, at, atCheck hashkv.Result) {
	t.Helper()
	rev, keys, leases, err := Facts(path)
	if err != nil {
		t.Fatal(err)
	}
	at = testetcd.Must(hashkv.Compute(path, rev, time.Second))(t)
	atCheck = testetcd.Must(hashkv.Compute(path, check, time.Second))(t)
	return rev, keys, leases, at, atCheck
}

// TestStreamFactsMatchFile: the stream summary of real etcd snapshots
// (3.5, 3.6, 3.7; compacted with free pages and 64 KiB values on overflow
// pages, and never compacted) gives the revision, leases and HashKV the
// checked file scan gives, at the snapshot's revision and at an earlier
// check revision, whatever the compaction estimate below or at the real
// one; an estimate below the snapshot's compaction is ErrCompactionRaced,
// with the revision still read.
func TestStreamFactsMatchFile(t *testing.T) {
	for _, line := range testetcd.Versions {
		for _, spec := range []testetcd.LoadSpec{testetcd.SmallSpec, {Keys: 700, Rounds: 1, Seed: 5}} {
			p, loaded := testetcd.LoadedProcess(t, line, spec)
			path := testetcd.SaveSnapshot(t, p)
			p.Stop()
			c := loaded.CompactRevision
			checks := []int64{loaded.Revision, max(c, 1) + (loaded.Revision-max(c, 1))/2, max(c, 1)}
			for _, check := range checks {
				rev, keys, leases, at, atCheck := fileFacts(t, path, check)
				if rev != loaded.Revision || leases != int64(len(loaded.Leases)) || keys != int64(loaded.LiveKeys) {
					t.Fatalf("etcd %s: file facts rev %d leases %d, loaded %+v", line, rev, leases, loaded)
				}
				for _, est := range []int64{c, c + 3} {
					got, err := streamed(t, path, check, est)
					if err != nil {
						t.Fatalf("etcd %s, check %d, estimate %d: %v", line, check, est, err)
					}
					if got.Revision != rev || got.Keys != keys || got.Leases != leases || got.CompactRevision != at.CompactRevision ||
						got.Hash != at.Hash || got.CheckHash != atCheck.Hash || got.CheckRevision != check {
						t.Errorf("etcd %s, check %d, estimate %d: stream %+v; file rev %d leases %d hash %+v at check %+v", line, check, est, got, rev, leases, at, atCheck)
					}
				}
				if c > 0 {
					got, err := streamed(t, path, check, c-1)
					if !errors.Is(err, hashkv.ErrCompactionRaced) || got.Revision != rev {
						t.Errorf("etcd %s: estimate below the compaction: %v, revision %d", line, err, got.Revision)
					}
				}
			}
		}
	}
}

// TestStreamFactsInlineAndDamage: a db whose key and lease buckets are
// inline in the root page, a truncated stream, a stream longer than its
// pages, and a key bucket page replaced by another kind.
func TestStreamFactsInlineAndDamage(t *testing.T) {
	path := filepath.Join(t.TempDir(), "inline.db")
	db := testetcd.Must(bolt.Open(path, 0o600, nil))(t)
	kv := func(key string, mod int64) []byte {
		// A KeyValue: key (1), create_revision (2), mod_revision (3), version (4), value (5).
		b := append([]byte{0x0a, byte(len(key))}, key...)
		b = append(b, 0x10, 2, 0x18, byte(mod), 0x20, byte(mod-1), 0x2a, 1, 'v')
		return b
	}
	err := db.Update(func(tx *bolt.Tx) error {
		k := testetcd.Must(tx.CreateBucket(etcdfmt.BucketKey))(t)
		for r := int64(2); r <= 4; r++ {
			if err := k.Put(etcdfmt.Revision{Main: r}.AppendKey(nil, false), kv("/a", r)); err != nil {
				return err
			}
		}
		m := testetcd.Must(tx.CreateBucket(etcdfmt.BucketMeta))(t)
		if err := m.Put(etcdfmt.MetaConsistentIndex, etcdfmt.Uint64Value(9)); err != nil {
			return err
		}
		l := testetcd.Must(tx.CreateBucket(etcdfmt.BucketLease))(t)
		return l.Put(etcdfmt.LeaseKey(5), []byte{0x08, 5})
	})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	// An empty key bucket, inline, as a new cluster's.
	empty := filepath.Join(t.TempDir(), "empty.db")
	edb := testetcd.Must(bolt.Open(empty, 0o600, nil))(t)
	testetcd.Must(0, edb.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{etcdfmt.BucketKey, etcdfmt.BucketMeta, etcdfmt.BucketLease} {
			if _, err := tx.CreateBucket(b); err != nil {
				return err
			}
		}
		return nil
	}))(t)
	edb.Close()
	if got, err := streamed(t, empty, 1, 0); err != nil || got.Revision != 0 || got.Keys != 0 || got.Leases != 0 || got.CheckHash != testetcd.Must(hashkv.Compute(empty, 1, time.Second))(t).Hash {
		t.Errorf("empty db: %v %+v", err, got)
	}

	rev, keys, leases, at, atCheck := fileFacts(t, path, 3)
	got, err := streamed(t, path, 3, 0)
	if err != nil || got.Revision != rev || rev != 4 || got.Keys != keys || keys != 1 || got.Leases != leases || leases != 1 || got.Hash != at.Hash || got.CheckHash != atCheck.Hash {
		t.Fatalf("inline: %v %+v; file rev %d leases %d %+v %+v", err, got, rev, leases, at, atCheck)
	}

	// A real snapshot, cut short, made longer, and with its key bucket's
	// last leaf turned into a meta bucket page.
	m := testetcd.StartSingle(t)
	testetcd.Must(testetcd.Load(testetcd.Ctx(t, time.Minute), m.Client(t), testetcd.LoadSpec{Keys: 300, Rounds: 1, Seed: 2}))(t)
	snap := filepath.Join(t.TempDir(), "snap.db")
	testetcd.Must(Snapshot(testetcd.Ctx(t, time.Minute), testetcd.Must(cluster.Connect(testetcd.Ctx(t, time.Minute), cluster.Config{Endpoints: []string{m.ClientURL}}))(t), snap, Options{}))(t)
	b := testetcd.Must(os.ReadFile(snap))(t)
	feed := func(b []byte) error {
		f := newStreamFacts(1, 0)
		if _, err := f.Write(b); err != nil {
			return err
		}
		_, err := f.finish()
		return err
	}
	if err := feed(b[:len(b)/2]); !errors.Is(err, boltpage.ErrDamaged) {
		t.Errorf("truncated: %v", err)
	}
	if err := feed(append(bytes.Clone(b), make([]byte, 8192)...)); !errors.Is(err, boltpage.ErrDamaged) {
		t.Errorf("too long: %v", err)
	}
	if err := feed(bytes.Repeat([]byte{0xee}, 100000)); !errors.Is(err, boltpage.ErrNotBolt) {
		t.Errorf("not bolt: %v", err)
	}
	var s boltpage.Stream
	testetcd.Must(s.Write(b))(t)
	if err := s.Finish(); err != nil {
		t.Fatal(err)
	}
	var last uint64
	testetcd.Must(s.Walk(func(bucket []byte, id uint64, _ []byte) error {
		if bytes.Equal(bucket, etcdfmt.BucketKey) {
			last = id
		}
		return nil
	}))(t)
	bad := bytes.Clone(b)
	page := bad[last*4096 : (last+1)*4096]
	pos := binary.LittleEndian.Uint32(page[16+4:])
	page[16+pos+8] = 'X' // the first key is no longer a revision
	if err := feed(bad); !errors.Is(err, boltpage.ErrDamaged) {
		t.Errorf("a key bucket page that holds no revisions: %v", err)
	}
}
