package alarm_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/etcdkit/etcdkit/alarm"
	"github.com/etcdkit/etcdkit/cluster"
	"github.com/etcdkit/etcdkit/internal/testetcd"
	"github.com/etcdkit/etcdkit/rollingdefrag"
)

// TestRecoverNoSpace fills a three-member cluster with a 4 MiB backend
// quota until etcd raises NOSPACE and refuses writes, then recovers:
// compaction, a rolling defrag, the alarm disarmed, and writes work again.
func TestRecoverNoSpace(t *testing.T) {
	cl := testetcd.StartCluster(t, 3, testetcd.WithQuota(4<<20))
	cli := cl.Client(t)
	ctx := context.Background()
	v := strings.Repeat("x", 64<<10)
	var err error
	for i := 0; i < 1000 && err == nil; i++ {
		_, err = cli.Put(testetcd.Ctx(t, 10*time.Second), fmt.Sprintf("/fill/%d", i%5), v)
	}
	if !errors.Is(err, rpctypes.ErrNoSpace) {
		t.Fatalf("filling: %v, want NOSPACE", err)
	}
	c, err := cluster.Connect(ctx, cluster.Config{Endpoints: cl.Endpoints()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	alarms, err := alarm.List(ctx, c)
	if err != nil || len(alarms) == 0 || alarms[0].Alarm != "NOSPACE" {
		t.Fatalf("alarms %+v %v", alarms, err)
	}
	for _, h := range c.Health(ctx) {
		if h.Healthy {
			t.Errorf("healthy under NOSPACE: %+v", h)
		}
	}

	rec, err := alarm.RecoverNoSpace(ctx, c, rollingdefrag.Options{})
	if err != nil {
		t.Fatalf("%v: %+v", err, rec)
	}
	if !rec.WriteOK || len(rec.Disarmed) == 0 || len(rec.Defrag) != 3 {
		t.Errorf("recovery %+v", rec)
	}
	for _, r := range rec.Defrag {
		if r.Action != rollingdefrag.Defragmented || r.After >= r.Before {
			t.Errorf("defrag %+v", r)
		}
	}
	if alarms := testetcd.Must(alarm.List(ctx, c))(t); len(alarms) != 0 {
		t.Errorf("alarms left: %+v", alarms)
	}
	if _, err := cli.Put(testetcd.Ctx(t, 10*time.Second), "/after", "ok"); err != nil {
		t.Errorf("write after recovery: %v", err)
	}
	for _, h := range c.Health(ctx) {
		if !h.Healthy {
			t.Errorf("after recovery: %+v", h)
		}
	}
}
