package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sys/unix"

	"github.com/etcdkit/etcdkit/cluster"
	"github.com/etcdkit/etcdkit/internal/testetcd"
	"github.com/etcdkit/etcdkit/restore"
	"github.com/etcdkit/etcdkit/save"
)

// TestRestoreCLI runs snapshot restore through the CLI: etcdutl's flags,
// --output-dir, -w json, and the exit code and one-line message of each
// refusal.
func TestRestoreCLI(t *testing.T) {
	p, loaded := testetcd.LoadedProcess(t, "3.7", testetcd.LoadSpec{Keys: 200, Rounds: 2, Seed: 3})
	snap := testetcd.SaveSnapshot(t, p)
	p.Stop()
	dir := t.TempDir()

	t.Run("etcdutl flags", func(t *testing.T) {
		out, errOut, code := runCLI("snapshot", "restore", snap, "--name", "m1",
			"--initial-cluster", "m1=http://127.0.0.1:2380,m2=http://127.0.0.1:2381",
			"--initial-advertise-peer-urls", "http://127.0.0.1:2380", "--initial-cluster-token", "t1",
			"--data-dir", filepath.Join(dir, "m1"), "--wal-dir", filepath.Join(dir, "m1-wal"),
			"--bump-revision", "100", "--mark-compacted", "-w", "json")
		if code != 0 || errOut != "" {
			t.Fatalf("exit %d, stderr %q", code, errOut)
		}
		var res restore.Result
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatalf("%v: %q", err, out)
		}
		if len(res.Members) != 1 || res.Members[0].Name != "m1" || res.Members[0].WALDir != filepath.Join(dir, "m1-wal") || res.Revision != loaded.Revision+100 || res.SHA256 == "" {
			t.Errorf("result %+v", res)
		}
		if _, err := os.Stat(filepath.Join(dir, "m1-wal", "0000000000000000-0000000000000000.wal")); err != nil {
			t.Error(err)
		}
	})
	t.Run("dry run", func(t *testing.T) {
		target := filepath.Join(dir, "dry")
		out, errOut, code := runCLI("snapshot", "restore", snap, "--dry-run", "--data-dir", target, "-w", "json",
			"--bump-revision", "7", "--mark-compacted")
		var res restore.Result
		if code != 0 || errOut != "" || json.Unmarshal([]byte(out), &res) != nil || !res.DryRun || res.Revision != loaded.Revision+7 || res.SHA256 == "" || len(res.Members) != 1 {
			t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
		}
		if _, err := os.Stat(target); !os.IsNotExist(err) {
			t.Fatalf("a dry run created %s: %v", target, err)
		}
		if out, _, code := runCLI("snapshot", "restore", snap, "--dry-run", "--data-dir", target); code != 0 || !strings.Contains(out, "dry run: every check passed; nothing was written") {
			t.Fatalf("simple: exit %d, %q", code, out)
		}
		expectFailure(t, []string{"snapshot", "restore", "--repo", dir, "--dry-run", "--data-dir", target}, exitUsage, "backup check")
	})
	t.Run("output-dir", func(t *testing.T) {
		out, errOut, code := runCLI("snapshot", "restore", snap, "--output-dir", filepath.Join(dir, "all"),
			"--initial-cluster", "a=http://127.0.0.1:2380,b=http://127.0.0.1:2381,c=http://127.0.0.1:2382")
		// The loader's data is Kubernetes-shaped: bumped by default.
		if code != 0 || !strings.HasPrefix(errOut, "note: Kubernetes data") || strings.Count(errOut, "\n") != 1 {
			t.Fatalf("exit %d, stderr %q", code, errOut)
		}
		if !strings.Contains(out, fmt.Sprint(loaded.Revision+restore.KubernetesBump)) {
			t.Errorf("want the bumped revision %d in %q", loaded.Revision+restore.KubernetesBump, out)
		}
		if n := strings.Count(out, "\n"); n != 3 {
			t.Errorf("want one line per member, got %q", out)
		}
		for _, m := range []string{"a", "b", "c"} {
			if _, err := os.Stat(filepath.Join(dir, "all", m+".etcd", "member", "snap", "db")); err != nil {
				t.Error(err)
			}
		}
	})
	t.Run("default name and cluster", func(t *testing.T) {
		// Like etcdutl, but --initial-cluster follows --name.
		out, errOut, code := runCLI("snapshot", "restore", snap, "--name", "solo", "--data-dir", filepath.Join(dir, "solo"))
		if code != 0 || !strings.HasPrefix(out, "solo, ") {
			t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
		}
	})

	damaged := filepath.Join(dir, "damaged.db")
	testetcd.CopyFile(t, snap, damaged)
	testetcd.FlipByte(t, damaged, testetcd.Must(os.Stat(snap))(t).Size()/3)
	raw := filepath.Join(dir, "raw.db")
	testetcd.CopyFile(t, p.DBPath(), raw)
	full := filepath.Join(dir, "full")
	os.MkdirAll(filepath.Join(full, "member"), 0o700)
	tests := []struct {
		name     string
		args     []string
		code     int
		contains string
	}{
		{"hash mismatch", []string{"snapshot", "restore", damaged, "--data-dir", filepath.Join(dir, "x")}, exitMismatch, "damaged.db: snapshot sha256 mismatch: expected "},
		{"no trailer", []string{"snapshot", "restore", raw, "--data-dir", filepath.Join(dir, "x")}, exitInput, "raw.db: snapshot has no sha256 trailer"},
		{"not empty", []string{"snapshot", "restore", snap, "--data-dir", full}, exitRefused, "not empty"},
		{"bump alone", []string{"snapshot", "restore", snap, "--bump-revision", "5", "--data-dir", filepath.Join(dir, "x")}, exitUsage, "--mark-compacted"},
		{"output-dir with data-dir", []string{"snapshot", "restore", snap, "--output-dir", dir, "--data-dir", filepath.Join(dir, "x")}, exitUsage, "--output-dir"},
		{"name not in cluster", []string{"snapshot", "restore", snap, "--name", "x", "--initial-cluster", "y=http://127.0.0.1:2380", "--data-dir", filepath.Join(dir, "x")}, exitUsage, "x"},
		{"no file", []string{"snapshot", "restore", "--data-dir", filepath.Join(dir, "x")}, exitUsage, "expected one snapshot FILE"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { expectFailure(t, tc.args, tc.code, tc.contains) })
	}
	if _, err := os.Stat(filepath.Join(dir, "x")); err == nil {
		t.Error("a failed restore left its data dir")
	}
	if _, err := os.Stat(raw); err != nil {
		t.Error(err)
	}
}

// TestProgress: long offline commands draw a progress bar when stderr is
// a terminal, and print nothing on stderr otherwise.
func TestProgress(t *testing.T) {
	m := testetcd.StartSingle(t)
	if _, err := testetcd.Load(testetcd.Ctx(t, time.Minute), m.Client(t), testetcd.LoadSpec{Keys: 100, Seed: 1}); err != nil {
		t.Fatal(err)
	}
	m.Stop()
	dir := t.TempDir()
	for _, tc := range []struct {
		label string
		args  func(name string) []string
	}{
		{"restoring", func(name string) []string {
			return []string{"snapshot", "restore", m.DBPath(), "--skip-hash-check", "--bump-revision", "0", "--data-dir", filepath.Join(dir, name)}
		}},
		{"reading", func(string) []string { return []string{"snapshot", "status", m.DBPath()} }},
		{"verifying db", func(string) []string { return []string{"verify", "data-dir", m.DataDir} }},
	} {
		t.Run(tc.label, func(t *testing.T) {
			_, errOut, code := runCLI(tc.args("quiet")...)
			if code != 0 || errOut != "" {
				t.Fatalf("not a terminal: exit %d, stderr %q", code, errOut)
			}
			ptmx, tty := openPTY(t)
			stdout, err := os.Create(filepath.Join(t.TempDir(), "stdout"))
			if err != nil {
				t.Fatal(err)
			}
			// The terminal is drained while the command runs (a full pty
			// buffer would block its writes) and until the last write:
			// one read returns only what one write put there.
			drained := make(chan []byte)
			go func() {
				var all []byte
				buf := make([]byte, 4096)
				for {
					n, err := ptmx.Read(buf)
					all = append(all, buf[:n]...)
					if err != nil { // EIO once the terminal side is closed and drained
						drained <- all
						return
					}
				}
			}()
			code = run(append([]string{"etcdkit"}, tc.args("tty")...), stdout, tty)
			tty.Close()
			if got := string(<-drained); code != 0 || !strings.Contains(got, tc.label+" [") || !strings.Contains(got, "100%") {
				t.Fatalf("terminal: exit %d, stderr %q", code, got)
			}
		})
	}
}

// openPTY opens a pseudo-terminal pair: the controlling side and the
// terminal a program writes to.
func openPTY(t *testing.T) (ptmx, tty *os.File) {
	t.Helper()
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ptmx.Close() })
	if err := unix.IoctlSetPointerInt(int(ptmx.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(ptmx.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	tty, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	return ptmx, tty
}

// TestRestoreKubernetesDefault: Kubernetes data (keys under /registry/) is
// restored with its revisions bumped by a billion and compacted, said in
// one line, so a watch from a revision the old cluster served is told it
// was compacted (clients re-list); --bump-revision 0 opts out; other data
// is restored as etcdutl restores it.
func TestRestoreKubernetesDefault(t *testing.T) {
	m := testetcd.StartSingle(t)
	cli := m.Client(t)
	ctx := testetcd.Ctx(t, time.Minute)
	for i := range 10 {
		if _, err := cli.Put(ctx, fmt.Sprintf("/app/%d", i), "v"); err != nil {
			t.Fatal(err)
		}
	}
	plain := filepath.Join(t.TempDir(), "plain.db")
	testetcd.Must(save.Snapshot(ctx, testetcd.Must(cluster.Connect(ctx, cluster.Config{Endpoints: []string{m.ClientURL}}))(t), plain, save.Options{}))(t)
	put, err := cli.Put(ctx, "/registry/configmaps/default/cm", "v")
	if err != nil {
		t.Fatal(err)
	}
	kube := filepath.Join(t.TempDir(), "kube.db")
	testetcd.Must(save.Snapshot(ctx, testetcd.Must(cluster.Connect(ctx, cluster.Config{Endpoints: []string{m.ClientURL}}))(t), kube, save.Options{}))(t)
	rev := put.Header.Revision

	restoreRev := func(t *testing.T, snap string, args ...string) (restore.Result, string, string) {
		dir := filepath.Join(t.TempDir(), "r.etcd")
		out, errOut, code := runCLI(append([]string{"snapshot", "restore", snap, "--data-dir", dir, "-w", "json"}, args...)...)
		var res restore.Result
		if code != 0 || json.Unmarshal([]byte(out), &res) != nil {
			t.Fatalf("restore: exit %d %q %q", code, out, errOut)
		}
		return res, errOut, dir
	}
	if res, errOut, _ := restoreRev(t, plain); res.Revision != rev-1 || res.KubernetesBump || errOut != "" {
		t.Fatalf("plain data: revision %d (want %d), stderr %q", res.Revision, rev-1, errOut)
	}
	if res, errOut, _ := restoreRev(t, kube, "--bump-revision", "0"); res.Revision != rev || errOut != "" {
		t.Fatalf("--bump-revision 0: revision %d (want %d), stderr %q", res.Revision, rev, errOut)
	}
	if res, _, _ := restoreRev(t, kube, "--bump-revision", "5", "--mark-compacted"); res.Revision != rev+5 || res.KubernetesBump {
		t.Fatalf("--bump-revision 5: %+v", res)
	}
	peerPort, clientPort := testetcd.FreePort(t), testetcd.FreePort(t)
	res, errOut, dir := restoreRev(t, kube, "--initial-advertise-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", peerPort))
	if res.Revision != rev+restore.KubernetesBump || !res.KubernetesBump || !strings.HasPrefix(errOut, "note: Kubernetes data") || strings.Count(errOut, "\n") != 1 {
		t.Fatalf("Kubernetes data: revision %d (want %d), stderr %q", res.Revision, rev+restore.KubernetesBump, errOut)
	}
	if out, errOut, code := runCLI("snapshot", "restore", kube, "--dry-run", "--data-dir", filepath.Join(t.TempDir(), "d"), "-w", "json"); code != 0 || !strings.Contains(out, `"kubernetesBump":true`) || !strings.HasPrefix(errOut, "note:") {
		t.Fatalf("dry run: exit %d %q %q", code, out, errOut)
	}
	// Booted, the restored member tells a watch from the old revision
	// that it was compacted.
	p := testetcd.StartProcess(t, testetcd.Binaries(t, "3.7"), testetcd.ProcessConfig{DataDir: dir, ClientPort: clientPort, PeerPort: peerPort})
	p.WaitReady(t)
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	wresp := <-testetcd.NewClient(t, p.ClientURL).Watch(wctx, "/registry/", clientv3.WithPrefix(), clientv3.WithRev(rev))
	if wresp.CompactRevision != rev+restore.KubernetesBump || !errors.Is(wresp.Err(), rpctypes.ErrCompacted) {
		t.Fatalf("watch from revision %d: compact revision %d, err %v; want compacted at %d", rev, wresp.CompactRevision, wresp.Err(), rev+restore.KubernetesBump)
	}
}
