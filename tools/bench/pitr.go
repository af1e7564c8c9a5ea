package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/etcdkit/etcdkit/backup"
	"github.com/etcdkit/etcdkit/pitr"
)

// pitrEvents is how many events the point-in-time row's log holds.
const pitrEvents = 1_000_000

// pitrData is the point-in-time row's repository: the bench snapshot as a
// full backup and a revision log of pitrEvents events written after it by
// a real etcd 3.7 serving that snapshot, logged by etcdkit backup log.
type pitrData struct {
	Repo      string  `json:"repo"`
	Backup    string  `json:"backup"`
	From      int64   `json:"from"`
	To        int64   `json:"to"`
	Events    int64   `json:"events"`
	RawBytes  int64   `json:"rawBytes"` // of the log's segments
	Stored    int64   `json:"storedBytes"`
	Segments  int     `json:"segments"`
	WriteSecs float64 `json:"writeSeconds"`
}

// ensurePITR builds the repository once (cached, with a stamp holding its
// facts).
func ensurePITR(snap string) pitrData {
	dir := filepath.Join(*cacheDir, "pitr")
	stamp := filepath.Join(dir, "done.json")
	var d pitrData
	if b, err := os.ReadFile(stamp); err == nil && json.Unmarshal(b, &d) == nil {
		if si, err := os.Stat(snap); err == nil {
			if fi, err := os.Stat(stamp); err == nil && fi.ModTime().After(si.ModTime()) {
				return d
			}
		}
	}
	os.RemoveAll(dir)
	log.Printf("pitr: building a repository with a %d-event revision log (once)", pitrEvents)
	d.Repo = filepath.Join(dir, "repo")
	dataDir := filepath.Join(dir, "serve.etcd")
	run(*etcdkit, "snapshot", "restore", snap, "--data-dir", dataDir, "--bump-revision", "0",
		"--initial-advertise-peer-urls", "http://127.0.0.1:23802", "--initial-cluster", "default=http://127.0.0.1:23802")
	stop, _, url := startEtcdOn(dataDir, 23792, 23802)
	run(*etcdkit, "backup", "create", "--repo", d.Repo, "--endpoints", url, "--command-timeout", "30m")
	lg := exec.Command(*etcdkit, "backup", "log", "--repo", d.Repo, "--endpoints", url, "--log-level", "warn")
	lg.Stderr = os.Stderr
	if err := lg.Start(); err != nil {
		log.Fatal(err)
	}
	r, err := backup.Open(context.Background(), d.Repo)
	if err != nil {
		log.Fatal(err)
	}
	time.Sleep(2 * time.Second) // the log's watch is under way
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{url}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		log.Fatal(err)
	}
	defer cli.Close()
	// Transactions of 1 to 16 changes (puts of about 230-byte JSON values
	// with 96 random hex digits, over 200k keys; a tenth deletes), from
	// 32 clients.
	start := time.Now()
	var wg sync.WaitGroup
	// A tenth of the changes are deletes, some of keys already gone
	// (no event): write 10% more changes than events wanted.
	per := pitrEvents * 11 / 10 / 32
	for w := range 32 {
		wg.Go(func() {
			rnd := rand.New(rand.NewPCG(uint64(w), 7))
			for done := 0; done < per; {
				n := min(1+rnd.IntN(16), per-done)
				seen := map[string]bool{}
				var ops []clientv3.Op
				for range n {
					k := fmt.Sprintf("/pitr/%06d", rnd.IntN(200_000))
					if seen[k] {
						continue
					}
					seen[k] = true
					if rnd.IntN(10) == 0 {
						ops = append(ops, clientv3.OpDelete(k))
					} else {
						ops = append(ops, clientv3.OpPut(k, fmt.Sprintf(`{"kind":"ConfigMap","metadata":{"name":"%s","generation":%d},"data":{"token":"%016x%016x%016x%016x%016x%016x"}}`,
							k, done, rnd.Uint64(), rnd.Uint64(), rnd.Uint64(), rnd.Uint64(), rnd.Uint64(), rnd.Uint64())))
					}
				}
				if _, err := cli.Txn(context.Background()).Then(ops...).Commit(); err != nil {
					log.Fatal(err)
				}
				done += len(ops)
			}
		})
	}
	wg.Wait()
	d.WriteSecs = time.Since(start).Seconds()
	resp, err := cli.Get(context.Background(), "x")
	if err != nil {
		log.Fatal(err)
	}
	d.To = resp.Header.Revision
	ms, err := r.List(context.Background())
	if err != nil || len(ms) != 1 {
		log.Fatalf("pitr repository: %v, %d backups", err, len(ms))
	}
	d.Backup, d.From = ms[0].ID, ms[0].Revision
	for deadline := time.Now().Add(5 * time.Minute); ; time.Sleep(time.Second) {
		segs, err := r.Segments(context.Background())
		if err != nil {
			log.Fatal(err)
		}
		if w := backup.Reach(ms[0], segs); w.To >= d.To {
			break
		}
		if time.Now().After(deadline) {
			log.Fatal("pitr: the log did not reach the last revision")
		}
	}
	lg.Process.Signal(syscall.SIGTERM)
	if err := lg.Wait(); err != nil {
		log.Fatalf("etcdkit backup log: %v", err)
	}
	segs, err := r.Segments(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	for _, s := range segs {
		d.Events += s.Events
		d.RawBytes += s.Size
		d.Stored += s.StoredSize
		d.Segments++
	}
	stop()
	os.RemoveAll(dataDir)
	b, _ := json.Marshal(d)
	if err := os.WriteFile(stamp, b, 0o644); err != nil {
		log.Fatal(err)
	}
	log.Printf("pitr: %+v", d)
	return d
}

// pitrNote is the row under the point-in-time restore: what the log's
// share of the restore costs, per event and per MB, against gardener's
// published figure.
func pitrNote(d pitrData, kit, peer sample) string {
	share := (kit.wall - peer.wall).Seconds()
	mb := float64(d.RawBytes) / 1e6
	rate, perMB := "-", "-"
	if share > 0 {
		rate = fmt.Sprintf("%.0f events/s, %.0f MB/s", float64(d.Events)/share, mb/share)
		perMB = fmt.Sprintf("%.4f s/MB", share/mb)
	}
	return fmt.Sprintf("| log replay: the log's share of the point-in-time restore above | %.2fs | | | %d events, %.0f MB raw (%.0f MB stored, %d segments): %s, %s; gardener: 22 s for 344 MB full + 232 MB of deltas with fsync off, at least 0.095 s/MB of deltas; target ≤ 0.0095 s/MB (10x) | | | | |",
		share, d.Events, mb, float64(d.Stored)/1e6, d.Segments, rate, perMB)
}

// logLag is the revision log's delay under load: for every write of the
// load window, the time from the client sending it to the log receiving
// its revision (an upper bound of the true delay, which starts at the
// commit), read back from the stored segments.
func logLag(repoDir string, sent map[int64]time.Time) (p50, p99, max time.Duration, n int) {
	r, err := backup.Open(context.Background(), repoDir)
	if err != nil {
		log.Fatal(err)
	}
	segs, err := r.Segments(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	var lags []time.Duration
	for _, s := range segs {
		if s.Gap {
			log.Fatalf("the log recorded a gap under load: %+v", s)
		}
		err := pitr.Received(context.Background(), r, s, nil, func(rev int64, at time.Time) {
			if t, ok := sent[rev]; ok {
				lags = append(lags, at.Sub(t))
			}
		})
		if err != nil {
			log.Fatal(err)
		}
	}
	if len(lags) == 0 {
		log.Fatal("the log holds none of the load's writes")
	}
	sort.Slice(lags, func(i, j int) bool { return lags[i] < lags[j] })
	q := func(p float64) time.Duration { return lags[min(len(lags)-1, int(p*float64(len(lags))))] }
	return q(0.5), q(0.99), lags[len(lags)-1], len(lags)
}
