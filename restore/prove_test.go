package restore

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/proto"

	"github.com/etcdkit/etcdkit/internal/etcdfmt"
)

// factsDB writes a snapshot shaped like etcd's db whose key bucket holds
// one revision per key, a value that does not parse at revision broken
// (0: none), and keys under /registry/ from revision kube on (0: none).
func factsDB(t *testing.T, revs, kube, broken int) string {
	t.Helper()
	dir := t.TempDir()
	db, err := bolt.Open(filepath.Join(dir, "db"), 0o600, &bolt.Options{NoFreelistSync: true})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{etcdfmt.BucketKey, etcdfmt.BucketMeta, etcdfmt.BucketLease, []byte("members")} {
			if _, err := tx.CreateBucket(b); err != nil {
				return err
			}
		}
		k := tx.Bucket(etcdfmt.BucketKey)
		for r := 2; r < revs+2; r++ {
			key := fmt.Sprintf("/app/%06d", r)
			if kube > 0 && r >= kube {
				key = fmt.Sprintf("/registry/pods/%06d", r)
			}
			v, err := proto.Marshal(&mvccpb.KeyValue{Key: []byte(key), Value: make([]byte, 200), CreateRevision: int64(r), ModRevision: int64(r), Version: 1})
			if err != nil {
				return err
			}
			if r == broken {
				v = []byte{0xff, 0xff}
			}
			if err := k.Put(etcdfmt.Revision{Main: int64(r)}.AppendKey(nil, false), v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	snap := filepath.Join(dir, "snapshot.db")
	f, err := os.Create(snap)
	if err == nil {
		err = db.View(func(tx *bolt.Tx) error { _, err := tx.WriteTo(f); return err })
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

// TestStreamFactsMatchCheckDB: what the stream learns of a snapshot
// (latest revision, Kubernetes data) is what checkDB learns of the file,
// and where checkDB refuses, the stream proves nothing.
func TestStreamFactsMatchCheckDB(t *testing.T) {
	for _, tc := range []struct {
		name               string
		revs, kube, broken int
	}{
		{"plain", 3000, 0, 0},
		{"kubernetes", 3000, 2, 0},
		{"kubernetes keys late", 3000, 2900, 0},
		{"a broken value after the first kubernetes key", 3000, 100, 2000},
		{"a broken value first", 3000, 2900, 1500},
		{"empty key bucket", 0, 0, 0},
		{"inline key bucket", 3, 3, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := factsDB(t, tc.revs, tc.kube, tc.broken)
			want, werr := checkDB(path, path)
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			c := newStreamCheck()
			defer c.close()
			c.Write(b[:len(b)/3])
			c.Write(b[len(b)/3:])
			got, err := c.facts()
			switch {
			case werr != nil && err == nil:
				t.Fatalf("checkDB refuses (%v), the stream learned %+v", werr, got)
			case werr != nil:
				return
			case err != nil:
				t.Fatalf("the stream proved nothing (%v); checkDB learned %+v", err, want)
			case got != want:
				t.Fatalf("the stream learned %+v, checkDB %+v", got, want)
			}
			if tc.revs > 0 && want.latest != int64(tc.revs+1) {
				t.Fatalf("latest %d, want %d", want.latest, tc.revs+1)
			}
		})
	}
}
