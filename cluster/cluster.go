// Package cluster connects to a running etcd cluster the way etcdctl does
// (endpoints, TLS, user and password) and gathers what the online commands
// decide on: the members, each member's status and health, and the
// cluster's alarms.
package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
)

// Config is how to reach the cluster: etcdctl's connection flags.
type Config struct {
	Endpoints             []string
	CACert, Cert, Key     string
	User, Password        string // User may be "name:password"
	InsecureSkipTLSVerify bool
	DialTimeout           time.Duration
	CommandTimeout        time.Duration
	// Discover replaces Endpoints by every member's client URLs, as
	// etcdctl's --cluster does.
	Discover bool
}

// errNotForLearner is the client's error for an RPC a learner refuses (etcd
// names it only as a gRPC status; the client turns that into this value).
var errNotForLearner = rpctypes.Error(rpctypes.ErrGRPCNotSupportedForLearner)

// ErrUnreachable reports that no endpoint answered.
var ErrUnreachable = errors.New("cluster unreachable")

// ErrUnhealthy reports members that answer but are not healthy or not
// caught up.
var ErrUnhealthy = errors.New("cluster unhealthy")

// Cluster is a connected client and the endpoints it works on.
type Cluster struct {
	Client    *clientv3.Client
	Endpoints []string
	cfg       Config
}

// receivePool is the buffer pool the client receives messages into:
// grpc's default tiers (256 B to 1 MiB) plus 64 KiB, without grpc's
// zeroing of every buffer it hands out. A snapshot message (etcd's 32 KiB
// chunk and a header) is just over 32 KiB: in the default pool it takes,
// and zeroes, a 1 MiB buffer each time, a seventh of a backup's CPU. The
// zeroing guards against one message's bytes showing in another's unread
// part; grpc writes every byte it hands on, and a snapshot is checked end
// to end by its sha256 trailer anyway.
var receivePool mem.BufferPool = newTieredPool(256, 4<<10, 16<<10, 32<<10, 64<<10, 1<<20)

// UseReceivePool makes receivePool grpc's default buffer pool too, which
// its proto codec takes every received message from. It must run before
// any grpc connection exists (a program's main, not a library's init).
func UseReceivePool() { experimental.SetDefaultBufferPool(receivePool) }

// tieredPool keeps buffers of a few sizes in sync.Pools; larger ones are
// allocated each time.
type tieredPool struct {
	sizes []int
	pools []sync.Pool
}

func newTieredPool(sizes ...int) *tieredPool {
	return &tieredPool{sizes: sizes, pools: make([]sync.Pool, len(sizes))}
}

func (p *tieredPool) tier(n int) int {
	i, _ := slices.BinarySearch(p.sizes, n)
	return i
}

func (p *tieredPool) Get(n int) *[]byte {
	i := p.tier(n)
	if i == len(p.sizes) {
		b := make([]byte, n)
		return &b
	}
	if b, ok := p.pools[i].Get().(*[]byte); ok {
		*b = (*b)[:n]
		return b
	}
	b := make([]byte, n, p.sizes[i])
	return &b
}

func (p *tieredPool) Put(b *[]byte) {
	if i := p.tier(cap(*b)); i < len(p.sizes) && p.sizes[i] == cap(*b) {
		p.pools[i].Put(b)
	}
}

// clientConfig builds the client configuration for endpoints.
func (cfg Config) clientConfig(endpoints []string) (clientv3.Config, error) {
	cc := clientv3.Config{
		Endpoints: endpoints, DialTimeout: cfg.DialTimeout, Logger: zap.NewNop(),
		DialKeepAliveTime: 30 * time.Second, DialKeepAliveTimeout: 10 * time.Second,
		DialOptions: []grpc.DialOption{experimental.WithBufferPool(receivePool)},
	}
	if cc.DialTimeout == 0 {
		cc.DialTimeout = 2 * time.Second
	}
	if cfg.CACert != "" || cfg.Cert != "" || cfg.Key != "" || cfg.InsecureSkipTLSVerify || anyHTTPS(endpoints) {
		info := transport.TLSInfo{CertFile: cfg.Cert, KeyFile: cfg.Key, TrustedCAFile: cfg.CACert, InsecureSkipVerify: cfg.InsecureSkipTLSVerify}
		var tc *tls.Config
		var err error
		if cfg.Cert == "" && cfg.Key == "" && cfg.CACert == "" {
			tc = &tls.Config{InsecureSkipVerify: cfg.InsecureSkipTLSVerify}
		} else if tc, err = info.ClientConfig(); err != nil {
			return cc, fmt.Errorf("TLS: %w", err)
		}
		cc.TLS = tc
	}
	if cfg.User != "" {
		name, pw, ok := strings.Cut(cfg.User, ":")
		if !ok {
			pw = cfg.Password
		}
		cc.Username, cc.Password = name, pw
	}
	return cc, nil
}

func anyHTTPS(eps []string) bool {
	for _, e := range eps {
		if strings.HasPrefix(e, "https://") {
			return true
		}
	}
	return false
}

// Connect dials the cluster; with Discover it lists the members from any
// endpoint and works on all of their client URLs.
func Connect(ctx context.Context, cfg Config) (*Cluster, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("no endpoints")
	}
	cc, err := cfg.clientConfig(cfg.Endpoints)
	if err != nil {
		return nil, err
	}
	cli, err := clientv3.New(cc)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w%s", ErrUnreachable, strings.Join(cfg.Endpoints, ","), err, cfg.tlsHint(cfg.Endpoints, err))
	}
	c := &Cluster{Client: cli, Endpoints: cfg.Endpoints, cfg: cfg}
	if cfg.Discover {
		ms, err := c.Members(ctx)
		if err != nil {
			cli.Close()
			return nil, err
		}
		var eps []string
		for _, m := range ms {
			eps = append(eps, m.GetClientURLs()...)
		}
		if len(eps) == 0 {
			cli.Close()
			return nil, fmt.Errorf("%w: no member has a client URL", ErrUnreachable)
		}
		sort.Strings(eps)
		c.Endpoints = eps
		cli.SetEndpoints(eps...)
	}
	return c, nil
}

// Close closes the client.
func (c *Cluster) Close() error { return c.Client.Close() }

// tlsHint explains a connection failure over TLS: gRPC reports a refused
// certificate only as a deadline, so a direct handshake with the first
// endpoint names the reason (e.g. "x509: certificate signed by unknown
// authority"). It returns "" when the handshake works or TLS is not used.
func (cfg Config) tlsHint(endpoints []string, err error) string {
	if len(endpoints) == 0 {
		return ""
	}
	cc, cerr := cfg.clientConfig(endpoints[:1])
	if cerr != nil || cc.TLS == nil || !errors.Is(err, context.DeadlineExceeded) && status.Code(err) != codes.Unavailable {
		return ""
	}
	host := endpoints[0]
	if _, rest, ok := strings.Cut(host, "://"); ok {
		host = rest
	}
	d := &net.Dialer{Timeout: 2 * time.Second}
	conn, herr := tls.DialWithDialer(d, "tcp", host, cc.TLS.Clone())
	if herr != nil {
		return fmt.Sprintf(" (TLS handshake with %s: %v)", host, herr)
	}
	conn.Close()
	return ""
}

// Alarms lists the cluster's active alarms (every member's).
func (c *Cluster) Alarms(ctx context.Context) ([]*etcdserverpb.AlarmMember, error) {
	ctx, cancel := context.WithTimeout(ctx, c.Timeout())
	defer cancel()
	return listAlarms(ctx, c.Client.Maintenance, strings.Join(c.Endpoints, ","))
}

// listAlarms is the one call of the AlarmList RPC, through m (the
// cluster's client or one member's), from the endpoints eps.
func listAlarms(ctx context.Context, m clientv3.Maintenance, eps string) ([]*etcdserverpb.AlarmMember, error) {
	resp, err := m.AlarmList(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: alarm list from %s: %w", ErrUnreachable, eps, err)
	}
	return resp.Alarms, nil
}

// Timeout is the command timeout (default 5s, as etcdctl).
func (c *Cluster) Timeout() time.Duration {
	if c.cfg.CommandTimeout > 0 {
		return c.cfg.CommandTimeout
	}
	return 5 * time.Second
}

// ForEndpoint returns a client bound to one endpoint only (the caller
// closes it): maintenance RPCs that act on the member they reach
// (snapshot, defragment, move leader) need one.
func (c *Cluster) ForEndpoint(endpoint string) (*clientv3.Client, error) {
	cc, err := c.cfg.clientConfig([]string{endpoint})
	if err != nil {
		return nil, err
	}
	cli, err := clientv3.New(cc)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w%s", ErrUnreachable, endpoint, err, c.cfg.tlsHint([]string{endpoint}, err))
	}
	return cli, nil
}

// Members lists the cluster's members.
func (c *Cluster) Members(ctx context.Context) ([]*etcdserverpb.Member, error) {
	ctx, cancel := context.WithTimeout(ctx, c.Timeout())
	defer cancel()
	resp, err := c.Client.MemberList(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: member list from %s: %w%s", ErrUnreachable, strings.Join(c.Endpoints, ","), err, c.cfg.tlsHint(c.Endpoints, err))
	}
	return resp.Members, nil
}

// MemberStatus is one member as the Status RPC and the member list see it.
type MemberStatus struct {
	Endpoint         string   `json:"endpoint"`
	ID               string   `json:"id"`
	Name             string   `json:"name"`
	Version          string   `json:"version"`
	StorageVersion   string   `json:"storageVersion"`
	IsLeader         bool     `json:"isLeader"`
	IsLearner        bool     `json:"isLearner"`
	RaftTerm         uint64   `json:"raftTerm"`
	RaftIndex        uint64   `json:"raftIndex"`
	RaftAppliedIndex uint64   `json:"raftAppliedIndex"`
	Revision         int64    `json:"revision"`
	CompactRevision  int64    `json:"compactRevision"`
	DBSize           int64    `json:"dbSize"`
	DBSizeInUse      int64    `json:"dbSizeInUse"`
	DBQuota          int64    `json:"dbQuota"`
	Alarms           []string `json:"alarms,omitempty"`
	// Errors are what the member reports about itself (its active
	// alarms, in etcd's words); Error is set when it did not answer.
	Errors []string `json:"errors,omitempty"`
	Error  string   `json:"error,omitempty"`

	MemberID uint64 `json:"-"`
}

// FreePercent is the share of the db file that is free pages.
func (s MemberStatus) FreePercent() float64 {
	if s.DBSize == 0 {
		return 0
	}
	return 100 * float64(s.DBSize-s.DBSizeInUse) / float64(s.DBSize)
}

// OK reports whether the member answered its status.
func (s MemberStatus) OK() bool { return s.Error == "" }

// StatusWithCompaction is Status plus the cluster's compact revision,
// which costs about log2(revision) extra requests (see CompactRevision):
// for reports, not for polling loops.
func (c *Cluster) StatusWithCompaction(ctx context.Context, quota int64) []MemberStatus {
	st := c.Status(ctx, quota)
	rev, err := c.CompactRevision(ctx)
	for i := range st {
		if !st[i].OK() {
			continue
		}
		st[i].CompactRevision = rev
		if err != nil {
			st[i].Error = "compact revision: " + err.Error()
		}
	}
	return st
}

// Status asks every endpoint for its status, concurrently (CompactRevision
// stays 0; see StatusWithCompaction). quota is used for members that do
// not report their quota (before etcd 3.6). A member that does not answer
// gets a row with Error set.
func (c *Cluster) Status(ctx context.Context, quota int64) []MemberStatus {
	names := map[uint64]string{}
	if ms, err := c.Members(ctx); err == nil {
		for _, m := range ms {
			names[m.GetID()] = m.GetName()
		}
	}
	alarms := map[uint64][]string{}
	if as, err := c.Alarms(ctx); err == nil {
		for _, a := range as {
			alarms[a.GetMemberID()] = append(alarms[a.GetMemberID()], a.GetAlarm().String())
		}
	}

	out := make([]MemberStatus, len(c.Endpoints))
	var wg sync.WaitGroup
	for i, ep := range c.Endpoints {
		wg.Go(func() {
			s := MemberStatus{Endpoint: ep}
			sctx, cancel := context.WithTimeout(ctx, c.Timeout())
			defer cancel()
			r, err := c.Client.Status(sctx, ep)
			if err != nil {
				s.Error = err.Error()
				out[i] = s
				return
			}
			resp := (*etcdserverpb.StatusResponse)(r)
			id := resp.GetHeader().GetMemberId()
			s.MemberID = id
			s.ID, s.Name = fmt.Sprintf("%x", id), names[id]
			s.Version, s.StorageVersion = resp.GetVersion(), resp.GetStorageVersion()
			s.IsLeader, s.IsLearner = id == resp.GetLeader(), resp.GetIsLearner()
			s.RaftTerm, s.RaftIndex, s.RaftAppliedIndex = resp.GetRaftTerm(), resp.GetRaftIndex(), resp.GetRaftAppliedIndex()
			s.Revision = resp.GetHeader().GetRevision()
			s.DBSize, s.DBSizeInUse, s.DBQuota = resp.GetDbSize(), resp.GetDbSizeInUse(), resp.GetDbSizeQuota()
			if s.DBQuota == 0 {
				s.DBQuota = quota
			}
			s.Alarms = alarms[id]
			s.Errors = resp.GetErrors()
			out[i] = s
		})
	}
	wg.Wait()
	return out
}

// CompactRevision finds the cluster's compact revision, which no RPC
// reports directly: a read at a revision below it fails as compacted, so a
// binary search over revisions with cheap count-only reads of one key finds
// it in about log2(revision) requests.
func (c *Cluster) CompactRevision(ctx context.Context) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, c.Timeout())
	defer cancel()
	probe := func(rev int64) (compacted bool, cur int64, err error) {
		resp, err := c.Client.Get(ctx, "\x00", clientv3.WithRev(rev), clientv3.WithCountOnly(), clientv3.WithSerializable())
		if errors.Is(err, rpctypes.ErrCompacted) {
			return true, 0, nil
		}
		if err != nil {
			return false, 0, err
		}
		return false, resp.Header.Revision, nil
	}
	_, cur, err := probe(0)
	if err != nil {
		return 0, err
	}
	// The smallest revision that is not compacted is the compact revision
	// (or 1 when nothing was compacted).
	lo, hi := int64(1), cur
	for lo < hi {
		mid := lo + (hi-lo)/2
		compacted, _, err := probe(mid)
		if err != nil {
			return 0, err
		}
		if compacted {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if lo == 1 {
		return 0, nil
	}
	return lo, nil
}

// Health is one member's health as etcdctl endpoint health reports it.
type Health struct {
	Endpoint string        `json:"endpoint"`
	Healthy  bool          `json:"health"`
	Took     time.Duration `json:"took"`
	Error    string        `json:"error,omitempty"`
}

// Health checks every endpoint concurrently: a linearizable read must
// succeed (permission denied counts as success: the member answered; a
// learner, which serves no linearizable reads, must serve a serializable
// one) and the member must have no active alarm.
func (c *Cluster) Health(ctx context.Context) []Health {
	out := make([]Health, len(c.Endpoints))
	var wg sync.WaitGroup
	for i, ep := range c.Endpoints {
		wg.Go(func() { out[i] = c.healthOf(ctx, ep) })
	}
	wg.Wait()
	return out
}

func (c *Cluster) healthOf(ctx context.Context, ep string) Health {
	h := Health{Endpoint: ep}
	cli, err := c.ForEndpoint(ep)
	if err != nil {
		h.Error = err.Error()
		return h
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, c.Timeout())
	defer cancel()
	start := time.Now()
	_, err = cli.Get(ctx, "health")
	alarms := cli.Maintenance
	if errors.Is(err, errNotForLearner) {
		// A learner serves no linearizable reads (nor the alarm list); a
		// serializable read shows it is up and applying.
		_, err = cli.Get(ctx, "health", clientv3.WithSerializable())
		alarms = c.Client.Maintenance
	}
	h.Took = time.Since(start)
	if err != nil && !errors.Is(err, rpctypes.ErrPermissionDenied) {
		h.Error = err.Error()
		return h
	}
	as, err := listAlarms(ctx, alarms, ep)
	if err != nil {
		h.Error = err.Error()
		return h
	}
	var active []string
	for _, a := range as {
		active = append(active, fmt.Sprintf("%s on %x", a.GetAlarm(), a.GetMemberID()))
	}
	if len(active) > 0 {
		h.Error = "active alarm(s): " + strings.Join(active, ", ")
		return h
	}
	h.Healthy = true
	return h
}
