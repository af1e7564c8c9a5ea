// Package drill proves that a stored backup restores: it restores the
// backup into a scratch directory, boots an etcd member on it (embedded,
// or a given etcd binary), and checks what the member serves against what
// the backup's manifest recorded when the backup was taken: HashKV at the
// backup's revision, the key and lease counts, the membership. It measures
// the time to a serving member (the recovery time to expect) and removes
// the scratch data.
package drill

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"filippo.io/age"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/storage/datadir"
	"go.uber.org/zap"

	"github.com/etcdkit/etcdkit/backup"
	"github.com/etcdkit/etcdkit/inspect"
	"github.com/etcdkit/etcdkit/internal/fsutil"
	"github.com/etcdkit/etcdkit/internal/localetcd"
	"github.com/etcdkit/etcdkit/kube"
	"github.com/etcdkit/etcdkit/restore"
)

// ErrFailed reports a drill whose member did not serve what the backup
// recorded: the backup does not restore to what the cluster held.
var ErrFailed = errors.New("restore drill failed")

// Options choose the backup and how it is booted.
type Options struct {
	Repo       *backup.Repository
	Backup     string // ID or latest
	Identities []age.Identity
	// ScratchDir is where the scratch directory is made (default: the
	// system's temporary directory).
	ScratchDir string
	// EtcdBinary boots this etcd executable instead of the embedded
	// member (to drill with the release the cluster runs).
	EtcdBinary string
	// StartTimeout bounds the wait for the member to serve (default 5m).
	StartTimeout time.Duration
}

// Check is one comparison of the drill.
type Check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

// Report is what a drill found.
type Report struct {
	Backup   string  `json:"backup"`
	Revision int64   `json:"revision"`
	Size     int64   `json:"size"`
	Member   string  `json:"member"` // embedded, or the binary's path
	Checks   []Check `json:"checks"`
	// RestoreSeconds is the restore, ServingSeconds the restore and the
	// boot until the member served a read (the recovery time to expect),
	// TotalSeconds the whole drill.
	RestoreSeconds float64 `json:"restoreSeconds"`
	ServingSeconds float64 `json:"servingSeconds"`
	TotalSeconds   float64 `json:"totalSeconds"`
	OK             bool    `json:"ok"`
}

// Run drills one backup. A drill that ran but whose checks failed returns
// the report and ErrFailed; one that could not run (no such backup, the
// restore or the boot failed) returns the error of that step.
func Run(ctx context.Context, o Options) (*Report, error) {
	start := time.Now()
	if o.StartTimeout == 0 {
		o.StartTimeout = 5 * time.Minute
	}
	m, err := o.Repo.Find(ctx, o.Backup)
	if err != nil {
		return nil, err
	}
	rep := &Report{Backup: m.ID, Revision: m.Revision, Size: m.Size, Member: "embedded"}
	if o.EtcdBinary != "" {
		rep.Member = o.EtcdBinary
	}
	if o.ScratchDir != "" {
		if err := os.MkdirAll(o.ScratchDir, 0o700); err != nil {
			return nil, err
		}
	}
	scratch, err := fsutil.MkdirTemp(o.ScratchDir, "etcdkit-drill-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(scratch)
	ports, err := localetcd.FreePorts(2)
	if err != nil {
		return nil, err
	}
	peer, client := fmt.Sprintf("http://127.0.0.1:%d", ports[0]), fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	dataDir := filepath.Join(scratch, "drill.etcd")

	cfg := restore.Config{Name: "drill", PeerURLs: []string{peer}, DataDir: dataDir, InitialCluster: "drill=" + peer, InitialClusterToken: "etcdkit-drill"}
	if _, err := o.Repo.Restore(ctx, m, o.Identities, cfg); err != nil {
		return nil, fmt.Errorf("restore of backup %s: %w", m.ID, err)
	}
	rep.RestoreSeconds = time.Since(start).Seconds()
	k8s, err := kubernetesCheck(ctx, dataDir)
	if err != nil {
		return nil, fmt.Errorf("backup %s: %w", m.ID, err)
	}

	log := &errorLog{}
	stop, err := boot(ctx, o, dataDir, peer, client, log)
	if err != nil {
		return nil, fmt.Errorf("backup %s: the restored member did not start: %w%s", m.ID, err, log.summary())
	}
	defer stop()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{client}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	if err := waitServing(ctx, cli, o.StartTimeout); err != nil {
		return nil, fmt.Errorf("backup %s: the restored member does not serve: %w%s", m.ID, err, log.summary())
	}
	rep.ServingSeconds = time.Since(start).Seconds()
	rep.Checks = compare(ctx, cli, client, peer, m)
	if k8s != nil {
		rep.Checks = append(rep.Checks, *k8s)
	}
	n, first := log.errors()
	rep.Checks = append(rep.Checks, Check{Name: "log", OK: n == 0, Detail: "the member logged no errors"})
	if n > 0 {
		rep.Checks[len(rep.Checks)-1].Detail = fmt.Sprintf("the member logged %d error(s), the first: %s", n, first)
	}
	rep.OK = true
	for _, c := range rep.Checks {
		rep.OK = rep.OK && c.OK
	}
	rep.TotalSeconds = time.Since(start).Seconds()
	if !rep.OK {
		var failed []string
		for _, c := range rep.Checks {
			if !c.OK {
				failed = append(failed, c.Name+": "+c.Detail)
			}
		}
		return rep, fmt.Errorf("%w: backup %s: %s", ErrFailed, m.ID, strings.Join(failed, "; "))
	}
	return rep, nil
}

// compare checks the member against the manifest.
func compare(ctx context.Context, cli *clientv3.Client, endpoint, peer string, m backup.Manifest) []Check {
	var checks []Check
	add := func(name string, ok bool, format string, args ...any) {
		checks = append(checks, Check{Name: name, OK: ok, Detail: fmt.Sprintf(format, args...)})
	}
	add("serves", true, "a linearizable read succeeded")
	if h := m.HashKV; h.Revision != 0 {
		resp, err := cli.HashKV(ctx, endpoint, m.Revision)
		switch {
		case err != nil:
			add("hashkv", false, "HashKV at revision %d: %v", m.Revision, err)
		default:
			add("hashkv", resp.Hash == h.Hash, "at revision %d: member %d, recorded at backup time %d", m.Revision, resp.Hash, h.Hash)
		}
	} else {
		add("hashkv", true, "not recorded: the backup was made by an older etcdkit; not compared")
	}
	if m.Keys != 0 || m.HashKV.Revision != 0 {
		resp, err := cli.Get(ctx, "", clientv3.WithPrefix(), clientv3.WithCountOnly(), clientv3.WithRev(m.Revision))
		if err != nil {
			add("keys", false, "count at revision %d: %v", m.Revision, err)
		} else {
			add("keys", resp.Count == m.Keys, "member %d live keys, recorded %d", resp.Count, m.Keys)
		}
		leases, err := cli.Leases(ctx)
		if err != nil {
			add("leases", false, "%v", err)
		} else {
			add("leases", int64(len(leases.Leases)) == m.Leases, "member %d leases, recorded %d", len(leases.Leases), m.Leases)
		}
	}
	ms, err := cli.MemberList(ctx)
	switch {
	case err != nil:
		add("members", false, "%v", err)
	case len(ms.Members) != 1 || ms.Members[0].Name != "drill" || len(ms.Members[0].PeerURLs) != 1 || ms.Members[0].PeerURLs[0] != peer:
		add("members", false, "want the one restored member drill at %s, got %v", peer, ms.Members)
	default:
		add("members", true, "one member, drill, at %s, as restored", peer)
	}
	return checks
}

// boot starts the member on the restored data dir.
// Its errors go to log (the scratch member's warnings, about its
// throwaway setup, are not news).
func boot(ctx context.Context, o Options, dataDir, peer, client string, log *errorLog) (stop func(), err error) {
	if o.EtcdBinary != "" {
		cmd := exec.CommandContext(ctx, o.EtcdBinary, "--name", "drill", "--data-dir", dataDir,
			"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
			"--listen-client-urls", client, "--advertise-client-urls", client,
			"--initial-cluster", "drill="+peer, "--log-level", "error", "--log-outputs", "stderr")
		cmd.Stdout, cmd.Stderr = log, log
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		return func() {
			_ = cmd.Process.Signal(os.Interrupt)
			done := make(chan struct{})
			go func() { _ = cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				_ = cmd.Process.Kill()
				<-done
			}
		}, nil
	}
	m, err := localetcd.Start(localetcd.Config{Name: "drill", DataDir: dataDir, PeerURL: peer, ClientURL: client, Log: log, Level: slog.LevelError, Timeout: o.StartTimeout})
	if err != nil {
		return nil, err
	}
	return m.Stop, nil
}

// waitServing waits until the member answers a linearizable read.
func waitServing(ctx context.Context, cli *clientv3.Client, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := cli.Get(rctx, "etcdkit-drill")
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// errorLog collects the errors the drilled member logs: a slog handler for
// the embedded member, a writer of JSON lines for an etcd binary.
type errorLog struct {
	mu    sync.Mutex
	n     int
	first string
	line  []byte
}

func (e *errorLog) add(msg string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.n++; e.first == "" {
		e.first = msg
	}
}

func (e *errorLog) errors() (int, string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.n, e.first
}

// summary is the first error, for a drill that could not boot.
func (e *errorLog) summary() string {
	if n, first := e.errors(); n > 0 {
		return fmt.Sprintf(" (the member logged %d error(s), the first: %s)", n, first)
	}
	return ""
}

func (e *errorLog) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelError }
func (e *errorLog) WithAttrs([]slog.Attr) slog.Handler           { return e }
func (e *errorLog) WithGroup(string) slog.Handler                { return e }

func (e *errorLog) Handle(_ context.Context, r slog.Record) error {
	msg := r.Message
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "error" {
			msg += ": " + a.Value.String()
			return false
		}
		return true
	})
	e.add(msg)
	return nil
}

// Write takes an etcd binary's log: one JSON object a line, each an error
// at --log-level error.
func (e *errorLog) Write(p []byte) (int, error) {
	e.mu.Lock()
	e.line = append(e.line, p...)
	var lines [][]byte
	for {
		i := bytes.IndexByte(e.line, '\n')
		if i < 0 {
			break
		}
		lines = append(lines, bytes.Clone(e.line[:i]))
		e.line = e.line[i+1:]
	}
	e.mu.Unlock()
	for _, l := range lines {
		var rec struct {
			Msg   string `json:"msg"`
			Error string `json:"error"`
		}
		if json.Unmarshal(l, &rec) != nil || rec.Msg == "" {
			rec.Msg = string(l)
		}
		if rec.Error != "" {
			rec.Msg += ": " + rec.Error
		}
		e.add(rec.Msg)
	}
	return len(p), nil
}

// kubernetesCheck decodes every value under /registry/ of the restored db
// (before the member boots on it): a Kubernetes backup whose objects do
// not decode restores a cluster kube-apiserver cannot read. Values
// encrypted at rest and types this build does not know are counted, not
// failed. Nil when no value under /registry/ decodes (the data is not a
// Kubernetes cluster's).
func kubernetesCheck(ctx context.Context, dataDir string) (*Check, error) {
	src := &inspect.Opened{DB: datadir.ToBackendFileName(dataDir), Name: "the restored db", LockTimeout: time.Second}
	d := &kube.Decoder{Catalog: kube.NewCatalog()}
	v, err := d.Verify(ctx, src)
	if err != nil {
		return nil, err
	}
	if v.Objects == 0 {
		return nil, nil
	}
	c := &Check{Name: "kubernetes", OK: v.Undecodable == 0,
		Detail: fmt.Sprintf("%d objects under /registry/ decode", v.Objects)}
	if v.Encrypted+v.UnknownTypes > 0 {
		c.Detail += fmt.Sprintf(" (%d encrypted at rest and %d of types this build does not know, not checked)", v.Encrypted, v.UnknownTypes)
	}
	if v.Undecodable > 0 {
		c.Detail = fmt.Sprintf("%d of %d values under /registry/ are not Kubernetes objects, the first: %s", v.Undecodable, v.Objects+v.Encrypted+v.UnknownTypes+v.Undecodable, v.First)
	}
	return c, nil
}
