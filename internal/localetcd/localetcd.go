// Package localetcd starts a throwaway etcd member in-process on free
// loopback ports, on a data dir etcdkit prepared: the drill's member, and
// the force-new-cluster pass of a quorum-loss recovery. etcd's own server
// does the work; this package only wires it.
package localetcd

import (
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"time"

	"go.etcd.io/etcd/server/v3/embed"

	"github.com/etcdkit/etcdkit/internal/logging"
)

// Config is the member to start.
type Config struct {
	Name, DataDir string
	// PeerURL (as restored) and ClientURL; empty: free loopback ports.
	PeerURL, ClientURL string
	// ForceNewCluster makes the member forget every other member (etcd's
	// --force-new-cluster): for a data dir copied from a cluster that lost
	// quorum.
	ForceNewCluster bool
	// Log receives etcd's messages at Level and above.
	Log   slog.Handler
	Level slog.Level
	// Timeout bounds the wait until the member is ready.
	Timeout time.Duration
}

// Member is a started member.
type Member struct {
	ClientURL, PeerURL string
	Etcd               *embed.Etcd
	stop               func()
}

// Stop stops the member (its data dir stays).
func (m *Member) Stop() { m.stop() }

// Start starts the member and waits until it is ready.
func Start(c Config) (*Member, error) {
	ports, err := FreePorts(2)
	if err != nil {
		return nil, err
	}
	m := &Member{PeerURL: c.PeerURL, ClientURL: c.ClientURL}
	if m.PeerURL == "" {
		m.PeerURL = fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	}
	if m.ClientURL == "" {
		m.ClientURL = fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	}
	cfg := embed.NewConfig()
	cfg.Name, cfg.Dir = c.Name, c.DataDir
	pu, err := url.Parse(m.PeerURL)
	if err != nil {
		return nil, err
	}
	cu, err := url.Parse(m.ClientURL)
	if err != nil {
		return nil, err
	}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.InitialCluster = c.Name + "=" + m.PeerURL
	cfg.ForceNewCluster = c.ForceNewCluster
	cfg.ListenMetricsUrls = nil
	zl, bridge := logging.Zap(slog.New(c.Log), c.Level, "etcd")
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zl)
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, err
	}
	m.Etcd = e
	m.stop = func() {
		bridge.Stopping()
		e.Close()
	}
	if c.Timeout == 0 {
		c.Timeout = 5 * time.Minute
	}
	select {
	case <-e.Server.ReadyNotify():
		return m, nil
	case err := <-e.Err():
		m.stop()
		return nil, err
	case <-time.After(c.Timeout):
		m.stop()
		return nil, fmt.Errorf("not ready after %s", c.Timeout)
	}
}

// FreePorts asks the kernel for n free loopback ports.
func FreePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
