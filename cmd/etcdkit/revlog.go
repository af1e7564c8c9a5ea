package main

import (
	"context"
	"fmt"
	"os/signal"
	"syscall"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/urfave/cli/v2"

	"github.com/etcdkit/etcdkit/backup"
	"github.com/etcdkit/etcdkit/cluster"
	"github.com/etcdkit/etcdkit/internal/logging"
	"github.com/etcdkit/etcdkit/pitr"
	"github.com/etcdkit/etcdkit/restore"
)

// logFlags tune the revision log (backup log and the scheduler's).
func logFlags() []cli.Flag {
	return []cli.Flag{
		&cli.DurationFlag{Name: "log-interval", Value: pitr.DefaultInterval, Usage: "revision log: cut a segment this long after its first event"},
		&cli.StringFlag{Name: "log-segment-size", Value: "16MiB", Usage: "revision log: cut a segment once it holds this much (raw)"},
	}
}

func logSegmentSize(c *cli.Context) (int64, error) {
	n, err := humanize.ParseBytes(c.String("log-segment-size"))
	if err != nil || n == 0 || n > 1<<30 {
		return 0, usageError{fmt.Errorf("--log-segment-size %q: a size from 1 byte to 1GiB, such as 16MiB", c.String("log-segment-size"))}
	}
	return int64(n), nil
}

// targetFlags name the point a restore or a consolidation goes to.
func targetFlags(what string) []cli.Flag {
	return []cli.Flag{
		&cli.Int64Flag{Name: "to-revision", Usage: what + " to this revision: the newest full backup at or below it, then the revision log up to it"},
		&cli.StringFlag{Name: "to-time", Usage: what + " to the last revision the log received at or before this time (RFC 3339, e.g. 2026-11-22T10:31:00Z)"},
	}
}

// pointTarget reads --to-revision or --to-time; ok is false when neither
// is set.
func pointTarget(c *cli.Context) (t pitr.Target, ok bool, err error) {
	rev, at := c.Int64("to-revision"), c.String("to-time")
	switch {
	case c.IsSet("to-revision") && at != "":
		return t, false, usageError{fmt.Errorf("--to-revision and --to-time: give one")}
	case c.IsSet("to-revision"):
		if rev < 1 {
			return t, false, usageError{fmt.Errorf("--to-revision %d: a revision is 1 or more", rev)}
		}
		return pitr.Target{Revision: rev}, true, nil
	case at != "":
		tm, err := time.Parse(time.RFC3339Nano, at)
		if err != nil {
			return t, false, usageError{fmt.Errorf("--to-time %q: use RFC 3339, such as 2026-11-22T10:31:00Z", at)}
		}
		return pitr.Target{Time: tm}, true, nil
	}
	return t, false, nil
}

func backupLogCommand() *cli.Command {
	return online(&cli.Command{
		Name:  "log",
		Usage: "follow the cluster and store every revision in the repository: the log a point-in-time restore replays",
		Description: "Watches the whole keyspace from the newest full backup's revision (taking one first when the\n" +
			"repository has none) and stores the events as segments beside the backups, compressed and\n" +
			"encrypted as they are, each segment's manifest last. A restart goes on after the last stored\n" +
			"segment. When the cluster compacted past the log, or the uploads fall behind, the gap is\n" +
			"recorded and a full backup taken to go on from. A failure (a lost leader, an unreachable store)\n" +
			"is logged and the log started again 5s later. Runs until SIGTERM or SIGINT, then stores the\n" +
			"segment under way. The scheduler runs the same log with --revision-log.",
		Flags: append([]cli.Flag{flagRepo,
			&cli.StringFlag{Name: "compression", Value: "zstd", Usage: "zstd or none (segments and the full backups it takes)"},
			&cli.StringSliceFlag{Name: "encrypt-to", Usage: "age recipient (age1...) or a file of them; repeatable"},
			&cli.StringFlag{Name: "name", Usage: "this writer's name in the segments (default: hostname-pid)"},
			&cli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn or error"},
		}, logFlags()...),
		Action: withCluster(runBackupLog),
	})
}

func runBackupLog(c *cli.Context, cl *cluster.Cluster) error {
	rs, err := recipients(c.StringSlice("encrypt-to"))
	if err != nil {
		return err
	}
	if err := backup.CheckCompression(c.String("compression")); err != nil {
		return usageError{err}
	}
	size, err := logSegmentSize(c)
	if err != nil {
		return err
	}
	level, err := logging.ParseLevel(c.String("log-level"))
	if err != nil {
		return usageError{fmt.Errorf("--log-level: %w", err)}
	}
	r, err := openRepo(c)
	if err != nil {
		return err
	}
	log := logging.New(c.App.ErrWriter, level)
	lg, err := pitr.New(pitr.Config{Repo: r, Client: cl.Client, Interval: c.Duration("log-interval"), SegmentSize: size,
		Store: backup.SegmentOptions{Compression: c.String("compression"), Recipients: rs}, Writer: c.String("name"), Logger: log,
		FullBackup: func(ctx context.Context) error {
			m, err := r.Create(ctx, cl, backup.CreateOptions{Compression: c.String("compression"), Recipients: rs, Verify: true})
			if err == nil {
				log.Info("full backup stored", "id", m.ID, "revision", m.Revision)
			}
			return err
		}})
	if err != nil {
		return usageError{err}
	}
	ctx, stop := signal.NotifyContext(c.Context, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	lg.RunRetrying(ctx, nil)
	st := lg.Stats()
	log.Info("revision log stopped", "stored", st.Stored, "segments", st.Segments, "events", st.Events, "bytes", st.Bytes, "gaps", st.Gaps)
	return nil
}

func backupConsolidateCommand() *cli.Command {
	return leaf(&cli.Command{
		Name:  "consolidate",
		Usage: "build a full backup at a revision or time from an earlier backup and the revision log, offline",
		Description: "Needs no cluster: the newest full backup at or before the point is downloaded into --tmp-dir\n" +
			"(the db's size), the log replayed into it, and the result stored as a new backup (verified,\n" +
			"manifest last) whose revision, keys, leases and HashKV are read from it. Point-in-time\n" +
			"restores past it then replay only the log after it.",
		Flags: append(append([]cli.Flag{flagRepo, flagIdentity,
			&cli.StringFlag{Name: "compression", Value: "zstd", Usage: "zstd or none"},
			&cli.StringSliceFlag{Name: "encrypt-to", Usage: "age recipient (age1...) or a file of them; repeatable"},
			&cli.StringFlag{Name: "tmp-dir", Usage: "where the db is built (default: the system's)"},
		}, targetFlags("consolidate")...), &cli.BoolFlag{Name: "latest", Usage: "consolidate up to the end of the newest backup's log"}),
		Action: withRepo(runBackupConsolidate),
	})
}

func runBackupConsolidate(c *cli.Context, r *backup.Repository) error {
	target, ok, err := pointTarget(c)
	if err != nil {
		return err
	}
	if ok == c.Bool("latest") {
		return usageError{fmt.Errorf("give one of --to-revision, --to-time or --latest")}
	}
	target.Latest = c.Bool("latest")
	rs, err := recipients(c.StringSlice("encrypt-to"))
	if err != nil {
		return err
	}
	ids, err := identities(c)
	if err != nil {
		return err
	}
	plan, err := pitr.Resolve(c.Context, r, target, ids)
	if err != nil {
		return err
	}
	m, a, err := pitr.Consolidate(c.Context, r, plan, ids, backup.CreateOptions{Compression: c.String("compression"), Recipients: rs, TempDir: c.String("tmp-dir")})
	if err != nil {
		return err
	}
	fmt.Fprintf(c.App.ErrWriter, "note: backup %s (revision %d) replayed %d events of %d segments onto backup %s\n", m.ID, m.Revision, a.Events, a.Segments, plan.Base().ID)
	return output(c, manifestsRecord([]backup.Manifest{m}))
}

// restoreToPoint is snapshot restore --repo with --to-revision or
// --to-time: the newest full backup at or before the point, streamed, and
// the log replayed into the restored db.
func restoreToPoint(c *cli.Context, cfg restore.Config, target pitr.Target) error {
	r, ids, err := openRepoToRead(c)
	if err != nil {
		return err
	}
	plan, err := pitr.Resolve(c.Context, r, target, ids)
	if err != nil {
		return err
	}
	bar := newProgress(c.App.ErrWriter, "restoring")
	cfg.Progress = bar.Report
	res, a, err := pitr.Restore(c.Context, r, plan, ids, cfg)
	bar.Done()
	if err != nil {
		return err
	}
	noteKubernetesBump(c, res)
	fmt.Fprintf(c.App.ErrWriter, "note: revision %d: backup %s (revision %d) and %d events of %d log segments; %d leases added for keys attached at the revision\n",
		plan.Revision, plan.Base().ID, plan.Base().Revision, a.Events, a.Segments, a.Leases)
	return output(c, restoreRecord(fmt.Sprintf("backup %s + log to revision %d", plan.Base().ID, plan.Revision), res))
}
