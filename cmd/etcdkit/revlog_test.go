package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"filippo.io/age"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/backup"
	"github.com/etcdkit/etcdkit/internal/testetcd"
)

// TestPointInTimeCLI: two schedulers with --revision-log beside a
// 3-member cluster; the active one is killed (kill -9) and the other goes
// on with the log; then snapshot restore --to-revision and --to-time boot
// with the original's HashKV and keys, backup consolidate builds a backup
// a later restore starts from, backup list shows the restore windows, and
// the refusals exit as documented. Also backup log, alone, stopped by
// SIGTERM.
func TestPointInTimeCLI(t *testing.T) {
	cl := testetcd.StartCluster(t, 3)
	cli := cl.Client(t)
	ctx := testetcd.Ctx(t, 5*time.Minute)
	repo := filepath.Join(t.TempDir(), "repo")
	put := func(n int, prefix string) int64 {
		t.Helper()
		var rev int64
		for i := range n {
			r, err := cli.Put(ctx, fmt.Sprintf("/%s/%d", prefix, i%37), fmt.Sprint(i))
			if err != nil {
				t.Fatal(err)
			}
			rev = r.Header.Revision
		}
		return rev
	}
	put(50, "before")
	var procs []*cliProcess
	var addrs []string
	for i, ep := range cl.Endpoints() {
		addr := fmt.Sprintf("127.0.0.1:%d", testetcd.FreePort(t))
		addrs = append(addrs, addr)
		procs = append(procs, startCLI(t, nil, "scheduler", "--session-ttl", "2", "--name", fmt.Sprintf("s%d", i), "--endpoints", ep,
			"--repo", repo, "--revision-log", "--log-interval", "200ms", "--metrics-addr", addr))
		if i == 1 {
			break
		}
	}
	active := func() int {
		for i, a := range addrs {
			if st, ok := schedulerStatus(a); ok && st.Active && st.RevisionLog != nil {
				return i
			}
		}
		return -1
	}
	waitStored := func(rev int64) int {
		t.Helper()
		for deadline := time.Now().Add(40 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			if w := active(); w >= 0 {
				if st, _ := schedulerStatus(addrs[w]); st.RevisionLog.Stored >= rev {
					return w
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("the log did not reach revision %d; logs:\n%s\n%s", rev, procs[0].out, procs[1].out)
			}
		}
	}
	mid := put(200, "during")
	first := waitStored(mid)
	metrics := httpGet(t, "http://"+addrs[first]+"/metrics")
	for _, m := range []string{"etcdkit_revision_log_lag_seconds", "etcdkit_revision_log_lag_revisions", "etcdkit_revision_log_segments_total", "etcdkit_revision_log_gaps_total 0"} {
		if !strings.Contains(metrics, m) {
			t.Errorf("metrics lack %s", m)
		}
	}
	procs[first].cmd.Process.Signal(syscall.SIGKILL)
	put(150, "takeover")
	end := put(100, "after")
	other := waitStored(end)
	if other == first {
		t.Fatalf("scheduler %d is still active after kill -9", first)
	}
	if st, _ := schedulerStatus(addrs[other]); st.RevisionLog.Gaps != 0 {
		t.Fatalf("the takeover recorded a gap: %+v", st.RevisionLog)
	}
	procs[other].cmd.Process.Signal(syscall.SIGTERM)
	if err := <-procs[other].done; err != nil {
		t.Fatalf("scheduler after SIGTERM: %v\n%s", err, procs[other].out)
	}
	procs[other].done <- nil

	run := func(args ...string) (string, string) {
		t.Helper()
		out, errOut, code := runCLI(args...)
		if code != 0 {
			t.Fatalf("%v: exit %d, stdout %q, stderr %q", args, code, out, errOut)
		}
		return out, errOut
	}
	var listed []struct {
		backup.Manifest
		Window backup.Window `json:"restoreWindow"`
	}
	out, _ := run("backup", "list", "--repo", repo, "-w", "json")
	if err := json.Unmarshal([]byte(out), &listed); err != nil || len(listed) == 0 || listed[len(listed)-1].Window.To < end {
		t.Fatalf("backup list: %v, %s", err, out)
	}
	base := listed[0]

	restoreAndCheck := func(repo string, rev int64, args ...string) {
		t.Helper()
		dir := t.TempDir()
		peer := fmt.Sprintf("http://127.0.0.1:%d", testetcd.FreePort(t))
		_, errOut := run(append([]string{"snapshot", "restore", "--repo", repo, "--output-dir", dir, "--initial-cluster", "r=" + peer, "--initial-cluster-token", "t"}, args...)...)
		if !strings.Contains(errOut, fmt.Sprintf("revision %d:", rev)) {
			t.Fatalf("restore note %q does not name revision %d", errOut, rev)
		}
		booted := testetcd.Boot(t, []string{"r"}, []string{filepath.Join(dir, "r.etcd")}, []string{peer}, "t")
		rcli := booted.Client(t)
		want, err := cli.HashKV(ctx, cl.Members[0].ClientURL, rev)
		if err != nil {
			t.Fatal(err)
		}
		got, err := rcli.HashKV(ctx, booted.Members[0].ClientURL, rev)
		if err != nil {
			t.Fatal(err)
		}
		if got.Hash != want.Hash {
			t.Fatalf("restored to %d: HashKV %d, the original's %d", rev, got.Hash, want.Hash)
		}
		if o, g := testetcd.ReadState(t, cli, rev), testetcd.ReadState(t, rcli, rev); o.KV != g.KV {
			t.Fatalf("restored to %d: %s", rev, o.Diff(g))
		}
		if r, err := rcli.Get(ctx, "x", clientv3.WithSerializable()); err != nil || r.Header.Revision != rev {
			t.Fatalf("restored member at revision %v (%v), want %d", r, err, rev)
		}
	}
	restoreAndCheck(repo, mid+75, "--to-revision", fmt.Sprint(mid+75))
	// The log's reach in time is when it received the last revision.
	// (the election's keys change too: the killed scheduler's session
	// ends).
	win := listed[len(listed)-1].Window
	restoreAndCheck(repo, win.To, "--to-time", win.ToTime.Format(time.RFC3339Nano))

	// A second site: backup copy takes the log too.
	repo3 := filepath.Join(t.TempDir(), "repo3")
	if _, errOut := run("backup", "copy", "--repo", repo, "--to", repo3); !strings.Contains(errOut, "segment(s) copied") {
		t.Fatalf("backup copy did not copy the log: %q", errOut)
	}
	restoreAndCheck(repo3, mid+90, "--to-revision", fmt.Sprint(mid+90))

	// Consolidation: a new backup, and a restore past it starts there.
	out, errOut := run("backup", "consolidate", "--repo", repo, "--to-revision", fmt.Sprint(mid), "-w", "json")
	var cons []backup.Manifest
	if err := json.Unmarshal([]byte(out), &cons); err != nil || len(cons) != 1 || cons[0].Revision != mid || cons[0].Consolidated == nil {
		t.Fatalf("consolidate: %v %s %s", err, out, errOut)
	}
	_, errOut = run("snapshot", "restore", "--repo", repo, "--to-revision", fmt.Sprint(mid+10), "--data-dir", filepath.Join(t.TempDir(), "x.etcd"))
	if !strings.Contains(errOut, "backup "+cons[0].ID) {
		t.Fatalf("a restore past the consolidation did not start from it: %s", errOut)
	}

	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"snapshot", "restore", "--repo", repo, "--to-revision", fmt.Sprint(base.Revision - 1), "--data-dir", "y"}, exitInput, "reachable revisions"},
		{[]string{"snapshot", "restore", "--repo", repo, "--to-revision", fmt.Sprint(end + 1000), "--data-dir", "y"}, exitInput, fmt.Sprintf("..%d", win.To)},
		{[]string{"snapshot", "restore", "--to-revision", "5", "--data-dir", "y", "snap.db"}, exitUsage, "--repo"},
		{[]string{"snapshot", "restore", "--repo", repo, "--to-revision", "5", "--to-time", "2026-01-01T00:00:00Z", "--data-dir", "y"}, exitUsage, "give one"},
		{[]string{"snapshot", "restore", "--repo", repo, "--backup", base.ID, "--to-revision", "5", "--data-dir", "y"}, exitUsage, "--backup"},
		{[]string{"snapshot", "restore", "--repo", repo, "--to-time", "yesterday", "--data-dir", "y"}, exitUsage, "RFC 3339"},
		{[]string{"backup", "consolidate", "--repo", repo}, exitUsage, "--latest"},
	} {
		expectFailure(t, tc.args, tc.code, tc.want)
	}

	// backup log alone, encrypted: it takes the first full backup itself
	// and stores the segment under way on SIGTERM.
	id := testetcd.Must(age.GenerateX25519Identity())(t)
	idFile := filepath.Join(t.TempDir(), "key.txt")
	testetcd.WriteFile(t, idFile, []byte(id.String()+"\n"))
	repo2 := filepath.Join(t.TempDir(), "repo2")
	p := startCLI(t, nil, "backup", "log", "--endpoints", cl.Endpoints()[0], "--repo", repo2, "--log-interval", "1h", "--encrypt-to", id.Recipient().String())
	r2 := testetcd.Must(backup.Open(context.Background(), repo2))(t)
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if l, err := r2.List(ctx); err == nil && len(l) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("backup log took no full backup:\n%s", p.out)
		}
	}
	time.Sleep(500 * time.Millisecond) // the watch is under way
	last := put(20, "alone")
	time.Sleep(500 * time.Millisecond)
	p.cmd.Process.Signal(syscall.SIGTERM)
	if err := <-p.done; err != nil {
		t.Fatalf("backup log after SIGTERM: %v\n%s", err, p.out)
	}
	p.done <- nil
	segs, err := r2.Segments(ctx)
	if err != nil || len(segs) != 1 || segs[0].Last != last || segs[0].Encryption != "age" {
		t.Fatalf("after SIGTERM: segments %+v (%v), want one ending at %d, encrypted\n%s", segs, err, last, p.out)
	}
	expectFailure(t, []string{"snapshot", "restore", "--repo", repo2, "--to-revision", fmt.Sprint(last), "--data-dir", filepath.Join(t.TempDir(), "z.etcd")}, exitInput, "--identity")
	restoreAndCheck(repo2, last, "--to-revision", fmt.Sprint(last), "--identity", idFile)
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
