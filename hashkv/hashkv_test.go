package hashkv_test

import (
	"encoding/json"
	"errors"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/etcdkit/etcdkit/hashkv"
	"github.com/etcdkit/etcdkit/internal/boltpage"
	"github.com/etcdkit/etcdkit/internal/etcdfmt"
	"github.com/etcdkit/etcdkit/internal/testetcd"
)

func etcdutlHashKV(t *testing.T, etcdutl, db string, rev int64) hashkv.Result {
	t.Helper()
	cp := filepath.Join(t.TempDir(), "copy.db") // etcdutl may modify its input
	testetcd.CopyFile(t, db, cp)
	var r hashkv.Result
	out := testetcd.Run(t, etcdutl, "hashkv", "-w", "json", "--rev", json.Number(itoa(rev)).String(), cp)
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("etcdutl output %q: %v", out, err)
	}
	return r
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// TestHashKVMatchesServer writes data (leases, deletes, a compaction) with
// etcd 3.5, 3.6 and 3.7, asks the server for HashKV at several revisions,
// stops it, and checks that hashkv on the data dir gives the same hashes as
// the server and as etcdutl 3.7, without changing the db.
func TestHashKVMatchesServer(t *testing.T) {
	etcdutl := testetcd.Binaries(t, "3.7").Etcdutl
	for _, line := range testetcd.Versions {
		t.Run("etcd-"+line, func(t *testing.T) {
			p, loaded := testetcd.LoadedProcess(t, line, testetcd.SmallSpec)
			if loaded.CompactRevision == 0 {
				t.Fatal("loader did not compact")
			}
			// 0 means the current revision; the compact revision itself is
			// left out because a live server answers it from the hash it
			// cached while compacting (computed against the previous compact
			// revision), which a restarted server no longer has.
			revs := []int64{0, loaded.CompactRevision + 1, (loaded.CompactRevision + loaded.Revision) / 2, loaded.Revision}
			cli := testetcd.NewClient(t, p.ClientURL)
			want := map[int64]hashkv.Result{}
			for _, rev := range revs {
				resp, err := cli.HashKV(testetcd.Ctx(t, 30*time.Second), p.ClientURL, rev)
				if err != nil {
					t.Fatalf("server HashKV(%d): %v", rev, err)
				}
				want[rev] = hashkv.Result{Hash: resp.Hash, HashRevision: resp.Header.Revision, CompactRevision: resp.CompactRevision}
			}
			p.Stop()
			db := p.DBPath()
			before := testetcd.FileSum(t, db)
			for _, rev := range revs {
				got, err := hashkv.Compute(hashkv.DBPath(p.DataDir), rev, time.Second)
				if err != nil {
					t.Fatalf("rev %d: %v", rev, err)
				}
				if got.Hash != want[rev].Hash || got.CompactRevision != want[rev].CompactRevision {
					t.Errorf("rev %d: got %+v, server %+v", rev, got, want[rev])
				}
				wantRev := rev
				if rev == 0 {
					wantRev = loaded.Revision
				}
				if got.HashRevision != wantRev {
					t.Errorf("rev %d: hash revision %d, want %d", rev, got.HashRevision, wantRev)
				}
				if u := etcdutlHashKV(t, etcdutl, db, rev); u != got {
					t.Errorf("rev %d: got %+v, etcdutl 3.7 %+v", rev, got, u)
				}
			}
			if testetcd.FileSum(t, db) != before {
				t.Fatal("hashkv modified the db")
			}
		})
	}
}

// TestHashKVPendingCompaction: a db whose scheduled compaction has not
// finished (etcd died mid-compaction). etcdutl finishes the compaction in its
// input before hashing; etcdkit must reach the same hash without writing.
func TestHashKVPendingCompaction(t *testing.T) {
	etcdutl := testetcd.Binaries(t, "3.7").Etcdutl
	p, loaded := testetcd.LoadedProcess(t, "3.7", testetcd.SmallSpec)
	p.Stop()
	db := filepath.Join(t.TempDir(), "pending.db")
	testetcd.CopyFile(t, p.DBPath(), db)
	pending := (loaded.CompactRevision + loaded.Revision) / 2
	bdb, err := bolt.Open(db, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = bdb.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(etcdfmt.BucketMeta).Put(etcdfmt.MetaScheduledCompactRev, etcdfmt.Revision{Main: pending}.AppendKey(nil, false))
	})
	bdb.Close()
	if err != nil {
		t.Fatal(err)
	}
	before := testetcd.FileSum(t, db)
	for _, rev := range []int64{0, pending, pending + 1} {
		got, err := hashkv.Compute(db, rev, time.Second)
		if err != nil {
			t.Fatalf("rev %d: %v", rev, err)
		}
		if got.CompactRevision != pending {
			t.Errorf("compact revision %d, want the pending %d", got.CompactRevision, pending)
		}
		if u := etcdutlHashKV(t, etcdutl, db, rev); u != got {
			t.Errorf("rev %d: got %+v, etcdutl 3.7 %+v", rev, got, u)
		}
	}
	if testetcd.FileSum(t, db) != before {
		t.Fatal("hashkv modified the db")
	}
	if _, err := hashkv.Compute(db, pending-1, time.Second); !errors.Is(err, hashkv.ErrCompacted) {
		t.Fatalf("below the pending compaction: err = %v, want ErrCompacted", err)
	}
}

func TestHashKVErrors(t *testing.T) {
	m := testetcd.StartSingle(t)
	loaded, err := testetcd.Load(testetcd.Ctx(t, time.Minute), m.Client(t), testetcd.LoadSpec{Keys: 300, Rounds: 2, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hashkv.Compute(m.DBPath(), 0, 200*time.Millisecond); !errors.Is(err, boltpage.ErrInUse) {
		t.Fatalf("running etcd: err = %v, want ErrInUse", err)
	}
	m.Stop()
	tests := []struct {
		rev  int64
		want error
	}{
		{loaded.CompactRevision - 1, hashkv.ErrCompacted},
		{loaded.Revision + 1, hashkv.ErrFutureRev},
	}
	for _, tc := range tests {
		if _, err := hashkv.Compute(hashkv.DBPath(m.DataDir), tc.rev, time.Second); !errors.Is(err, tc.want) {
			t.Errorf("rev %d: err = %v, want %v", tc.rev, err, tc.want)
		}
	}
}

// TestHashKVThreeMembers: every member of a real 3-member cluster gives the
// same HashKV, and hashkv on each stopped member's data dir reproduces it.
func TestHashKVThreeMembers(t *testing.T) {
	cl := testetcd.StartCluster(t, 3)
	loaded, err := testetcd.Load(testetcd.Ctx(t, 2*time.Minute), cl.Client(t), testetcd.LoadSpec{Keys: 600, Rounds: 2, Seed: 11})
	if err != nil {
		t.Fatal(err)
	}
	cli := cl.Client(t)
	var want uint32
	for i, m := range cl.Members {
		// A follower may still be applying the last entries: retry briefly.
		resp, err := cli.HashKV(testetcd.Ctx(t, 30*time.Second), m.ClientURL, loaded.Revision)
		for try := 0; err != nil && try < 50; try++ {
			time.Sleep(100 * time.Millisecond)
			resp, err = cli.HashKV(testetcd.Ctx(t, 30*time.Second), m.ClientURL, loaded.Revision)
		}
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			want = resp.Hash
		} else if resp.Hash != want {
			t.Fatalf("member %s: server hash %d, member 0 %d", m.Name, resp.Hash, want)
		}
	}
	for _, m := range cl.Members {
		m.Stop()
	}
	for _, m := range cl.Members {
		got, err := hashkv.Compute(hashkv.DBPath(m.DataDir), loaded.Revision, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if got.Hash != want {
			t.Errorf("member %s: hashkv %d, server %d", m.Name, got.Hash, want)
		}
	}
}
