package main

import (
	"fmt"
	"log/slog"

	"github.com/urfave/cli/v2"

	"github.com/etcdkit/etcdkit/internal/logging"
	"github.com/etcdkit/etcdkit/quorum"
	"github.com/etcdkit/etcdkit/restore"
)

func recoverCommand() *cli.Command {
	return leaf(&cli.Command{
		Name:  "recover",
		Usage: "rebuild a cluster that lost quorum from its surviving data dirs (or a member's db): data dirs for every new member",
		Description: "Offline. Picks the most advanced surviving data dir (by the WAL's committed index), lets etcd itself apply\n" +
			"its committed entries (--force-new-cluster on a private copy, in-process, on loopback), then writes a data dir\n" +
			"for every member of --initial-cluster into --output-dir, as snapshot restore --output-dir does (new token,\n" +
			"atomic, Kubernetes data bumped by default). The surviving data dirs are only read; stop their etcd first.",
		Flags: []cli.Flag{
			&cli.StringSliceFlag{Name: "from-data-dir", Usage: "a surviving member's data dir (stopped); repeatable"},
			&cli.StringFlag{Name: "from-db", Usage: "instead: a raw db copied out of a member (entries it had not applied are lost)"},
			&cli.StringFlag{Name: "initial-cluster", Required: true, Usage: "the new cluster's members, name=peer-url,..."},
			&cli.StringFlag{Name: "initial-cluster-token", Value: "etcd-cluster-recovered", Usage: "the new cluster's token (a new one keeps old members out)"},
			&cli.StringFlag{Name: "output-dir", Required: true, Usage: "where the data dirs <name>.etcd are written"},
			&cli.Uint64Flag{Name: "bump-revision", Usage: "as snapshot restore (default: 1000000000 for Kubernetes data)"},
			&cli.BoolFlag{Name: "mark-compacted", Usage: "as snapshot restore"},
			&cli.StringFlag{Name: "scratch-dir", Usage: "where the private copy of the chosen data dir is made (default: the system's temporary directory)"},
		},
		Action: func(c *cli.Context) error {
			res, err := quorum.Recover(c.Context, quorum.Options{
				DataDirs: c.StringSlice("from-data-dir"), DB: c.String("from-db"),
				Restore: restore.Config{
					OutputDir: c.String("output-dir"), InitialCluster: c.String("initial-cluster"), InitialClusterToken: c.String("initial-cluster-token"),
					BumpRevision: c.Uint64("bump-revision"), MarkCompacted: c.Bool("mark-compacted"), BumpKubernetes: !c.IsSet("bump-revision"),
				},
				ScratchDir: c.String("scratch-dir"), LockTimeout: lockTimeout(c),
				Log: logging.New(c.App.ErrWriter, slog.LevelError).Handler(),
			})
			if err == quorum.ErrSource {
				return usageError{err}
			}
			if err != nil {
				return err
			}
			for _, cand := range res.Candidates {
				verdict := "not used"
				if cand.Chosen {
					verdict = "chosen: the most advanced (highest committed index)"
				}
				fmt.Fprintf(c.App.ErrWriter, "%s: cluster %s, member %s, committed index %d: %s\n", cand.DataDir, cand.ClusterID, cand.MemberID, cand.Commit, verdict)
			}
			noteKubernetesBump(c, res.Restore)
			return output(c, restoreRecord(res.Source, res.Restore))
		},
	})
}
