package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/etcdkit/etcdkit/cluster"
	"github.com/etcdkit/etcdkit/save"
)

func saveCommand() *cli.Command {
	return online(&cli.Command{
		Name:  "save",
		Usage: "stream a snapshot of a running cluster to FILE, checked, fsynced and renamed, with FILE.json beside it",
		Description: "Takes the snapshot from the member named by --endpoints when there is exactly one, else from the\n" +
			"healthy member with the highest applied index. The timeout grows with the db size.",
		ArgsUsage: "FILE",
		Flags:     []cli.Flag{flagRateLimit, flagMemberHashKV},
		Action: withClusterArgs(1, "one snapshot FILE", func(c *cli.Context, cl *cluster.Cluster) error {
			limit, err := rateLimit(c)
			if err != nil {
				return err
			}
			defer softMemoryLimitOf(streamMemoryLimit)()
			bar := newProgress(c.App.ErrWriter, "saving")
			m, err := save.Snapshot(c.Context, cl, c.Args().First(), save.Options{Progress: bar.Report, RateLimit: limit, SkipMemberHash: !c.Bool("member-hashkv")})
			bar.Done()
			if err != nil {
				return err
			}
			return output(c, manifestRecord(c.Args().First(), m))
		}),
	})
}

func manifestRecord(path string, m save.Manifest) record {
	return record{
		json:   m,
		header: []string{"file", "revision", "size", "member", "cluster id", "etcd version", "sha256"},
		rows:   [][]string{{path, fmt.Sprint(m.Revision), humanBytes(m.Size), m.MemberName + " (" + m.MemberID + ")", m.ClusterID, m.EtcdVersion, m.SHA256}},
		fields: [][2]string{{"File", path}, {"Revision", fmt.Sprint(m.Revision)}, {"Size", fmt.Sprint(m.Size)}, {"MemberID", m.MemberID},
			{"MemberName", m.MemberName}, {"ClusterID", m.ClusterID}, {"EtcdVersion", m.EtcdVersion}, {"SHA256", m.SHA256}},
	}
}
