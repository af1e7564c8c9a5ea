package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/etcdkit/etcdkit/cluster"
)

// connectionFlags are etcdctl's, with its ETCDCTL_* environment variables.
func connectionFlags() []cli.Flag {
	env := func(name string) []string {
		return []string{"ETCDCTL_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))}
	}
	return []cli.Flag{
		&cli.StringFlag{Name: "endpoints", Value: "127.0.0.1:2379", EnvVars: env("endpoints"), Usage: "comma-separated gRPC endpoints"},
		&cli.BoolFlag{Name: "cluster", Usage: "use every member's client URLs, discovered from the endpoints"},
		&cli.StringFlag{Name: "cacert", EnvVars: env("cacert"), Usage: "verify servers with this CA bundle"},
		&cli.StringFlag{Name: "cert", EnvVars: env("cert"), Usage: "client certificate"},
		&cli.StringFlag{Name: "key", EnvVars: env("key"), Usage: "client key"},
		&cli.StringFlag{Name: "user", EnvVars: env("user"), Usage: "username[:password]"},
		&cli.StringFlag{Name: "password", EnvVars: env("password"), Usage: "password (when --user has none)"},
		&cli.BoolFlag{Name: "insecure-skip-tls-verify", EnvVars: env("insecure-skip-tls-verify"), Usage: "accept any server certificate (testing only)"},
		&cli.DurationFlag{Name: "dial-timeout", Value: 2 * time.Second, EnvVars: env("dial-timeout"), Usage: "dial timeout"},
		&cli.DurationFlag{Name: "command-timeout", Value: 5 * time.Second, EnvVars: env("command-timeout"), Usage: "timeout of one request"},
	}
}

// online adds the connection flags to a command that talks to a cluster.
func online(cmd *cli.Command) *cli.Command {
	cmd.Flags = append(cmd.Flags, connectionFlags()...)
	return leaf(cmd)
}

// connect dials the cluster named by the connection flags.
func connect(c *cli.Context) (*cluster.Cluster, error) {
	return cluster.Connect(c.Context, clusterConfig(c))
}

// withCluster connects before fn and closes the connection after it, for
// commands without arguments.
func withCluster(fn func(c *cli.Context, cl *cluster.Cluster) error) cli.ActionFunc {
	return withClusterArgs(0, "no arguments", fn)
}

// withClusterArgs is withCluster for commands that take n arguments.
func withClusterArgs(n int, what string, fn func(c *cli.Context, cl *cluster.Cluster) error) cli.ActionFunc {
	return func(c *cli.Context) error {
		if err := needArgs(c, n, what); err != nil {
			return err
		}
		cl, err := connect(c)
		if err != nil {
			return err
		}
		defer cl.Close()
		return fn(c, cl)
	}
}

func statusCommand() *cli.Command {
	return online(&cli.Command{
		Name:  "status",
		Usage: "one row per member: version, leader, raft indexes, revisions, db size and use, quota, alarms",
		Flags: []cli.Flag{
			&cli.Int64Flag{Name: "quota", Value: 2 << 30, Usage: "backend quota to assume for members that do not report theirs (before etcd 3.6)"},
		},
		Action: withCluster(func(c *cli.Context, cl *cluster.Cluster) error {
			st := cl.StatusWithCompaction(c.Context, c.Int64("quota"))
			if answered := len(st) - countFailed(st); answered == 0 {
				return fmt.Errorf("%w: no member answered (%s: %s)", cluster.ErrUnreachable, st[0].Endpoint, st[0].Error)
			}
			rec := record{json: st, header: []string{"endpoint", "id", "name", "version", "storage version", "leader", "learner",
				"raft term", "raft index", "applied index", "revision", "compact revision", "db size", "in use", "free", "quota", "alarms", "errors"}}
			failed := countFailed(st)
			for _, s := range st {
				rec.rows = append(rec.rows, []string{s.Endpoint, s.ID, s.Name, s.Version, s.StorageVersion, fmt.Sprint(s.IsLeader), fmt.Sprint(s.IsLearner),
					fmt.Sprint(s.RaftTerm), fmt.Sprint(s.RaftIndex), fmt.Sprint(s.RaftAppliedIndex), fmt.Sprint(s.Revision), fmt.Sprint(s.CompactRevision),
					humanBytes(s.DBSize), humanBytes(s.DBSizeInUse), fmt.Sprintf("%.0f%%", s.FreePercent()), humanBytes(s.DBQuota),
					strings.Join(s.Alarms, " "), joinNonEmpty(append(s.Errors, s.Error))})
				rec.fields = append(rec.fields, [][2]string{{"Endpoint", s.Endpoint}, {"MemberID", s.ID}, {"Name", s.Name}, {"Version", s.Version},
					{"StorageVersion", s.StorageVersion}, {"IsLeader", fmt.Sprint(s.IsLeader)}, {"IsLearner", fmt.Sprint(s.IsLearner)},
					{"RaftTerm", fmt.Sprint(s.RaftTerm)}, {"RaftIndex", fmt.Sprint(s.RaftIndex)}, {"RaftAppliedIndex", fmt.Sprint(s.RaftAppliedIndex)},
					{"Revision", fmt.Sprint(s.Revision)}, {"CompactRevision", fmt.Sprint(s.CompactRevision)}, {"DBSize", fmt.Sprint(s.DBSize)},
					{"DBSizeInUse", fmt.Sprint(s.DBSizeInUse)}, {"DBQuota", fmt.Sprint(s.DBQuota)}, {"Alarms", strings.Join(s.Alarms, " ")}, {"Error", s.Error}}...)
			}
			if err := output(c, rec); err != nil {
				return err
			}
			if failed > 0 {
				return fmt.Errorf("%w: %d of %d members did not answer their status", cluster.ErrUnreachable, failed, len(st))
			}
			return nil
		}),
	})
}

func healthCommand() *cli.Command {
	return online(&cli.Command{
		Name:  "health",
		Usage: "per member: healthy (a linearizable read works and no alarm is active), latency, error",
		Action: withCluster(func(c *cli.Context, cl *cluster.Cluster) error {
			hs := cl.Health(c.Context)
			rec := record{json: hs, header: []string{"endpoint", "health", "took", "error"}}
			bad := 0
			for _, h := range hs {
				if !h.Healthy {
					bad++
				}
				took := h.Took.Round(time.Microsecond).String()
				rec.rows = append(rec.rows, []string{h.Endpoint, fmt.Sprint(h.Healthy), took, h.Error})
				rec.fields = append(rec.fields, [][2]string{{"Endpoint", h.Endpoint}, {"Health", fmt.Sprint(h.Healthy)}, {"Took", took}, {"Error", h.Error}}...)
			}
			if err := output(c, rec); err != nil {
				return err
			}
			if bad > 0 {
				return fmt.Errorf("%w: %d of %d members are unhealthy", cluster.ErrUnhealthy, bad, len(hs))
			}
			return nil
		}),
	})
}

func joinNonEmpty(parts []string) string {
	var out []string
	for _, p := range parts {
		if p != "" {
			out = append(out, p)
		}
	}
	return strings.Join(out, "; ")
}

func countFailed(st []cluster.MemberStatus) int {
	n := 0
	for _, s := range st {
		if !s.OK() {
			n++
		}
	}
	return n
}
