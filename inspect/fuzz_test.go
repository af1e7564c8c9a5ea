package inspect

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/server/v3/storage/wal/walpb"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/etcdkit/etcdkit/internal/boltpage"
	"github.com/etcdkit/etcdkit/internal/etcdfmt"
)

// FuzzGet: any file read by Get ends in a response or an error of the
// documented kinds, never a panic; a response of every key counts exactly
// the keys it holds, in key order. Seed: the real etcd snapshot of the
// scanner's corpus (tools/fuzzseeds).
func FuzzGet(f *testing.F) {
	db := seedDB(f)
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

// FuzzRead: any file read by History, Leases, ReadAuth, Members and DU ends
// in a result or an error of the documented kinds, never a panic; history
// events come in revision order within the asked range.
func FuzzRead(f *testing.F) {
	db := seedDB(f)
	f.Add([]byte(db), int64(0))
	dir := f.TempDir()
	known := []error{boltpage.ErrNotBolt, boltpage.ErrDamaged, boltpage.ErrIntegrity, etcdfmt.ErrNotEtcd,
		etcdfmt.ErrSchema, etcdfmt.ErrBadRevKey, ErrCompacted, ErrFutureRev}
	check := func(t *testing.T, what string, err error) {
		if err == nil {
			return
		}
		for _, k := range known {
			if errors.Is(err, k) {
				return
			}
		}
		t.Fatalf("%s: unexpected error class: %v", what, err)
	}
	f.Fuzz(func(t *testing.T, b []byte, from int64) {
		path := filepath.Join(dir, "fuzz.db")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		o := &Opened{DB: path, Name: path, LockTimeout: time.Second}
		ctx := context.Background()
		last := int64(0)
		_, err := History(ctx, o, HistoryOptions{KeyRange: KeyRange{Key: []byte{0}, RangeEnd: []byte{0}}, FromRev: max(from, 0)}, func(_ int64, evs []*mvccpb.Event) error {
			for _, e := range evs {
				if r := e.Kv.ModRevision; r < last || r < from {
					t.Fatalf("event at revision %d after %d (from %d)", r, last, from)
				}
				last = e.Kv.ModRevision
			}
			return nil
		})
		check(t, "history", err)
		_, _, err = Leases(ctx, o)
		check(t, "leases", err)
		_, err = ReadAuth(ctx, o)
		check(t, "auth", err)
		_, err = Members(ctx, o)
		check(t, "members", err)
		_, err = DU(ctx, o, DUOptions{Depth: 2})
		check(t, "du", err)
	})
}

// seedDB is the real etcd snapshot of the scanner's seed corpus
// (tools/fuzzseeds).
func seedDB(f *testing.F) string {
	seed, err := os.ReadFile("../internal/boltpage/testdata/fuzz/FuzzScan/etcd-snapshot")
	if err != nil {
		f.Fatal(err)
	}
	lines := strings.SplitN(string(seed), "\n", 3)
	db, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "[]byte("), ")"))
	if err != nil {
		f.Fatal(err)
	}
	return db
}

// FuzzWALRecord: any record the WAL reader passes on decodes into a record
// or an error, never a panic, and prints as a line and as JSON.
func FuzzWALRecord(f *testing.F) {
	entry := func(typ raftpb.EntryType, data []byte) []byte {
		b, err := proto.Marshal(&raftpb.Entry{Type: &typ, Index: ptr(uint64(7)), Term: ptr(uint64(2)), Data: data})
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	put, err := proto.Marshal(&etcdserverpb.InternalRaftRequest{Put: &etcdserverpb.PutRequest{Key: []byte("/a"), Value: []byte("v")}})
	if err != nil {
		f.Fatal(err)
	}
	cc, err := proto.Marshal(&raftpb.ConfChange{Type: ptr(raftpb.ConfChangeAddNode), NodeId: ptr(uint64(9)), Context: []byte(`{"id":9,"peerURLs":["http://x:2380"]}`)})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(int64(etcdfmt.WALEntry), entry(raftpb.EntryNormal, put))
	f.Add(int64(etcdfmt.WALEntry), entry(raftpb.EntryConfChange, cc))
	f.Add(int64(etcdfmt.WALEntry), entry(raftpb.EntryNormal, []byte("\x08\x01\x12\x03PUT\x1a\x0b/0/version\x22\x053.5.0")))
	f.Add(int64(etcdfmt.WALState), []byte{0x08, 0x02, 0x18, 0x07})
	f.Add(int64(etcdfmt.WALMetadata), []byte{0x08, 0x01, 0x10, 0x02})
	f.Fuzz(func(t *testing.T, typ int64, data []byte) {
		r, err := decodeWALRecord(etcdfmt.WALRecord{Record: &walpb.Record{Type: &typ, Data: data}})
		if err != nil {
			return
		}
		if r.Summary() == "" {
			t.Fatal("empty summary")
		}
		if _, err := json.Marshal(r); err != nil {
			t.Fatalf("json: %v", err)
		}
	})
}

func ptr[T any](v T) *T { return &v }
