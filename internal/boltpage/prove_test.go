package boltpage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// etcdFixture writes a snapshot of a bolt file shaped like etcd's db (no stored
// freelist; a key bucket of revisions, a lease bucket, a meta bucket) with
// revs revisions, one value spanning overflow pages, and leases inserted in
// random order. churn adds commits that delete old revisions and append
// new ones, so that bolt reuses freed pages: parents then come before
// their children in the file and free pages hold stale trees.
func etcdFixture(tb testing.TB, pageSize, revs int, churn bool) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "etcd.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{NoFreelistSync: true, PageSize: pageSize})
	if err != nil {
		tb.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	rev := 1
	put := func(tx *bolt.Tx, n int) error {
		k := tx.Bucket([]byte("key"))
		for range n {
			rev++
			key := binary.BigEndian.AppendUint64(nil, uint64(rev))
			key = binary.BigEndian.AppendUint64(append(key, '_'), 0)
			if err := k.Put(key, bytes.Repeat([]byte{byte(rev)}, 40+rng.IntN(300))); err != nil {
				return err
			}
		}
		return nil
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range []string{"key", "lease", "meta"} {
			if _, err := tx.CreateBucket([]byte(b)); err != nil {
				return err
			}
		}
		l := tx.Bucket([]byte("lease"))
		for range revs / 10 {
			if err := l.Put(binary.BigEndian.AppendUint64(nil, rng.Uint64()), make([]byte, 20)); err != nil {
				return err
			}
		}
		m := tx.Bucket([]byte("meta"))
		if err := m.Put([]byte("consistent_index"), make([]byte, 8)); err != nil {
			return err
		}
		if err := m.Put([]byte("zz-big"), bytes.Repeat([]byte("x"), 3*db.Info().PageSize)); err != nil {
			return err
		}
		return put(tx, revs)
	})
	for round := 0; churn && err == nil && round < 20; round++ {
		err = db.Update(func(tx *bolt.Tx) error {
			c := tx.Bucket([]byte("key")).Cursor()
			for k, _ := c.First(); k != nil; k, _ = c.Next() {
				if rng.IntN(8) == 0 {
					if err := c.Delete(); err != nil {
						return err
					}
				}
			}
			return put(tx, revs/20)
		})
	}
	if err != nil {
		tb.Fatal(err)
	}
	if err := db.Close(); err != nil {
		tb.Fatal(err)
	}
	return snapshotOf(tb, path)
}

// snapshotOf writes a snapshot of the bolt file at path as etcd takes one,
// with bolt's Tx.WriteTo: both meta pages the same, the file cut at the
// high-water mark.
func snapshotOf(tb testing.TB, path string) string {
	tb.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		tb.Fatal(err)
	}
	defer db.Close()
	snap := filepath.Join(tb.TempDir(), "snapshot.db")
	err = db.View(func(tx *bolt.Tx) error {
		f, err := os.Create(snap)
		if err != nil {
			return err
		}
		if _, err := tx.WriteTo(f); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	})
	if err != nil {
		tb.Fatal(err)
	}
	return snap
}

// prove streams b through a proving Stream in uneven writes and returns
// Walk's verdict.
func prove(b []byte) error {
	s := Stream{Prove: true}
	defer s.Close()
	for len(b) > 0 {
		n := min(len(b), 7777)
		if _, err := s.Write(b[:n]); err != nil {
			return err
		}
		b = b[n:]
	}
	if err := s.Finish(); err != nil {
		return err
	}
	_, err := s.Walk(func([]byte, uint64, []byte) error { return nil })
	return err
}

func proveFile(t *testing.T, path string) error {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return prove(b)
}

// parentFirst reports whether some branch page of path comes before one
// of its children in the file.
func parentFirst(t *testing.T, path string) bool {
	_, pages := pagesOf(t, path)
	for _, p := range pages {
		for _, c := range p.pgs {
			if c > p.id {
				return true
			}
		}
	}
	return false
}

// TestProveSoundFiles: files bolt wrote the way etcd's backend does are
// proven by the stream alone, and Check agrees; with churn, pages come
// before and after their parents.
func TestProveSoundFiles(t *testing.T) {
	for _, tc := range []struct {
		pageSize, revs int
		churn          bool
	}{{4096, 20000, false}, {4096, 20000, true}, {8192, 30000, true}, {4096, 0, false}} {
		t.Run(fmt.Sprintf("page=%d/revs=%d/churn=%v", tc.pageSize, tc.revs, tc.churn), func(t *testing.T) {
			path := etcdFixture(t, tc.pageSize, tc.revs, tc.churn)
			if tc.churn && !parentFirst(t, path) {
				t.Fatal("the churned fixture has no parent before its child: it does not test waiting")
			}
			if err := proveFile(t, path); err != nil {
				t.Fatalf("prove: %v", err)
			}
			if _, err := Check(path, 0, nil, nil); err != nil {
				t.Fatalf("Check: %v", err)
			}
		})
	}
}

// TestProveFindsDamage: every damage Scan finds in an etcd-shaped file
// leaves the stream unproven (or damaged), never proven.
func TestProveFindsDamage(t *testing.T) {
	for _, churn := range []bool{false, true} {
		src := etcdFixture(t, 4096, 20000, churn)
		_, tests, _ := treeDamages(t, src)
		for _, tc := range tests {
			t.Run(fmt.Sprintf("churn=%v/%s", churn, tc.name), func(t *testing.T) {
				path := tc.apply(t, src)
				if _, err := Check(path, 0, nil, nil); err == nil {
					t.Fatal("Check accepts the damaged file: the damage is not one")
				}
				err := proveFile(t, path)
				if !errors.Is(err, ErrUnproven) && !errors.Is(err, ErrDamaged) {
					t.Fatalf("prove: %v, want ErrUnproven or ErrDamaged", err)
				}
			})
		}
	}
}

// TestProveLeavesToCheck: what the proof does not cover (nested buckets,
// a stored freelist) is unproven, though Check passes it: the caller then
// checks its copy.
func TestProveLeavesToCheck(t *testing.T) {
	for _, freelist := range []bool{false, true} {
		path := snapshotOf(t, fixture(t, freelist, 0))
		if _, err := Check(path, 0, nil, nil); err != nil {
			t.Fatalf("Check: %v", err)
		}
		if err := proveFile(t, path); !errors.Is(err, ErrUnproven) {
			t.Fatalf("freelist=%v: prove: %v, want ErrUnproven", freelist, err)
		}
	}
}

// FuzzProve: whatever the bytes, a stream the proof passes is a file
// Check passes: the proof never vouches for what Scan would refuse. Seeds:
// small etcd-shaped files, with and without churn.
func FuzzProve(f *testing.F) {
	for _, churn := range []bool{false, true} {
		b, err := os.ReadFile(etcdFixture(f, 4096, 200, churn))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		if prove(b) != nil {
			return
		}
		path := filepath.Join(dir, "fuzz.db")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Check(path, 0, nil, nil); err != nil {
			t.Fatalf("proven, but Check: %v", err)
		}
	})
}

// TestProveFollowsMetaPage1: a newer meta page 1 that names a stored
// freelist (bolt would open the file by it, and Check reads that freelist)
// leaves the stream unproven, while Check refuses the file.
func TestProveFollowsMetaPage1(t *testing.T) {
	src := etcdFixture(t, 4096, 2000, false)
	b, m := readFixture(t, src)
	ps := int(m.PageSize)
	meta := b[ps+pageHeaderSize : ps+pageHeaderSize+metaSize]
	binary.LittleEndian.PutUint64(meta[32:], 2)        // freelist: a leaf page
	binary.LittleEndian.PutUint64(meta[48:], m.Txid+1) // newer than meta 0
	h := fnv.New64a()
	h.Write(meta[:metaChecksumOff])
	binary.LittleEndian.PutUint64(meta[metaChecksumOff:], h.Sum64())
	path := filepath.Join(t.TempDir(), "meta1.db")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Check(path, 0, nil, nil); err == nil {
		t.Fatal("Check accepts the file: the damage is not one")
	}
	if err := prove(b); err == nil {
		t.Fatal("proven, though bolt would read a freelist the proof never checked")
	}
}

// TestProveMutations is FuzzProve's property over a fixed sample: 3000
// copies of a churned etcd-shaped snapshot, each with a few random bytes
// changed (half of them in page and element headers), are never proven
// when Check refuses them.
func TestProveMutations(t *testing.T) {
	b, err := os.ReadFile(etcdFixture(t, 4096, 200, true))
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	path := filepath.Join(t.TempDir(), "mutated.db")
	proven, refused := 0, 0
	for range 3000 {
		c := bytes.Clone(b)
		for range 1 + rng.IntN(4) {
			at := rng.IntN(len(c))
			if rng.IntN(2) == 0 { // a page's header or its first elements
				at = at/4096*4096 + rng.IntN(64)
			}
			c[at] = byte(rng.Uint32())
		}
		if prove(c) != nil {
			continue
		}
		proven++
		if err := os.WriteFile(path, c, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Check(path, 0, nil, nil); err != nil {
			t.Fatalf("proven, but Check: %v", err)
		}
	}
	for range 3000 { // header damage leaves some unproven: the sample reaches the checks
		c := bytes.Clone(b)
		c[rng.IntN(len(c)/4096)*4096+rng.IntN(64)] ^= 0xff
		if prove(c) != nil {
			refused++
		}
	}
	if proven == 0 || refused == 0 {
		t.Fatalf("%d proven, %d unproven: the sample tests nothing", proven, refused)
	}
}
