package rollingdefrag_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/etcdkit/etcdkit/cluster"
	"github.com/etcdkit/etcdkit/internal/testetcd"
	"github.com/etcdkit/etcdkit/rollingdefrag"
)

// churn writes and overwrites values so that a compaction frees most of
// the db.
func churn(t *testing.T, c *testetcd.Cluster) {
	t.Helper()
	cli := c.Client(t)
	ctx := testetcd.Ctx(t, time.Minute)
	v := strings.Repeat("x", 20<<10)
	for i := range 400 {
		if _, err := cli.Put(ctx, fmt.Sprintf("/churn/%d", i%10), v); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRolling defragments a running three-member cluster with a learner:
// a dry run and a false rule change nothing; a real run with --compact and
// --move-leader skips the learner, does the followers first and the old
// leader last after moving leadership away, and shrinks every db.
func TestRolling(t *testing.T) {
	cl := testetcd.StartCluster(t, 3)
	learner := cl.AddLearner(t)
	churn(t, cl)
	ctx := context.Background()
	c, err := cluster.Connect(ctx, cluster.Config{Endpoints: cl.Endpoints()[:1], Discover: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if len(c.Endpoints) != 4 {
		t.Fatalf("endpoints %v", c.Endpoints)
	}
	before := c.Status(ctx, 0)
	var leader string
	for _, s := range before {
		if s.IsLeader {
			leader = s.Name
		}
	}
	rule := func(src string) *rollingdefrag.Rule {
		r, err := rollingdefrag.ParseRule(src)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}

	t.Run("dry run", func(t *testing.T) {
		res, err := rollingdefrag.Run(ctx, c, rollingdefrag.Options{DryRun: true, Compact: true, Rule: rule("dbSizeFree >= 0")})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range res {
			want := rollingdefrag.WouldDefragment
			if r.Name == learner.Name {
				want = rollingdefrag.Skipped
			}
			if r.Action != want {
				t.Errorf("%s: %s, want %s", r.Name, r.Action, want)
			}
		}
		if after := testetcd.Must(c.CompactRevision(ctx))(t); after != 0 {
			t.Errorf("dry run compacted to %d", after)
		}
	})
	t.Run("false rule", func(t *testing.T) {
		res, err := rollingdefrag.Run(ctx, c, rollingdefrag.Options{Rule: rule("dbSize < 0")})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range res {
			if r.Action != rollingdefrag.Skipped || r.Reason == "" {
				t.Errorf("%+v", r)
			}
		}
	})
	t.Run("compact, move leader", func(t *testing.T) {
		var log []string
		res, err := rollingdefrag.Run(ctx, c, rollingdefrag.Options{Compact: true, MoveLeader: true,
			Rule: rule("dbSizeFree > 1024*1024"), Log: func(f string, a ...any) { log = append(log, fmt.Sprintf(f, a...)) }})
		if err != nil {
			t.Fatalf("%v\n%s", err, strings.Join(log, "\n"))
		}
		var order []string
		for _, r := range res {
			order = append(order, r.Name)
			switch {
			case r.Name == learner.Name:
				if r.Action != rollingdefrag.Skipped || r.Reason != "learner" {
					t.Errorf("learner: %+v", r)
				}
			case r.Action != rollingdefrag.Defragmented || r.After >= r.Before || r.Took <= 0:
				t.Errorf("%+v", r)
			}
		}
		if order[len(order)-1] != leader {
			t.Errorf("order %v: the leader %s is not last", order, leader)
		}
		for _, s := range c.Status(ctx, 0) {
			if s.IsLeader && s.Name == leader {
				t.Errorf("%s is still the leader", leader)
			}
		}
		if !strings.Contains(strings.Join(log, "\n"), "moving leadership from "+leader) {
			t.Errorf("log:\n%s", strings.Join(log, "\n"))
		}
	})
	t.Run("member down", func(t *testing.T) {
		cl.Members[1].Stop()
		_, err := rollingdefrag.Run(ctx, c, rollingdefrag.Options{ReadyTimeout: time.Second})
		if !errors.Is(err, rollingdefrag.ErrUnhealthy) {
			t.Fatalf("error %v, want ErrUnhealthy", err)
		}
	})
}

// TestRollingContinueOnError: a member lost in the middle of a rolling
// defrag fails the members after it; --continue-on-error still gives each
// of them its turn (and its failure), without it the run stops at the
// first failure.
func TestRollingContinueOnError(t *testing.T) {
	for _, cont := range []bool{false, true} {
		t.Run(fmt.Sprintf("continue=%v", cont), func(t *testing.T) {
			cl := testetcd.StartCluster(t, 3)
			ctx := context.Background()
			c, err := cluster.Connect(ctx, cluster.Config{Endpoints: cl.Endpoints(), DialTimeout: 500 * time.Millisecond, CommandTimeout: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			var leader *testetcd.Member
			for _, s := range c.Status(ctx, 0) {
				for _, m := range cl.Members {
					if s.IsLeader && m.ClientURL == s.Endpoint {
						leader = m
					}
				}
			}
			stopped := false
			res, err := rollingdefrag.Run(ctx, c, rollingdefrag.Options{ContinueOnError: cont, ReadyTimeout: time.Second,
				Log: func(string, ...any) {
					if !stopped {
						stopped = true
						leader.Stop() // after the first member: the leader goes last, so it is still to come
					}
				}})
			if err == nil {
				t.Fatal("no error with a member down")
			}
			var actions []string
			for _, r := range res {
				actions = append(actions, r.Action)
			}
			want := "defragmented failed"
			if cont {
				want = "defragmented failed failed"
			}
			if got := strings.Join(actions, " "); got != want {
				t.Errorf("actions %q, want %q", got, want)
			}
		})
	}
}
