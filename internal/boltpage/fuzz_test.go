package boltpage

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// FuzzScan: Open and Scan of any file end in a result or an error of the
// kinds callers map to exit codes (not bolt, damaged, integrity), never a
// panic, a hang or an allocation the file's size does not justify. Seeds:
// a real etcd snapshot's db (testdata/fuzz, from tools/fuzzseeds) and
// bbolt files of several page sizes.
func FuzzScan(f *testing.F) {
	for _, ps := range []int{4096, 8192} {
		b, err := os.ReadFile(smallFixture(f, ps))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		path := filepath.Join(dir, "fuzz.db")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		bf, err := Open(path, time.Second)
		if err != nil {
			if !errors.Is(err, ErrNotBolt) && !errors.Is(err, ErrDamaged) {
				t.Fatalf("Open: unexpected error class: %v", err)
			}
			return
		}
		defer bf.Close()
		entries := 0
		_, err = bf.Scan(func(Entry) error { entries++; return nil })
		if err != nil && !errors.Is(err, ErrIntegrity) {
			t.Fatalf("Scan: unexpected error class: %v", err)
		}
		if max := len(b) / 8; entries > max {
			t.Fatalf("%d entries from %d bytes", entries, len(b))
		}
	})
}

// smallFixture is a small bbolt file: two buckets, a nested and an inline
// one, a value spanning overflow pages, and a stored freelist.
func smallFixture(tb testing.TB, pageSize int) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "small.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{PageSize: pageSize})
	if err != nil {
		tb.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		a, err := tx.CreateBucket([]byte("key"))
		if err != nil {
			return err
		}
		for i := range 200 {
			if err := a.Put(fmt.Appendf(nil, "%016x_%016x", i, 0), bytes.Repeat([]byte{byte(i)}, 20+i%50)); err != nil {
				return err
			}
		}
		if err := a.Put([]byte("zz-big"), bytes.Repeat([]byte("b"), 3*pageSize)); err != nil {
			return err
		}
		n, err := tx.CreateBucket([]byte("meta"))
		if err != nil {
			return err
		}
		in, err := n.CreateBucket([]byte("inline"))
		if err != nil {
			return err
		}
		return in.Put([]byte("consistent_index"), []byte{0, 0, 0, 0, 0, 0, 0, 9})
	})
	if err != nil {
		tb.Fatal(err)
	}
	if err := db.Close(); err != nil {
		tb.Fatal(err)
	}
	return path
}
