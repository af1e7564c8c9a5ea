package compact_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/etcdkit/etcdkit/cluster"
	"github.com/etcdkit/etcdkit/compact"
	"github.com/etcdkit/etcdkit/internal/testetcd"
)

// TestCompact runs each policy against a real server and checks the
// compact revision the server then reports.
func TestCompact(t *testing.T) {
	m := testetcd.StartSingle(t)
	cli := m.Client(t)
	ctx := context.Background()
	put := func(n int) int64 {
		var rev int64
		for i := range n {
			resp, err := cli.Put(ctx, fmt.Sprintf("k%d", i%7), "v")
			if err != nil {
				t.Fatal(err)
			}
			rev = resp.Header.Revision
		}
		return rev
	}
	first := put(50)
	var clockRev int64
	c, err := cluster.Connect(ctx, cluster.Config{Endpoints: []string{m.ClientURL}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	serverCompact := func() int64 {
		r, err := c.CompactRevision(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}

	steps := []struct {
		name    string
		policy  func() compact.Policy
		want    func(r compact.Result) int64 // expected compact revision
		wantErr error
	}{
		{"two policies", func() compact.Policy { return compact.Policy{Revision: 5, KeepRevisions: 3} }, nil, compact.ErrPolicy},
		{"revision", func() compact.Policy { return compact.Policy{Revision: first - 30, Physical: true} }, func(compact.Result) int64 { return first - 30 }, nil},
		{"already there", func() compact.Policy { return compact.Policy{Revision: first - 40} }, func(compact.Result) int64 { return first - 30 }, nil},
		{"past the backup", func() compact.Policy { put(20); return compact.Policy{KeepRevisions: 5, BackupRevision: first} }, nil, compact.ErrPastBackup},
		{"past the backup, forced", func() compact.Policy { return compact.Policy{KeepRevisions: 5, BackupRevision: first, Force: true} },
			func(r compact.Result) int64 { return r.CurrentRevision - 5 }, nil},
		{"duration without a clock", func() compact.Policy { return compact.Policy{KeepDuration: time.Hour} }, nil, compact.ErrNoClock},
		{"duration", func() compact.Policy {
			// A clock that has seen the cluster two hours ago, at a
			// revision written then.
			clockRev = put(10) - 3
			b, _ := json.Marshal([]compact.Sample{{Time: time.Now().Add(-2 * time.Hour), Revision: clockRev}})
			if _, err := cli.Put(ctx, compact.ClockKey, string(b)); err != nil {
				t.Fatal(err)
			}
			put(10)
			return compact.Policy{KeepDuration: time.Hour}
		}, func(compact.Result) int64 { return clockRev }, nil},
		{"future revision", func() compact.Policy { return compact.Policy{Revision: 1 << 40} }, nil, compact.ErrPolicy},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			res, err := compact.Compact(ctx, c, st.policy())
			if st.wantErr != nil {
				if !errors.Is(err, st.wantErr) {
					t.Fatalf("error %v, want %v", err, st.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := res.Revision
			if st.want != nil {
				want = st.want(res)
			}
			if got := serverCompact(); got != want || res.Revision != want {
				t.Errorf("server compact revision %d, result %+v, want %d", got, res, want)
			}
		})
	}
}
