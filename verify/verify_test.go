package verify_test

import (
	"context"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/storage/wal"

	"github.com/etcdkit/etcdkit/internal/etcdfmt"
	"github.com/etcdkit/etcdkit/internal/testetcd"
	"github.com/etcdkit/etcdkit/restore"
	"github.com/etcdkit/etcdkit/verify"
)

// treeSums maps every file under dir to its sha256, to prove verify wrote
// nothing.
func treeSums(t *testing.T, dir string) map[string][32]byte {
	t.Helper()
	sums := map[string][32]byte{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		sums[p] = testetcd.FileSum(t, p)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return sums
}

func sameTree(t *testing.T, before map[string][32]byte, dir string) {
	t.Helper()
	after := treeSums(t, dir)
	if len(after) != len(before) {
		t.Errorf("files under %s: %d, before %d", dir, len(after), len(before))
	}
	for p, s := range before {
		if after[p] != s {
			t.Errorf("%s changed", p)
		}
	}
}

func mustClean(t *testing.T, r *verify.Report, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Problems) > 0 || len(r.Checks) < 5 {
		t.Fatalf("problems on clean data: %+v (checks %+v)", r.Problems, r.Checks)
	}
}

// TestVerifyClean: snapshots and data dirs (with .snap files) written by
// etcd 3.5, 3.6 and 3.7, and a restored data dir with a bumped revision,
// pass, and verify changes none of their files.
func TestVerifyClean(t *testing.T) {
	for _, line := range testetcd.Versions {
		t.Run("etcd-"+line, func(t *testing.T) {
			p := testetcd.StartProcess(t, testetcd.Binaries(t, line), testetcd.ProcessConfig{ExtraArgs: []string{"--snapshot-count", "200"}})
			p.WaitReady(t)
			if _, err := testetcd.Load(testetcd.Ctx(t, 5*time.Minute), testetcd.NewClient(t, p.ClientURL), testetcd.SmallSpec); err != nil {
				t.Fatal(err)
			}
			snap := testetcd.SaveSnapshot(t, p)
			p.Stop()
			if snaps := testetcd.Must(filepath.Glob(filepath.Join(p.DataDir, "member", "snap", "*.snap")))(t); len(snaps) == 0 {
				t.Fatal("etcd wrote no .snap file")
			}
			before := treeSums(t, p.DataDir)
			r, err := verify.Snapshot(snap, verify.Options{})
			mustClean(t, r, err)
			r, err = verify.DataDir(p.DataDir, "", verify.Options{})
			mustClean(t, r, err)
			sameTree(t, before, p.DataDir)

			restored := filepath.Join(t.TempDir(), "r.etcd")
			if _, err := restore.Restore(context.Background(), restore.Config{
				Name: "r", PeerURLs: []string{"http://127.0.0.1:2380"}, InitialCluster: "r=http://127.0.0.1:2380",
				InitialClusterToken: "t", DataDir: restored, BumpRevision: 100, MarkCompacted: true,
			}, snap); err != nil {
				t.Fatal(err)
			}
			r, err = verify.DataDir(restored, "", verify.Options{})
			mustClean(t, r, err)
		})
	}
}

// damagedSource is a stopped 3.7 member with many small WAL segments and
// .snap files, and a snapshot of it.
type damagedSource struct {
	dataDir, snapshot string
}

func newDamagedSource(t *testing.T) damagedSource {
	t.Helper()
	old := wal.SegmentSizeBytes
	wal.SegmentSizeBytes = 1 << 20
	t.Cleanup(func() { wal.SegmentSizeBytes = old })
	m := testetcd.StartSingle(t, func(c *embed.Config) { c.SnapshotCount = 300; c.MaxWalFiles = 0 })
	cli := m.Client(t)
	if _, err := testetcd.Load(testetcd.Ctx(t, 5*time.Minute), cli, testetcd.SmallSpec); err != nil {
		t.Fatal(err)
	}
	snap := filepath.Join(t.TempDir(), "snap.db")
	rc, err := cli.Snapshot(testetcd.Ctx(t, time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(snap)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(f, rc); err != nil {
		t.Fatal(err)
	}
	f.Close()
	m.Stop()
	return damagedSource{m.DataDir, snap}
}

func walFiles(t *testing.T, dataDir string) []string {
	files := testetcd.Must(filepath.Glob(filepath.Join(dataDir, "member", "wal", "*.wal")))(t)
	sort.Strings(files)
	if len(files) < 4 {
		t.Fatalf("want several WAL segments, got %d", len(files))
	}
	return files
}

// walRecords lists the records of a WAL file.
func walRecords(t *testing.T, path string) []etcdfmt.WALRecord {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi := testetcd.Must(f.Stat())(t)
	rd := etcdfmt.NewWALReader(f, fi.Size())
	var recs []etcdfmt.WALRecord
	for {
		rec, err := rd.Next()
		if err != nil {
			return recs
		}
		recs = append(recs, rec)
	}
}

func editFile(t *testing.T, path string, edit func(b []byte) []byte) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, edit(b), 0o600); err != nil {
		t.Fatal(err)
	}
}

// keyBucketPages returns the key bucket's root page (a branch) and its
// first child (a leaf).
func keyBucketPages(t *testing.T, db string) (branch, leaf int64, pageSize int64) {
	t.Helper()
	bdb, err := bolt.Open(db, 0o400, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer bdb.Close()
	bdb.View(func(tx *bolt.Tx) error {
		branch = int64(tx.Bucket(etcdfmt.BucketKey).Root())
		pageSize = int64(tx.DB().Info().PageSize)
		return nil
	})
	b := testetcd.Must(os.ReadFile(db))(t)
	// Follow the first child down to a leaf; branch is the last branch.
	page := branch
	for b[page*pageSize+8]&0x01 != 0 {
		branch = page
		// First branch element: pos u32, ksize u32, pgid u64.
		page = int64(le64(b[page*pageSize+16+8:]))
	}
	if b[page*pageSize+8]&0x02 == 0 || page == branch {
		t.Fatalf("no leaf under the key bucket's root (page %d flags %x)", page, b[page*pageSize+8])
	}
	leaf = page
	return branch, leaf, pageSize
}

func le64(b []byte) uint64 {
	var v uint64
	for i := 7; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return v
}

// TestVerifyDetects damages real data in twelve ways; each is found by its
// own check with its own message, verify leaves the damaged files as they
// are, and only the torn WAL tail counts as repairable (etcd starts on it).
func TestVerifyDetects(t *testing.T) {
	src := newDamagedSource(t)
	cases := []struct {
		name     string
		snapshot bool // verify the snapshot instead of the data dir
		damage   func(t *testing.T, path string)
		check    string
		msg      string
		severity verify.Severity
	}{
		{"truncated snapshot", true, func(t *testing.T, p string) {
			editFile(t, p, func(b []byte) []byte { return b[:len(b)/2] })
		}, "bolt", "truncated", verify.Corrupt},
		{"trailer missing its last byte", true, func(t *testing.T, p string) {
			editFile(t, p, func(b []byte) []byte { return b[:len(b)-1] })
		}, "sha256 trailer", "neither whole pages nor pages plus", verify.Corrupt},
		{"wrong trailer", true, func(t *testing.T, p string) {
			editFile(t, p, func(b []byte) []byte { b[len(b)-1] ^= 0xff; return b })
		}, "sha256 trailer", "the trailer says", verify.Corrupt},
		{"flipped byte in a branch page", false, func(t *testing.T, d string) {
			db := filepath.Join(d, "member", "snap", "db")
			branch, _, ps := keyBucketPages(t, db)
			editFile(t, db, func(b []byte) []byte { b[branch*ps+16+8+2] ^= 0x40; return b })
		}, "bolt", "", verify.Corrupt},
		{"flipped byte in a leaf page", false, func(t *testing.T, d string) {
			db := filepath.Join(d, "member", "snap", "db")
			_, leaf, ps := keyBucketPages(t, db)
			// The first element's key: its '_' separator.
			editFile(t, db, func(b []byte) []byte {
				pos := int64(uint32(b[leaf*ps+16+4]) | uint32(b[leaf*ps+16+5])<<8)
				b[leaf*ps+16+pos+8] ^= 0x01
				return b
			})
			// The key now sorts below its parent's bound: bolt's checks
			// catch it, and the schema walk never reads the damaged tree.
		}, "bolt", "is below the key", verify.Corrupt},
		{"malformed revision key", false, func(t *testing.T, d string) {
			boltEdit(t, filepath.Join(d, "member", "snap", "db"), func(tx *bolt.Tx) error {
				return tx.Bucket(etcdfmt.BucketKey).Put([]byte("0000000000000002x0000000000000000"), []byte("v"))
			})
		}, "revisions", "malformed revision key", verify.Corrupt},
		{"missing meta key", false, func(t *testing.T, d string) {
			boltEdit(t, filepath.Join(d, "member", "snap", "db"), func(tx *bolt.Tx) error {
				return tx.Bucket(etcdfmt.BucketMeta).Delete(etcdfmt.MetaConsistentIndex)
			})
		}, "meta", "consistent_index is missing", verify.Corrupt},
		{"live key's lease missing", false, func(t *testing.T, d string) {
			boltEdit(t, filepath.Join(d, "member", "snap", "db"), func(tx *bolt.Tx) error {
				k, _ := tx.Bucket(etcdfmt.BucketLease).Cursor().First()
				return tx.Bucket(etcdfmt.BucketLease).Delete(k)
			})
		}, "key leases", "which the lease bucket does not hold", verify.Corrupt},
		{"db ahead of the WAL", false, func(t *testing.T, d string) {
			boltEdit(t, filepath.Join(d, "member", "snap", "db"), func(tx *bolt.Tx) error {
				return tx.Bucket(etcdfmt.BucketMeta).Put(etcdfmt.MetaConsistentIndex, etcdfmt.Uint64Value(1<<40))
			})
		}, "agreement", "past the WAL's committed index", verify.Corrupt},
		{"membership differs", false, func(t *testing.T, d string) {
			boltEdit(t, filepath.Join(d, "member", "snap", "db"), func(tx *bolt.Tx) error {
				return tx.Bucket(etcdfmt.BucketMembers).Put(etcdfmt.MemberKey(0xabc), []byte(`{"id":2748,"peerURLs":["http://127.0.0.1:9"]}`))
			})
		}, "agreement", "members differ", verify.Corrupt},
		{"flipped byte in a WAL record", false, func(t *testing.T, d string) {
			files := walFiles(t, d)
			mid := files[len(files)/2]
			for _, rec := range walRecords(t, mid) {
				if rec.Record.GetType() == etcdfmt.WALEntry && rec.Size > 2000 {
					editFile(t, mid, func(b []byte) []byte { b[rec.Offset+rec.Size/2] ^= 0x10; return b })
					return
				}
			}
			t.Fatal("no large entry record")
		}, "wal records", "CRC mismatch", verify.Corrupt},
		{"missing WAL segment", false, func(t *testing.T, d string) {
			files := walFiles(t, d)
			os.Remove(files[len(files)/2])
		}, "wal files", "missing between", verify.Corrupt},
		{"torn WAL tail", false, func(t *testing.T, d string) {
			// A crash while the next record was being written: its length
			// word and first sector reached the disk, a later sector did not.
			files := walFiles(t, d)
			last := files[len(files)-1]
			recs := walRecords(t, last)
			var big etcdfmt.WALRecord
			for _, r := range recs {
				if r.Size > big.Size {
					big = r
				}
			}
			end := recs[len(recs)-1].Offset + recs[len(recs)-1].Size
			editFile(t, last, func(b []byte) []byte {
				if end+big.Size > int64(len(b)) || big.Size < 1500 {
					t.Fatalf("no room or no large record (%d bytes) for a torn write", big.Size)
				}
				copy(b[end:], b[big.Offset:big.Offset+big.Size])
				sector := (end + 8 + 511) / 512 * 512
				clear(b[sector : sector+512])
				return b
			})
		}, "wal records", "torn write", verify.Repairable},
		{"corrupt .snap", false, func(t *testing.T, d string) {
			snaps := testetcd.Must(filepath.Glob(filepath.Join(d, "member", "snap", "*.snap")))(t)
			if len(snaps) == 0 {
				t.Fatal("no .snap file")
			}
			sort.Strings(snaps)
			editFile(t, snaps[len(snaps)-1], func(b []byte) []byte { b[len(b)/2] ^= 0x01; return b })
		}, "snap files", "CRC mismatch", verify.Corrupt},
	}
	seen := map[string]string{}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			work := t.TempDir()
			var target string
			var r *verify.Report
			var err error
			if tc.snapshot {
				target = filepath.Join(work, "snap.db")
				testetcd.CopyFile(t, src.snapshot, target)
			} else {
				target = filepath.Join(work, "member.etcd")
				copyTree(t, src.dataDir, target)
			}
			tc.damage(t, target)
			before := treeSums(t, work)
			if tc.snapshot {
				r, err = verify.Snapshot(target, verify.Options{})
			} else {
				r, err = verify.DataDir(target, "", verify.Options{})
			}
			if err != nil {
				t.Fatal(err)
			}
			sameTree(t, before, work)
			var found *verify.Problem
			for i, p := range r.Problems {
				if p.Check == tc.check && strings.Contains(p.Message, tc.msg) && p.Severity == tc.severity {
					found = &r.Problems[i]
					break
				}
			}
			if found == nil {
				t.Fatalf("no %s problem %q in %+v", tc.check, tc.msg, r.Problems)
			}
			if found.File == "" {
				t.Errorf("problem without a file: %+v", found)
			}
			if r.Corrupt() != (tc.severity == verify.Corrupt) {
				t.Errorf("Corrupt() = %v with %+v", r.Corrupt(), r.Problems)
			}
			if prev, dup := seen[found.Check+found.Message]; dup {
				t.Errorf("same message as %q: %s", prev, found.Message)
			}
			seen[found.Check+found.Message] = tc.name
			if tc.severity == verify.Repairable {
				// etcd agrees: it repairs the tail and starts.
				p := testetcd.StartProcess(t, testetcd.Binaries(t, "3.7"), testetcd.ProcessConfig{DataDir: target})
				p.WaitReady(t)
			}
		})
	}
}

func boltEdit(t *testing.T, path string, fn func(*bolt.Tx) error) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(fn); err != nil {
		t.Fatal(err)
	}
	db.Close()
}

func copyTree(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(from, p)
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(to, rel), 0o700)
		}
		testetcd.CopyFile(t, p, filepath.Join(to, rel))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
