package snapshot_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/etcdkit/etcdkit/internal/boltpage"
	"github.com/etcdkit/etcdkit/internal/etcdfmt"
	"github.com/etcdkit/etcdkit/internal/testetcd"
	"github.com/etcdkit/etcdkit/snapshot"
)

// TestStatusMatchesEtcdutl compares ReadStatus with etcdutl 3.7's
// `snapshot status -w json` on snapshots written by etcd 3.5, 3.6 and 3.7
// (compacted mid-history: live keys counted from versions), and on a copy
// whose meta bucket says a later compaction is under way (so a key may
// still have several entries below it: live keys counted with a set).
func TestStatusMatchesEtcdutl(t *testing.T) {
	etcdutl := testetcd.Binaries(t, "3.7").Etcdutl
	for _, line := range testetcd.Versions {
		t.Run("etcd-"+line, func(t *testing.T) {
			p, loaded := testetcd.LoadedProcess(t, line, testetcd.SmallSpec)
			snap := testetcd.SaveSnapshot(t, p)
			pending := filepath.Join(t.TempDir(), "pending.db")
			copyFile(t, snap, pending)
			db, err := bolt.Open(pending, 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			err = db.Update(func(tx *bolt.Tx) error {
				return tx.Bucket(etcdfmt.BucketMeta).Put(etcdfmt.MetaScheduledCompactRev, etcdfmt.Revision{Main: loaded.Revision}.AppendKey(nil, false))
			})
			if cerr := db.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, file := range []string{snap, pending} {
				before := testetcd.FileSum(t, file)
				got, err := snapshot.ReadStatus(file, 0)
				if err != nil {
					t.Fatal(err)
				}
				var want snapshot.Status
				if err := json.Unmarshal([]byte(testetcd.Run(t, etcdutl, "snapshot", "status", "-w", "json", file)), &want); err != nil {
					t.Fatal(err)
				}
				if got != want {
					t.Fatalf("%s: status differs from etcdutl 3.7:\n got %+v\nwant %+v", filepath.Base(file), got, want)
				}
				if got.Revision != loaded.Revision || got.TotalKey != loaded.LiveKeys {
					t.Fatalf("%s: revision/keys %d/%d, the server said %d/%d", filepath.Base(file), got.Revision, got.TotalKey, loaded.Revision, loaded.LiveKeys)
				}
				if wantVer := map[string]string{"3.5": "", "3.6": "3.6.0", "3.7": "3.7.0"}[line]; got.Version != wantVer {
					t.Fatalf("version %q, want %q", got.Version, wantVer)
				}
				if testetcd.FileSum(t, file) != before {
					t.Fatal("snapshot status modified the file")
				}
			}
		})
	}
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestStatusBadInput(t *testing.T) {
	dir := t.TempDir()
	notBolt := filepath.Join(dir, "text.db")
	testetcd.WriteFile(t, notBolt, make([]byte, 64<<10))
	tiny := filepath.Join(dir, "tiny.db")
	testetcd.WriteFile(t, tiny, []byte("hello"))

	m := testetcd.StartSingle(t)
	if _, err := testetcd.Load(testetcd.Ctx(t, time.Minute), m.Client(t), testetcd.LoadSpec{Keys: 200, Rounds: 2, Seed: 1}); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		path string
		want error
	}{
		{"missing", filepath.Join(dir, "nope.db"), os.ErrNotExist},
		{"zeros", notBolt, boltpage.ErrNotBolt},
		{"tiny", tiny, boltpage.ErrNotBolt},
		{"locked by running etcd", m.DBPath(), boltpage.ErrInUse},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := snapshot.ReadStatus(tc.path, 300*time.Millisecond)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

// TestStatusDamagedPages overwrites the header of every page after the meta
// pages in a copy of a real db: status must report damage, not crash.
func TestStatusDamagedPages(t *testing.T) {
	m := testetcd.StartSingle(t)
	if _, err := testetcd.Load(testetcd.Ctx(t, time.Minute), m.Client(t), testetcd.LoadSpec{Keys: 300, Rounds: 2, Seed: 9}); err != nil {
		t.Fatal(err)
	}
	m.Stop()
	st, err := snapshot.ReadStatus(m.DBPath(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		offset int
		value  []byte
	}{
		{"page flags", 8, []byte{0xff, 0xff}},
		{"page ids", 0, []byte{0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0x00, 0x00}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := filepath.Join(t.TempDir(), "bad.db")
			testetcd.CopyFile(t, m.DBPath(), bad)
			f, err := os.OpenFile(bad, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			for off := int64(2 * 4096); off < st.TotalSize; off += 4096 {
				f.WriteAt(tc.value, off+int64(tc.offset))
			}
			f.Close()
			_, err = snapshot.ReadStatus(bad, time.Second)
			if !errors.Is(err, snapshot.ErrIntegrity) && !errors.Is(err, boltpage.ErrDamaged) {
				t.Fatalf("err = %v, want an integrity or damage error", err)
			}
		})
	}
}
