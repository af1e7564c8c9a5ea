package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/etcdkit/etcdkit/cluster"
	"github.com/etcdkit/etcdkit/defrag"
	"github.com/etcdkit/etcdkit/rollingdefrag"
)

func defragCommand() *cli.Command {
	return online(&cli.Command{
		Name:  "defrag",
		Usage: "defragment a stopped member's db offline (--data-dir or --db), or a running cluster member by member",
		Description: "Offline (--data-dir or --db): copies every bucket, key and value into a new file next to the db,\n" +
			"without the free pages, and renames it over the original only when it is complete and synced.\n" +
			"Stop etcd first: a db locked by a running etcd is refused after --timeout.\n\n" +
			"Online (--endpoints, --cluster): one member at a time, learners skipped, the leader last; each\n" +
			"only when every member is healthy and caught up, and only if --rule holds for it.",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "data-dir", Usage: "offline: data dir of a stopped member (its member/snap/db)"},
			&cli.StringFlag{Name: "db", Usage: "offline: a bolt db file"},
			&cli.StringFlag{Name: "rule", Usage: "online: defragment a member only when this holds, e.g. 'dbSizeFree > 256*1024*1024 || dbQuotaUsage > 0.8' (names: " + strings.Join(rollingdefrag.RuleVars, ", ") + ")"},
			&cli.BoolFlag{Name: "compact", Usage: "online: compact to the current revision first"},
			&cli.BoolFlag{Name: "dry-run", Usage: "online: say what would be done, change nothing"},
		}, rollingFlags()...),
		Action: func(c *cli.Context) error {
			if err := needArgs(c, 0, "no arguments"); err != nil {
				return err
			}
			path := c.String("db")
			switch {
			case !c.IsSet("db") && !c.IsSet("data-dir"):
				return rollingDefrag(c)
			case c.IsSet("db") && c.IsSet("data-dir"):
				return usageError{fmt.Errorf("give one of --data-dir and --db (offline), or neither to defragment a running cluster")}
			case c.IsSet("data-dir"):
				path = defrag.DBPath(c.String("data-dir"))
			}
			bar := newProgress(c.App.ErrWriter, "defragmenting")
			opts := defrag.Options{LockTimeout: lockTimeout(c), Progress: bar.Report}
			res, err := defrag.Defrag(c.Context, path, opts)
			bar.Done()
			if err != nil {
				return err
			}
			return output(c, defragRecord(res))
		},
	})
}

func defragRecord(r defrag.Result) record {
	took := r.Took.Round(time.Millisecond).String()
	return record{
		json:   r,
		header: []string{"db", "size before", "in use before", "size after", "took"},
		rows:   [][]string{{r.Path, humanBytes(r.Before), humanBytes(r.InUse), humanBytes(r.After), took}},
		fields: [][2]string{
			{"DB", r.Path}, {"SizeBefore", fmt.Sprint(r.Before)}, {"SizeInUse", fmt.Sprint(r.InUse)},
			{"SizeAfter", fmt.Sprint(r.After)}, {"Took", took},
		},
	}
}

// rollingFlags tune every rolling defrag: defrag's online mode and
// recover-nospace.
func rollingFlags() []cli.Flag {
	return []cli.Flag{
		&cli.BoolFlag{Name: "continue-on-error", Usage: "online: go on with the next member after a failure"},
		&cli.BoolFlag{Name: "move-leader", Usage: "online: move leadership to a caught-up follower before defragmenting the leader"},
		&cli.Uint64Flag{Name: "max-index-gap", Value: 1000, Usage: "online: a member more than this many raft entries behind counts as not caught up"},
		&cli.DurationFlag{Name: "ready-timeout", Value: time.Minute, Usage: "online: how long to wait for the cluster to be healthy before and after each member"},
	}
}

// rollingOptions reads rollingFlags.
func rollingOptions(c *cli.Context) rollingdefrag.Options {
	return rollingdefrag.Options{
		ContinueOnError: c.Bool("continue-on-error"), MoveLeader: c.Bool("move-leader"),
		MaxIndexGap: c.Uint64("max-index-gap"), ReadyTimeout: c.Duration("ready-timeout"),
		Log: func(format string, args ...any) { fmt.Fprintf(c.App.ErrWriter, format+"\n", args...) },
	}
}

var rollingDefrag = withCluster(func(c *cli.Context, cl *cluster.Cluster) error {
	rule, err := rollingdefrag.ParseRule(c.String("rule"))
	if err != nil {
		return usageError{err}
	}
	opts := rollingOptions(c)
	opts.Rule, opts.Compact, opts.DryRun = rule, c.Bool("compact"), c.Bool("dry-run")
	res, err := rollingdefrag.Run(c.Context, cl, opts)
	if perr := output(c, rollingRecord(res)); perr != nil {
		return perr
	}
	return err
})

func rollingRecord(res []rollingdefrag.MemberResult) record {
	rec := record{json: res, header: []string{"endpoint", "name", "action", "size before", "in use", "size after", "took", "reason", "error"}}
	for _, r := range res {
		took := r.Took.Round(time.Millisecond).String()
		rec.rows = append(rec.rows, []string{r.Endpoint, r.Name, r.Action, humanBytes(r.Before), humanBytes(r.InUse), humanBytes(r.After), took, r.Reason, r.Error})
		rec.fields = append(rec.fields, [][2]string{{"Endpoint", r.Endpoint}, {"Action", r.Action}, {"SizeBefore", fmt.Sprint(r.Before)},
			{"SizeAfter", fmt.Sprint(r.After)}, {"Took", took}, {"Reason", r.Reason}, {"Error", r.Error}}...)
	}
	return rec
}
