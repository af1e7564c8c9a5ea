package restore_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/internal/testetcd"
	"github.com/etcdkit/etcdkit/restore"
	"github.com/etcdkit/etcdkit/snapshot"
)

func TestMain(m *testing.M) {
	testetcd.RunChild(childEnv, runChild)
	code := m.Run()
	if faultDir != "" {
		os.RemoveAll(faultDir)
	}
	os.Exit(code)
}

// source is a snapshot taken from a loaded etcd, with what the original
// server said about it.
type source struct {
	line     string
	path     string
	revision int64
	hashKV   uint32 // the server's HashKV at revision
	state    testetcd.State
}

func newSource(t *testing.T, line string) source {
	t.Helper()
	p, loaded := testetcd.LoadedProcess(t, line, testetcd.SmallSpec)
	cli := testetcd.NewClient(t, p.ClientURL)
	path := testetcd.SaveSnapshot(t, p)
	hk, err := cli.HashKV(testetcd.Ctx(t, 30*time.Second), p.ClientURL, loaded.Revision)
	if err != nil {
		t.Fatal(err)
	}
	src := source{line: line, path: path, revision: loaded.Revision, hashKV: hk.Hash, state: testetcd.ReadState(t, cli, loaded.Revision)}
	p.Stop()
	return src
}

// peer is a member of a restored cluster: its name and loopback ports.
type peer struct {
	name               string
	clientPort, peerPt int
}

func (p peer) peerURL() string { return fmt.Sprintf("http://127.0.0.1:%d", p.peerPt) }

func peers(t *testing.T, names ...string) ([]peer, string) {
	var ps []peer
	var ic []string
	for _, n := range names {
		p := peer{n, testetcd.FreePort(t), testetcd.FreePort(t)}
		ps = append(ps, p)
		ic = append(ic, n+"="+p.peerURL())
	}
	return ps, strings.Join(ic, ",")
}

// boot starts etcd of the snapshot's version on restored data dirs and
// checks what every member serves against the original server.
func boot(t *testing.T, src source, ps []peer, initialCluster, token string, dataDir func(peer) string, res restore.Result) []*testetcd.Process {
	t.Helper()
	bins := testetcd.Binaries(t, src.line)
	var procs []*testetcd.Process
	for _, p := range ps {
		procs = append(procs, testetcd.StartProcess(t, bins, testetcd.ProcessConfig{
			Name: p.name, DataDir: dataDir(p), InitialCluster: initialCluster, Token: token,
			ClientPort: p.clientPort, PeerPort: p.peerPt,
		}))
	}
	for _, proc := range procs {
		proc.WaitReady(t)
	}
	ids := map[string]string{}
	for _, m := range res.Members {
		ids[m.Name] = m.ID
	}
	for _, proc := range procs {
		cli := testetcd.NewClient(t, proc.ClientURL)
		ml, err := cli.MemberList(testetcd.Ctx(t, 10*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if got := fmt.Sprintf("%x", ml.Header.ClusterId); got != res.ClusterID {
			t.Errorf("%s: cluster id %s, restore said %s", proc.Name, got, res.ClusterID)
		}
		if len(ml.Members) != len(ps) {
			t.Errorf("%s: %d members, want %d", proc.Name, len(ml.Members), len(ps))
		}
		for _, m := range ml.Members {
			if got := fmt.Sprintf("%x", m.ID); got != ids[m.Name] {
				t.Errorf("member %s: id %s, restore said %s", m.Name, got, ids[m.Name])
			}
		}
		hk, err := cli.HashKV(testetcd.Ctx(t, 30*time.Second), proc.ClientURL, src.revision)
		if err != nil {
			t.Fatalf("%s: HashKV: %v", proc.Name, err)
		}
		if hk.Hash != src.hashKV {
			t.Errorf("%s: HashKV at %d = %d, original server %d", proc.Name, src.revision, hk.Hash, src.hashKV)
		}
	}
	got := testetcd.ReadState(t, testetcd.NewClient(t, procs[0].ClientURL), 0)
	if d := src.state.Diff(got); d != "" {
		t.Errorf("restored data differs: %s", d)
	}
	return procs
}

// etcdutlRestore runs etcdutl 3.7's restore for comparison.
func etcdutlRestore(t *testing.T, snap, name, initialCluster, peerURL, dataDir string) {
	t.Helper()
	testetcd.Run(t, testetcd.Binaries(t, "3.7").Etcdutl, "snapshot", "restore", snap,
		"--name", name, "--initial-cluster", initialCluster, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster-token", "tok", "--data-dir", dataDir)
}

func mustEqualFiles(t *testing.T, a, b string) {
	t.Helper()
	x, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(x, y) {
		t.Errorf("%s and %s differ", a, b)
	}
}

// TestRestoreBoots restores snapshots written by etcd 3.5, 3.6 and 3.7, as
// one member and as three in one run, checks the files against etcdutl's
// restore of the same snapshot, boots the same etcd version on them and
// compares what it serves with the original server.
func TestRestoreBoots(t *testing.T) {
	for _, line := range testetcd.Versions {
		t.Run("etcd-"+line, func(t *testing.T) {
			src := newSource(t, line)
			before := testetcd.FileSum(t, src.path)

			t.Run("single", func(t *testing.T) {
				ps, ic := peers(t, "solo")
				dir := t.TempDir()
				// Into an existing empty data dir, as the runbook's
				// /var/lib/etcd: etcd boots on it below.
				if err := os.Mkdir(filepath.Join(dir, "solo.etcd"), 0o700); err != nil {
					t.Fatal(err)
				}
				res, err := restore.Restore(context.Background(), restore.Config{
					Name: "solo", PeerURLs: []string{ps[0].peerURL()}, InitialCluster: ic,
					InitialClusterToken: "tok", DataDir: filepath.Join(dir, "solo.etcd"),
				}, src.path)
				if err != nil {
					t.Fatal(err)
				}
				if res.Revision != src.revision || res.SHA256 == "" {
					t.Errorf("result %+v, want revision %d and a checked hash", res, src.revision)
				}
				// Same files as etcdutl: db content (every bucket), WAL, .snap.
				ref := filepath.Join(dir, "etcdutl.etcd")
				etcdutlRestore(t, src.path, "solo", ic, ps[0].peerURL(), ref)
				ours, theirs := filepath.Join(dir, "solo.etcd", "member"), filepath.Join(ref, "member")
				so, err := snapshot.ReadStatus(filepath.Join(ours, "snap", "db"), time.Second)
				if err != nil {
					t.Fatal(err)
				}
				st, err := snapshot.ReadStatus(filepath.Join(theirs, "snap", "db"), time.Second)
				if err != nil {
					t.Fatal(err)
				}
				if so.Hash != st.Hash || so.Revision != st.Revision || so.TotalKey != st.TotalKey {
					t.Errorf("db status %+v, etcdutl's %+v", so, st)
				}
				for _, f := range []string{"wal/0000000000000000-0000000000000000.wal", "snap/0000000000000001-0000000000000001.snap"} {
					mustEqualFiles(t, filepath.Join(ours, f), filepath.Join(theirs, f))
				}
				boot(t, src, ps, ic, "tok", func(peer) string { return filepath.Join(dir, "solo.etcd") }, res)
			})

			t.Run("three-members", func(t *testing.T) {
				ps, ic := peers(t, "m1", "m2", "m3")
				out := t.TempDir()
				res, err := restore.Restore(context.Background(), restore.Config{
					OutputDir: out, InitialCluster: ic, InitialClusterToken: "tok",
				}, src.path)
				if err != nil {
					t.Fatal(err)
				}
				if len(res.Members) != 3 {
					t.Fatalf("restored %d members", len(res.Members))
				}
				for _, p := range ps {
					ref := filepath.Join(t.TempDir(), p.name)
					etcdutlRestore(t, src.path, p.name, ic, p.peerURL(), ref)
					mustEqualFiles(t, filepath.Join(out, p.name+".etcd", "member", "wal", "0000000000000000-0000000000000000.wal"),
						filepath.Join(ref, "member", "wal", "0000000000000000-0000000000000000.wal"))
				}
				boot(t, src, ps, ic, "tok", func(p peer) string { return filepath.Join(out, p.name+".etcd") }, res)
			})

			if testetcd.FileSum(t, src.path) != before {
				t.Error("the snapshot file changed")
			}
		})
	}
}

// TestRestoreBumpRevision checks --bump-revision with --mark-compacted: the
// revision jumps and reads and watches below it are compacted.
func TestRestoreBumpRevision(t *testing.T) {
	src := newSource(t, "3.7")
	ps, ic := peers(t, "b")
	dir := filepath.Join(t.TempDir(), "b.etcd")
	const bump = 1000
	res, err := restore.Restore(context.Background(), restore.Config{
		Name: "b", PeerURLs: []string{ps[0].peerURL()}, InitialCluster: ic, InitialClusterToken: "tok",
		DataDir: dir, BumpRevision: bump, MarkCompacted: true,
	}, src.path)
	if err != nil {
		t.Fatal(err)
	}
	if res.Revision != src.revision+bump {
		t.Fatalf("revision %d, want %d", res.Revision, src.revision+bump)
	}
	proc := testetcd.StartProcess(t, testetcd.Binaries(t, "3.7"), testetcd.ProcessConfig{
		Name: "b", DataDir: dir, InitialCluster: ic, Token: "tok", ClientPort: ps[0].clientPort, PeerPort: ps[0].peerPt,
	})
	proc.WaitReady(t)
	cli := testetcd.NewClient(t, proc.ClientURL)
	ctx := testetcd.Ctx(t, 30*time.Second)
	put, err := cli.Put(ctx, "after-restore", "x")
	if err != nil {
		t.Fatal(err)
	}
	if put.Header.Revision != src.revision+bump+1 {
		t.Errorf("first write got revision %d, want %d", put.Header.Revision, src.revision+bump+1)
	}
	if _, err := cli.Get(ctx, "/k/", clientv3.WithPrefix(), clientv3.WithRev(src.revision)); err == nil || !strings.Contains(err.Error(), "compacted") {
		t.Errorf("get at the snapshot revision: %v, want compacted", err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	wr := <-cli.Watch(wctx, "/k/", clientv3.WithPrefix(), clientv3.WithRev(src.revision))
	if wr.CompactRevision != src.revision+bump {
		t.Errorf("watch from %d: compact revision %d (err %v), want %d", src.revision, wr.CompactRevision, wr.Err(), src.revision+bump)
	}
	// Everything that was there is still there at the new revision.
	got := testetcd.ReadState(t, cli, src.revision+bump)
	want := src.state
	want.Revision = src.revision + bump
	if d := want.Diff(got); d != "" {
		t.Errorf("data after bump: %s", d)
	}
}
