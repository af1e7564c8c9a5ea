package cluster_test

import (
	"context"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/cluster"
	"github.com/etcdkit/etcdkit/internal/testetcd"
)

// secureCluster starts three members that require client certificates
// and have auth enabled (root:rootpw), with some data and a compaction.
func secureCluster(t *testing.T) (*testetcd.Cluster, testetcd.Certs, int64) {
	t.Helper()
	certs := testetcd.NewCerts(t)
	cl := testetcd.StartCluster(t, 3, testetcd.WithClientTLS(certs))
	cli := testetcd.NewTLSClient(t, certs, cl.Endpoints()...)
	ctx := testetcd.Ctx(t, time.Minute)
	var rev int64
	for i := range 50 {
		resp, err := cli.Put(ctx, "k", strings.Repeat("v", i))
		if err != nil {
			t.Fatal(err)
		}
		rev = resp.Header.Revision
	}
	if _, err := cli.Compact(ctx, rev-10, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	testetcd.EnableAuth(t, cli, "rootpw")
	return cl, certs, rev - 10
}

// TestSecureCluster connects with client certificates and a user, as
// etcdctl does, discovers every member from one endpoint, and checks the
// status and health of each.
func TestSecureCluster(t *testing.T) {
	cl, certs, compacted := secureCluster(t)
	ctx := context.Background()
	cfg := cluster.Config{Endpoints: cl.Endpoints()[:1], CACert: certs.CA, Cert: certs.ClientCert, Key: certs.ClientKey,
		User: "root:rootpw", Discover: true, DialTimeout: 2 * time.Second}
	c, err := cluster.Connect(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if len(c.Endpoints) != 3 {
		t.Fatalf("discovered %v", c.Endpoints)
	}
	st := c.StatusWithCompaction(ctx, 0)
	leaders, names := 0, map[string]bool{}
	for _, s := range st {
		if !s.OK() {
			t.Fatalf("status %+v", s)
		}
		if s.IsLeader {
			leaders++
		}
		names[s.Name] = true
		if s.CompactRevision != compacted || s.Revision < compacted || s.DBQuota <= 0 || s.DBSize < s.DBSizeInUse || s.Version == "" {
			t.Errorf("status %+v, compacted at %d", s, compacted)
		}
	}
	if leaders != 1 || len(names) != 3 {
		t.Errorf("%d leaders, names %v", leaders, names)
	}
	for _, h := range c.Health(ctx) {
		if !h.Healthy || h.Took <= 0 {
			t.Errorf("health %+v", h)
		}
	}

	bad := []struct {
		name string
		edit func(*cluster.Config)
	}{
		{"wrong password", func(c *cluster.Config) { c.User = "root:nope" }},
		{"no client certificate", func(c *cluster.Config) { c.Cert, c.Key = "", "" }},
		{"unknown CA", func(c *cluster.Config) { c.CACert = "" }},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			cfg := cfg
			cfg.Discover = false
			tc.edit(&cfg)
			c, err := cluster.Connect(ctx, cfg)
			if err == nil {
				st := c.Status(ctx, 0)
				c.Close()
				if st[0].OK() {
					t.Fatalf("connected and got status %+v", st[0])
				}
			}
		})
	}
}
