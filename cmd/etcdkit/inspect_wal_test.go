package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/storage/datadir"
	"go.etcd.io/etcd/server/v3/storage/wal"
	"go.etcd.io/etcd/server/v3/storage/wal/walpb"
	"go.uber.org/zap"

	"github.com/etcdkit/etcdkit/internal/etcdfmt"
	"github.com/etcdkit/etcdkit/internal/testetcd"
)

// TestInspectWAL: inspect wal decodes the log etcd's own wal package reads
// (same entries, same commit index) and draws the line where the db
// stopped: a data dir whose db is a snapshot taken before the last writes
// shows those writes as committed but not in the db.
func TestInspectWAL(t *testing.T) {
	m := testetcd.StartSingle(t)
	cli := m.Client(t)
	ctx := testetcd.Ctx(t, time.Minute)
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	lease, err := cli.Grant(ctx, 300)
	must(lease, err)
	for i := range 5 {
		must(cli.Put(ctx, fmt.Sprintf("/early/%d", i), "v", clientv3.WithLease(lease.ID)))
	}
	must(cli.Txn(ctx).If(clientv3.Compare(clientv3.Version("/early/0"), ">", 0)).Then(clientv3.OpPut("/txn/a", "1"), clientv3.OpDelete("/early/1")).Commit())
	must(cli.Compact(ctx, 3))
	snap := filepath.Join(t.TempDir(), "early.db")
	rc, err := cli.Snapshot(ctx)
	must(rc, err)
	f, err := os.Create(snap)
	must(f, err)
	must(io.Copy(f, rc))
	must(nil, f.Close())
	for i := range 4 {
		must(cli.Put(ctx, fmt.Sprintf("/late/%d", i), "after the snapshot"))
	}
	m.Stop()

	// What etcd's wal package reads.
	walDir := datadir.ToWalDir(m.DataDir)
	w, err := wal.OpenForRead(zap.NewNop(), walDir, &walpb.Snapshot{})
	must(w, err)
	_, hs, ents, err := w.ReadAll()
	must(nil, err)
	w.Close() // read-only: its error (fsync of a read-only file) says nothing of the read

	// The data dir, with the db replaced by the snapshot.
	dir := filepath.Join(t.TempDir(), "behind.etcd")
	testetcd.Run(t, "cp", "-a", m.DataDir, dir)
	testetcd.CopyFile(t, snap, datadir.ToBackendFileName(dir))
	ci := consistentIndex(t, snap)
	before := treeSum(t, dir)

	out, errOut, code := runCLI("inspect", "wal", "--data-dir", dir, "-w", "json")
	if code != 0 || errOut != "" {
		t.Fatalf("inspect wal: exit %d %q", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var sum struct {
		Summary struct {
			Entries, Applied, Uncommitted int
			Committed                     int    `json:"committed_not_applied"`
			Commit                        uint64 `json:"commit"`
			ConsistentIndex               uint64 `json:"consistent_index"`
		}
	}
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &sum); err != nil {
		t.Fatal(err)
	}
	s := sum.Summary
	wantApplied := 0
	for _, e := range ents {
		if e.GetIndex() <= ci {
			wantApplied++
		}
	}
	if s.Commit != hs.GetCommit() || s.ConsistentIndex != ci || s.Applied != wantApplied || s.Applied+s.Committed+s.Uncommitted != len(ents) || s.Committed < 4 {
		t.Fatalf("summary %+v; etcd's wal package reads %d entries, commit %d; the db's consistent index is %d (%d entries at or below it)", s, len(ents), hs.GetCommit(), ci, wantApplied)
	}
	// Every entry, as etcd's wal package decodes it, with its request.
	byIndex := map[uint64]map[string]any{}
	for _, l := range lines[:len(lines)-1] {
		var r map[string]any
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("%q: %v", l, err)
		}
		if r["record"] == "entry" {
			byIndex[uint64(r["index"].(float64))] = r
		}
	}
	kinds := map[string]int{}
	for _, e := range ents {
		r, ok := byIndex[e.GetIndex()]
		if !ok || uint64(r["term"].(float64)) != e.GetTerm() {
			t.Fatalf("entry %d (term %d): inspect wal has %v", e.GetIndex(), e.GetTerm(), r)
		}
		kinds[r["kind"].(string)]++
		status := "applied"
		if e.GetIndex() > ci {
			status = "committed"
		}
		if r["status"] != status {
			t.Fatalf("entry %d: status %v, want %s", e.GetIndex(), r["status"], status)
		}
	}
	for _, k := range []string{"put", "txn", "compaction", "lease_grant", "conf_change", "cluster_member_attr_set"} {
		if kinds[k] == 0 {
			t.Fatalf("no %s entry among %v", k, kinds)
		}
	}

	// Simple: the line between applied and not, the late puts below it.
	out, _, code = runCLI("inspect", "wal", "--data-dir", dir)
	applied, notApplied, found := strings.Cut(out, "# ---- the db has applied the entries above")
	if code != 0 || !found || strings.Contains(applied, "/late/") || strings.Count(notApplied, `put key="/late/`) != 4 {
		t.Fatalf("inspect wal: exit %d\n%s", code, out)
	}
	// Filters.
	out, _, code = runCLI("inspect", "wal", "--data-dir", dir, "--type", "put,txn", "--from-index", fmt.Sprint(ci))
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if strings.HasPrefix(l, "#") {
			continue
		}
		var idx uint64
		if _, err := fmt.Sscanf(l[strings.Index(l, "index="):], "index=%d", &idx); err != nil || idx < ci || !strings.Contains(l, " put key=") && !strings.Contains(l, " txn ") {
			t.Fatalf("filtered line %q", l)
		}
	}
	if code != 0 || strings.Count(out, " put key=") != 4 {
		t.Fatalf("inspect wal --type put,txn --from-index %d: exit %d\n%s", ci, code, out)
	}
	if treeSum(t, dir) != before {
		t.Fatal("inspect wal changed the data dir")
	}

	// A WAL changed after etcd wrote it, and a source with no WAL.
	walFile := filepath.Join(datadir.ToWalDir(dir), firstWAL(t, datadir.ToWalDir(dir)))
	raw, err := os.ReadFile(walFile)
	must(raw, err)
	i := bytes.Index(raw, []byte("/early/3"))
	if i < 0 {
		t.Fatal("no /early/3 in the first WAL file")
	}
	testetcd.FlipByte(t, walFile, int64(i))
	expectFailure(t, []string{"inspect", "wal", "--data-dir", dir}, exitCorrupt, "CRC mismatch")
	expectFailure(t, []string{"inspect", "wal", "--db", snap}, exitUsage, "give --data-dir")
}

func firstWAL(t *testing.T, dir string) string {
	files, err := etcdfmt.ListWAL(dir)
	if err != nil || len(files) == 0 {
		t.Fatalf("WAL files of %s: %v", dir, err)
	}
	return files[0].Name
}

func consistentIndex(t *testing.T, db string) uint64 {
	t.Helper()
	bdb, err := bolt.Open(db, 0o400, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer bdb.Close()
	var ci uint64
	err = bdb.View(func(tx *bolt.Tx) error {
		var err error
		ci, err = etcdfmt.ParseUint64(tx.Bucket(etcdfmt.BucketMeta).Get(etcdfmt.MetaConsistentIndex))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return ci
}
