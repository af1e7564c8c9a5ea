package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"filippo.io/age"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// ensureSnapshot returns the cached benchmark snapshot, generating it with a
// real etcd 3.7 when it is missing or was made with other parameters.
func ensureSnapshot() string {
	stamp := fmt.Sprintf("keys=%d rounds=%d value=%d\n", *keys, *rounds, *valueSize)
	snap := filepath.Join(*cacheDir, "snapshot.db")
	if b, err := os.ReadFile(snap + ".spec"); err == nil && string(b) == stamp {
		if _, err := os.Stat(snap); err == nil {
			return snap
		}
	}
	log.Printf("generating the benchmark snapshot (%s): this takes a few minutes once", strings.TrimSpace(stamp))
	dataDir := filepath.Join(*cacheDir, "gen.etcd")
	os.RemoveAll(dataDir)
	defer os.RemoveAll(dataDir)
	stop, cli, url := startEtcd(dataDir)
	defer stop()
	ctx := context.Background()
	lease, err := cli.Grant(ctx, 86400)
	if err != nil {
		log.Fatal(err)
	}
	const batch, workers = 50, 4
	val := strings.Repeat("v", *valueSize)
	start := time.Now()
	for r := 0; r < *rounds; r++ {
		var wg sync.WaitGroup
		next := make(chan int)
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for first := range next {
					var ops []clientv3.Op
					for i := first; i < first+batch && i < *keys; i++ {
						var opts []clientv3.OpOption
						if i%100 == 0 {
							opts = append(opts, clientv3.WithLease(lease.ID))
						}
						v := fmt.Sprintf("r%d-%d-", r, i) + val
						ops = append(ops, clientv3.OpPut(fmt.Sprintf("/registry/bench/ns-%03d/obj-%08d", i%200, i), v[:*valueSize], opts...))
					}
					if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
						log.Fatal(err)
					}
				}
			}()
		}
		for i := 0; i < *keys; i += batch {
			next <- i
		}
		close(next)
		wg.Wait()
		log.Printf("round %d/%d written (%s)", r+1, *rounds, time.Since(start).Round(time.Second))
	}
	saveSnapshot(url, snap, stamp)
	return snap
}

// saveSnapshot saves the served db with etcdctl to snap (under a
// temporary name, renamed last) and records stamp beside it.
func saveSnapshot(url, snap, stamp string) {
	tmp := snap + ".part"
	save := exec.Command(filepath.Join(*etcdBins, "etcdctl"), "--endpoints", url, "--command-timeout", "10m", "snapshot", "save", tmp)
	save.Stdout, save.Stderr = os.Stderr, os.Stderr
	if err := save.Run(); err != nil {
		log.Fatalf("etcdctl snapshot save: %v", err)
	}
	if err := os.Rename(tmp, snap); err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(snap+".spec", []byte(stamp), 0o644); err != nil {
		log.Fatal(err)
	}
}

// startEtcd runs the etcd 3.7 binary on dataDir on fixed loopback ports and
// waits until it answers; stop terminates it cleanly.
func startEtcd(dataDir string) (stop func(), cli *clientv3.Client, url string) {
	return startEtcdOn(dataDir, 23790, 23800)
}

// startEtcdOn is startEtcd on the given client and peer ports.
func startEtcdOn(dataDir string, clientPort, peerPort int) (stop func(), cli *clientv3.Client, url string) {
	url = fmt.Sprintf("http://127.0.0.1:%d", clientPort)
	peer := fmt.Sprintf("http://127.0.0.1:%d", peerPort)
	cmd := exec.Command(filepath.Join(*etcdBins, "etcd"), "--data-dir", dataDir,
		"--listen-client-urls", url, "--advertise-client-urls", url,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "default="+peer,
		"--quota-backend-bytes", fmt.Sprint(int64(8)<<30), "--unsafe-no-fsync", "--log-level", "error")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		log.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{url}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		log.Fatal(err)
	}
	for i := 0; ; i++ {
		if _, err = cli.Get(context.Background(), "x"); err == nil {
			break
		}
		if i > 300 {
			log.Fatalf("etcd did not start: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return func() {
		cli.Close()
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}, cli, url
}

// ensureCompacted returns a member's db holding the benchmark data after a
// compaction at the latest revision: about two thirds of its pages are free,
// which is what defrag is for. It is made once from the snapshot (restored,
// booted on etcd 3.7, compacted) and cached.
func ensureCompacted(snap string) string {
	db := filepath.Join(*cacheDir, "compacted.db")
	if fi, err := os.Stat(db); err == nil {
		if si, err := os.Stat(snap); err == nil && fi.ModTime().After(si.ModTime()) {
			return db
		}
	}
	log.Printf("generating the compacted db for defrag")
	dataDir := filepath.Join(*cacheDir, "compact.etcd")
	os.RemoveAll(dataDir)
	defer os.RemoveAll(dataDir)
	if out, err := exec.Command(*etcdkit, "snapshot", "restore", snap, "--data-dir", dataDir, "--bump-revision", "0",
		"--initial-advertise-peer-urls", "http://127.0.0.1:23800", "--initial-cluster", "default=http://127.0.0.1:23800").CombinedOutput(); err != nil {
		log.Fatalf("restore: %v\n%s", err, out)
	}
	stop, cli, _ := startEtcd(dataDir)
	ctx := context.Background()
	resp, err := cli.Get(ctx, "x")
	if err != nil {
		log.Fatal(err)
	}
	if _, err := cli.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		log.Fatal(err)
	}
	stop()
	if err := copyFile(filepath.Join(dataDir, "member", "snap", "db"), db+".part"); err != nil {
		log.Fatal(err)
	}
	if err := os.Rename(db+".part", db); err != nil {
		log.Fatal(err)
	}
	return db
}

// ensureRepo returns a backup repository holding one backup of the
// benchmark data (uncompressed, as the drill's input): made once by
// restoring the snapshot, booting etcd 3.7 on it and running etcdkit
// backup create, and cached.
func ensureRepo(snap string) string {
	return ensureRepoAs(snap, "repo", "--compression", "none")
}

// ensureRepoAs is ensureRepo for a repository named name under the cache,
// its backup created with the given backup create flags.
func ensureRepoAs(snap, name string, flags ...string) string {
	repo := filepath.Join(*cacheDir, name)
	stamp := filepath.Join(*cacheDir, name+".done")
	if fi, err := os.Stat(stamp); err == nil {
		if si, err := os.Stat(snap); err == nil && fi.ModTime().After(si.ModTime()) {
			return repo
		}
	}
	log.Printf("generating the backup repository %s", name)
	os.RemoveAll(repo)
	dataDir := filepath.Join(*cacheDir, "repo.etcd")
	os.RemoveAll(dataDir)
	defer os.RemoveAll(dataDir)
	if out, err := exec.Command(*etcdkit, "snapshot", "restore", snap, "--data-dir", dataDir, "--bump-revision", "0",
		"--initial-advertise-peer-urls", "http://127.0.0.1:23800", "--initial-cluster", "default=http://127.0.0.1:23800").CombinedOutput(); err != nil {
		log.Fatalf("restore: %v\n%s", err, out)
	}
	stop, _, url := startEtcd(dataDir)
	out, err := exec.Command(*etcdkit, append([]string{"backup", "create", "--repo", repo, "--endpoints", url, "--command-timeout", "10m"}, flags...)...).CombinedOutput()
	stop()
	if err != nil {
		log.Fatalf("backup create: %v\n%s", err, out)
	}
	if err := os.WriteFile(stamp, nil, 0o644); err != nil {
		log.Fatal(err)
	}
	return repo
}

// ensureAgeKey returns an age identity file and its recipient, made once.
func ensureAgeKey() (identityFile, recipient string) {
	identityFile = filepath.Join(*cacheDir, "age.key")
	b, err := os.ReadFile(identityFile)
	if err != nil {
		id, err := age.GenerateX25519Identity()
		if err != nil {
			log.Fatal(err)
		}
		b = []byte(id.String() + "\n")
		if err := os.WriteFile(identityFile, b, 0o600); err != nil {
			log.Fatal(err)
		}
	}
	id, err := age.ParseX25519Identity(strings.TrimSpace(string(b)))
	if err != nil {
		log.Fatal(err)
	}
	return identityFile, id.Recipient().String()
}

// startS3 serves dir over S3 with versitygw on loopback (the test suite's
// server, from the tool cache) with the repository copied into bucket
// "bench", and returns the repository URL and a stop function. The
// credentials go into the environment, for the etcdkit processes.
func startS3(repo, versitygw string) (url string, stop func()) {
	dir := filepath.Join(*cacheDir, "s3")
	os.RemoveAll(dir)
	if err := os.MkdirAll(filepath.Join(dir, "bench"), 0o755); err != nil {
		log.Fatal(err)
	}
	os.Setenv("AWS_ACCESS_KEY_ID", "etcdkit-bench")
	os.Setenv("AWS_SECRET_ACCESS_KEY", "etcdkit-bench-secret")
	cmd := exec.Command(versitygw, "--access", "etcdkit-bench", "--secret", "etcdkit-bench-secret", "--port", "127.0.0.1:23900", "posix", dir)
	if err := cmd.Start(); err != nil {
		log.Fatalf("versitygw: %v", err)
	}
	stop = func() { cmd.Process.Kill(); cmd.Wait(); os.RemoveAll(dir) }
	url = "s3://bench/repo?endpoint=http://127.0.0.1:23900&region=us-east-1"
	for i := 0; ; i++ {
		out, err := exec.Command(*etcdkit, "backup", "copy", "--repo", repo, "--to", url).CombinedOutput()
		if err == nil {
			break
		}
		if i > 50 {
			stop()
			log.Fatalf("backup copy to S3: %v\n%s", err, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return url, stop
}

// serveSnapshot starts etcd 3.7 on a restore of the snapshot (made once and
// reused) and returns its client URL.
func serveSnapshot(snap string) (string, func()) {
	dataDir := filepath.Join(*cacheDir, "serve.etcd")
	stamp := dataDir + ".done"
	if fi, err := os.Stat(stamp); err != nil || func() bool { si, err := os.Stat(snap); return err != nil || si.ModTime().After(fi.ModTime()) }() {
		os.RemoveAll(dataDir)
		if out, err := exec.Command(*etcdkit, "snapshot", "restore", snap, "--data-dir", dataDir, "--bump-revision", "0",
			"--initial-advertise-peer-urls", "http://127.0.0.1:23801", "--initial-cluster", "default=http://127.0.0.1:23801").CombinedOutput(); err != nil {
			log.Fatalf("restore: %v\n%s", err, out)
		}
		if err := os.WriteFile(stamp, nil, 0o644); err != nil {
			log.Fatal(err)
		}
	}
	stop, _, url := startEtcdOn(dataDir, 23791, 23801)
	return url, stop
}
