package testetcd

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/storage/datadir"
	"go.uber.org/zap"
)

// Process is a real etcd binary running on loopback.
type Process struct {
	Bins      Bins
	Name      string
	DataDir   string
	ClientURL string
	PeerURL   string
	cmd       *exec.Cmd
	log       *bytes.Buffer
	done      chan struct{}
}

// ProcessConfig starts a member of an existing or new cluster.
type ProcessConfig struct {
	Name           string
	DataDir        string
	InitialCluster string // default: Name=PeerURL
	Token          string
	ClientPort     int // 0: a free port
	PeerPort       int
	ExtraArgs      []string
}

// StartProcess starts the etcd binary of bins and waits until it answers.
// It is killed at the end of the test.
func StartProcess(t testing.TB, bins Bins, pc ProcessConfig) *Process {
	t.Helper()
	if pc.Name == "" {
		pc.Name = "default"
	}
	if pc.DataDir == "" {
		pc.DataDir = filepath.Join(t.TempDir(), pc.Name+".etcd")
	}
	if pc.ClientPort == 0 {
		pc.ClientPort = FreePort(t)
	}
	if pc.PeerPort == 0 {
		pc.PeerPort = FreePort(t)
	}
	p := &Process{
		Bins: bins, Name: pc.Name, DataDir: pc.DataDir,
		ClientURL: fmt.Sprintf("http://127.0.0.1:%d", pc.ClientPort),
		PeerURL:   fmt.Sprintf("http://127.0.0.1:%d", pc.PeerPort),
		log:       &bytes.Buffer{}, done: make(chan struct{}),
	}
	if pc.InitialCluster == "" {
		pc.InitialCluster = pc.Name + "=" + p.PeerURL
	}
	if pc.Token == "" {
		pc.Token = "etcd-cluster"
	}
	args := []string{
		"--name", pc.Name, "--data-dir", pc.DataDir,
		"--listen-client-urls", p.ClientURL, "--advertise-client-urls", p.ClientURL,
		"--listen-peer-urls", p.PeerURL, "--initial-advertise-peer-urls", p.PeerURL,
		"--initial-cluster", pc.InitialCluster, "--initial-cluster-token", pc.Token,
		"--log-level", "warn",
	}
	args = append(args, pc.ExtraArgs...)
	p.cmd = exec.Command(bins.Etcd, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start etcd %s: %v", bins.Version, err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(p.Kill)
	return p
}

// WaitReady waits until the member serves a linearizable read.
func (p *Process) WaitReady(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			t.Fatalf("etcd %s exited: %s", p.Bins.Version, p.Log())
		default:
		}
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{p.ClientURL}, DialTimeout: time.Second, Logger: zap.NewNop()})
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, err = cli.Get(ctx, "health")
			cancel()
			cli.Close()
			if err == nil {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("etcd %s not ready after 60s: %s", p.Bins.Version, p.Log())
}

// Log is what the process printed so far.
func (p *Process) Log() string { return p.log.String() }

// Stop ends the process with SIGTERM and waits for it.
func (p *Process) Stop() {
	if p.cmd.Process == nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		p.Kill()
	}
}

// Kill ends the process with SIGKILL and waits for it.
func (p *Process) Kill() {
	if p.cmd.Process == nil {
		return
	}
	p.cmd.Process.Kill()
	<-p.done
}

// DBPath is the member's bolt file.
func (p *Process) DBPath() string { return datadir.ToBackendFileName(p.DataDir) }

// Run runs a binary and returns its stdout; it fails the test on a non-zero
// exit, showing stderr.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, errOut, err := RunErr(name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, errOut)
	}
	return out
}

// RunErr runs a binary and returns stdout, stderr and the exit error.
func RunErr(name string, args ...string) (string, string, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Env = append(os.Environ(), "ETCDCTL_API=3")
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}
