package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
	"github.com/urfave/cli/v2/altsrc"

	"github.com/etcdkit/etcdkit/cluster"
	"github.com/etcdkit/etcdkit/compact"
	"github.com/etcdkit/etcdkit/internal/logging"
	"github.com/etcdkit/etcdkit/pitr"
	"github.com/etcdkit/etcdkit/scheduler"
)

// envName is the ETCDKIT_* variable of a flag.
func envName(flag string) string {
	return "ETCDKIT_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// schedulerDefaults are the defaults that differ between the scheduler and
// serve (which must show backups within a minute out of the box).
type schedulerDefaults struct {
	repo, backupSchedule, compactSchedule, defragSchedule, defragRule string
	backupAtStart, autoRecover                                        bool
	keepLast                                                          int
	compactKeepRevisions                                              int64
}

// schedulerFlags are the scheduler's flags; each is also an ETCDKIT_*
// variable and a key of the --config YAML file.
func schedulerFlags(d schedulerDefaults) []cli.Flag {
	def := scheduler.DefaultConfig()
	flags := []cli.Flag{
		&cli.StringFlag{Name: "repo", Value: d.repo, Usage: "backup repository URL (a path, file:///path or s3://bucket/prefix?endpoint=...)"},
		&cli.StringFlag{Name: "backup-schedule", Value: d.backupSchedule, Usage: "cron schedule of backups (5 fields, or @every 30s, @hourly ...); empty: no backups"},
		&cli.BoolFlag{Name: "backup-at-start", Value: d.backupAtStart, Usage: "take a backup as soon as this instance becomes active"},
		&cli.StringFlag{Name: "compression", Value: def.Compression, Usage: "zstd or none"},
		&cli.StringSliceFlag{Name: "encrypt-to", Usage: "age recipient (or file of them) to encrypt backups to; repeatable"},
		&cli.StringSliceFlag{Name: "attach", Usage: "a file stored with every backup (encryption config, PKI, token), encrypted to --encrypt-to; repeatable"},
		&cli.BoolFlag{Name: "allow-plaintext-attachments", Usage: "store --attach files without --encrypt-to"},
		flagRateLimit, flagMemberHashKV,
		&cli.BoolFlag{Name: "revision-log", Usage: "while active, store every revision in the repository (the point-in-time log; see etcdkit backup log)"},
		&cli.DurationFlag{Name: "log-interval", Value: pitr.DefaultInterval, Usage: "revision log: cut a segment this long after its first event"},
		&cli.StringFlag{Name: "log-segment-size", Value: "16MiB", Usage: "revision log: cut a segment once it holds this much (raw)"},
		&cli.StringFlag{Name: "compact-schedule", Value: d.compactSchedule, Usage: "cron schedule of compactions (never past the newest backup)"},
		&cli.Int64Flag{Name: "compact-keep-revisions", Value: d.compactKeepRevisions, Usage: "compaction policy: keep this many revisions"},
		&cli.DurationFlag{Name: "compact-keep-duration", Usage: "compaction policy: keep this much time (via the revision clock)"},
		&cli.StringFlag{Name: "defrag-schedule", Value: d.defragSchedule, Usage: "cron schedule of rolling defrags"},
		&cli.StringFlag{Name: "defrag-rule", Value: d.defragRule, Usage: "defragment a member only when this holds (see etcdkit defrag --help)"},
		&cli.StringFlag{Name: "drill-schedule", Usage: "cron schedule of restore drills of the newest backup (restore, boot, check; see etcdkit backup drill)"},
		&cli.StringFlag{Name: "drill-etcd-binary", Usage: "boot drills with this etcd executable instead of the embedded etcd"},
		&cli.StringFlag{Name: "identity", Usage: "age identity file: drills of encrypted backups need it"},
		&cli.BoolFlag{Name: "auto-recover-nospace", Value: d.autoRecover, Usage: "watch the alarms and recover from NOSPACE by itself"},
		&cli.DurationFlag{Name: "alarm-check-interval", Value: def.AlarmCheckEvery, Usage: "how often the alarms and member sizes are read"},
		&cli.StringFlag{Name: "metrics-addr", Value: def.MetricsAddr, Usage: "address of /metrics, /healthz, /readyz and /status; empty: none"},
		&cli.StringFlag{Name: "name", Usage: "this instance's name in the election (default: hostname-pid)"},
		&cli.StringFlag{Name: "election-prefix", Value: def.ElectionPrefix, Usage: "the election's key prefix"},
		&cli.IntFlag{Name: "session-ttl", Value: def.SessionTTL, Usage: "seconds before a dead active instance is replaced"},
		&cli.IntFlag{Name: "retries", Value: def.Retries, Usage: "retries of a failed job (0: none)"},
		&cli.DurationFlag{Name: "retry-backoff", Value: def.RetryBackoff, Usage: "first retry delay (doubles)"},
		&cli.DurationFlag{Name: "stop-grace", Value: def.StopGrace, Usage: "on SIGTERM, how long the running job may take before it is cancelled"},
		&cli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn or error"},
	}
	keep := retentionFlags()
	for _, f := range keep {
		if f.Names()[0] == "keep-last" {
			f.(*cli.IntFlag).Value = d.keepLast
		}
	}
	flags = append(flags, keep...)
	for _, f := range flags {
		setEnv(f, envName(f.Names()[0]))
	}
	return flags
}

// setEnv adds an environment variable to a flag.
func setEnv(f cli.Flag, env string) {
	switch f := f.(type) {
	case *cli.StringFlag:
		f.EnvVars = append(f.EnvVars, env)
	case *cli.BoolFlag:
		f.EnvVars = append(f.EnvVars, env)
	case *cli.IntFlag:
		f.EnvVars = append(f.EnvVars, env)
	case *cli.Int64Flag:
		f.EnvVars = append(f.EnvVars, env)
	case *cli.DurationFlag:
		f.EnvVars = append(f.EnvVars, env)
	case *cli.StringSliceFlag:
		f.EnvVars = append(f.EnvVars, env)
	}
}

// fromConfigFile lets every flag also come from the --config YAML file
// (flags and environment variables win over the file).
func fromConfigFile(flags []cli.Flag) []cli.Flag {
	out := []cli.Flag{&cli.StringFlag{Name: "config", EnvVars: []string{"ETCDKIT_CONFIG"}, Usage: "YAML file whose keys are these flags' names"}}
	for _, f := range flags {
		switch f := f.(type) {
		case *cli.StringFlag:
			out = append(out, altsrc.NewStringFlag(f))
		case *cli.BoolFlag:
			out = append(out, altsrc.NewBoolFlag(f))
		case *cli.IntFlag:
			out = append(out, altsrc.NewIntFlag(f))
		case *cli.Int64Flag:
			out = append(out, altsrc.NewInt64Flag(f))
		case *cli.DurationFlag:
			out = append(out, altsrc.NewDurationFlag(f))
		case *cli.StringSliceFlag:
			out = append(out, altsrc.NewStringSliceFlag(f))
		default:
			out = append(out, f)
		}
	}
	return out
}

// loadConfigFile is the Before of commands with a --config file: a file
// that does not parse, or holds a value of the wrong type for its key, is a
// bad configuration (exit 2), named in one line.
func loadConfigFile(flags []cli.Flag) cli.BeforeFunc {
	load := altsrc.InitInputSourceWithContext(flags, altsrc.NewYamlSourceFromFlagFunc("config"))
	return func(c *cli.Context) error {
		if err := load(c); err != nil {
			return usageError{fmt.Errorf("--config %s: %w", c.String("config"), err)}
		}
		return nil
	}
}

// connectionFlagsWithEnv are the connection flags, also read from ETCDKIT_*.
func connectionFlagsWithEnv() []cli.Flag {
	flags := connectionFlags()
	for _, f := range flags {
		setEnv(f, envName(f.Names()[0]))
	}
	return flags
}

func schedulerConfig(c *cli.Context, cc cluster.Config) (scheduler.Config, error) {
	rs, err := recipients(c.StringSlice("encrypt-to"))
	if err != nil {
		return scheduler.Config{}, err
	}
	level, err := logging.ParseLevel(c.String("log-level"))
	if err != nil {
		return scheduler.Config{}, usageError{fmt.Errorf("--log-level: %w", err)}
	}
	ids, err := identities(c)
	if err != nil {
		return scheduler.Config{}, err
	}
	segSize, err := logSegmentSize(c)
	if err != nil {
		return scheduler.Config{}, err
	}
	limit, err := rateLimit(c)
	if err != nil {
		return scheduler.Config{}, err
	}
	return scheduler.Config{
		RevisionLog: c.Bool("revision-log"), LogInterval: c.Duration("log-interval"), LogSegmentSize: segSize,
		Cluster: cc, Repo: c.String("repo"), BackupSchedule: c.String("backup-schedule"), BackupAtStart: c.Bool("backup-at-start"),
		Retention: retention(c), Compression: c.String("compression"), Recipients: rs,
		Attachments: c.StringSlice("attach"), AllowPlaintextAttachments: c.Bool("allow-plaintext-attachments"), RateLimit: limit, SkipMemberHash: !c.Bool("member-hashkv"),
		CompactSchedule: c.String("compact-schedule"),
		CompactPolicy:   compact.Policy{KeepRevisions: c.Int64("compact-keep-revisions"), KeepDuration: c.Duration("compact-keep-duration"), Physical: true},
		DefragSchedule:  c.String("defrag-schedule"), DefragRule: c.String("defrag-rule"),
		DrillSchedule: c.String("drill-schedule"), DrillEtcdBinary: c.String("drill-etcd-binary"), Identities: ids,
		AutoRecoverNoSpace: c.Bool("auto-recover-nospace"), AlarmCheckEvery: c.Duration("alarm-check-interval"),
		MetricsAddr: c.String("metrics-addr"), Name: c.String("name"), ElectionPrefix: c.String("election-prefix"),
		SessionTTL: c.Int("session-ttl"), Retries: c.Int("retries"), RetryBackoff: c.Duration("retry-backoff"),
		StopGrace: c.Duration("stop-grace"),
		Logger:    logging.New(c.App.ErrWriter, level),
	}, nil
}

// runScheduler runs s until SIGTERM or SIGINT; it exits 0 after the running
// job finished.
func runScheduler(c *cli.Context, cfg scheduler.Config) error {
	s, err := scheduler.New(cfg)
	if err != nil {
		return usageError{err}
	}
	ctx, stop := signal.NotifyContext(c.Context, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return s.Run(ctx)
}

// checkScheduler prints the preflight of a scheduler configuration: the
// jobs and their next runs, whether the cluster and the repository answer.
// A bad configuration exits 2, an unreachable cluster or repository 8.
func checkScheduler(c *cli.Context, cfg scheduler.Config) error {
	s, err := scheduler.New(cfg)
	if err != nil {
		return usageError{err}
	}
	items := s.Check(c.Context, time.Now())
	rec := record{json: items, header: []string{"check", "ok", "next", "detail"}}
	var failed error
	for _, it := range items {
		next := ""
		if it.Next != nil {
			next = it.Next.Format(time.RFC3339)
		}
		rec.rows = append(rec.rows, []string{it.Name, fmt.Sprint(it.OK), next, it.Detail})
		rec.fields = append(rec.fields, [2]string{it.Name, fmt.Sprintf("%v %s %s", it.OK, next, it.Detail)})
		if !it.OK && failed == nil {
			failed = fmt.Errorf("%w: scheduler check: %s: %s", cluster.ErrUnreachable, it.Name, it.Detail)
		}
	}
	if err := output(c, rec); err != nil {
		return err
	}
	return failed
}

func schedulerCommand() *cli.Command {
	flags := fromConfigFile(append(connectionFlagsWithEnv(), schedulerFlags(schedulerDefaults{compactKeepRevisions: 0})...))
	flags = append(flags, &cli.BoolFlag{Name: "check", Usage: "print the jobs with their next runs and whether the cluster and the repository answer, then exit (0 all good, 2 bad configuration, 8 unreachable)"},
		&cli.StringFlag{Name: flagWriteOut.Name, Aliases: flagWriteOut.Aliases, Value: flagWriteOut.Value, Usage: flagWriteOut.Usage + " (with --check)"})
	return &cli.Command{
		Name:  "scheduler",
		Usage: "run backups, compaction and defrag on cron schedules beside a cluster (one active instance, elected through etcd)",
		Description: "Every flag is also an ETCDKIT_* variable (ETCDKIT_BACKUP_SCHEDULE, ...) and a key of the --config\n" +
			"YAML file. JSON logs on stderr; Prometheus metrics, /healthz, /readyz and /status on --metrics-addr.",
		Flags:  flags,
		Before: loadConfigFile(flags),
		Action: func(c *cli.Context) error {
			if err := needArgs(c, 0, "no arguments"); err != nil {
				return err
			}
			cc := clusterConfig(c)
			cfg, err := schedulerConfig(c, cc)
			if err != nil {
				return err
			}
			if c.Bool("check") {
				return checkScheduler(c, cfg)
			}
			return runScheduler(c, cfg)
		},
		Subcommands: []*cli.Command{leaf(&cli.Command{
			Name:  "status",
			Usage: "the last job runs of a scheduler, from its --metrics-addr",
			Flags: []cli.Flag{&cli.StringFlag{Name: "metrics-addr", Value: scheduler.DefaultConfig().MetricsAddr, EnvVars: []string{"ETCDKIT_METRICS_ADDR"}, Usage: "the scheduler's address"}},
			Action: func(c *cli.Context) error {
				resp, err := http.Get("http://" + c.String("metrics-addr") + "/status")
				if err != nil {
					return fmt.Errorf("%w: scheduler at %s: %w", cluster.ErrUnreachable, c.String("metrics-addr"), err)
				}
				defer resp.Body.Close()
				var st scheduler.Status
				if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
					return fmt.Errorf("scheduler at %s: %w", c.String("metrics-addr"), err)
				}
				rec := record{json: st, header: []string{"job", "start", "took", "result", "attempts", "error"}}
				for _, r := range st.Runs {
					took := r.End.Sub(r.Start).Round(time.Millisecond).String()
					rec.rows = append(rec.rows, []string{r.Job, r.Start.Format(time.RFC3339), took, r.Result, fmt.Sprint(r.Attempts), r.Error})
					rec.fields = append(rec.fields, [2]string{r.Job, fmt.Sprintf("%s %s %s %s", r.Start.Format(time.RFC3339), took, r.Result, r.Error)})
				}
				if writeOut(c) == "simple" {
					fmt.Fprintf(c.App.Writer, "scheduler %s: active %v, running %q\n", st.Name, st.Active, st.Running)
				}
				return output(c, rec)
			},
		})},
	}
}

// clusterConfig reads the connection flags. --insecure-skip-tls-verify is
// said out loud on stderr: the cluster's certificate is not checked.
func clusterConfig(c *cli.Context) cluster.Config {
	if c.Bool("insecure-skip-tls-verify") {
		fmt.Fprintln(c.App.ErrWriter, "Warning: --insecure-skip-tls-verify: the cluster's TLS certificate is not checked, so anyone between etcdkit and the cluster can pose as it; pass --cacert instead")
	}
	var eps []string
	for _, e := range strings.Split(c.String("endpoints"), ",") {
		if e = strings.TrimSpace(e); e != "" {
			eps = append(eps, e)
		}
	}
	return cluster.Config{
		Endpoints: eps, Discover: c.Bool("cluster"),
		CACert: c.String("cacert"), Cert: c.String("cert"), Key: c.String("key"),
		User: c.String("user"), Password: c.String("password"),
		InsecureSkipTLSVerify: c.Bool("insecure-skip-tls-verify"),
		DialTimeout:           c.Duration("dial-timeout"), CommandTimeout: c.Duration("command-timeout"),
	}
}
