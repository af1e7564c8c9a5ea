package main

import (
	"fmt"
	"net/url"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
	"go.etcd.io/etcd/server/v3/embed"

	"github.com/etcdkit/etcdkit/cluster"
	"github.com/etcdkit/etcdkit/internal/logging"
	"github.com/etcdkit/etcdkit/serve"
)

// serveDefaults make `etcdkit serve` useful out of the box: a backup at
// start and every 30 minutes, the last 48 kept, compaction every 5 minutes
// keeping 10000 revisions, a daily defrag when 64 MiB are free, NOSPACE
// recovered by itself.
var serveDefaults = schedulerDefaults{
	backupSchedule: "@every 30m", backupAtStart: true, keepLast: 48,
	compactSchedule: "@every 5m", compactKeepRevisions: 10000,
	defragSchedule: "@daily", defragRule: "dbSizeFree > 64*1024*1024", autoRecover: true,
}

func serveCommand() *cli.Command {
	etcdFlags := []cli.Flag{
		&cli.StringFlag{Name: "data-dir", Value: "default.etcd", Usage: "the member's data dir"},
		&cli.StringFlag{Name: "listen-client-urls", Value: "http://127.0.0.1:2379", Usage: "URLs to serve clients on"},
		&cli.StringFlag{Name: "advertise-client-urls", Value: "http://127.0.0.1:2379", Usage: "client URLs to advertise"},
		&cli.StringFlag{Name: "listen-peer-urls", Value: "http://127.0.0.1:2380", Usage: "URLs to serve peers on"},
		&cli.StringFlag{Name: "initial-advertise-peer-urls", Value: "http://127.0.0.1:2380", Usage: "peer URLs to advertise"},
		&cli.StringFlag{Name: "initial-cluster", Usage: "initial cluster (default: <name>=<initial-advertise-peer-urls>)"},
		&cli.StringFlag{Name: "initial-cluster-token", Value: "etcd-cluster", Usage: "initial cluster token"},
		&cli.StringFlag{Name: "initial-cluster-state", Value: "new", Usage: "new or existing"},
		&cli.Int64Flag{Name: "quota-backend-bytes", Usage: "backend quota (0: etcd's default, 2 GiB)"},
		&cli.StringFlag{Name: "etcd-log-level", Value: "warn", Usage: "log the embedded etcd's messages at this level and above (debug, info, warn, error), in the same JSON lines as etcdkit's"},
	}
	for _, f := range etcdFlags {
		setEnv(f, envName(f.Names()[0]))
	}
	flags := fromConfigFile(append(etcdFlags, schedulerFlags(serveDefaults)...))
	return &cli.Command{
		Name:  "serve",
		Usage: "run one etcd member in-process with the scheduler maintaining it (backups into --repo, default ./backups beside the data dir)",
		Description: "The scheduler's flags apply; the defaults take a backup at start and every 30 minutes, keep 48,\n" +
			"compact every 5 minutes keeping 10000 revisions, defragment daily when 64 MiB are free and\n" +
			"recover from NOSPACE by themselves.",
		Flags:  flags,
		Before: loadConfigFile(flags),
		Action: func(c *cli.Context) error {
			if err := needArgs(c, 0, "no arguments"); err != nil {
				return err
			}
			sc, err := schedulerConfig(c, cluster.Config{DialTimeout: 2 * time.Second, CommandTimeout: 10 * time.Second})
			if err != nil {
				return err
			}
			etcdLevel, err := logging.ParseLevel(c.String("etcd-log-level"))
			if err != nil {
				return usageError{fmt.Errorf("--etcd-log-level: %w", err)}
			}
			cfg, err := embedConfig(c)
			if err != nil {
				return usageError{err}
			}
			ctx, stop := signal.NotifyContext(c.Context, syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			return serve.Run(ctx, serve.Config{Etcd: cfg, EtcdLogLevel: etcdLevel, Scheduler: sc})
		},
	}
}

// embedConfig builds the member's configuration from the flags (serve.Run
// validates it, with etcd's messages in etcdkit's log).
func embedConfig(c *cli.Context) (*embed.Config, error) {
	cfg := embed.NewConfig()
	cfg.Name = c.String("name")
	if cfg.Name == "" {
		cfg.Name = "default"
	}
	cfg.Dir = c.String("data-dir")
	cfg.LogLevel = c.String("etcd-log-level")
	cfg.InitialClusterToken = c.String("initial-cluster-token")
	cfg.ClusterState = c.String("initial-cluster-state")
	cfg.QuotaBackendBytes = c.Int64("quota-backend-bytes")
	for _, x := range []struct {
		flag string
		dst  *[]url.URL
	}{
		{"listen-client-urls", &cfg.ListenClientUrls}, {"advertise-client-urls", &cfg.AdvertiseClientUrls},
		{"listen-peer-urls", &cfg.ListenPeerUrls}, {"initial-advertise-peer-urls", &cfg.AdvertisePeerUrls},
	} {
		var us []url.URL
		for _, s := range strings.Split(c.String(x.flag), ",") {
			u, err := url.Parse(strings.TrimSpace(s))
			if err != nil || u.Host == "" {
				return nil, fmt.Errorf("--%s %q: not a URL", x.flag, s)
			}
			us = append(us, *u)
		}
		*x.dst = us
	}
	cfg.InitialCluster = c.String("initial-cluster")
	if cfg.InitialCluster == "" {
		cfg.InitialCluster = cfg.Name + "=" + c.String("initial-advertise-peer-urls")
	}
	return cfg, nil
}
