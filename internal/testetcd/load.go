package testetcd

import (
	"context"
	"fmt"
	"math/rand/v2"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// LoadSpec describes the data Load writes.
type LoadSpec struct {
	Keys   int    // distinct keys
	Rounds int    // times the key space is written; a compaction follows round 1 when Rounds > 1
	Seed   uint64 // makes the data reproducible
	// ValueSize, when non-zero, fixes every value's size (for benchmarks);
	// otherwise sizes are mixed: mostly small, some KiB, a few 64 KiB.
	ValueSize int
	// Batch is the number of puts per transaction (default 1..32 mixed).
	Batch int
}

// Loaded reports what Load did.
type Loaded struct {
	Revision        int64 // the last revision written
	CompactRevision int64 // the compaction done mid-history (0: none)
	LiveKeys        int   // keys present at the end
	Leases          []clientv3.LeaseID
}

var prefixes = []string{"/registry/pods/", "/registry/configmaps/", "/app/config/", "/locks/", "/k/"}

// Key returns the i-th key of the loader's key space.
func Key(i int) string {
	p := prefixes[i%len(prefixes)]
	return fmt.Sprintf("%sns-%d/obj-%07d", p, i%17, i)
}

// Load writes realistic data through cli: users and roles, three leases with
// attached keys, several key prefixes with values of mixed sizes written
// spec.Rounds times (single puts and multi-put transactions), deletes of
// single keys and of a prefix range, and a physical compaction after the
// first round followed by more writes.
func Load(ctx context.Context, cli *clientv3.Client, spec LoadSpec) (Loaded, error) {
	var out Loaded
	rng := rand.New(rand.NewPCG(spec.Seed, 42))
	if spec.Rounds == 0 {
		spec.Rounds = 1
	}
	if err := loadAuth(ctx, cli); err != nil {
		return out, err
	}
	for _, ttl := range []int64{600, 3600, 86400} {
		l, err := cli.Grant(ctx, ttl)
		if err != nil {
			return out, fmt.Errorf("lease grant: %w", err)
		}
		out.Leases = append(out.Leases, l.ID)
	}
	value := func(round, i int) string {
		n := spec.ValueSize
		if n == 0 {
			switch r := rng.IntN(100); {
			case r < 70:
				n = 16 + rng.IntN(200)
			case r < 98:
				n = 1024 + rng.IntN(8192)
			default:
				n = 64 << 10
			}
		}
		b := make([]byte, n)
		for j := range b {
			b[j] = byte('a' + (i+j+round)%26)
		}
		copy(b, fmt.Sprintf("r%d-k%d-", round, i))
		return string(b)
	}
	for round := 0; round < spec.Rounds; round++ {
		for i := 0; i < spec.Keys; {
			batch := spec.Batch
			if batch == 0 {
				batch = 1 + rng.IntN(32)
			}
			var ops []clientv3.Op
			for j := 0; j < batch && i < spec.Keys; j, i = j+1, i+1 {
				var opts []clientv3.OpOption
				if i%50 == 7 {
					opts = append(opts, clientv3.WithLease(out.Leases[i%len(out.Leases)]))
				}
				ops = append(ops, clientv3.OpPut(Key(i), value(round, i), opts...))
			}
			resp, err := cli.Txn(ctx).Then(ops...).Commit()
			if err != nil {
				return out, fmt.Errorf("put round %d: %w", round, err)
			}
			out.Revision = resp.Header.Revision
		}
		// Deletes: every 13th key, and one whole sub-range.
		for i := round; i < spec.Keys; i += 13 {
			resp, err := cli.Delete(ctx, Key(i))
			if err != nil {
				return out, fmt.Errorf("delete: %w", err)
			}
			out.Revision = resp.Header.Revision
		}
		resp, err := cli.Delete(ctx, fmt.Sprintf("/locks/ns-%d/", round%17), clientv3.WithPrefix())
		if err != nil {
			return out, fmt.Errorf("delete prefix: %w", err)
		}
		out.Revision = resp.Header.Revision
		if round == 0 && spec.Rounds > 1 {
			if _, err := cli.Compact(ctx, out.Revision, clientv3.WithCompactPhysical()); err != nil {
				return out, fmt.Errorf("compact: %w", err)
			}
			out.CompactRevision = out.Revision
		}
	}
	cnt, err := cli.Get(ctx, "", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return out, fmt.Errorf("count: %w", err)
	}
	out.LiveKeys = int(cnt.Count)
	out.Revision = cnt.Header.Revision
	return out, nil
}

func loadAuth(ctx context.Context, cli *clientv3.Client) error {
	steps := []func() error{
		func() error { _, err := cli.RoleAdd(ctx, "reader"); return err },
		func() error {
			_, err := cli.RoleGrantPermission(ctx, "reader", "/app/", clientv3.GetPrefixRangeEnd("/app/"), clientv3.PermissionType(clientv3.PermRead))
			return err
		},
		func() error { _, err := cli.RoleAdd(ctx, "writer"); return err },
		func() error {
			_, err := cli.RoleGrantPermission(ctx, "writer", "/registry/", clientv3.GetPrefixRangeEnd("/registry/"), clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		},
		func() error { _, err := cli.UserAdd(ctx, "alice", "alice-pw"); return err },
		func() error { _, err := cli.UserGrantRole(ctx, "alice", "reader"); return err },
		func() error { _, err := cli.UserAdd(ctx, "bob", "bob-pw"); return err },
		func() error { _, err := cli.UserGrantRole(ctx, "bob", "writer"); return err },
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return fmt.Errorf("auth setup: %w", err)
		}
	}
	return nil
}
