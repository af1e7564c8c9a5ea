package testetcd

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// State is what a restore must bring back, in a form that compares with ==
// and prints readably: every key with its value, revisions and lease, every
// lease with its attached keys, every user and role.
type State struct {
	Revision int64
	Keys     int
	KV       string // one line per key
	Leases   string
	Auth     string
}

// ReadState reads the state of the cluster behind cli at revision rev (0:
// the current one).
func ReadState(t testing.TB, cli *clientv3.Client, rev int64) State {
	t.Helper()
	ctx := Ctx(t, time.Minute)
	var s State
	resp, err := cli.Get(ctx, "\x00", clientv3.WithFromKey(), clientv3.WithRev(rev))
	if err != nil {
		t.Fatalf("get all keys at %d: %v", rev, err)
	}
	s.Revision = rev
	if rev == 0 {
		s.Revision = resp.Header.Revision
	}
	s.Keys = len(resp.Kvs)
	var b strings.Builder
	for _, kv := range resp.Kvs {
		fmt.Fprintf(&b, "%q=%q c%d m%d v%d l%x\n", kv.Key, kv.Value, kv.CreateRevision, kv.ModRevision, kv.Version, kv.Lease)
	}
	s.KV = b.String()

	leases, err := cli.Leases(ctx)
	if err != nil {
		t.Fatalf("lease list: %v", err)
	}
	var ls []string
	for _, l := range leases.Leases {
		ttl, err := cli.TimeToLive(ctx, l.ID, clientv3.WithAttachedKeys())
		if err != nil {
			t.Fatalf("lease %x: %v", l.ID, err)
		}
		var keys []string
		for _, k := range ttl.Keys {
			keys = append(keys, string(k))
		}
		sort.Strings(keys)
		ls = append(ls, fmt.Sprintf("%x granted=%d keys=%v", l.ID, ttl.GrantedTTL, keys))
	}
	sort.Strings(ls)
	s.Leases = strings.Join(ls, "\n")

	var auth []string
	users, err := cli.UserList(ctx)
	if err != nil {
		t.Fatalf("user list: %v", err)
	}
	for _, u := range users.Users {
		g, err := cli.UserGet(ctx, u)
		if err != nil {
			t.Fatalf("user %s: %v", u, err)
		}
		auth = append(auth, fmt.Sprintf("user %s roles=%v", u, g.Roles))
	}
	roles, err := cli.RoleList(ctx)
	if err != nil {
		t.Fatalf("role list: %v", err)
	}
	for _, r := range roles.Roles {
		g, err := cli.RoleGet(ctx, r)
		if err != nil {
			t.Fatalf("role %s: %v", r, err)
		}
		auth = append(auth, fmt.Sprintf("role %s perms=%v", r, g.Perm))
	}
	s.Auth = strings.Join(auth, "\n")
	return s
}

// Diff describes how got differs from s, "" when equal.
func (s State) Diff(got State) string {
	var d []string
	if s.Revision != got.Revision {
		d = append(d, fmt.Sprintf("revision %d, want %d", got.Revision, s.Revision))
	}
	if s.Keys != got.Keys {
		d = append(d, fmt.Sprintf("%d keys, want %d", got.Keys, s.Keys))
	}
	if s.KV != got.KV {
		d = append(d, "keys or values differ: "+firstDiff(s.KV, got.KV))
	}
	if s.Leases != got.Leases {
		d = append(d, fmt.Sprintf("leases:\n%s\nwant:\n%s", got.Leases, s.Leases))
	}
	if s.Auth != got.Auth {
		d = append(d, fmt.Sprintf("users and roles:\n%s\nwant:\n%s", got.Auth, s.Auth))
	}
	return strings.Join(d, "; ")
}

func firstDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := range min(len(w), len(g)) {
		if w[i] != g[i] {
			return fmt.Sprintf("line %d: got %.200s, want %.200s", i, g[i], w[i])
		}
	}
	return fmt.Sprintf("got %d lines, want %d", len(g), len(w))
}
