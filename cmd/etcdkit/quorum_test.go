package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/internal/testetcd"
)

// TestRecoverQuorumLoss: a 3-member cluster loses two members (stopped,
// data dirs deleted); recover rebuilds a new 3-member cluster from the
// survivor's data dir with etcd's own force-new-cluster on a copy. The
// new cluster boots with every acknowledged write and one HashKV on all
// members; the survivor's dir is unchanged. A data dir of another cluster
// among the survivors and a dir in use are refused, changing nothing.
func TestRecoverQuorumLoss(t *testing.T) {
	cl := testetcd.StartCluster(t, 3)
	cli := cl.Client(t)
	ctx := testetcd.Ctx(t, 2*time.Minute)
	var acked []string
	write := func(from, to int) {
		for i := from; i < to; i++ {
			k := fmt.Sprintf("/registry/configmaps/ns/cm-%04d", i)
			if _, err := cli.Put(ctx, k, "v"); err != nil {
				t.Fatal(err)
			}
			acked = append(acked, k)
		}
	}
	write(0, 200)
	// m2 stops early: its dir is a survivor that lags behind.
	cl.Members[2].Stop()
	stale := filepath.Join(t.TempDir(), "stale.etcd")
	testetcd.Run(t, "cp", "-a", cl.Members[2].DataDir, stale)
	write(200, 300)
	other := testetcd.StartSingle(t)
	// A survivor still running is refused (its db is locked).
	survivor := cl.Members[0]
	out := filepath.Join(t.TempDir(), "out")
	peers := []string{fmt.Sprintf("http://127.0.0.1:%d", testetcd.FreePort(t)), fmt.Sprintf("http://127.0.0.1:%d", testetcd.FreePort(t)), fmt.Sprintf("http://127.0.0.1:%d", testetcd.FreePort(t))}
	names := []string{"n0", "n1", "n2"}
	var initial []string
	for i, n := range names {
		initial = append(initial, n+"="+peers[i])
	}
	args := []string{"recover", "--initial-cluster", strings.Join(initial, ","), "--output-dir", out, "--timeout", "300ms"}
	expectFailure(t, append(args, "--from-data-dir", survivor.DataDir), exitInUse, "in use")
	for _, m := range cl.Members {
		m.Stop()
	}
	other.Stop()
	for _, m := range cl.Members[1:] {
		if err := os.RemoveAll(m.DataDir); err != nil {
			t.Fatal(err)
		}
	}
	before, beforeStale := treeSum(t, survivor.DataDir), treeSum(t, stale)
	expectFailure(t, append(args, "--from-data-dir", survivor.DataDir, "--from-data-dir", other.DataDir), exitInput, "different clusters")
	expectFailure(t, args, exitUsage, "--from-data-dir")
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatalf("a refused recover wrote %s", out)
	}

	// The stale survivor first: the most advanced one is chosen anyway.
	stdout, errOut, code := runCLI(append(args, "--from-data-dir", stale, "--from-data-dir", survivor.DataDir)...)
	if code != 0 || !strings.Contains(errOut, survivor.DataDir+": cluster") || !strings.Contains(errOut, "chosen") || strings.Count(stdout, "\n") != 3 {
		t.Fatalf("recover: exit %d\n%s\n%s", code, stdout, errOut)
	}
	for _, l := range strings.Split(errOut, "\n") {
		if strings.HasPrefix(l, stale) && strings.Contains(l, "chosen") {
			t.Fatalf("the stale dir was chosen: %s", errOut)
		}
	}
	if treeSum(t, survivor.DataDir) != before || treeSum(t, stale) != beforeStale {
		t.Fatal("recover changed a survivor's data dir")
	}
	// Run again: the data dirs exist, so it refuses and changes nothing.
	outSum := treeSum(t, out)
	expectFailure(t, append(args, "--from-data-dir", survivor.DataDir), exitRefused, "refusing to overwrite")
	if treeSum(t, out) != outSum {
		t.Fatal("a second recover changed the recovered data dirs")
	}
	// --from-db: a raw db restores too (its unapplied entries are lost).
	fromDB := filepath.Join(t.TempDir(), "from-db")
	if out, errOut, code := runCLI("recover", "--from-db", survivor.DBPath(), "--initial-cluster", strings.Join(initial, ","), "--output-dir", fromDB); code != 0 || strings.Count(out, "\n") != 3 {
		t.Fatalf("recover --from-db: exit %d %q %q", code, out, errOut)
	}
	var dirs []string
	for _, n := range names {
		dirs = append(dirs, filepath.Join(out, n+".etcd"))
	}
	nc := testetcd.Boot(t, names, dirs, peers, "etcd-cluster-recovered")
	ncli := nc.Client(t)
	resp, err := ncli.Get(ctx, "/registry/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, kv := range resp.Kvs {
		have[string(kv.Key)] = true
	}
	for _, k := range acked {
		if !have[k] {
			t.Fatalf("acknowledged write %s lost", k)
		}
	}
	var hashes []uint32
	for _, ep := range nc.Endpoints() {
		h, err := ncli.HashKV(ctx, ep, resp.Header.Revision)
		if err != nil {
			t.Fatal(err)
		}
		hashes = append(hashes, h.Hash)
	}
	if hashes[0] != hashes[1] || hashes[1] != hashes[2] {
		t.Fatalf("HashKV per member %v", hashes)
	}
	ms, err := ncli.MemberList(context.Background())
	if err != nil || len(ms.Members) != 3 {
		t.Fatalf("members %v %v", ms, err)
	}
}
