package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/etcdkit/etcdkit/backup"
	"github.com/etcdkit/etcdkit/internal/testetcd"
	"github.com/etcdkit/etcdkit/scheduler"
)

// cliProcess is etcdkit running as a child process.
type cliProcess struct {
	cmd  *exec.Cmd
	out  *bytes.Buffer
	done chan error
}

func startCLI(t *testing.T, env []string, args ...string) *cliProcess {
	t.Helper()
	p := &cliProcess{cmd: exec.Command(os.Args[0], args...), out: &bytes.Buffer{}, done: make(chan error, 1)}
	p.cmd.Env = append(append(os.Environ(), cliEnv+"=1"), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() { p.cmd.Process.Kill(); <-p.done; p.done <- nil })
	return p
}

func schedulerStatus(addr string) (scheduler.Status, bool) {
	resp, err := http.Get("http://" + addr + "/status")
	if err != nil {
		return scheduler.Status{}, false
	}
	defer resp.Body.Close()
	var st scheduler.Status
	return st, json.NewDecoder(resp.Body).Decode(&st) == nil
}

// TestSchedulerFailover runs three scheduler processes, one beside each
// member of a cluster, configured by flags, by ETCDKIT_* variables and by a
// YAML file; exactly one is active; after kill -9 of the active one another
// takes over within seconds; SIGTERM stops the others with exit code 0.
func TestSchedulerFailover(t *testing.T) {
	cl := testetcd.StartCluster(t, 3)
	repo := filepath.Join(t.TempDir(), "repo")
	var procs []*cliProcess
	var addrs []string
	for i, ep := range cl.Endpoints() {
		addr := fmt.Sprintf("127.0.0.1:%d", testetcd.FreePort(t))
		addrs = append(addrs, addr)
		base := []string{"scheduler", "--session-ttl", "2", "--name", fmt.Sprintf("s%d", i)}
		var env []string
		switch i {
		case 0: // flags
			base = append(base, "--endpoints", ep, "--repo", repo, "--backup-schedule", "@every 1s", "--metrics-addr", addr)
		case 1: // environment
			env = []string{"ETCDKIT_ENDPOINTS=" + ep, "ETCDKIT_REPO=" + repo, "ETCDKIT_BACKUP_SCHEDULE=@every 1s", "ETCDKIT_METRICS_ADDR=" + addr}
		case 2: // YAML
			cfg := filepath.Join(t.TempDir(), "scheduler.yaml")
			testetcd.WriteFile(t, cfg, []byte(fmt.Sprintf("endpoints: %s\nrepo: %s\nbackup-schedule: \"@every 1s\"\nmetrics-addr: %s\nkeep-last: 5\n", ep, repo, addr)))
			base = append(base, "--config", cfg)
		}
		procs = append(procs, startCLI(t, env, base...))
	}
	active := func() int {
		who := -1
		for i, a := range addrs {
			if st, ok := schedulerStatus(a); ok && st.Active {
				if who >= 0 {
					t.Fatalf("two active schedulers: %d and %d", who, i)
				}
				who = i
			}
		}
		return who
	}
	deadline := time.Now().Add(30 * time.Second)
	for active() < 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no active scheduler; logs:\n%s\n%s\n%s", procs[0].out, procs[1].out, procs[2].out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	first := active()
	procs[first].cmd.Process.Signal(syscall.SIGKILL)
	start := time.Now()
	for {
		if w := active(); w >= 0 && w != first {
			t.Logf("scheduler %d took over from %d in %s", w, first, time.Since(start).Round(time.Millisecond))
			if out, errOut, code := runCLI("scheduler", "status", "--metrics-addr", addrs[w]); code != 0 || !strings.Contains(out, "active true") {
				t.Errorf("scheduler status: exit %d, %q %q", code, out, errOut)
			}
			break
		}
		if time.Since(start) > 20*time.Second {
			t.Fatalf("no takeover after kill -9 of %d", first)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The new active instance takes backups.
	r := testetcd.Must(backup.Open(context.Background(), repo))(t)
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if l, err := r.List(context.Background()); err == nil && len(l) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no backups; logs:\n%s\n%s\n%s", procs[0].out, procs[1].out, procs[2].out)
		}
	}
	for i, p := range procs {
		if i == first {
			continue
		}
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-p.done:
			p.done <- err
			if err != nil {
				t.Errorf("scheduler %d after SIGTERM: %v\n%s", i, err, p.out)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("scheduler %d did not stop on SIGTERM", i)
		}
	}
}

// TestServeEndToEnd: serve with a 5-second backup schedule under write
// load; after a few backups the newest is restored with etcdkit, a real
// etcd starts on it, and every key written up to that backup's revision is
// there with its value, and none written after it. Ctrl-C (SIGINT) then
// stops serve with exit 0, and everything it printed is one log format
// (slog's JSON lines, etcd's messages included) with nothing at error level.
func TestServeEndToEnd(t *testing.T) {
	dir := t.TempDir()
	cport, pport := testetcd.FreePort(t), testetcd.FreePort(t)
	curl, purl := fmt.Sprintf("http://127.0.0.1:%d", cport), fmt.Sprintf("http://127.0.0.1:%d", pport)
	srv := startCLI(t, nil, "serve", "--data-dir", filepath.Join(dir, "default.etcd"),
		"--listen-client-urls", curl, "--advertise-client-urls", curl, "--listen-peer-urls", purl, "--initial-advertise-peer-urls", purl,
		"--backup-schedule", "@every 5s", "--metrics-addr", fmt.Sprintf("127.0.0.1:%d", testetcd.FreePort(t)))
	cli := testetcd.NewClient(t, curl)
	type write struct {
		key, value string
		rev        int64
	}
	var mu sync.Mutex
	var writes []write
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ctx.Err() == nil; i++ {
			k, v := fmt.Sprintf("/e2e/%05d", i), fmt.Sprintf("value-%d", i)
			resp, err := cli.Put(ctx, k, v)
			if err != nil {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			mu.Lock()
			writes = append(writes, write{k, v, resp.Header.Revision})
			mu.Unlock()
			time.Sleep(5 * time.Millisecond)
		}
	})
	r, err := backup.Open(context.Background(), filepath.Join(dir, "backups"))
	if err != nil {
		t.Fatal(err)
	}
	var list []backup.Manifest
	for deadline := time.Now().Add(60 * time.Second); len(list) < 3; time.Sleep(500 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d backups after 60s (last list: %v)", len(list), err)
		}
		list, err = r.List(context.Background())
	}
	cancel()
	wg.Wait()
	newest := list[len(list)-1]

	restored := filepath.Join(t.TempDir(), "restored.etcd")
	rcPort, rpPort := testetcd.FreePort(t), testetcd.FreePort(t)
	if out, errOut, code := runCLI("snapshot", "restore", "--repo", filepath.Join(dir, "backups"), "--backup", "latest",
		"--name", "restored", "--data-dir", restored, "--initial-advertise-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", rpPort)); code != 0 {
		t.Fatalf("restore: exit %d %s %s", code, out, errOut)
	}
	p := testetcd.StartProcess(t, testetcd.Binaries(t, "3.7"), testetcd.ProcessConfig{Name: "restored", DataDir: restored, ClientPort: rcPort, PeerPort: rpPort})
	p.WaitReady(t)
	got := testetcd.NewClient(t, p.ClientURL)
	present, absent := 0, 0
	for _, w := range writes {
		resp, err := got.Get(context.Background(), w.key)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case w.rev <= newest.Revision && (len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != w.value):
			t.Fatalf("%s (revision %d <= backup %d) missing or wrong: %v", w.key, w.rev, newest.Revision, resp.Kvs)
		case w.rev > newest.Revision && len(resp.Kvs) != 0:
			t.Fatalf("%s (revision %d > backup %d) present", w.key, w.rev, newest.Revision)
		case w.rev <= newest.Revision:
			present++
		default:
			absent++
		}
	}
	if present == 0 {
		t.Fatal("no write before the backup")
	}
	t.Logf("%d backups; the newest at revision %d holds all %d earlier writes and none of %d later", len(list), newest.Revision, present, absent)

	if err := srv.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-srv.done:
		srv.done <- err
		if err != nil {
			t.Fatalf("serve after Ctrl-C: %v\n%s", err, srv.out)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop within 30s of Ctrl-C")
	}
	checkOneLogFormat(t, srv.out.String())
}

// checkOneLogFormat: every line is a slog JSON record (time, level, msg;
// never zap's ts), none at error level, and etcd's own messages are among
// them (routed, not dropped).
func checkOneLogFormat(t *testing.T, out string) {
	t.Helper()
	etcdLines := 0
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("not a JSON log line: %q", line)
		}
		_, hasTS := rec["ts"]
		if rec["time"] == nil || rec["msg"] == nil || hasTS {
			t.Errorf("not etcdkit's log format: %q", line)
		}
		switch rec["level"] {
		case "DEBUG", "INFO", "WARN":
		default:
			t.Errorf("level %v on a clean run and stop: %q", rec["level"], line)
		}
		if rec["component"] == "etcd" {
			etcdLines++
		}
	}
	if etcdLines == 0 {
		t.Errorf("no message of etcd's in the log:\n%s", out)
	}
}
