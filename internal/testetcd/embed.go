// Package testetcd is etcdkit's test harness: real etcd members in-process
// (embed) and as the release binaries of 3.5, 3.6 and 3.7, free loopback
// ports, and a loader that writes realistic data. Nothing here fakes etcd.
package testetcd

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/storage/datadir"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/etcdkit/etcdkit/internal/logging"
)

// FreePort returns a loopback TCP port reserved for this test process.
// Ports come from below the kernel's ephemeral range (32768 and up), so no
// outgoing connection is handed one meanwhile, and each is reserved with a
// lock file held until the process exits, so test binaries running in
// parallel (go test runs packages at once) never pick the same one. A port
// chosen before it is bound (a member's peer URL is written into a restored
// data dir before etcd starts) then stays free for that etcd.
func FreePort(t testing.TB) int {
	t.Helper()
	dir := filepath.Join(os.TempDir(), "etcdkit-test-ports")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatalf("free port: %v", err)
	}
	portMu.Lock()
	defer portMu.Unlock()
	for range 1000 {
		port := 12000 + rand.IntN(20000) // 12000..31999
		f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(port)), os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			t.Fatalf("free port: %v", err)
		}
		if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil {
			f.Close() // another test process holds it
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			f.Close()
			continue
		}
		l.Close()
		heldPorts = append(heldPorts, f) // the lock lives as long as the process
		return port
	}
	t.Fatal("free port: none found in 1000 tries")
	return 0
}

var (
	portMu    sync.Mutex
	heldPorts []*os.File
)

// Member is one in-process etcd member.
type Member struct {
	Name       string
	DataDir    string
	ClientURL  string
	PeerURL    string
	Etcd       *embed.Etcd
	clusterStr string
	stopping   func() // tells the log bridge the stop is on purpose
}

// Cluster is a set of in-process members that form one cluster.
type Cluster struct {
	Members []*Member
	Token   string
}

// Endpoints returns every member's client URL.
func (c *Cluster) Endpoints() []string {
	var eps []string
	for _, m := range c.Members {
		eps = append(eps, m.ClientURL)
	}
	return eps
}

// Client returns a client for every member, closed at the end of the test.
func (c *Cluster) Client(t testing.TB) *clientv3.Client {
	return NewClient(t, c.Endpoints()...)
}

// NewClient connects to endpoints; the client is closed at the end of the test.
func NewClient(t testing.TB, endpoints ...string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// ClusterOption adjusts the embed configuration of every member.
type ClusterOption func(*embed.Config)

// WithQuota sets --quota-backend-bytes.
func WithQuota(n int64) ClusterOption { return func(c *embed.Config) { c.QuotaBackendBytes = n } }

// WithClientTLS serves clients over https with certs, requiring client
// certificates signed by the test CA.
func WithClientTLS(certs Certs) ClusterOption {
	return func(c *embed.Config) {
		c.ClientTLSInfo.CertFile, c.ClientTLSInfo.KeyFile = certs.ServerCert, certs.ServerKey
		c.ClientTLSInfo.TrustedCAFile, c.ClientTLSInfo.ClientCertAuth = certs.CA, true
		for _, us := range [][]url.URL{c.ListenClientUrls, c.AdvertiseClientUrls} {
			for i := range us {
				us[i].Scheme = "https"
			}
		}
	}
}

// StartCluster starts n in-process members on loopback and waits until they
// serve. They are stopped at the end of the test.
func StartCluster(t testing.TB, n int, opts ...ClusterOption) *Cluster {
	t.Helper()
	// A port FreePort found free can be taken before etcd binds it (other
	// test processes' connections use the same ephemeral range): retry
	// with new ports then.
	for attempt := 1; ; attempt++ {
		cl, err := startCluster(t, n, opts)
		if err == nil {
			t.Cleanup(func() {
				for _, m := range cl.Members {
					m.Stop()
				}
			})
			return cl
		}
		if attempt == 3 || !strings.Contains(err.Error(), "address already in use") {
			t.Fatalf("start etcd: %v", err)
		}
	}
}

func startCluster(t testing.TB, n int, opts []ClusterOption) (*Cluster, error) {
	cl := &Cluster{Token: "etcdkit-test"}
	var initial []string
	dir := t.TempDir()
	for i := 0; i < n; i++ {
		m := &Member{
			Name:      fmt.Sprintf("m%d", i),
			ClientURL: fmt.Sprintf("http://127.0.0.1:%d", FreePort(t)),
			PeerURL:   fmt.Sprintf("http://127.0.0.1:%d", FreePort(t)),
		}
		m.DataDir = filepath.Join(dir, m.Name+".etcd")
		initial = append(initial, m.Name+"="+m.PeerURL)
		cl.Members = append(cl.Members, m)
	}
	errc := make(chan error, n)
	for _, m := range cl.Members {
		m.clusterStr = strings.Join(initial, ",")
		go func() { errc <- m.start(cl.Token, "new", opts) }()
	}
	var firstErr error
	for range cl.Members {
		if err := <-errc; err != nil && firstErr == nil {
			firstErr = err
		}
	}
	if firstErr != nil {
		for _, m := range cl.Members {
			m.Stop()
		}
		return nil, firstErr
	}
	return cl, nil
}

// AddLearner adds a new member to the cluster as a learner and starts it.
func (c *Cluster) AddLearner(t testing.TB, opts ...ClusterOption) *Member {
	t.Helper()
	m := &Member{
		Name:      fmt.Sprintf("m%d", len(c.Members)),
		ClientURL: fmt.Sprintf("http://127.0.0.1:%d", FreePort(t)),
		PeerURL:   fmt.Sprintf("http://127.0.0.1:%d", FreePort(t)),
	}
	m.DataDir = filepath.Join(t.TempDir(), m.Name+".etcd")
	// etcd refuses to add members until the others have been connected for
	// a few seconds ("unhealthy cluster").
	cli := c.Client(t)
	for deadline := time.Now().Add(30 * time.Second); ; {
		_, err := cli.MemberAddAsLearner(Ctx(t, 10*time.Second), []string{m.PeerURL})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("member add: %v", err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	var initial []string
	for _, o := range append(c.Members, m) {
		initial = append(initial, o.Name+"="+o.PeerURL)
	}
	m.clusterStr = strings.Join(initial, ",")
	if err := m.start(c.Token, "existing", opts); err != nil {
		t.Fatal(err)
	}
	c.Members = append(c.Members, m)
	t.Cleanup(m.Stop)
	return m
}

// StartSingle starts one in-process member.
func StartSingle(t testing.TB, opts ...ClusterOption) *Member {
	return StartCluster(t, 1, opts...).Members[0]
}

func (m *Member) start(token, state string, opts []ClusterOption) error {
	cfg := embed.NewConfig()
	cfg.Name = m.Name
	cfg.Dir = m.DataDir
	cfg.LogLevel = "error"
	// etcd's errors in etcdkit's log format; the ones a stop causes
	// ("server closed") are dropped once Stop began.
	zl, bridge := logging.Zap(logging.New(os.Stderr, slog.LevelError), slog.LevelError, "etcd "+m.Name)
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zl)
	m.stopping = bridge.Stopping
	cfg.InitialClusterToken = token
	cfg.InitialCluster = m.clusterStr
	cfg.ClusterState = state
	cu, _ := url.Parse(m.ClientURL)
	pu, _ := url.Parse(m.PeerURL)
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	for _, o := range opts {
		o(cfg)
	}
	m.ClientURL = cfg.AdvertiseClientUrls[0].String()
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("member %s: %w", m.Name, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(60 * time.Second):
		e.Close()
		return fmt.Errorf("member %s: not ready after 60s", m.Name)
	}
	m.Etcd = e
	return nil
}

// Stop stops the member; its data dir stays.
func (m *Member) Stop() {
	if m.Etcd != nil {
		m.stopping()
		m.Etcd.Close()
		m.Etcd = nil
	}
}

// DBPath is the member's bolt file.
func (m *Member) DBPath() string { return datadir.ToBackendFileName(m.DataDir) }

// Client returns a client for this member only.
func (m *Member) Client(t testing.TB) *clientv3.Client { return NewClient(t, m.ClientURL) }

// Ctx returns a context that ends with the test or after d.
func Ctx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// Join starts a member that joins the running cluster with the settings a
// member add printed (its name, peer URL and the initial cluster).
func (c *Cluster) Join(t testing.TB, name, peerURL, initialCluster string) *Member {
	t.Helper()
	m := &Member{Name: name, PeerURL: peerURL, ClientURL: fmt.Sprintf("http://127.0.0.1:%d", FreePort(t)), clusterStr: initialCluster}
	m.DataDir = filepath.Join(t.TempDir(), name+".etcd")
	if err := m.start(c.Token, "existing", nil); err != nil {
		t.Fatal(err)
	}
	c.Members = append(c.Members, m)
	t.Cleanup(m.Stop)
	return m
}

// Boot starts a cluster on data dirs a restore wrote: member names[i] on
// dirs[i] at peerURLs[i], all at once (each waits for a quorum).
func Boot(t testing.TB, names, dirs, peerURLs []string, token string) *Cluster {
	t.Helper()
	cl := &Cluster{Token: token}
	var initial []string
	for i, n := range names {
		initial = append(initial, n+"="+peerURLs[i])
	}
	for i, n := range names {
		cl.Members = append(cl.Members, &Member{Name: n, DataDir: dirs[i], PeerURL: peerURLs[i],
			ClientURL: fmt.Sprintf("http://127.0.0.1:%d", FreePort(t)), clusterStr: strings.Join(initial, ",")})
	}
	errc := make(chan error, len(names))
	for _, m := range cl.Members {
		go func() { errc <- m.start(token, "new", nil) }()
	}
	for range cl.Members {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, m := range cl.Members {
			m.Stop()
		}
	})
	return cl
}
