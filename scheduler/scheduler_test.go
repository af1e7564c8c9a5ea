package scheduler_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/etcdkit/etcdkit/backup"
	"github.com/etcdkit/etcdkit/cluster"
	"github.com/etcdkit/etcdkit/compact"
	"github.com/etcdkit/etcdkit/internal/testetcd"
	"github.com/etcdkit/etcdkit/scheduler"
)

// writeLoad writes until the test ends.
func writeLoad(t *testing.T, endpoints ...string) {
	cli := testetcd.NewClient(t, endpoints...)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	wg.Go(func() {
		for i := 0; ctx.Err() == nil; i++ {
			cli.Put(ctx, fmt.Sprintf("/load/%d", i%50), strings.Repeat("v", 1000))
			time.Sleep(2 * time.Millisecond)
		}
	})
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	return resp.StatusCode, string(testetcd.Must(io.ReadAll(resp.Body))(t))
}

func start(t *testing.T, cfg scheduler.Config) (*scheduler.Scheduler, context.CancelFunc, chan error) {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewJSONHandler(io.Discard, nil))
	}
	s, err := scheduler.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return s, cancel, done
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool, explain ...func() string) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); {
		if time.Now().After(deadline) {
			why := ""
			for _, e := range explain {
				why += e()
			}
			t.Fatalf("timed out waiting for %s %s", what, why)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestJobs runs backup, compact and defrag on one-second schedules against
// a member under write load and checks what they did, that no two runs
// overlapped, and the metrics and status endpoints.
func TestJobs(t *testing.T) {
	m := testetcd.StartSingle(t)
	writeLoad(t, m.ClientURL)
	repoDir := filepath.Join(t.TempDir(), "repo")
	addr := fmt.Sprintf("127.0.0.1:%d", testetcd.FreePort(t))
	s, cancel, done := start(t, scheduler.Config{
		Cluster: cluster.Config{Endpoints: []string{m.ClientURL}},
		Repo:    repoDir, BackupSchedule: "@every 1s", Retention: backup.Retention{KeepLast: 3},
		CompactSchedule: "@every 1s", CompactPolicy: compact.Policy{KeepRevisions: 100},
		DefragSchedule: "@every 2s", DefragRule: "dbSize > 0",
		MetricsAddr: addr, AlarmCheckEvery: 500 * time.Millisecond,
	})
	waitFor(t, 30*time.Second, "runs of every job", func() bool {
		ok := map[string]bool{}
		for _, r := range s.Status().Runs {
			if r.Result == "success" {
				ok[r.Job] = true
			}
		}
		return ok["backup"] && ok["compact"] && ok["defrag"] && len(s.Status().Runs) > 8
	}, func() string { b, _ := json.MarshalIndent(s.Status(), "", " "); return string(b) })
	if code, body := get(t, "http://"+addr+"/metrics"); code != 200 ||
		!strings.Contains(body, `etcdkit_job_runs_total{result="success",task="backup"}`) ||
		!strings.Contains(body, "etcdkit_backup_newest_revision") || !strings.Contains(body, "etcdkit_member_db_size_bytes") ||
		!strings.Contains(body, "etcdkit_scheduler_active 1") || !strings.Contains(body, "etcdkit_backup_newest_age_seconds") {
		t.Errorf("metrics %d:\n%s", code, body)
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		if code, _ := get(t, "http://"+addr+p); code != 200 {
			t.Errorf("%s: %d", p, code)
		}
	}
	_, body := get(t, "http://"+addr+"/status")
	var st scheduler.Status
	if err := json.Unmarshal([]byte(body), &st); err != nil || !st.Active || len(st.Runs) == 0 {
		t.Errorf("status %s %v", body, err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	done <- nil // for the cleanup

	runs := s.Status().Runs
	for i, a := range runs {
		for _, b := range runs[i+1:] {
			if a.Result != "skipped" && b.Result != "skipped" && a.Start.Before(b.End) && b.Start.Before(a.End) {
				t.Errorf("runs overlap: %+v and %+v", a, b)
			}
		}
	}
	r := testetcd.Must(backup.Open(context.Background(), repoDir))(t)
	list, err := r.List(context.Background())
	if err != nil || len(list) == 0 || len(list) > 3 {
		t.Errorf("backups after retention keep-last 3: %d %v", len(list), err)
	}
	c := testetcd.Must(cluster.Connect(context.Background(), cluster.Config{Endpoints: []string{m.ClientURL}}))(t)
	defer c.Close()
	if rev := testetcd.Must(c.CompactRevision(context.Background()))(t); rev == 0 {
		t.Error("never compacted")
	}
}

// TestElection: three schedulers elect one active instance; when it stops,
// another takes over within seconds.
func TestElection(t *testing.T) {
	cl := testetcd.StartCluster(t, 3)
	type inst struct {
		s      *scheduler.Scheduler
		cancel context.CancelFunc
	}
	var all []inst
	for i := range 3 {
		s, cancel, _ := start(t, scheduler.Config{
			Cluster: cluster.Config{Endpoints: cl.Endpoints()[i : i+1]}, Name: fmt.Sprintf("sched-%d", i), SessionTTL: 2,
		})
		all = append(all, inst{s, cancel})
	}
	activeOne := func() int {
		n, who := 0, -1
		for i, in := range all {
			if in.s.Active() {
				n, who = n+1, i
			}
		}
		if n > 1 {
			t.Fatalf("%d active schedulers", n)
		}
		return who
	}
	waitFor(t, 20*time.Second, "an active scheduler", func() bool { return activeOne() >= 0 })
	first := activeOne()
	all[first].cancel()
	start := time.Now()
	waitFor(t, 15*time.Second, "a new active scheduler", func() bool { w := activeOne(); return w >= 0 && w != first })
	t.Logf("took over in %s", time.Since(start).Round(time.Millisecond))
}

// TestStorageDown: the backup job fails while the object store is down,
// with retries, a failed run and a metric, and leaves no listed backup.
func TestStorageDown(t *testing.T) {
	m := testetcd.StartSingle(t)
	s3 := testetcd.StartS3(t, "bkp")
	url := s3.URL("bkp", "x")
	addr := fmt.Sprintf("127.0.0.1:%d", testetcd.FreePort(t))
	var logs strings.Builder
	var mu sync.Mutex
	s, _, _ := start(t, scheduler.Config{
		Cluster: cluster.Config{Endpoints: []string{m.ClientURL}}, Repo: url, BackupSchedule: "@every 1s",
		Retries: 1, RetryBackoff: 100 * time.Millisecond, MetricsAddr: addr,
		Logger: slog.New(slog.NewJSONHandler(writerFunc(func(p []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return logs.Write(p) }), nil)),
	})
	waitFor(t, 20*time.Second, "a first backup", func() bool {
		for _, r := range s.Status().Runs {
			if r.Result == "success" {
				return true
			}
		}
		return false
	})
	s3.Stop()
	waitFor(t, 60*time.Second, "a failed backup", func() bool {
		for _, r := range s.Status().Runs {
			if r.Result == "failed" {
				if r.Attempts != 2 {
					t.Errorf("attempts %d, want 2", r.Attempts)
				}
				return true
			}
		}
		return false
	})
	if _, body := get(t, "http://"+addr+"/metrics"); !strings.Contains(body, `etcdkit_job_failures_total{task="backup"}`) ||
		!strings.Contains(body, `etcdkit_job_runs_total{result="skipped",task="backup"}`) {
		t.Errorf("no failure or skip metric:\n%s", body)
	}
	// While the failing backup retried, its next turns came and were skipped.
	skipped := 0
	for _, r := range s.Status().Runs {
		if r.Job == "backup" && r.Result == "skipped" {
			skipped++
		}
	}
	mu.Lock()
	if skipped == 0 || !strings.Contains(logs.String(), `"msg":"job failed"`) || !strings.Contains(logs.String(), `"msg":"job skipped: its previous run is not done"`) {
		t.Errorf("%d skipped runs; logs:\n%s", skipped, logs.String())
	}
	mu.Unlock()
	s3.Restart(t)
	listedBackupsCheck(t, s3.URL("bkp", "x"))
}

// TestRetries: a failing job is tried 1 + Retries times, and 0 retries is
// one attempt (zero is a choice, not "the default").
func TestRetries(t *testing.T) {
	m := testetcd.StartSingle(t)
	for _, retries := range []int{0, 1, 3} {
		t.Run(fmt.Sprint(retries), func(t *testing.T) {
			// Compaction keeping an hour fails at once: the revision
			// clock of a fresh cluster does not reach back that far.
			s, _, _ := start(t, scheduler.Config{
				Cluster: cluster.Config{Endpoints: []string{m.ClientURL}}, Name: fmt.Sprint("retries-", retries),
				ElectionPrefix:  fmt.Sprint("retries-", retries),
				CompactSchedule: "@every 1s", CompactPolicy: compact.Policy{KeepDuration: time.Hour},
				Retries: retries, RetryBackoff: 10 * time.Millisecond,
			})
			var failed *scheduler.Run
			waitFor(t, 20*time.Second, "a failed compaction", func() bool {
				for _, r := range s.Status().Runs {
					if r.Result == "failed" {
						failed = &r
						return true
					}
				}
				return false
			})
			if failed.Attempts != 1+retries {
				t.Fatalf("attempts %d, want %d (%s)", failed.Attempts, 1+retries, failed.Error)
			}
		})
	}
}

// TestConfigRefused: a configuration that cannot work is refused by New.
func TestConfigRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  scheduler.Config
		want string
	}{
		{"rule that is a number", scheduler.Config{DefragSchedule: "@daily", DefragRule: "dbSize"}, "not true or false"},
		{"negative retries", scheduler.Config{Retries: -1}, "retries"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := scheduler.New(tc.cfg)
			if !errors.Is(err, scheduler.ErrConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want %v naming %q", err, scheduler.ErrConfig, tc.want)
			}
		})
	}
}

// listedBackupsCheck: every backup the repository lists is complete.
func listedBackupsCheck(t *testing.T, url string) {
	t.Helper()
	r, err := backup.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	list, err := r.List(context.Background())
	if err != nil {
		t.Fatalf("list %s: %v", url, err)
	}
	for _, b := range list {
		if _, err := r.Check(context.Background(), b.ID, nil); err != nil {
			t.Errorf("listed backup %s does not check: %v", b.ID, err)
		}
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// TestResilience: on a three-member cluster the active scheduler recovers
// from NOSPACE by itself, and its backups keep succeeding through a leader
// change and with a member down.
func TestResilience(t *testing.T) {
	cl := testetcd.StartCluster(t, 3, testetcd.WithQuota(4<<20))
	repoDir := filepath.Join(t.TempDir(), "repo")
	s, _, _ := start(t, scheduler.Config{
		Cluster: cluster.Config{Endpoints: cl.Endpoints()}, Repo: repoDir, BackupSchedule: "@every 1s",
		AutoRecoverNoSpace: true, AlarmCheckEvery: 300 * time.Millisecond, Retries: 2, RetryBackoff: 200 * time.Millisecond,
	})
	waitFor(t, 20*time.Second, "active", s.Active)
	successesSince := func(job string, since time.Time) int {
		n := 0
		for _, r := range s.Status().Runs {
			if r.Job == job && r.Result == "success" && r.Start.After(since) {
				n++
			}
		}
		return n
	}

	// Fill the cluster until it raises NOSPACE.
	cli := cl.Client(t)
	v := strings.Repeat("x", 64<<10)
	for i := 0; i < 1000; i++ {
		if _, err := cli.Put(context.Background(), fmt.Sprintf("/fill/%d", i%5), v); err != nil {
			break
		}
	}
	mark := time.Now()
	waitFor(t, 60*time.Second, "the NOSPACE recovery", func() bool { return successesSince("recover-nospace", mark.Add(-time.Minute)) > 0 },
		func() string { b, _ := json.Marshal(s.Status()); return string(b) })
	if _, err := cli.Put(context.Background(), "/after-recovery", "ok"); err != nil {
		t.Fatalf("write after the recovery: %v", err)
	}

	// A leader change.
	c := testetcd.Must(cluster.Connect(context.Background(), cluster.Config{Endpoints: cl.Endpoints()}))(t)
	defer c.Close()
	var leader, follower *cluster.MemberStatus
	st := c.Status(context.Background(), 0)
	for i := range st {
		if st[i].IsLeader {
			leader = &st[i]
		} else {
			follower = &st[i]
		}
	}
	lc := testetcd.Must(c.ForEndpoint(leader.Endpoint))(t)
	if _, err := lc.MoveLeader(context.Background(), follower.MemberID); err != nil {
		t.Fatal(err)
	}
	lc.Close()
	mark = time.Now()
	waitFor(t, 20*time.Second, "backups after the leader change", func() bool { return successesSince("backup", mark) >= 2 })

	// A member down (not the one the snapshot would come from matters not:
	// the healthy member with the highest applied index serves it).
	cl.Members[0].Stop()
	mark = time.Now()
	waitFor(t, 30*time.Second, "backups with a member down", func() bool { return successesSince("backup", mark) >= 2 },
		func() string { b, _ := json.Marshal(s.Status()); return string(b) })
}

// TestUnreachableAndStop: with the cluster unreachable the scheduler stays
// alive (healthz), not ready (readyz), and counts the failed connections;
// stopped while a job is retrying against a dead object store, it returns
// within the grace period without leaving a listed backup.
func TestUnreachableAndStop(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", testetcd.FreePort(t))
	_, cancel, done := start(t, scheduler.Config{
		Cluster:     cluster.Config{Endpoints: []string{fmt.Sprintf("127.0.0.1:%d", testetcd.FreePort(t))}, DialTimeout: 200 * time.Millisecond, CommandTimeout: 300 * time.Millisecond},
		MetricsAddr: addr,
	})
	waitFor(t, 20*time.Second, "a failed connection", func() bool {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		return err == nil && strings.Contains(string(body), `etcdkit_job_failures_total{task="connect"}`)
	})
	if code, _ := get(t, "http://"+addr+"/healthz"); code != 200 {
		t.Errorf("healthz %d", code)
	}
	if code, _ := get(t, "http://"+addr+"/readyz"); code != 503 {
		t.Errorf("readyz %d while unreachable", code)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	done <- nil

	m := testetcd.StartSingle(t)
	s3 := testetcd.StartS3(t, "bkp")
	url := s3.URL("bkp", "stop")
	s, cancel, done := start(t, scheduler.Config{
		Cluster: cluster.Config{Endpoints: []string{m.ClientURL}}, Repo: url, BackupSchedule: "@every 1s",
		Retries: 2, RetryBackoff: time.Second, StopGrace: 20 * time.Second,
	})
	waitFor(t, 20*time.Second, "active", s.Active)
	s3.Stop()
	waitFor(t, 30*time.Second, "a backup running against the dead store", func() bool { return s.Status().Running == "backup" })
	stopped := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
		done <- nil
	case <-time.After(25 * time.Second):
		t.Fatal("Run did not return after the stop")
	}
	t.Logf("stopped in %s", time.Since(stopped).Round(time.Millisecond))
	s3.Restart(t)
	listedBackupsCheck(t, s3.URL("bkp", "stop"))
}

// TestDrillJob: the scheduler's drill job restores the newest backup,
// boots it and checks it, records a success in its metrics; a repository
// whose newest backup's recorded HashKV was altered makes it a failed job
// with one log line naming the check, counted in etcdkit_drill_failures_total.
func TestDrillJob(t *testing.T) {
	m := testetcd.StartSingle(t)
	if _, err := testetcd.Load(testetcd.Ctx(t, time.Minute), m.Client(t), testetcd.LoadSpec{Keys: 100, Rounds: 1, Seed: 4}); err != nil {
		t.Fatal(err)
	}
	repoDir := filepath.Join(t.TempDir(), "repo")
	addr := fmt.Sprintf("127.0.0.1:%d", testetcd.FreePort(t))
	var logBuf syncBuffer
	s, cancel, _ := start(t, scheduler.Config{
		Cluster: cluster.Config{Endpoints: []string{m.ClientURL}},
		Repo:    repoDir, BackupAtStart: true, DrillSchedule: "@every 2s", Retries: 0,
		MetricsAddr: addr, Logger: slog.New(slog.NewJSONHandler(&logBuf, nil)),
	})
	waitFor(t, 60*time.Second, "a drill that passed", func() bool {
		for _, r := range s.Status().Runs {
			if r.Job == "drill" && r.Result == "success" {
				return true
			}
		}
		return false
	}, func() string { b, _ := json.MarshalIndent(s.Status(), "", " "); return string(b) })
	if _, body := get(t, "http://"+addr+"/metrics"); !strings.Contains(body, "etcdkit_drill_last_success_timestamp_seconds 1") ||
		!strings.Contains(body, `etcdkit_job_interval_seconds{task="drill"} 2`) {
		t.Fatalf("metrics:\n%s", body)
	}
	cancel() // the cleanup waits for it to stop
	waitFor(t, 30*time.Second, "the first scheduler to stop", func() bool { return !s.Active() })

	// Alter the recorded HashKV of the backup: the next drills fail.
	paths, err := filepath.Glob(filepath.Join(repoDir, "backups", "*", "manifest.json"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("manifests: %v %v", paths, err)
	}
	for _, p := range paths {
		b := testetcd.Must(os.ReadFile(p))(t)
		var man map[string]any
		if err := json.Unmarshal(b, &man); err != nil {
			t.Fatal(err)
		}
		h := man["hashKV"].(map[string]any)
		h["hash"] = h["hash"].(float64) + 1
		testetcd.WriteFile(t, p, testetcd.Must(json.Marshal(man))(t))
	}
	addr = fmt.Sprintf("127.0.0.1:%d", testetcd.FreePort(t))
	s2, _, _ := start(t, scheduler.Config{
		Cluster: cluster.Config{Endpoints: []string{m.ClientURL}},
		Repo:    repoDir, DrillSchedule: "@every 2s", Retries: 0,
		MetricsAddr: addr, Logger: slog.New(slog.NewJSONHandler(&logBuf, nil)), Name: "second",
	})
	waitFor(t, 60*time.Second, "a failed drill", func() bool {
		for _, r := range s2.Status().Runs {
			if r.Job == "drill" && r.Result == "failed" && strings.Contains(r.Error, "hashkv:") {
				return true
			}
		}
		return false
	}, func() string { b, _ := json.MarshalIndent(s2.Status(), "", " "); return string(b) })
	if _, body := get(t, "http://"+addr+"/metrics"); !strings.Contains(body, "etcdkit_drill_failures_total 1") && !strings.Contains(body, "etcdkit_drill_failures_total 2") {
		t.Fatalf("metrics:\n%s", body)
	}
	failed := 0
	for _, l := range strings.Split(logBuf.String(), "\n") {
		if strings.Contains(l, `"msg":"job failed"`) && strings.Contains(l, `"job":"drill"`) && strings.Contains(l, "hashkv:") {
			failed++
		}
	}
	if failed == 0 {
		t.Fatalf("no log line for the failed drill:\n%s", logBuf.String())
	}
}

// syncBuffer is a bytes.Buffer safe for the logger's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
