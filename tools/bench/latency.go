package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// latencyBench measures what maintenance costs a running cluster: a steady
// write load on a real 3-member etcd 3.7 cluster (fsync on, loopback),
// client latency p50/p99 and throughput while idle, during a backup into
// the repository, and during a rolling defrag. It returns the rows of its
// table.
func latencyBench() []string {
	dir := filepath.Join(*cacheDir, "latency")
	os.RemoveAll(dir)
	defer os.RemoveAll(dir)
	eps, stop := startCluster3(dir)
	defer stop()
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		log.Fatal(err)
	}
	defer cli.Close()
	ctx := context.Background()
	// Fill: 300 MB of data and as much history, so a backup and a defrag
	// have something to move.
	val := strings.Repeat("x", 1000)
	log.Printf("latency: filling the cluster")
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := w; b < 6000; b += 8 { // 600k puts in transactions of 100
				ops := make([]clientv3.Op, 0, 100)
				for i := b * 100; i < b*100+100; i++ {
					ops = append(ops, clientv3.OpPut(fmt.Sprintf("/fill/%07d", i%300_000), val))
				}
				if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
					log.Fatal(err)
				}
			}
		}()
	}
	wg.Wait()
	resp, err := cli.Get(ctx, "x")
	if err != nil {
		log.Fatal(err)
	}
	if _, err := cli.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		log.Fatal(err)
	}
	repo := filepath.Join(dir, "repo")
	endpoints := strings.Join(eps, ",")
	phases := []struct {
		name string
		work func() // runs during the window, repeatedly
	}{
		{"idle", nil},
		{"during etcdkit backup create (zstd, local repository)", func() {
			run(*etcdkit, "backup", "create", "--repo", repo, "--endpoints", endpoints)
		}},
		{"during etcdkit backup create --rate-limit 20MiB (zstd, local repository)", func() {
			run(*etcdkit, "backup", "create", "--repo", repo, "--endpoints", endpoints, "--rate-limit", "20MiB")
		}},
		{"during etcdkit backup create --rate-limit 20MiB --member-hashkv=false (zstd, local repository)", func() {
			run(*etcdkit, "backup", "create", "--repo", repo, "--endpoints", endpoints, "--rate-limit", "20MiB", "--member-hashkv=false")
		}},
		{"during etcdkit defrag --cluster (rolling, leader last)", func() {
			run(*etcdkit, "defrag", "--endpoints", endpoints, "--cluster")
		}},
	}
	var rows []string
	for _, ph := range phases {
		res := loadWindow(cli, 15*time.Second, 400, ph.work, nil)
		row := fmt.Sprintf("| %s | %.0f writes/s | %s | %s | %s | %d |", ph.name, res.rate, fmtMs(res.p50), fmtMs(res.p99), fmtMs(res.max), res.works)
		log.Print(row)
		rows = append(rows, row)
	}
	// The revision log follows the cluster through the window (it takes
	// its first full backup before it); its lag is read back from what
	// it stored.
	logRepo := filepath.Join(dir, "log-repo")
	lg := exec.Command(*etcdkit, "backup", "log", "--repo", logRepo, "--endpoints", endpoints, "--log-level", "warn")
	lg.Stderr = os.Stderr
	if err := lg.Start(); err != nil {
		log.Fatal(err)
	}
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(200 * time.Millisecond) {
		if ms, err := os.ReadDir(filepath.Join(logRepo, "backups")); err == nil && len(ms) > 0 {
			if _, err := os.Stat(filepath.Join(logRepo, "backups", ms[0].Name(), "manifest.json")); err == nil {
				break
			}
		}
		if time.Now().After(deadline) {
			log.Fatal("etcdkit backup log took no full backup")
		}
	}
	time.Sleep(2 * time.Second) // its watch is under way
	var mu sync.Mutex
	sent := map[int64]time.Time{}
	res := loadWindow(cli, 15*time.Second, 400, nil, func(rev int64, at time.Time) { mu.Lock(); sent[rev] = at; mu.Unlock() })
	lg.Process.Signal(syscall.SIGTERM)
	if err := lg.Wait(); err != nil {
		log.Fatalf("etcdkit backup log: %v", err)
	}
	p50, p99, maxLag, n := logLag(logRepo, sent)
	rows = append(rows,
		fmt.Sprintf("| during etcdkit backup log (the revision log, 10 s segments, zstd, local repository) | %.0f writes/s | %s | %s | %s | continuous |", res.rate, fmtMs(res.p50), fmtMs(res.p99), fmtMs(res.max)),
		fmt.Sprintf("| the revision log's lag under that load: write sent → revision received by the log (%d writes) | | %s | %s | %s | target p99 < 2 s |", n, fmtMs(p50), fmtMs(p99), fmtMs(maxLag)))
	log.Print(rows[len(rows)-2])
	log.Print(rows[len(rows)-1])
	return rows
}

type loadResult struct {
	rate          float64
	p50, p99, max time.Duration
	works         int
}

// loadWindow writes 1 KB values at a fixed rate (per second) from 16
// clients for d, while work runs again and again, and returns the latency
// of every write.
func loadWindow(cli *clientv3.Client, d time.Duration, rate int, work func(), onPut func(rev int64, sent time.Time)) loadResult {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	works := 0
	var wwg sync.WaitGroup
	if work != nil {
		wwg.Add(1)
		go func() {
			defer wwg.Done()
			for ctx.Err() == nil {
				work()
				works++
			}
		}()
	}
	ticks := make(chan struct{}, rate)
	go func() {
		t := time.NewTicker(time.Second / time.Duration(rate))
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				close(ticks)
				return
			case <-t.C:
				select {
				case ticks <- struct{}{}:
				default: // the clients fell behind: the write is lost, as its latency would be
				}
			}
		}
	}()
	var mu sync.Mutex
	var lat []time.Duration
	val := strings.Repeat("y", 1000)
	var wg sync.WaitGroup
	start := time.Now()
	for c := 0; c < 16; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			i := 0
			for range ticks {
				s := time.Now()
				r, err := cli.Put(context.Background(), fmt.Sprintf("/load/%02d/%05d", c, i%5000), val)
				if err != nil {
					log.Fatal(err)
				}
				if onPut != nil {
					onPut(r.Header.Revision, s)
				}
				i++
				mu.Lock()
				lat = append(lat, time.Since(s))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	wwg.Wait()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	q := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	return loadResult{rate: float64(len(lat)) / elapsed.Seconds(), p50: q(0.5), p99: q(0.99), max: lat[len(lat)-1], works: works}
}

func run(argv ...string) {
	if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
		log.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
}

func fmtMs(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

// startCluster3 runs three etcd 3.7 members on loopback (fsync on) and
// returns their client URLs.
func startCluster3(dir string) ([]string, func()) {
	var initial []string
	for i := 0; i < 3; i++ {
		initial = append(initial, fmt.Sprintf("m%d=http://127.0.0.1:%d", i, 23810+i))
	}
	var cmds []*exec.Cmd
	var eps []string
	for i := 0; i < 3; i++ {
		client := fmt.Sprintf("http://127.0.0.1:%d", 23820+i)
		peer := fmt.Sprintf("http://127.0.0.1:%d", 23810+i)
		cmd := exec.Command(filepath.Join(*etcdBins, "etcd"), "--name", fmt.Sprintf("m%d", i), "--data-dir", filepath.Join(dir, fmt.Sprintf("m%d", i)),
			"--listen-client-urls", client, "--advertise-client-urls", client, "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-token", "bench", "--quota-backend-bytes", fmt.Sprint(int64(8)<<30), "--log-level", "error")
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			log.Fatal(err)
		}
		cmds = append(cmds, cmd)
		eps = append(eps, client)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		log.Fatal(err)
	}
	defer cli.Close()
	for i := 0; ; i++ {
		if _, err := cli.Put(context.Background(), "ready", "1"); err == nil {
			break
		}
		if i > 300 {
			log.Fatal("the 3-member cluster did not start")
		}
		time.Sleep(200 * time.Millisecond)
	}
	return eps, func() {
		for _, c := range cmds {
			c.Process.Signal(syscall.SIGTERM)
			c.Wait()
		}
	}
}
