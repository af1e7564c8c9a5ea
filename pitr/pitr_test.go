package pitr_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/backup"
	"github.com/etcdkit/etcdkit/cluster"
	"github.com/etcdkit/etcdkit/internal/testetcd"
	"github.com/etcdkit/etcdkit/pitr"
	"github.com/etcdkit/etcdkit/restore"
)

// logged is a running cluster, a repository and the loggers writing it.
type logged struct {
	cl   *testetcd.Cluster
	cli  *clientv3.Client
	c    *cluster.Cluster
	repo *backup.Repository
	dir  string
}

func newLogged(t *testing.T, members int) *logged {
	t.Helper()
	cl := testetcd.StartCluster(t, members)
	c, err := cluster.Connect(context.Background(), cluster.Config{Endpoints: cl.Endpoints()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	dir := filepath.Join(t.TempDir(), "repo")
	r, err := backup.Open(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	return &logged{cl: cl, cli: cl.Client(t), c: c, repo: r, dir: dir}
}

func (l *logged) fullBackup(ctx context.Context) error {
	_, err := l.repo.Create(ctx, l.c, backup.CreateOptions{Verify: true})
	return err
}

// startLogger runs a logger on its own client; stop ends it cleanly, kill
// closes its client under it (the watch fails, what was not cut is lost,
// as when its process dies).
func (l *logged) startLogger(t *testing.T, name string) (lg *pitr.Logger, stop func() error, kill func()) {
	t.Helper()
	cli := testetcd.NewClient(t, l.cl.Endpoints()...)
	lg, err := pitr.New(pitr.Config{Repo: l.repo, Client: cli, Interval: 200 * time.Millisecond, SegmentSize: 32 << 10,
		Idle: time.Second, Writer: name, FullBackup: l.fullBackup})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- lg.Run(ctx) }()
	var once sync.Once
	var runErr error
	wait := func() error { once.Do(func() { runErr = <-done }); return runErr }
	t.Cleanup(func() { cancel(); wait() })
	return lg, func() error { cancel(); return wait() }, func() { cli.Close(); wait(); cancel() }
}

// workload drives random changes: puts and overwrites, deletes, range
// deletes, multi-key transactions, keys on leases that expire and on
// leases revoked. It returns the revision after each step.
type workload struct {
	cli    *clientv3.Client
	rnd    *rand.Rand
	revs   []int64
	leases []clientv3.LeaseID
}

func (w *workload) step(ctx context.Context) error {
	key := func() string { return fmt.Sprintf("/w/%c/%02d", 'a'+w.rnd.IntN(4), w.rnd.IntN(30)) }
	var rev int64
	switch op := w.rnd.IntN(20); {
	case op < 8:
		r, err := w.cli.Put(ctx, key(), strings.Repeat("v", w.rnd.IntN(300)))
		if err != nil {
			return err
		}
		rev = r.Header.Revision
	case op < 10:
		r, err := w.cli.Delete(ctx, key())
		if err != nil {
			return err
		}
		rev = r.Header.Revision
	case op < 11:
		r, err := w.cli.Delete(ctx, fmt.Sprintf("/w/%c/1", 'a'+w.rnd.IntN(4)), clientv3.WithPrefix())
		if err != nil {
			return err
		}
		rev = r.Header.Revision
	case op < 14:
		var ops []clientv3.Op
		for range 2 + w.rnd.IntN(5) {
			if w.rnd.IntN(3) == 0 {
				ops = append(ops, clientv3.OpDelete(key()))
			} else {
				ops = append(ops, clientv3.OpPut(key(), fmt.Sprint(w.rnd.Int())))
			}
		}
		// A key may appear once per transaction.
		seen := map[string]bool{}
		var uniq []clientv3.Op
		for _, o := range ops {
			if !seen[string(o.KeyBytes())] {
				seen[string(o.KeyBytes())] = true
				uniq = append(uniq, o)
			}
		}
		r, err := w.cli.Txn(ctx).Then(uniq...).Commit()
		if err != nil {
			return err
		}
		rev = r.Header.Revision
	case op < 17:
		ttl := int64(60)
		if w.rnd.IntN(2) == 0 {
			ttl = 3 // expires during the run: its keys are deleted
		}
		g, err := w.cli.Grant(ctx, ttl)
		if err != nil {
			return err
		}
		if ttl == 60 {
			w.leases = append(w.leases, g.ID)
		}
		var r *clientv3.PutResponse
		for i := range 1 + w.rnd.IntN(3) {
			if r, err = w.cli.Put(ctx, fmt.Sprintf("/lease/%x/%d", g.ID, i), "l", clientv3.WithLease(g.ID)); err != nil {
				return err
			}
		}
		rev = r.Header.Revision
	default:
		if len(w.leases) == 0 {
			return nil
		}
		i := w.rnd.IntN(len(w.leases))
		id := w.leases[i]
		w.leases = append(w.leases[:i], w.leases[i+1:]...)
		if _, err := w.cli.Revoke(ctx, id); err != nil {
			return err
		}
		r, err := w.cli.Get(ctx, "x")
		if err != nil {
			return err
		}
		rev = r.Header.Revision
	}
	w.revs = append(w.revs, rev)
	return nil
}

func (w *workload) run(t *testing.T, n int) {
	t.Helper()
	ctx := testetcd.Ctx(t, time.Minute)
	for range n {
		if err := w.step(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// waitStored waits until the logger stored rev.
func waitStored(t *testing.T, lg *pitr.Logger, rev int64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for lg.Stats().Stored < rev {
		if time.Now().After(deadline) {
			t.Fatalf("the log stored up to %d, want %d", lg.Stats().Stored, rev)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// current is the cluster's revision.
func (l *logged) current(t *testing.T) int64 {
	t.Helper()
	r, err := l.cli.Get(testetcd.Ctx(t, 10*time.Second), "x")
	if err != nil {
		t.Fatal(err)
	}
	return r.Header.Revision
}

// TestPointInTimeRestore logs a random workload on a 3-member cluster
// through a leader change, a logger killed and another taking over, and a
// second full backup; then restores to revisions across the run, boots
// etcd on each and compares HashKV, every key and the attached leases with
// the original cluster at that revision.
func TestPointInTimeRestore(t *testing.T) {
	l := newLogged(t, 3)
	ctx := testetcd.Ctx(t, 5*time.Minute)
	w := &workload{cli: l.cli, rnd: rand.New(rand.NewPCG(1, 2))}
	w.run(t, 30)
	if err := l.fullBackup(ctx); err != nil {
		t.Fatal(err)
	}
	first, err := l.repo.Find(ctx, "latest")
	if err != nil {
		t.Fatal(err)
	}
	lgA, _, killA := l.startLogger(t, "a")
	w.run(t, 120)
	// A leader change under the watch.
	st, err := l.cli.Status(ctx, l.cl.Endpoints()[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range l.cl.Members {
		ms, err := l.cli.Status(ctx, m.ClientURL)
		if err != nil {
			t.Fatal(err)
		}
		if ms.Header.MemberId != st.Leader {
			leader := testetcd.NewClient(t, l.leaderURL(t, st.Leader))
			if _, err := leader.MoveLeader(ctx, ms.Header.MemberId); err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	w.run(t, 120)
	waitStored(t, lgA, w.revs[len(w.revs)-40])
	killA() // the last segment under way is lost with it
	w.run(t, 60)
	lgB, stopB, _ := l.startLogger(t, "b")
	w.run(t, 100)
	if err := l.fullBackup(ctx); err != nil {
		t.Fatal(err)
	}
	second, err := l.repo.Find(ctx, "latest")
	if err != nil {
		t.Fatal(err)
	}
	w.run(t, 120)
	time.Sleep(4 * time.Second) // the short leases expire: their keys are deleted
	end := l.current(t)
	waitStored(t, lgB, end)
	if err := stopB(); err != nil {
		t.Fatal(err)
	}

	// Revisions across the run: the first backup's, inside the window
	// of each logger and of the takeover, either side of the second
	// backup, the end.
	revs := []int64{first.Revision, first.Revision + 1, second.Revision, second.Revision + 1, end}
	for _, i := range []int{60, 170, 280, 330, 420, 500} {
		revs = append(revs, w.revs[i])
	}
	sort.Slice(revs, func(i, j int) bool { return revs[i] < revs[j] })
	for i, rev := range revs {
		t.Run(fmt.Sprint(rev), func(t *testing.T) {
			members := 1
			if i == len(revs)/2 {
				members = 3 // the others' dbs are copies of the replayed one
			}
			l.checkRestore(t, pitr.Target{Revision: rev}, rev, members)
		})
	}

	// By time: the last revision received at or before a moment.
	plan, err := pitr.Resolve(ctx, l.repo, pitr.Target{Revision: w.revs[300]}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := plan.FillTime(ctx, l.repo, nil); err != nil || plan.Time.IsZero() {
		t.Fatalf("the receive time of revision %d: %v", w.revs[300], err)
	}
	byTime, err := pitr.Resolve(ctx, l.repo, pitr.Target{Time: plan.Time}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if byTime.Revision < w.revs[300] || byTime.Time.After(plan.Time) {
		t.Fatalf("--to-time %s gave revision %d at %s, want at least %d", plan.Time, byTime.Revision, byTime.Time, w.revs[300])
	}
	l.checkRestore(t, pitr.Target{Time: plan.Time}, byTime.Revision, 1)

	// Out of reach: before the first backup, after the end.
	for _, rev := range []int64{first.Revision - 1, end + 1} {
		if _, err := pitr.Resolve(ctx, l.repo, pitr.Target{Revision: rev}, nil); !errors.Is(err, pitr.ErrNotCovered) || !strings.Contains(err.Error(), fmt.Sprintf("%d..%d", first.Revision, end)) {
			t.Fatalf("revision %d: %v, want ErrNotCovered naming %d..%d", rev, err, first.Revision, end)
		}
	}
}

func (l *logged) leaderURL(t *testing.T, id uint64) string {
	for _, m := range l.cl.Members {
		s, err := l.cli.Status(testetcd.Ctx(t, 10*time.Second), m.ClientURL)
		if err == nil && s.Header.MemberId == id {
			return m.ClientURL
		}
	}
	t.Fatalf("no member %x", id)
	return ""
}

// checkRestore restores to the target, boots etcd on the result and
// compares it with the original cluster at rev.
func (l *logged) checkRestore(t *testing.T, target pitr.Target, rev int64, members int) *testetcd.Cluster {
	t.Helper()
	ctx := testetcd.Ctx(t, 2*time.Minute)
	plan, err := pitr.Resolve(ctx, l.repo, target, nil)
	if err != nil {
		t.Fatal(err)
	}
	if plan.Revision != rev {
		t.Fatalf("%s resolved to revision %d, want %d", target, plan.Revision, rev)
	}
	out := t.TempDir()
	var names, dirs, peers []string
	for i := range members {
		names = append(names, fmt.Sprintf("r%d", i))
		peers = append(peers, fmt.Sprintf("http://127.0.0.1:%d", testetcd.FreePort(t)))
		dirs = append(dirs, filepath.Join(out, names[i]+".etcd"))
	}
	var ic []string
	for i := range names {
		ic = append(ic, names[i]+"="+peers[i])
	}
	res, applied, err := pitr.Restore(ctx, l.repo, plan, nil, restore.Config{OutputDir: out, InitialCluster: strings.Join(ic, ","), InitialClusterToken: "pitr"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Revision != rev || applied.Revision != rev {
		t.Fatalf("restored revision %d (replay %d), want %d", res.Revision, applied.Revision, rev)
	}
	booted := testetcd.Boot(t, names, dirs, peers, "pitr")
	rcli := booted.Client(t)
	// Leases first: short ones start expiring on the restored cluster
	// (its keys are then deleted, at revisions above rev).
	all, err := rcli.Get(ctx, "\x00", clientv3.WithFromKey())
	if err != nil {
		t.Fatal(err)
	}
	ls, err := rcli.Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	have := map[clientv3.LeaseID]bool{}
	for _, x := range ls.Leases {
		have[x.ID] = true
	}
	for _, kv := range all.Kvs {
		if kv.Lease != 0 && !have[clientv3.LeaseID(kv.Lease)] {
			// Expired between the two reads? Then the key is gone.
			if r, err := rcli.Get(ctx, string(kv.Key)); err != nil || len(r.Kvs) > 0 {
				t.Fatalf("key %s holds lease %x, which the restored cluster lacks (%v)", kv.Key, kv.Lease, err)
			}
		}
	}
	want, err := l.cli.HashKV(ctx, l.cl.Members[0].ClientURL, rev)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range booted.Members {
		got, err := rcli.HashKV(ctx, m.ClientURL, rev)
		if err != nil {
			t.Fatal(err)
		}
		if got.Hash != want.Hash || got.CompactRevision != want.CompactRevision {
			t.Fatalf("member %s: HashKV at %d = %d (compacted %d), the original's %d (compacted %d)", m.Name, rev, got.Hash, got.CompactRevision, want.Hash, want.CompactRevision)
		}
	}
	orig := testetcd.ReadState(t, l.cli, rev)
	got := testetcd.ReadState(t, rcli, rev)
	if orig.KV != got.KV {
		t.Fatalf("keys at %d differ from the original's: %s", rev, orig.Diff(got))
	}
	t.Logf("revision %d: %d segments, %d events replayed, %d leases added", rev, applied.Segments, applied.Events, applied.Leases)
	return booted
}

// TestConsolidateGapsDamage: a consolidated backup restores as the log
// does and becomes the start of later restores; a compacted watch is
// recorded as a gap and refused across; a damaged or missing segment is
// refused; prune keeps what the kept backups' windows need.
func TestConsolidateGapsDamage(t *testing.T) {
	l := newLogged(t, 1)
	ctx := testetcd.Ctx(t, 5*time.Minute)
	w := &workload{cli: l.cli, rnd: rand.New(rand.NewPCG(3, 4))}
	w.run(t, 20)
	lgA, stopA, _ := l.startLogger(t, "a") // takes the first full backup
	w.run(t, 150)
	waitStored(t, lgA, l.current(t))
	if err := stopA(); err != nil {
		t.Fatal(err)
	}
	mid := w.revs[100]
	plan, err := pitr.Resolve(ctx, l.repo, pitr.Target{Revision: mid}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cons, applied, err := pitr.Consolidate(ctx, l.repo, plan, nil, backup.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if cons.Revision != mid || cons.Consolidated == nil || cons.Consolidated.From != plan.Base().ID || applied.Events == 0 || !cons.Verified {
		t.Fatalf("consolidated backup %+v (applied %+v), want revision %d from %s", cons, applied, mid, plan.Base().ID)
	}
	want, err := l.cli.HashKV(ctx, l.cl.Members[0].ClientURL, mid)
	if err != nil {
		t.Fatal(err)
	}
	if cons.HashKV.Hash != want.Hash {
		t.Fatalf("consolidated HashKV %d, the cluster's at %d: %d", cons.HashKV.Hash, mid, want.Hash)
	}
	after, err := pitr.Resolve(ctx, l.repo, pitr.Target{Revision: w.revs[120]}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if after.Base().ID != cons.ID {
		t.Fatalf("a restore past the consolidation starts from %s, want %s", after.Base().ID, cons.ID)
	}
	l.checkRestore(t, pitr.Target{Revision: w.revs[120]}, w.revs[120], 1)
	l.checkRestore(t, pitr.Target{Revision: mid}, mid, 1)

	// A compaction while no log runs: the next log finds its start
	// compacted, records the gap, takes a full backup and goes on.
	stored := lgA.Stats().Stored
	w.run(t, 40)
	if _, err := l.cli.Compact(ctx, l.current(t)); err != nil {
		t.Fatal(err)
	}
	lgB, stopB, _ := l.startLogger(t, "b")
	deadline := time.Now().Add(time.Minute)
	for lgB.Stats().Gaps == 0 || lgB.Stats().Stored < l.current(t) {
		if time.Now().After(deadline) {
			t.Fatalf("no gap recorded: %+v", lgB.Stats())
		}
		time.Sleep(50 * time.Millisecond)
	}
	w.run(t, 40)
	end := l.current(t)
	waitStored(t, lgB, end)
	if err := stopB(); err != nil {
		t.Fatal(err)
	}
	if _, err := pitr.Resolve(ctx, l.repo, pitr.Target{Revision: stored + 5}, nil); !errors.Is(err, pitr.ErrNotCovered) || !strings.Contains(err.Error(), "compacted") {
		t.Fatalf("a revision in the gap: %v, want ErrNotCovered naming the compaction", err)
	}
	restored := l.checkRestore(t, pitr.Target{Revision: end}, end, 1)

	// A log on the restored cluster (a new cluster ID, revisions going on
	// from end) into the same repository starts from a full backup of
	// it; the old backups' windows never take its segments.
	lr := &logged{cl: restored, cli: restored.Client(t), repo: l.repo, dir: l.dir}
	if lr.c, err = cluster.Connect(ctx, cluster.Config{Endpoints: restored.Endpoints()}); err != nil {
		t.Fatal(err)
	}
	defer lr.c.Close()
	oldNewest, err := l.repo.Find(ctx, "latest")
	if err != nil {
		t.Fatal(err)
	}
	lgR, stopR, _ := lr.startLogger(t, "restored")
	for i := range 30 {
		if _, err := lr.cli.Put(ctx, fmt.Sprintf("/restored/%d", i), "r"); err != nil {
			t.Fatal(err)
		}
	}
	rEnd := lr.current(t)
	waitStored(t, lgR, rEnd)
	if err := stopR(); err != nil {
		t.Fatal(err)
	}
	newest, err := l.repo.Find(ctx, "latest")
	if err != nil || newest.ID == oldNewest.ID || newest.ClusterID == oldNewest.ClusterID {
		t.Fatalf("the log on the restored cluster took no full backup of it: newest %+v (%v), before %s", newest, err, oldNewest.ID)
	}
	allSegs, err := l.repo.Segments(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if w := backup.Reach(oldNewest, allSegs); w.To != end {
		t.Fatalf("the old cluster's window reaches %d, want %d (not the restored cluster's revisions)", w.To, end)
	}
	lr.checkRestore(t, pitr.Target{Revision: rEnd}, rEnd, 1)

	// A damaged segment: the restore fails and leaves nothing.
	segs, err := l.repo.Segments(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var last backup.Segment
	for _, s := range segs {
		if s.ClusterID == oldNewest.ClusterID && !s.Gap && s.Last == end {
			last = s
		}
	}
	obj := filepath.Join(l.dir, last.Object)
	orig, err := os.ReadFile(obj)
	if err != nil {
		t.Fatal(err)
	}
	testetcd.FlipByte(t, obj, int64(len(orig)/2))
	plan, err = pitr.Resolve(ctx, l.repo, pitr.Target{Revision: end}, nil)
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	if _, _, err := pitr.Restore(ctx, l.repo, plan, nil, restore.Config{OutputDir: out, InitialCluster: "r=http://127.0.0.1:2380"}); !errors.Is(err, backup.ErrCorrupt) {
		t.Fatalf("restore over a damaged segment: %v (%#v), want ErrCorrupt", err, err)
	}
	if names := testetcd.DirNames(t, out); len(names) != 0 {
		t.Fatalf("a failed restore left %v", names)
	}
	// backup check re-reads the segments too, and names the damaged one.
	checked, err := l.repo.Check(ctx, "", nil)
	if !errors.Is(err, backup.ErrCorrupt) {
		t.Fatalf("check over a damaged segment: %v", err)
	}
	found := false
	for _, r := range checked {
		if r.ID == strings.TrimSuffix(last.Name, "/") {
			found = !r.OK && r.Content == "log segment"
		}
	}
	if !found {
		t.Fatalf("check results %+v do not fail segment %s", checked, last.Name)
	}
	testetcd.WriteFile(t, obj, orig)
	if _, err := l.repo.Check(ctx, "", nil); err != nil {
		t.Fatalf("check after the repair: %v", err)
	}

	// A missing segment: revisions past it are out of reach.
	var inside backup.Segment
	for _, s := range segs {
		if !s.Gap && s.First > stored && s.Last <= end && s.Last >= s.First {
			inside = s
			break
		}
	}
	if inside.Name == "" {
		t.Fatal("no segment inside the last window")
	}
	if err := os.Remove(filepath.Join(l.dir, inside.Name, "manifest.json")); err != nil {
		t.Fatal(err)
	}
	if _, err := pitr.Resolve(ctx, l.repo, pitr.Target{Revision: end}, nil); !errors.Is(err, pitr.ErrNotCovered) {
		t.Fatalf("past a missing segment: %v, want ErrNotCovered", err)
	}
	if _, err := pitr.Resolve(ctx, l.repo, pitr.Target{Revision: inside.First - 1}, nil); err != nil {
		t.Fatalf("before the missing segment: %v", err)
	}

	// Prune keeping the newest backup drops the segments only older
	// backups needed, and nothing the newest one's window needs.
	res, err := l.repo.Prune(ctx, backup.Retention{KeepLast: 1}, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Segments) == 0 {
		t.Fatal("prune removed no segment")
	}
	left, err := l.repo.Segments(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if newest, err = l.repo.Find(ctx, "latest"); err != nil {
		t.Fatal(err)
	}
	for _, s := range left {
		if s.Last < newest.Revision {
			t.Fatalf("prune kept segment %s, below the only kept backup (revision %d)", s.Name, newest.Revision)
		}
	}
	if _, err := pitr.Resolve(ctx, l.repo, pitr.Target{Revision: rEnd}, nil); err != nil {
		t.Fatalf("after prune: %v", err)
	}
}

// TestFallingBehind: uploads slower than the writes fill segments; the
// log records a gap (it never pretends to cover what it dropped), takes a
// full backup and goes on from it, to a restore that matches.
func TestFallingBehind(t *testing.T) {
	l := newLogged(t, 1)
	ctx := testetcd.Ctx(t, 3*time.Minute)
	w := &workload{cli: l.cli, rnd: rand.New(rand.NewPCG(7, 8))}
	w.run(t, 20)
	if err := l.fullBackup(ctx); err != nil {
		t.Fatal(err)
	}
	slow := make(chan struct{})
	var once sync.Once
	lg, err := pitr.New(pitr.Config{Repo: l.repo, Client: l.cli, Interval: 50 * time.Millisecond, SegmentSize: 4 << 10, MaxPending: 1,
		FullBackup: l.fullBackup, Store: backup.SegmentOptions{Uploaded: func(backup.Segment, int64) {
			select {
			case <-slow: // until the gap is recorded: then fast again
			case <-time.After(300 * time.Millisecond):
			}
		}}})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- lg.Run(runCtx) }()
	defer func() { cancel(); <-done }()
	for deadline := time.Now().Add(time.Minute); lg.Stats().Gaps == 0; {
		if time.Now().After(deadline) {
			t.Fatalf("no gap while the uploads fell behind: %+v", lg.Stats())
		}
		w.run(t, 5)
	}
	once.Do(func() { close(slow) })
	w.run(t, 40)
	end := l.current(t)
	waitStored(t, lg, end)
	segs, err := l.repo.Segments(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var gap backup.Segment
	for _, s := range segs {
		if s.Gap {
			gap = s
		}
	}
	if !strings.Contains(gap.GapReason, "fell behind") {
		t.Fatalf("gap record %+v, want one saying the log fell behind", gap)
	}
	if _, err := pitr.Resolve(ctx, l.repo, pitr.Target{Revision: gap.First}, nil); !errors.Is(err, pitr.ErrNotCovered) || !strings.Contains(err.Error(), "fell behind") {
		t.Fatalf("a revision in the gap: %v, want ErrNotCovered naming it", err)
	}
	l.checkRestore(t, pitr.Target{Revision: end}, end, 1)
}

const childEnv = "ETCDKIT_TEST_PITR_CHILD"

func TestMain(m *testing.M) {
	testetcd.RunChild(childEnv, runChild)
	os.Exit(m.Run())
}

type childSpec struct {
	Endpoints      []string
	Repo           string
	Access, Secret string
	PauseIn        int // pause in the upload of this segment (1-based), halfway
}

// runChild runs a logger that pauses halfway through one segment's
// upload and says so on stdout: the parent kills it there.
func runChild(spec string) int {
	var cs childSpec
	if err := json.Unmarshal([]byte(spec), &cs); err != nil {
		return 2
	}
	os.Setenv("AWS_ACCESS_KEY_ID", cs.Access)
	os.Setenv("AWS_SECRET_ACCESS_KEY", cs.Secret)
	ctx := context.Background()
	r, err := backup.Open(ctx, cs.Repo)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: cs.Endpoints, DialTimeout: 5 * time.Second})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	uploads, last := 0, ""
	lg, err := pitr.New(pitr.Config{Repo: r, Client: cli, Interval: 100 * time.Millisecond, SegmentSize: 64 << 10,
		Store: backup.SegmentOptions{Compression: "none", Uploaded: func(s backup.Segment, n int64) {
			if s.Name != last {
				uploads, last = uploads+1, s.Name
			}
			if uploads == cs.PauseIn && n > 4<<10 {
				fmt.Println("paused " + s.Name)
				time.Sleep(time.Hour)
			}
		}},
		FullBackup: func(context.Context) error { return errors.New("the parent takes the full backups") }})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := lg.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// TestKilledDuringUpload kills the logger (kill -9) halfway through a
// segment's upload, into a local and an S3 repository: nothing of that
// segment is listed, every listed segment reads back whole, and a new
// logger goes on with no gap, to a restore whose HashKV matches.
func TestKilledDuringUpload(t *testing.T) {
	s3 := testetcd.StartS3(t, "logs")
	for _, tc := range []struct{ name, repo string }{{"local", ""}, {"s3", s3.URL("logs", "pitr")}} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLogged(t, 1)
			if tc.repo != "" {
				r, err := backup.Open(context.Background(), tc.repo)
				if err != nil {
					t.Fatal(err)
				}
				l.repo = r
			}
			ctx := testetcd.Ctx(t, 3*time.Minute)
			w := &workload{cli: l.cli, rnd: rand.New(rand.NewPCG(5, 6))}
			w.run(t, 20)
			if err := l.fullBackup(ctx); err != nil {
				t.Fatal(err)
			}
			repoURL := tc.repo
			if repoURL == "" {
				repoURL = l.dir
			}
			cmd, out, stderr := testetcd.StartChild(t, childEnv, childSpec{Endpoints: l.cl.Endpoints(), Repo: repoURL, Access: s3.Access, Secret: s3.Secret, PauseIn: 3})
			// Big values: segments fill and upload while the writes go on.
			paused := make(chan error, 1)
			var pausedIn string
			go func() {
				b := make([]byte, 200)
				n, err := out.Read(b)
				if err == nil && !strings.HasPrefix(string(b[:n]), "paused ") {
					err = fmt.Errorf("child said %q", b[:n])
				}
				pausedIn = strings.TrimSpace(strings.TrimPrefix(string(b[:n]), "paused "))
				paused <- err
			}()
			for done := false; !done; {
				if _, err := l.cli.Put(ctx, fmt.Sprintf("/big/%d", w.rnd.IntN(50)), strings.Repeat("b", 4<<10)); err != nil {
					t.Fatal(err)
				}
				select {
				case err := <-paused:
					if err != nil {
						t.Fatalf("%v (stderr: %s)", err, stderr)
					}
					done = true
				default:
				}
			}
			cmd.Process.Kill()
			cmd.Wait()
			segs, err := l.repo.Segments(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(segs) != 2 {
				t.Fatalf("%d segments listed after the kill in the third upload, want the 2 complete ones", len(segs))
			}
			for _, s := range segs {
				if s.Name == pausedIn {
					t.Fatalf("segment %s is listed, though its upload was killed", s.Name)
				}
				rc, err := l.repo.OpenSegment(ctx, s, nil)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := io.Copy(io.Discard, rc); err != nil {
					t.Fatalf("segment %s: %v", s.Name, err)
				}
				rc.Close()
			}
			w.run(t, 30)
			lg, stop, _ := l.startLogger(t, "after")
			end := l.current(t)
			waitStored(t, lg, end)
			if err := stop(); err != nil {
				t.Fatal(err)
			}
			if lg.Stats().Gaps != 0 {
				t.Fatalf("the new logger recorded a gap: %+v", lg.Stats())
			}
			l.checkRestore(t, pitr.Target{Revision: end}, end, 1)
		})
	}
}
