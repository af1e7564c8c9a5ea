package save_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/cluster"
	"github.com/etcdkit/etcdkit/hashkv"
	"github.com/etcdkit/etcdkit/internal/testetcd"
	"github.com/etcdkit/etcdkit/save"
	"github.com/etcdkit/etcdkit/snapshot"
	"github.com/etcdkit/etcdkit/verify"
)

// TestSave saves snapshots of a three-member cluster under write load,
// from the member --endpoints names and from the best member, and checks
// the file (trailer, schema), its manifest (the revision is the
// snapshot's own) and its HashKV against the server's at that revision.
func TestSave(t *testing.T) {
	cl := testetcd.StartCluster(t, 3)
	cli := cl.Client(t)
	loaded, err := testetcd.Load(testetcd.Ctx(t, time.Minute), cli, testetcd.SmallSpec)
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			cli.Put(context.Background(), fmt.Sprintf("/load/%d", i%100), "x")
		}
	})
	defer func() { close(stop); wg.Wait() }()

	ctx := context.Background()
	for _, tc := range []struct {
		name      string
		endpoints []string
		member    string
	}{
		{"named member", cl.Endpoints()[2:], cl.Members[2].Name},
		{"best member", cl.Endpoints(), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := cluster.Connect(ctx, cluster.Config{Endpoints: tc.endpoints})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			path := filepath.Join(t.TempDir(), "snap.db")
			var progress int64
			m, err := save.Snapshot(ctx, c, path, save.Options{Progress: func(done, total int64) { progress = done }})
			if err != nil {
				t.Fatal(err)
			}
			if tc.member != "" && m.MemberName != tc.member {
				t.Errorf("saved from %s, want %s", m.MemberName, tc.member)
			}
			st, err := snapshot.ReadStatus(path, time.Second)
			if err != nil {
				t.Fatal(err)
			}
			fi := testetcd.Must(os.Stat(path))(t)
			if m.Revision != st.Revision || m.Size != fi.Size() || progress != fi.Size() || m.ClusterID == "" || m.EtcdVersion == "" {
				t.Errorf("manifest %+v, status %+v, size %d, progress %d", m, st, fi.Size(), progress)
			}
			b := testetcd.Must(os.ReadFile(path))(t)
			if hex.EncodeToString(b[len(b)-32:]) != m.SHA256 {
				t.Errorf("manifest sha256 %s is not the trailer", m.SHA256)
			}
			onDisk := m
			onDisk.FileSHA256 = "" // not written: the repository records it
			if got, err := save.ReadManifest(path); err != nil || got != onDisk {
				t.Errorf("manifest on disk %+v %v, want %+v", got, err, m)
			}
			if left := testetcd.Must(filepath.Glob(filepath.Join(filepath.Dir(path), ".*etcdkit-part*")))(t); len(left) > 0 {
				t.Errorf("temporary files left: %v", left)
			}
			r, err := verify.Snapshot(path, verify.Options{})
			if err != nil || len(r.Problems) > 0 {
				t.Errorf("verify: %v %+v", err, r)
			}
			hk, err := hashkv.Compute(path, m.Revision, time.Second)
			if err != nil {
				t.Fatal(err)
			}
			srv, err := cli.HashKV(testetcd.Ctx(t, 30*time.Second), cl.Endpoints()[0], m.Revision)
			if err != nil || srv.Hash != hk.Hash {
				t.Errorf("hashkv at %d: file %d, server %d (%v)", m.Revision, hk.Hash, srv.Hash, err)
			}
			// The manifest's evidence: the same hash, and the member's at
			// the revision it had when the stream started (under load,
			// before the snapshot's), compared with the file's there; and
			// the key and lease counts at the revision.
			h := m.HashKV
			hkCheck := testetcd.Must(hashkv.Compute(path, h.CheckRevision, time.Second))(t)
			srvCheck, err := cli.HashKV(testetcd.Ctx(t, 30*time.Second), cl.Endpoints()[0], h.CheckRevision)
			if err != nil {
				t.Fatal(err)
			}
			if !h.Compared || h.Hash != hk.Hash || h.Revision != m.Revision || h.CheckRevision == 0 || h.CheckRevision > m.Revision ||
				h.Server != srvCheck.Hash || h.Server != hkCheck.Hash {
				t.Errorf("manifest HashKV %+v, file %d (at %d: %d), server at %d: %d", h, hk.Hash, h.CheckRevision, hkCheck.Hash, h.CheckRevision, srvCheck.Hash)
			}
			count, err := cli.Get(testetcd.Ctx(t, 30*time.Second), "", clientv3.WithPrefix(), clientv3.WithCountOnly(), clientv3.WithRev(m.Revision))
			if err != nil {
				t.Fatal(err)
			}
			if m.Keys != count.Count || m.Leases != int64(len(loaded.Leases)) {
				t.Errorf("manifest counts %d keys, %d leases; the server %d keys, the loader granted %d leases", m.Keys, m.Leases, count.Count, len(loaded.Leases))
			}
		})
	}

	t.Run("unreachable", func(t *testing.T) {
		c, err := cluster.Connect(ctx, cluster.Config{Endpoints: []string{fmt.Sprintf("127.0.0.1:%d", testetcd.FreePort(t))}, DialTimeout: 300 * time.Millisecond, CommandTimeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		dir := t.TempDir()
		_, err = save.Snapshot(ctx, c, filepath.Join(dir, "snap.db"), save.Options{})
		if !errors.Is(err, save.ErrNoMember) {
			t.Fatalf("error %v", err)
		}
		if e := testetcd.DirNames(t, dir); len(e) != 0 {
			t.Errorf("left %v", e)
		}
	})
}

func TestSaveTimeout(t *testing.T) {
	for _, tc := range []struct {
		size int64
		want time.Duration
	}{{0, 35 * time.Second}, {1 << 30, 35*time.Second + 256*time.Second}, {8 << 30, 35*time.Second + 2048*time.Second}} {
		if got := save.Timeout(5*time.Second, tc.size); got != tc.want {
			t.Errorf("size %d: %v, want %v", tc.size, got, tc.want)
		}
	}
}

// TestSaveConcurrent: saves of the same file at the same time never share
// a temporary file: each one succeeds, the file left is a whole snapshot
// whose trailer matches, and no temporary remains.
func TestSaveConcurrent(t *testing.T) {
	m := testetcd.StartSingle(t)
	if _, err := testetcd.Load(testetcd.Ctx(t, time.Minute), m.Client(t), testetcd.SmallSpec); err != nil {
		t.Fatal(err)
	}
	c := testetcd.Must(cluster.Connect(context.Background(), cluster.Config{Endpoints: []string{m.ClientURL}}))(t)
	defer c.Close()
	path := filepath.Join(t.TempDir(), "snap.db")
	for round := 0; round < 10; round++ {
		errs := make(chan error, 2)
		for range 2 {
			go func() {
				_, err := save.Snapshot(context.Background(), c, path, save.Options{})
				errs <- err
			}()
		}
		for range 2 {
			if err := <-errs; err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
		}
		if r, err := verify.Snapshot(path, verify.Options{}); err != nil || len(r.Problems) > 0 {
			t.Fatalf("round %d: the saved file does not verify: %v %+v", round, err, r)
		}
		if left := testetcd.Must(filepath.Glob(filepath.Join(filepath.Dir(path), ".*etcdkit-part*")))(t); len(left) > 0 {
			t.Fatalf("round %d: temporary files left: %v", round, left)
		}
	}
}

// TestSaveRefusesForeignSnapshot: a snapshot stream that is not what the
// member holds (here: replaced by a snapshot of another cluster with the
// same revisions and one different value, its trailer intact) is refused
// with ErrHashKVMismatch, and nothing is kept.
func TestSaveRefusesForeignSnapshot(t *testing.T) {
	ctx := context.Background()
	write := func(m *testetcd.Member, odd string) *cluster.Cluster {
		cli := m.Client(t)
		for i := range 20 {
			v := "same"
			if i == 7 {
				v = odd
			}
			if _, err := cli.Put(ctx, fmt.Sprintf("/k/%d", i), v); err != nil {
				t.Fatal(err)
			}
		}
		return testetcd.Must(cluster.Connect(ctx, cluster.Config{Endpoints: []string{m.ClientURL}}))(t)
	}
	a, b := testetcd.StartSingle(t), testetcd.StartSingle(t)
	ca, cb := write(a, "a"), write(b, "b")
	defer ca.Close()
	defer cb.Close()
	foreign := filepath.Join(t.TempDir(), "foreign.db")
	if _, err := save.Snapshot(ctx, cb, foreign, save.Options{}); err != nil {
		t.Fatal(err)
	}
	save.SetStreamHook(func(io.Reader) io.Reader { return bytes.NewReader(testetcd.Must(os.ReadFile(foreign))(t)) })
	defer save.SetStreamHook(nil)
	dir := t.TempDir()
	// Done (the repository's upload) has finished before the failure is
	// returned.
	var done atomic.Int32
	m, err := save.Snapshot(ctx, ca, filepath.Join(dir, "snap.db"), save.Options{Done: func() error { time.Sleep(100 * time.Millisecond); done.Store(1); return nil }})
	if !errors.Is(err, save.ErrHashKVMismatch) || done.Load() != 1 {
		t.Fatalf("error %v, want ErrHashKVMismatch (manifest %+v), done %d", err, m, done.Load())
	}
	if e := testetcd.DirNames(t, dir); len(e) != 0 {
		t.Errorf("left %v", e)
	}
}

// TestSaveDone: Done runs once the whole snapshot went through; its
// failure fails the save and nothing is kept.
func TestSaveDone(t *testing.T) {
	ctx := context.Background()
	m := testetcd.StartSingle(t)
	if _, err := testetcd.Load(testetcd.Ctx(t, time.Minute), m.Client(t), testetcd.LoadSpec{Keys: 200, Rounds: 1, Seed: 3}); err != nil {
		t.Fatal(err)
	}
	c := testetcd.Must(cluster.Connect(ctx, cluster.Config{Endpoints: []string{m.ClientURL}}))(t)
	defer c.Close()
	var buf bytes.Buffer
	var at int
	sm, err := save.Stream(ctx, c, &buf, save.Options{Done: func() error { at = buf.Len(); return nil }})
	if err != nil || at != buf.Len() || int64(at) != sm.Size || sm.Revision == 0 || !sm.HashKV.Compared {
		t.Fatalf("stream: %v, done at %d of %d bytes, manifest %+v", err, at, buf.Len(), sm)
	}
	// RateLimit: the same stream read at half its size per second takes
	// at least the time the limit allows past its first burst.
	rate := max(sm.Size/2, 64<<10)
	start := time.Now()
	var slow bytes.Buffer
	if _, err := save.Stream(ctx, c, &slow, save.Options{RateLimit: rate}); err != nil {
		t.Fatal(err)
	}
	if took, least := time.Since(start), time.Duration(float64(int64(slow.Len())-256<<10)/float64(rate)*float64(time.Second)); took < least {
		t.Errorf("%d bytes at %d/s took %v, want at least %v", slow.Len(), rate, took, least)
	}
	// SkipMemberHash: the snapshot's hash is recorded, not compared.
	skipped, err := save.Stream(ctx, c, io.Discard, save.Options{SkipMemberHash: true})
	if err != nil || skipped.HashKV.Compared || !strings.Contains(skipped.HashKV.Note, "not asked") || skipped.HashKV.Hash != sm.HashKV.Hash || skipped.Revision != sm.Revision {
		t.Errorf("without the member's hash: %v %+v, want the hash %d recorded, not compared", err, skipped.HashKV, sm.HashKV.Hash)
	}
	dir2 := t.TempDir()
	boom := errors.New("upload failed")
	if _, err := save.Snapshot(ctx, c, filepath.Join(dir2, "snap.db"), save.Options{Done: func() error { return boom }}); !errors.Is(err, boom) {
		t.Fatalf("a failed Done: %v", err)
	}
	if e := testetcd.DirNames(t, dir2); len(e) != 0 {
		t.Errorf("left %v", e)
	}
}

// TestSaveCompactionRaces: a compaction between the probe and the
// snapshot (the snapshot's compaction is not the one its stream was read
// with), and one after the snapshot started (the member's answer is over
// another compaction), each leave a kept snapshot whose manifest says the
// hashes were not compared, and why.
func TestSaveCompactionRaces(t *testing.T) {
	ctx := context.Background()
	m := testetcd.StartSingle(t)
	cli := m.Client(t)
	loaded := testetcd.Must(testetcd.Load(testetcd.Ctx(t, time.Minute), cli, testetcd.LoadSpec{Keys: 300, Rounds: 2, Seed: 4}))(t)
	c := testetcd.Must(cluster.Connect(ctx, cluster.Config{Endpoints: []string{m.ClientURL}}))(t)
	defer c.Close()
	compactAt := func() {
		resp := testetcd.Must(cli.Put(ctx, "/race", "x"))(t)
		if _, err := cli.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name string
		set  func()
	}{
		{"before the snapshot", func() { save.SetAfterProbe(compactAt) }},
		{"during the stream", func() {
			save.SetStreamHook(func(r io.Reader) io.Reader { compactAt(); return r })
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.set()
			defer save.SetAfterProbe(nil)
			defer save.SetStreamHook(nil)
			path := filepath.Join(t.TempDir(), "snap.db")
			sm, err := save.Snapshot(ctx, c, path, save.Options{})
			if err != nil {
				t.Fatal(err)
			}
			if sm.HashKV.Compared || sm.HashKV.Note == "" || sm.Revision <= loaded.Revision {
				t.Errorf("manifest %+v: want a note and no comparison", sm)
			}
			if r, err := verify.Snapshot(path, verify.Options{}); err != nil || len(r.Problems) > 0 {
				t.Errorf("the kept file does not verify: %v %+v", err, r)
			}
		})
	}
}
