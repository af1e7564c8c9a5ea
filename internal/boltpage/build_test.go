package boltpage_test

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"sort"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/etcdkit/etcdkit/internal/boltpage"
)

// TestBuilder: files the bulk loader writes pass bbolt's own Check, hold
// exactly the buckets, sequences, keys and values given, take writes
// afterwards, and pass the scanner's check: empty, inline and large
// buckets, values across overflow pages, trees several branch levels
// deep, at several page sizes.
func TestBuilder(t *testing.T) {
	type bucket struct {
		name string
		seq  uint64
		keys []string
		vals map[string][]byte
	}
	gen := func(seed int64, n, maxVal int) bucket {
		r := rand.New(rand.NewSource(seed))
		b := bucket{vals: map[string][]byte{}}
		for len(b.vals) < n {
			k := fmt.Sprintf("%08x-%d", r.Uint32(), r.Intn(1000))
			v := make([]byte, r.Intn(maxVal+1))
			r.Read(v)
			if _, ok := b.vals[k]; !ok {
				b.keys = append(b.keys, k)
			}
			b.vals[k] = v
		}
		sort.Strings(b.keys)
		return b
	}
	for _, tc := range []struct {
		name     string
		pageSize int
		buckets  []bucket
	}{
		{"empty db", 4096, nil},
		{"etcd-like", 4096, func() []bucket {
			key := gen(1, 20000, 300)
			key.name = "key"
			meta := gen(2, 3, 8)
			meta.name, meta.seq = "meta", 7
			return []bucket{{name: "alarm"}, {name: "auth", seq: 3}, key, {name: "lease"}, meta}
		}()},
		{"deep tree, small pages", 1024, func() []bucket { b := gen(3, 30000, 40); b.name = "k"; return []bucket{b} }()},
		{"overflow values", 4096, func() []bucket {
			b := gen(4, 300, 20000)
			b.name = "big"
			b2 := gen(5, 2, 100000)
			b2.name = "huge"
			return []bucket{b, b2}
		}()},
		{"many inline buckets", 4096, func() []bucket {
			var bs []bucket
			for i := range 200 {
				b := gen(int64(10+i), 3, 100)
				b.name = fmt.Sprintf("bucket-%03d", i)
				bs = append(bs, b)
			}
			return bs
		}()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "db")
			f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o600)
			if err != nil {
				t.Fatal(err)
			}
			bld, err := boltpage.NewBuilder(f, tc.pageSize)
			if err != nil {
				t.Fatal(err)
			}
			for _, b := range tc.buckets {
				if err := bld.Bucket([]byte(b.name), b.seq); err != nil {
					t.Fatal(err)
				}
				for _, k := range b.keys {
					if err := bld.Put([]byte(k), b.vals[k]); err != nil {
						t.Fatal(err)
					}
				}
			}
			if _, err := bld.Finish(); err != nil {
				t.Fatal(err)
			}
			f.Close()
			if _, err := boltpage.Check(path, 0, nil, nil); err != nil {
				t.Fatalf("scanner check: %v", err)
			}
			db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			err = db.View(func(tx *bolt.Tx) error {
				for err := range tx.Check() {
					return fmt.Errorf("bbolt check: %w", err)
				}
				var names []string
				err := tx.ForEach(func(name []byte, b *bolt.Bucket) error {
					names = append(names, string(name))
					return nil
				})
				if err != nil {
					return err
				}
				if len(names) != len(tc.buckets) {
					return fmt.Errorf("buckets %v", names)
				}
				for i, want := range tc.buckets {
					b := tx.Bucket([]byte(want.name))
					if names[i] != want.name || b == nil || b.Sequence() != want.seq {
						return fmt.Errorf("bucket %d: %q, want %q seq %d", i, names[i], want.name, want.seq)
					}
					n := 0
					err := b.ForEach(func(k, v []byte) error {
						if n >= len(want.keys) || string(k) != want.keys[n] || !bytes.Equal(v, want.vals[want.keys[n]]) {
							return fmt.Errorf("bucket %s entry %d: %q (want %q), value %d bytes (want %d), equal %v", want.name, n, k, want.keys[min(n, len(want.keys)-1)], len(v), len(want.vals[want.keys[min(n, len(want.keys)-1)]]), bytes.Equal(v, want.vals[want.keys[min(n, len(want.keys)-1)]]))
						}
						n++
						return nil
					})
					if err != nil {
						return err
					}
					if n != len(want.keys) {
						return fmt.Errorf("bucket %s: %d keys, want %d", want.name, n, len(want.keys))
					}
				}
				return nil
			})
			db.Close()
			if err != nil {
				t.Fatal(err)
			}
			// bbolt writes into it afterwards as into its own files.
			db, err = bolt.Open(path, 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			err = db.Update(func(tx *bolt.Tx) error {
				b, err := tx.CreateBucketIfNotExists([]byte("zz-new"))
				if err != nil {
					return err
				}
				for i := range 500 {
					if err := b.Put([]byte(fmt.Sprintf("k%04d", i)), bytes.Repeat([]byte("v"), 200)); err != nil {
						return err
					}
				}
				if len(tc.buckets) > 0 {
					first := tx.Bucket([]byte(tc.buckets[0].name))
					for i, k := range tc.buckets[0].keys {
						if i%3 == 0 {
							if err := first.Delete([]byte(k)); err != nil {
								return err
							}
						}
					}
				}
				return nil
			})
			if err == nil {
				err = db.View(func(tx *bolt.Tx) error {
					for err := range tx.Check() {
						return err
					}
					return nil
				})
			}
			db.Close()
			if err != nil {
				t.Fatalf("after bbolt's writes: %v", err)
			}
		})
	}
}

// The builder refuses keys out of order and keys outside a bucket.
func TestBuilderRefuses(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := boltpage.NewBuilder(f, 4096)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Put([]byte("k"), nil); err == nil {
		t.Error("a key outside a bucket was taken")
	}
	if err := b.Bucket([]byte("b"), 0); err != nil {
		t.Fatal(err)
	}
	if err := b.Put([]byte("k2"), nil); err != nil {
		t.Fatal(err)
	}
	if err := b.Put([]byte("k1"), nil); !errors.Is(err, boltpage.ErrIntegrity) {
		t.Errorf("a key out of order: %v", err)
	}
	if _, err := boltpage.NewBuilder(f, 3000); err == nil {
		t.Error("page size 3000 was taken")
	}
}
