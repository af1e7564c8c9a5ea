package defrag_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	bolt "go.etcd.io/bbolt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/defrag"
	"github.com/etcdkit/etcdkit/hashkv"
	"github.com/etcdkit/etcdkit/internal/boltpage"
	"github.com/etcdkit/etcdkit/internal/testetcd"
	"github.com/etcdkit/etcdkit/snapshot"
)

const childEnv = "ETCDKIT_TEST_DEFRAG_CHILD"

func TestMain(m *testing.M) {
	testetcd.RunChild(childEnv, runChild)
	os.Exit(m.Run())
}

// compactedMember writes data with etcd of the given line, compacts at the
// latest revision (so most of the history's pages become free), stops the
// server and returns it with what it served.
func compactedMember(t *testing.T, line string, spec testetcd.LoadSpec) (*testetcd.Process, testetcd.State, uint32) {
	t.Helper()
	p, loaded := testetcd.LoadedProcess(t, line, spec)
	cli := testetcd.NewClient(t, p.ClientURL)
	ctx := testetcd.Ctx(t, time.Minute)
	if _, err := cli.Compact(ctx, loaded.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	hk, err := cli.HashKV(ctx, p.ClientURL, 0)
	if err != nil {
		t.Fatal(err)
	}
	state := testetcd.ReadState(t, cli, 0)
	p.Stop()
	return p, state, hk.Hash
}

func status(t *testing.T, db string) snapshot.Status {
	t.Helper()
	st, err := snapshot.ReadStatus(db, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestDefrag defragments compacted dbs written by etcd 3.5, 3.6 and 3.7:
// the same buckets, keys and values (snapshot status hash, which covers
// every bucket, and hashkv unchanged, equal to etcdutl defrag's result), a
// smaller file with the original's mode, and the same etcd serves the same
// data from it.
func TestDefrag(t *testing.T) {
	etcdutl := testetcd.Binaries(t, "3.7").Etcdutl
	for _, line := range testetcd.Versions {
		t.Run("etcd-"+line, func(t *testing.T) {
			p, state, hash := compactedMember(t, line, testetcd.SmallSpec)
			db := p.DBPath()
			before := status(t, db)
			fiBefore := testetcd.Must(os.Stat(db))(t)
			hkBefore, err := hashkv.Compute(db, 0, time.Second)
			if err != nil {
				t.Fatal(err)
			}
			ref := filepath.Join(t.TempDir(), "ref")
			if err := os.MkdirAll(filepath.Join(ref, "member", "snap"), 0o700); err != nil {
				t.Fatal(err)
			}
			testetcd.CopyFile(t, db, defrag.DBPath(ref))
			testetcd.Run(t, etcdutl, "defrag", "--data-dir", ref)

			var calls int
			res, err := defrag.Defrag(context.Background(), db, defrag.Options{LockTimeout: time.Second, Progress: func(done, total int64) { calls++ }})
			if err != nil {
				t.Fatal(err)
			}
			after := status(t, db)
			checkBolt(t, db)
			if after.Hash != before.Hash || after.Revision != before.Revision || after.TotalKey != before.TotalKey {
				t.Errorf("status after %+v, before %+v", after, before)
			}
			if u := status(t, defrag.DBPath(ref)); u.Hash != after.Hash {
				t.Errorf("status %+v, etcdutl defrag's %+v", after, u)
			}
			if after.TotalSize >= before.TotalSize || res.After >= res.Before || res.Before != fiBefore.Size() {
				t.Errorf("not smaller: %+v (status before %d after %d)", res, before.TotalSize, after.TotalSize)
			}
			if hk, err := hashkv.Compute(db, 0, time.Second); err != nil || hk != hkBefore || hk.Hash != hash {
				t.Errorf("hashkv %+v %v, before %+v, server %d", hk, err, hkBefore, hash)
			}
			if fi := testetcd.Must(os.Stat(db))(t); fi.Mode() != fiBefore.Mode() {
				t.Errorf("mode %v, was %v", fi.Mode(), fiBefore.Mode())
			}
			if e := testetcd.DirNames(t, filepath.Dir(db)); strings.Contains(strings.Join(e, ","), "etcdkit") {
				t.Errorf("left %v", e)
			}
			t.Logf("%s: %d -> %d bytes, %d progress calls", line, res.Before, res.After, calls)

			// The same etcd serves the same data.
			q := testetcd.StartProcess(t, p.Bins, testetcd.ProcessConfig{DataDir: p.DataDir})
			q.WaitReady(t)
			cli := testetcd.NewClient(t, q.ClientURL)
			if d := state.Diff(testetcd.ReadState(t, cli, 0)); d != "" {
				t.Errorf("after defrag: %s", d)
			}
			hk, err := cli.HashKV(testetcd.Ctx(t, 30*time.Second), q.ClientURL, 0)
			if err != nil || hk.Hash != hash {
				t.Errorf("server HashKV after defrag %v %v, want %d", hk, err, hash)
			}
		})
	}
}

// checkBolt runs bbolt's own consistency check on a db.
func checkBolt(t *testing.T, path string) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatalf("bbolt check of %s: %v", path, err)
	}
}

// TestDefragRefuses: a db locked by a running etcd, too little disk space,
// not a bolt file, a missing file: each refused with its error, the db
// untouched and nothing left beside it.
func TestDefragRefuses(t *testing.T) {
	m := testetcd.StartSingle(t)
	if _, err := testetcd.Load(testetcd.Ctx(t, time.Minute), m.Client(t), testetcd.LoadSpec{Keys: 200, Rounds: 2, Seed: 9}); err != nil {
		t.Fatal(err)
	}
	// damaged: a copy whose key bucket's root page says it is a freelist
	// page: the one-pass defrag finds it at the end of its pass.
	damaged := func() string {
		m.Stop()
		path := filepath.Join(t.TempDir(), "damaged.db")
		testetcd.CopyFile(t, m.DBPath(), path)
		db := testetcd.Must(bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true}))(t)
		var root uint64
		var ps int
		db.View(func(tx *bolt.Tx) error {
			root, ps = uint64(tx.Bucket([]byte("key")).Root()), db.Info().PageSize
			return nil
		})
		db.Close()
		f := testetcd.Must(os.OpenFile(path, os.O_RDWR, 0))(t)
		if _, err := f.WriteAt([]byte{0x10, 0}, int64(root)*int64(ps)+8); err != nil {
			t.Fatal(err)
		}
		f.Close()
		return path
	}
	garbage := filepath.Join(t.TempDir(), "garbage.db")
	testetcd.WriteFile(t, garbage, []byte(strings.Repeat("garbage!", 1024)))
	cases := []struct {
		name string
		path func() string
		opts defrag.Options
		want error
		msg  string
	}{
		{"in use", m.DBPath, defrag.Options{LockTimeout: 200 * time.Millisecond}, boltpage.ErrInUse, "in use"},
		{"no space", func() string { m.Stop(); return m.DBPath() }, defrag.Options{LockTimeout: time.Second, Reserve: 1 << 60}, defrag.ErrNoSpace, "free"},
		{"not bolt", func() string { return garbage }, defrag.Options{}, boltpage.ErrNotBolt, "garbage.db"},
		{"damaged", damaged, defrag.Options{}, boltpage.ErrIntegrity, "damaged.db"},
		{"missing", func() string { return filepath.Join(t.TempDir(), "nope") }, defrag.Options{}, os.ErrNotExist, "nope"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := tc.path()
			dir := filepath.Dir(path)
			before := testetcd.DirNames(t, dir)
			var sum [32]byte
			if _, err := os.Stat(path); err == nil {
				sum = testetcd.FileSum(t, path)
			}
			_, err := defrag.Defrag(context.Background(), path, tc.opts)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("error %v, want %v mentioning %q", err, tc.want, tc.msg)
			}
			if after := testetcd.DirNames(t, dir); strings.Join(after, ",") != strings.Join(before, ",") {
				t.Errorf("directory holds %v, before %v", after, before)
			}
			// (The running etcd itself writes to its db.)
			if _, err := os.Stat(path); err == nil && tc.name != "in use" && testetcd.FileSum(t, path) != sum {
				t.Error("the db changed")
			}
		})
	}
}

// childSpec is a defrag run in a child process, so the test can kill it or
// limit its file size.
type childSpec struct {
	DB        string
	PauseAt   int64  // sleep when this many bytes are copied (0: never)
	FileLimit uint64 // RLIMIT_FSIZE: writes fail as on a full disk
}

func runChild(spec string) int {
	var cs childSpec
	if err := json.Unmarshal([]byte(spec), &cs); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if cs.FileLimit > 0 {
		if err := testetcd.LimitFileSize(cs.FileLimit); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
	}
	defrag.SetProgressBytes(64 << 10)
	opts := defrag.Options{Progress: func(done, total int64) {
		if cs.PauseAt > 0 && done >= cs.PauseAt {
			fmt.Println("paused")
			time.Sleep(time.Hour)
		}
	}}
	if _, err := defrag.Defrag(context.Background(), cs.DB, opts); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// TestDefragInterrupted kills a defrag half way and fails another's writes
// part way (as a full disk does): the original db is unchanged and is the
// only file under its name; the next defrag removes the leftover and works.
func TestDefragInterrupted(t *testing.T) {
	p, _, hash := compactedMember(t, "3.7", testetcd.SmallSpec)
	db := p.DBPath()
	sum := testetcd.FileSum(t, db)
	dir := filepath.Dir(db)
	before := testetcd.DirNames(t, dir)
	live := status(t, db).TotalSize

	run := func(cs childSpec) (*exec.Cmd, *strings.Builder, bool) {
		cmd, out, stderr := testetcd.StartChild(t, childEnv, cs)
		buf := make([]byte, 16)
		n, _ := out.Read(buf)
		return cmd, stderr, strings.HasPrefix(string(buf[:n]), "paused")
	}

	t.Run("killed", func(t *testing.T) {
		cmd, stderr, paused := run(childSpec{DB: db, PauseAt: live / 16})
		if !paused {
			cmd.Wait()
			t.Fatalf("child did not pause: %s", stderr)
		}
		cmd.Process.Kill()
		cmd.Wait()
		if testetcd.FileSum(t, db) != sum {
			t.Fatal("db changed by a killed defrag")
		}
		if after := testetcd.DirNames(t, dir); len(after) != len(before)+1 {
			t.Logf("after the kill: %v", after) // the killed run's temp file, under a hidden name
		}
	})
	t.Run("disk full", func(t *testing.T) {
		cmd, stderr, _ := run(childSpec{DB: db, FileLimit: uint64(live / 8)})
		if err := cmd.Wait(); err == nil || !strings.Contains(stderr.String(), "file too large") {
			t.Fatalf("exit %v, stderr %q", err, stderr)
		}
		if testetcd.FileSum(t, db) != sum {
			t.Fatal("db changed by a failed defrag")
		}
	})
	t.Run("retry", func(t *testing.T) {
		if _, err := defrag.Defrag(context.Background(), db, defrag.Options{}); err != nil {
			t.Fatal(err)
		}
		if after := testetcd.DirNames(t, dir); strings.Join(after, ",") != strings.Join(before, ",") {
			t.Errorf("directory holds %v, before %v", after, before)
		}
		if hk, err := hashkv.Compute(db, 0, time.Second); err != nil || hk.Hash != hash {
			t.Errorf("hashkv %+v %v, want %d", hk, err, hash)
		}
	})
}
