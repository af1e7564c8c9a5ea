package main

import (
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/etcdkit/etcdkit/alarm"
	"github.com/etcdkit/etcdkit/cluster"
)

func alarmRecord(as []alarm.Alarm) record {
	rec := record{json: as, header: []string{"member id", "alarm"}}
	for _, a := range as {
		rec.rows = append(rec.rows, []string{a.MemberID, a.Alarm})
		rec.fields = append(rec.fields, [2]string{"Alarm", a.MemberID + " " + a.Alarm})
	}
	return rec
}

func alarmCommand() *cli.Command {
	return &cli.Command{
		Name:  "alarm",
		Usage: "list or disarm a cluster's alarms",
		Subcommands: []*cli.Command{
			online(&cli.Command{
				Name: "list", Usage: "list the active alarms (NOSPACE, CORRUPT) with their members",
				Action: withCluster(func(c *cli.Context, cl *cluster.Cluster) error {
					as, err := alarm.List(c.Context, cl)
					if err != nil {
						return err
					}
					return output(c, alarmRecord(as))
				}),
			}),
			online(&cli.Command{
				Name: "disarm", Usage: "disarm every active alarm (free space first: a NOSPACE alarm comes back at the next write otherwise; see recover-nospace)",
				Action: withCluster(func(c *cli.Context, cl *cluster.Cluster) error {
					as, err := alarm.Disarm(c.Context, cl, "")
					if err != nil {
						return err
					}
					return output(c, alarmRecord(as))
				}),
			}),
		},
	}
}

func recoverNoSpaceCommand() *cli.Command {
	return online(&cli.Command{
		Name:  "recover-nospace",
		Usage: "recover a cluster that refuses writes with NOSPACE: compact, defragment every member, disarm, prove a write",
		Flags: rollingFlags(),
		Action: withCluster(func(c *cli.Context, cl *cluster.Cluster) error {
			rec, err := alarm.RecoverNoSpace(c.Context, cl, rollingOptions(c))
			if err != nil {
				return err
			}
			r := rollingRecord(rec.Defrag)
			r.json = rec
			if err := output(c, r); err != nil {
				return err
			}
			if writeOut(c) == "simple" {
				fmt.Fprintf(c.App.Writer, "compacted to %d, disarmed %d alarm(s), a write succeeded; took %s\n",
					rec.Compacted, len(rec.Disarmed), rec.Took.Round(time.Millisecond))
			}
			return nil
		}),
	})
}
