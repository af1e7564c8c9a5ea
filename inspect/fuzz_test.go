package inspect

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/etcdkit/etcdkit/internal/boltpage"
	"github.com/etcdkit/etcdkit/internal/etcdfmt"
)

// FuzzGet: any file read by Get ends in a response or an error of the
// documented kinds, never a panic; a response of every key counts exactly
// the keys it holds, in key order. Seed: the real etcd snapshot of the
// scanner's corpus (tools/fuzzseeds).
func FuzzGet(f *testing.F) {
	seed, err := os.ReadFile("../internal/boltpage/testdata/fuzz/FuzzScan/etcd-snapshot")
	if err != nil {
		f.Fatal(err)
	}
	lines := strings.SplitN(string(seed), "\n", 3)
	db, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "[]byte("), ")"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte(db), int64(0))
	f.Add([]byte(db), int64(20))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte, rev int64) {
		path := filepath.Join(dir, "fuzz.db")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		o := &Opened{DB: path, Name: path, LockTimeout: time.Second}
		resp, err := Get(context.Background(), o, GetOptions{KeyRange: KeyRange{Key: []byte{0}, RangeEnd: []byte{0}}, Rev: max(rev, 0)})
		if err != nil {
			for _, known := range []error{boltpage.ErrNotBolt, boltpage.ErrDamaged, boltpage.ErrIntegrity, etcdfmt.ErrNotEtcd,
				etcdfmt.ErrSchema, etcdfmt.ErrBadRevKey, ErrCompacted, ErrFutureRev} {
				if errors.Is(err, known) {
					return
				}
			}
			t.Fatalf("unexpected error class: %v", err)
		}
		if int64(len(resp.Kvs)) != resp.Count {
			t.Fatalf("%d kvs for a count of %d", len(resp.Kvs), resp.Count)
		}
		for i := 1; i < len(resp.Kvs); i++ {
			if bytes.Compare(resp.Kvs[i-1].Key, resp.Kvs[i].Key) >= 0 {
				t.Fatalf("keys out of order at %d", i)
			}
		}
	})
}
