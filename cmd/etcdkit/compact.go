package main

import (
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/etcdkit/etcdkit/cluster"
	"github.com/etcdkit/etcdkit/compact"
	"github.com/etcdkit/etcdkit/save"
)

func compactCommand() *cli.Command {
	return online(&cli.Command{
		Name:  "compact",
		Usage: "compact the key history of a running cluster, by revision or by policy",
		Description: "Give one of --revision, --keep-revisions and --keep-duration. A duration maps to a revision\n" +
			"through etcdkit's revision clock (the key " + compact.ClockKey + "), which each compact and\n" +
			"scheduler run extends. With --backup FILE, refuses to compact past that backup's revision.",
		Flags: []cli.Flag{
			&cli.Int64Flag{Name: "revision", Usage: "compact to this revision"},
			&cli.Int64Flag{Name: "keep-revisions", Usage: "keep this many revisions of history"},
			&cli.DurationFlag{Name: "keep-duration", Usage: "keep this much time of history (e.g. 1h)"},
			&cli.BoolFlag{Name: "physical", Usage: "wait until the history is removed from the backend"},
			&cli.StringFlag{Name: "backup", Usage: "the newest backup (a snapshot with its FILE.json manifest): do not compact past its revision"},
			&cli.BoolFlag{Name: "force", Usage: "compact past the backup's revision anyway"},
		},
		Action: withCluster(func(c *cli.Context, cl *cluster.Cluster) error {
			p := compact.Policy{
				Revision: c.Int64("revision"), KeepRevisions: c.Int64("keep-revisions"), KeepDuration: c.Duration("keep-duration"),
				Physical: c.Bool("physical"), Force: c.Bool("force"),
			}
			if b := c.String("backup"); b != "" {
				m, err := save.ReadManifest(b)
				if err != nil {
					return err
				}
				p.BackupRevision = m.Revision
			}
			res, err := compact.Compact(c.Context, cl, p)
			if err != nil {
				return err
			}
			took := res.Took.Round(time.Millisecond).String()
			return output(c, record{
				json:   res,
				header: []string{"compacted to", "current revision", "previous compact", "compacted", "physical", "took"},
				rows:   [][]string{{fmt.Sprint(res.Revision), fmt.Sprint(res.CurrentRevision), fmt.Sprint(res.PreviousCompact), fmt.Sprint(res.Compacted), fmt.Sprint(res.Physical), took}},
				fields: [][2]string{{"Revision", fmt.Sprint(res.Revision)}, {"CurrentRevision", fmt.Sprint(res.CurrentRevision)},
					{"PreviousCompact", fmt.Sprint(res.PreviousCompact)}, {"Compacted", fmt.Sprint(res.Compacted)}, {"Took", took}},
			})
		}),
	})
}
