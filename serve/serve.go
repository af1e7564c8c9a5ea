// Package serve runs one etcd member in-process (go.etcd.io/etcd/server/v3/
// embed) with the scheduler maintaining it: the member's start and
// readiness, the scheduler pointed at its client URLs, a repository beside
// the data dir by default, etcd's own logs in etcdkit's log format, a watch
// that stops everything when etcd stops serving, and a clean stop.
package serve

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap/zapgrpc"
	"google.golang.org/grpc/grpclog"

	"github.com/etcdkit/etcdkit/internal/logging"
	"github.com/etcdkit/etcdkit/scheduler"
)

// ErrConfig reports a member configuration etcd refuses.
var ErrConfig = errors.New("bad member configuration")

// Config is the member and its maintenance.
type Config struct {
	// Etcd is the member; its logger is set by Run.
	Etcd *embed.Config
	// EtcdLogLevel is the lowest level of etcd's messages that are logged.
	EtcdLogLevel slog.Level
	// Scheduler maintains the member. Its cluster endpoints are the
	// member's advertised client URLs; an empty Repo is a "backups"
	// directory beside the data dir.
	Scheduler scheduler.Config
	// ReadyTimeout bounds the wait for the member to serve (default 5m).
	ReadyTimeout time.Duration
}

// Run starts the member and the scheduler and returns when ctx ends (after
// the running job, as scheduler.Run does) or when etcd stops serving.
func Run(ctx context.Context, cfg Config) error {
	if cfg.ReadyTimeout == 0 {
		cfg.ReadyTimeout = 5 * time.Minute
	}
	sc := cfg.Scheduler
	if sc.Logger == nil {
		sc.Logger = logging.New(os.Stderr, slog.LevelInfo)
	}
	// etcd's and gRPC's messages go to the same JSON log as etcdkit's.
	zl, bridge := logging.Zap(sc.Logger, cfg.EtcdLogLevel, "etcd")
	grpclog.SetLoggerV2(zapgrpc.NewLogger(zl))
	ec := cfg.Etcd
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zl)
	if err := ec.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	var eps []string
	for _, u := range ec.AdvertiseClientUrls {
		eps = append(eps, u.String())
	}
	sc.Cluster.Endpoints = eps
	if sc.Repo == "" {
		abs, err := filepath.Abs(ec.Dir)
		if err != nil {
			return err
		}
		sc.Repo = filepath.Join(filepath.Dir(abs), "backups")
	}
	s, err := scheduler.New(sc)
	if err != nil {
		return err
	}

	e, err := embed.StartEtcd(ec)
	if err != nil {
		return fmt.Errorf("start etcd: %w", err)
	}
	defer func() {
		bridge.Stopping() // what etcd says about its closing listeners is not news
		e.Close()
	}()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		return fmt.Errorf("etcd: %w", err)
	case <-time.After(cfg.ReadyTimeout):
		return fmt.Errorf("etcd did not become ready in %s", cfg.ReadyTimeout)
	case <-ctx.Done():
		return nil
	}
	sc.Logger.Info("etcd is serving", "name", ec.Name, "data-dir", ec.Dir, "client-urls", strings.Join(eps, ","), "repo", sc.Repo)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case err := <-e.Err():
			if err != nil {
				sc.Logger.Error("etcd stopped serving; stopping", "err", err.Error())
				cancel()
			}
		case <-ctx.Done():
		}
	}()
	return s.Run(ctx)
}
