package main

import (
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/etcdkit/etcdkit/restore"
)

func restoreCommand() *cli.Command {
	return leaf(&cli.Command{
		Name:  "restore",
		Usage: "restore a snapshot into new data dirs (one member, or every member with --output-dir)",
		Description: "Reads FILE once, checks its sha256 trailer while copying it, and writes each data dir\n" +
			"under a temporary name, renamed into place only when complete and synced.\n" +
			"Flags as etcdutl snapshot restore; --output-dir DIR writes DIR/<name>.etcd for every\n" +
			"member of --initial-cluster in one run.",
		ArgsUsage: "FILE | --repo URL [--backup ID | --to-revision R | --to-time T]",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "data-dir", Usage: "path to the output data directory (default: <name>.etcd)"},
			&cli.StringFlag{Name: "wal-dir", Usage: "path to the WAL directory (default: inside --data-dir)"},
			&cli.StringFlag{Name: "name", Value: restore.DefaultName, Usage: "human-readable name of this member"},
			&cli.StringFlag{Name: "initial-cluster", Usage: "initial cluster configuration, name=peer-url,... (default: <name>=<initial-advertise-peer-urls>)"},
			&cli.StringFlag{Name: "initial-cluster-token", Value: restore.DefaultToken, Usage: "initial cluster token of the restored cluster"},
			&cli.StringFlag{Name: "initial-advertise-peer-urls", Value: restore.DefaultPeerURL, Usage: "this member's peer URLs, comma separated"},
			&cli.StringFlag{Name: "output-dir", Usage: "write a data dir <name>.etcd for every member of --initial-cluster into this directory"},
			&cli.BoolFlag{Name: "skip-hash-check", Usage: "do not check the sha256 trailer (required for a db copied from a data dir)"},
			&cli.Uint64Flag{Name: "bump-revision", Usage: "increase the latest revision by this much (requires --mark-compacted); default: 1000000000 with --mark-compacted for Kubernetes data (/registry/ keys), else 0"},
			&cli.BoolFlag{Name: "mark-compacted", Usage: "mark the bumped revision compacted, so watchers of older revisions are cancelled (requires --bump-revision)"},
			&cli.Uint64Flag{Name: "initial-memory-map-size", Usage: "accepted for etcdutl compatibility; etcdkit does not map the db to restore it"},
			&cli.BoolFlag{Name: "dry-run", Usage: "make every check a restore makes (trailer, bolt consistency, free space, flags and IDs), print the plan, write nothing"},
			&cli.StringFlag{Name: "attachments-dir", Usage: "with --repo: also write the backup's attachments (encryption config, PKI, token) into this directory"},
		}, append(backupSourceFlags("restore from this backup repository instead of a FILE (streamed: download, decrypt, decompress, verify, restore)"),
			targetFlags("with --repo: restore")...)...),
		Action: func(c *cli.Context) error {
			fromRepo := c.String("repo") != ""
			target, toPoint, err := pointTarget(c)
			if err != nil {
				return err
			}
			if toPoint && (!fromRepo || c.IsSet("backup") || c.Bool("dry-run") || c.String("attachments-dir") != "") {
				return usageError{fmt.Errorf("--to-revision and --to-time restore from --repo (the backup is chosen for the point: no --backup, --dry-run or --attachments-dir)")}
			}
			if c.String("attachments-dir") != "" && !fromRepo {
				return usageError{fmt.Errorf("--attachments-dir brings back a stored backup's attachments: it needs --repo")}
			}
			if fromRepo {
				if err := needArgs(c, 0, "no FILE with --repo"); err != nil {
					return err
				}
			} else if err := needArgs(c, 1, "one snapshot FILE"); err != nil {
				return err
			}
			path := c.Args().First()
			cfg := restore.Config{
				Name:                c.String("name"),
				PeerURLs:            strings.Split(c.String("initial-advertise-peer-urls"), ","),
				DataDir:             c.String("data-dir"),
				WALDir:              c.String("wal-dir"),
				OutputDir:           c.String("output-dir"),
				InitialCluster:      c.String("initial-cluster"),
				InitialClusterToken: c.String("initial-cluster-token"),
				SkipHashCheck:       c.Bool("skip-hash-check"),
				BumpRevision:        c.Uint64("bump-revision"),
				MarkCompacted:       c.Bool("mark-compacted"),
				BumpKubernetes:      !c.IsSet("bump-revision"),
			}
			if cfg.OutputDir != "" && (c.IsSet("data-dir") || c.IsSet("wal-dir")) {
				return usageError{fmt.Errorf("--output-dir writes every member's data dir; it cannot be combined with --data-dir or --wal-dir")}
			}
			if c.Bool("dry-run") {
				if fromRepo {
					return usageError{fmt.Errorf("--dry-run checks a snapshot FILE; for a stored backup run 'etcdkit backup check --repo URL ID --identity FILE'")}
				}
				res, err := restore.DryRun(c.Context, cfg, path)
				if err != nil {
					return err
				}
				noteKubernetesBump(c, res)
				if err := output(c, restoreRecord(path, res)); err != nil {
					return err
				}
				if writeOut(c) == "simple" {
					fmt.Fprintln(c.App.Writer, "dry run: every check passed; nothing was written")
				}
				return nil
			}
			if toPoint {
				return restoreToPoint(c, cfg, target)
			}
			if fromRepo {
				return restoreFromRepo(c, cfg)
			}
			bar := newProgress(c.App.ErrWriter, "restoring")
			cfg.Progress = bar.Report
			defer bar.Done()
			res, err := restore.Restore(c.Context, cfg, path)
			if err != nil {
				return err
			}
			noteKubernetesBump(c, res)
			return output(c, restoreRecord(path, res))
		},
	})
}

// noteKubernetesBump says, in one line on stderr, that the restore bumped
// the revisions of Kubernetes data by default.
func noteKubernetesBump(c *cli.Context, r restore.Result) {
	if r.KubernetesBump {
		fmt.Fprintf(c.App.ErrWriter, "note: Kubernetes data (/registry/ keys): revisions bumped by %d and marked compacted, so watches and informers re-list (--bump-revision 0 restores them as they were)\n", restore.KubernetesBump)
	}
}

func restoreRecord(path string, r restore.Result) record {
	rec := record{json: r, header: []string{"name", "member id", "data dir", "wal dir", "cluster id", "revision"}}
	for _, m := range r.Members {
		rec.rows = append(rec.rows, []string{m.Name, m.ID, m.DataDir, m.WALDir, r.ClusterID, fmt.Sprint(r.Revision)})
	}
	hash := r.SHA256
	if hash == "" {
		hash = "not checked"
	}
	rec.fields = [][2]string{
		{"Snapshot", path}, {"SHA256", hash}, {"DBSize", fmt.Sprint(r.DBSize)},
		{"Revision", fmt.Sprint(r.Revision)}, {"ClusterID", r.ClusterID},
	}
	for _, m := range r.Members {
		rec.fields = append(rec.fields, [2]string{"Member " + m.Name, m.ID + " " + m.DataDir})
	}
	return rec
}

// restoreFromRepo streams a backup from a repository into the restore:
// nothing is staged on disk but the data dirs being built.
func restoreFromRepo(c *cli.Context, cfg restore.Config) error {
	r, ids, err := openRepoToRead(c)
	if err != nil {
		return err
	}
	m, err := r.Find(c.Context, c.String("backup"))
	if err != nil {
		return err
	}
	bar := newProgress(c.App.ErrWriter, "restoring")
	cfg.Progress = bar.Report
	name := "backup " + m.ID
	res, err := r.Restore(c.Context, m, ids, cfg)
	bar.Done()
	if err != nil {
		return err
	}
	noteKubernetesBump(c, res)
	if dir := c.String("attachments-dir"); dir != "" {
		if _, err := r.ExtractAttachments(c.Context, m, ids, dir); err != nil {
			return fmt.Errorf("the data dir is restored, but its attachments are not: %w", err)
		}
		fmt.Fprintf(c.App.ErrWriter, "note: %d attachment(s) of backup %s written to %s\n", len(m.Attachments), m.ID, dir)
	}
	return output(c, restoreRecord(name, res))
}
