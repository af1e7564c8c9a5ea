// Package scheduler runs etcdkit's maintenance jobs beside the cluster they
// maintain, on cron schedules: backups into a repository (create, verify,
// prune), compaction by policy, rolling defrag by rule, and an alarm watch
// that recovers from NOSPACE. Several schedulers, one beside each member,
// elect one active instance through etcd itself; the others stand by and
// take over when its session expires. Jobs never overlap: a job whose turn
// comes while another runs is skipped and logged.
package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"filippo.io/age"
	"github.com/robfig/cron/v3"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/etcdkit/etcdkit/backup"
	"github.com/etcdkit/etcdkit/cluster"
	"github.com/etcdkit/etcdkit/compact"
	"github.com/etcdkit/etcdkit/internal/logging"
	"github.com/etcdkit/etcdkit/pitr"
	"github.com/etcdkit/etcdkit/rollingdefrag"
)

// Config is what the scheduler does and how.
type Config struct {
	Cluster cluster.Config

	Repo           string // backup repository URL
	BackupSchedule string // cron spec; "" disables backups
	BackupAtStart  bool   // take one backup as soon as this instance is active
	Retention      backup.Retention
	Compression    string
	Recipients     []age.Recipient
	// Attachments are stored with every backup (backup.CreateOptions).
	Attachments               []string
	AllowPlaintextAttachments bool
	// RateLimit caps each backup's snapshot stream, bytes per second;
	// SkipMemberHash does not ask the member for its HashKV.
	RateLimit      int64
	SkipMemberHash bool

	// RevisionLog runs the point-in-time log (package pitr) while this
	// instance is active: every revision from the newest full backup on,
	// in segments cut every LogInterval or LogSegmentSize.
	RevisionLog    bool
	LogInterval    time.Duration
	LogSegmentSize int64

	CompactSchedule string
	CompactPolicy   compact.Policy // KeepRevisions or KeepDuration

	DefragSchedule string
	DefragRule     string

	// DrillSchedule restores the newest backup into a scratch directory,
	// boots a member on it and checks it (package drill); "" disables.
	// DrillEtcdBinary boots that etcd instead of the embedded one;
	// Identities decrypt encrypted backups.
	DrillSchedule   string
	DrillEtcdBinary string
	Identities      []age.Identity

	AutoRecoverNoSpace bool
	AlarmCheckEvery    time.Duration // default 10s

	MetricsAddr    string // host:port for /metrics, /healthz, /readyz, /status; "" disables
	ElectionPrefix string // default __etcdkit/scheduler-election
	Name           string // this instance, default hostname-pid
	SessionTTL     int    // seconds, default 5

	// Retries of a failed job: 0 means none (DefaultConfig has 2).
	Retries      int
	RetryBackoff time.Duration // first retry delay (doubles); zero: the default
	// StopGrace bounds how long a stop waits for the running job.
	StopGrace time.Duration // zero: the default

	Logger *slog.Logger
}

// DefaultConfig holds the scheduler's defaults, the one place they are
// written: the command line takes its flags' defaults from here, and New
// fills in the fields left zero whose zero means nothing (a zero interval,
// an empty election prefix). Retries is not one of them: 0 is a choice.
func DefaultConfig() Config {
	return Config{
		Compression:     "zstd",
		AlarmCheckEvery: 10 * time.Second,
		MetricsAddr:     "127.0.0.1:9479",
		ElectionPrefix:  "__etcdkit/scheduler-election",
		SessionTTL:      5,
		Retries:         2,
		RetryBackoff:    5 * time.Second,
		StopGrace:       5 * time.Minute,
	}
}

func (c *Config) defaults() {
	d := DefaultConfig()
	if c.AlarmCheckEvery == 0 {
		c.AlarmCheckEvery = d.AlarmCheckEvery
	}
	if c.ElectionPrefix == "" {
		c.ElectionPrefix = d.ElectionPrefix
	}
	if c.Name == "" {
		h, _ := os.Hostname()
		c.Name = fmt.Sprintf("%s-%d", h, os.Getpid())
	}
	if c.SessionTTL == 0 {
		c.SessionTTL = d.SessionTTL
	}
	if c.RetryBackoff == 0 {
		c.RetryBackoff = d.RetryBackoff
	}
	if c.StopGrace == 0 {
		c.StopGrace = d.StopGrace
	}
	if c.Logger == nil {
		c.Logger = logging.New(os.Stderr, slog.LevelInfo)
	}
}

// Run is one job run.
type Run struct {
	Job      string    `json:"job"`
	Start    time.Time `json:"start"`
	End      time.Time `json:"end"`
	Result   string    `json:"result"` // success, failed, skipped
	Attempts int       `json:"attempts,omitempty"`
	Error    string    `json:"error,omitempty"`
}

// Status is what /status reports.
type Status struct {
	Name    string `json:"name"`
	Active  bool   `json:"active"`
	Running string `json:"running,omitempty"`
	Runs    []Run  `json:"runs"`
	// RevisionLog is the point-in-time log's state, when it runs.
	RevisionLog *pitr.Stats `json:"revisionLog,omitempty"`
}

// ErrConfig: a bad schedule or an incomplete job configuration.
var ErrConfig = errors.New("bad scheduler configuration")

// Scheduler is a running scheduler.
type Scheduler struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics
	parser  cron.Parser

	cl   *cluster.Cluster
	repo *backup.Repository
	// revlog is the point-in-time log, made at the first election won
	// (it needs the client); its counters span every term.
	revlog atomic.Pointer[pitr.Logger]

	defragRule *rollingdefrag.Rule // parsed once, in New

	active atomic.Bool
	ready  atomic.Bool

	busy     chan struct{} // holds a token while a job runs: jobs never overlap
	mu       sync.Mutex    // guards running, inflight and runs
	running  string
	inflight map[string]bool // jobs running or waiting for their turn
	runs     []Run
	jobCtx   context.Context
}

const keepRuns = 100

// New checks the configuration.
func New(cfg Config) (*Scheduler, error) {
	cfg.defaults()
	s := &Scheduler{cfg: cfg, log: cfg.Logger.With("scheduler", cfg.Name), busy: make(chan struct{}, 1), inflight: map[string]bool{},
		parser: cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)}
	intervals := map[string]float64{}
	for name, spec := range map[string]string{"backup": cfg.BackupSchedule, "compact": cfg.CompactSchedule, "defrag": cfg.DefragSchedule, "drill": cfg.DrillSchedule} {
		if spec == "" {
			continue
		}
		sched, err := s.parser.Parse(spec)
		if err != nil {
			return nil, fmt.Errorf("%w: --%s-schedule %q: %w", ErrConfig, name, spec, err)
		}
		next := sched.Next(time.Now())
		intervals[name] = sched.Next(next).Sub(next).Seconds()
	}
	if (cfg.BackupSchedule != "" || cfg.BackupAtStart || cfg.DrillSchedule != "" || cfg.RevisionLog) && cfg.Repo == "" {
		return nil, fmt.Errorf("%w: backups, drills and the revision log need --repo", ErrConfig)
	}
	if cfg.LogInterval < 0 || cfg.LogSegmentSize < 0 {
		return nil, fmt.Errorf("%w: --log-interval and --log-segment-size must not be negative", ErrConfig)
	}
	if cfg.DrillSchedule != "" && len(cfg.Recipients) > 0 && len(cfg.Identities) == 0 {
		return nil, fmt.Errorf("%w: --drill-schedule with --encrypt-to needs --identity to decrypt the backups it drills", ErrConfig)
	}
	if cfg.CompactSchedule != "" && cfg.CompactPolicy.KeepRevisions == 0 && cfg.CompactPolicy.KeepDuration == 0 {
		return nil, fmt.Errorf("%w: --compact-schedule needs --compact-keep-revisions or --compact-keep-duration", ErrConfig)
	}
	if cfg.Compression != "" {
		if err := backup.CheckCompression(cfg.Compression); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrConfig, err)
		}
	}
	if err := backup.CheckAttachments(backup.CreateOptions{Recipients: cfg.Recipients, Attachments: cfg.Attachments, AllowPlaintextAttachments: cfg.AllowPlaintextAttachments}); err != nil {
		return nil, fmt.Errorf("%w: --attach: %w", ErrConfig, err)
	}
	if err := cfg.Retention.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if cfg.Retries < 0 {
		return nil, fmt.Errorf("%w: --retries %d: must be 0 or more", ErrConfig, cfg.Retries)
	}
	rule, err := rollingdefrag.ParseRule(cfg.DefragRule)
	if err != nil {
		return nil, fmt.Errorf("%w: --defrag-rule: %w", ErrConfig, err)
	}
	s.defragRule = rule
	s.metrics = newMetrics(s)
	for name, secs := range intervals {
		s.metrics.interval.WithLabelValues(name).Set(secs)
	}
	return s, nil
}

// Active reports whether this instance won the election.
func (s *Scheduler) Active() bool { return s.active.Load() }

// Status returns the scheduler's state and its last runs, newest last.
func (s *Scheduler) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Status{Name: s.cfg.Name, Active: s.Active(), Running: s.running, Runs: append([]Run(nil), s.runs...)}
	if lg := s.revlog.Load(); lg != nil {
		ls := lg.Stats()
		st.RevisionLog = &ls
	}
	return st
}

// Run connects, serves the metrics, and campaigns; while active it runs
// the jobs. It returns nil when ctx ends, after the running job finished
// (or StopGrace passed, when the job's context is cancelled).
func (s *Scheduler) Run(ctx context.Context) error {
	jobCtx, cancelJobs := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelJobs()
	s.jobCtx = jobCtx
	if s.cfg.MetricsAddr != "" {
		stop, err := s.serveHTTP()
		if err != nil {
			return err
		}
		defer stop()
	}
	for ctx.Err() == nil {
		if err := s.connect(ctx); err != nil {
			s.log.Error("cannot reach the cluster; retrying", "err", err.Error())
			s.metrics.failures.WithLabelValues("connect").Inc()
			sleep(ctx, 5*time.Second)
			continue
		}
		s.ready.Store(true)
		err := s.lead(ctx, cancelJobs)
		s.ready.Store(false)
		if err != nil && ctx.Err() == nil {
			s.log.Error("lost the cluster; reconnecting", "err", err.Error())
			sleep(ctx, time.Second)
		}
	}
	if s.cl != nil {
		s.cl.Close()
	}
	s.log.Info("stopped")
	return nil
}

func (s *Scheduler) connect(ctx context.Context) error {
	if s.cl != nil {
		return nil
	}
	cl, _, err := dial(ctx, s.cfg.Cluster)
	if err != nil {
		return err
	}
	if s.cfg.Repo != "" {
		r, err := backup.Open(ctx, s.cfg.Repo)
		if err != nil {
			cl.Close()
			return err
		}
		s.repo = r
		// The age of the newest backup counts from the repository, not
		// from this process's start: a restarted scheduler over a stale
		// repository is alerted on at once.
		if m, err := r.Find(ctx, "latest"); err == nil {
			s.metrics.setNewestBackup(m)
		}
	}
	s.cl = cl
	return nil
}

// dial connects to the cluster and makes sure it answers (the client
// dials lazily), returning its members.
func dial(ctx context.Context, cfg cluster.Config) (*cluster.Cluster, []*etcdserverpb.Member, error) {
	cl, err := cluster.Connect(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	ms, err := cl.Members(ctx)
	if err != nil {
		cl.Close()
		return nil, nil, err
	}
	return cl, ms, nil
}

// lead campaigns until elected, runs the jobs while the session lives, and
// returns when ctx ends (after the running job) or the session is lost.
func (s *Scheduler) lead(ctx context.Context, cancelJobs context.CancelFunc) error {
	sess, err := concurrency.NewSession(s.cl.Client, concurrency.WithTTL(s.cfg.SessionTTL), concurrency.WithContext(ctx))
	if err != nil {
		return err
	}
	defer sess.Close()
	e := concurrency.NewElection(sess, s.cfg.ElectionPrefix)
	s.log.Info("standing by: campaigning to be the active scheduler")
	if err := e.Campaign(ctx, s.cfg.Name); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	s.active.Store(true)
	s.metrics.active.Set(1)
	s.log.Info("active: running the jobs")
	c := cron.New(cron.WithParser(s.parser), cron.WithLocation(time.UTC))
	s.addJobs(c)
	c.Start()
	stopLoops := make(chan struct{})
	var loops sync.WaitGroup
	loops.Go(func() { s.watch(stopLoops) })
	if s.cfg.RevisionLog {
		loops.Go(func() { s.logLoop(stopLoops) })
	}
	if s.cfg.BackupAtStart {
		go s.runJob("backup", s.backupJob)
	}
	select {
	case <-ctx.Done():
	case <-sess.Done():
		s.log.Error("lost the election session (the cluster did not see us in time); standing by again")
	}
	// No new job starts from here on; the running one finishes (or is
	// cancelled after StopGrace).
	s.active.Store(false)
	s.metrics.active.Set(0)
	close(stopLoops)
	loops.Wait()
	done := c.Stop()
	select {
	case <-done.Done():
	case <-time.After(s.cfg.StopGrace):
		s.log.Error("the running job did not finish in time; cancelling it", "grace", s.cfg.StopGrace.String())
		cancelJobs()
		<-done.Done()
	}
	s.busy <- struct{}{} // a job started outside cron (at start, recovery) finishes too
	<-s.busy
	if ctx.Err() == nil {
		return errors.New("election session lost")
	}
	rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = e.Resign(rctx)
	return nil
}

func (s *Scheduler) addJobs(c *cron.Cron) {
	add := func(spec, name string, fn func(context.Context) error) {
		if spec != "" {
			c.AddFunc(spec, func() { s.runJob(name, fn) })
		}
	}
	add(s.cfg.BackupSchedule, "backup", s.backupJob)
	add(s.cfg.CompactSchedule, "compact", s.compactJob)
	add(s.cfg.DefragSchedule, "defrag", s.defragJob)
	add(s.cfg.DrillSchedule, "drill", s.drillJob)
}

// runJob runs fn after any other running job (jobs never overlap), with
// retries and backoff, and records the run. A job whose previous run is
// still running or waiting is skipped.
func (s *Scheduler) runJob(name string, fn func(context.Context) error) {
	run := Run{Job: name, Start: time.Now().UTC()}
	s.mu.Lock()
	if s.inflight[name] {
		s.mu.Unlock()
		run.End, run.Result = run.Start, "skipped"
		run.Error = "the previous run is still running or waiting"
		s.log.Warn("job skipped: its previous run is not done", "job", name)
		s.record(run)
		return
	}
	s.inflight[name] = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.inflight[name], s.running = false, ""
		s.mu.Unlock()
	}()
	select {
	case s.busy <- struct{}{}:
	case <-s.jobCtx.Done():
		return
	}
	defer func() { <-s.busy }()
	if !s.Active() {
		return // lost the election while waiting
	}
	run.Start = time.Now().UTC()
	s.mu.Lock()
	s.running = name
	s.mu.Unlock()
	backoff := s.cfg.RetryBackoff
	var err error
	for run.Attempts = 1; ; run.Attempts++ {
		start := time.Now()
		err = fn(s.jobCtx)
		s.metrics.duration.WithLabelValues(name).Observe(time.Since(start).Seconds())
		if err == nil || run.Attempts > s.cfg.Retries || s.jobCtx.Err() != nil || !s.Active() {
			break
		}
		s.log.Warn("job failed; retrying", "job", name, "attempt", run.Attempts, "in", backoff.String(), "err", err.Error())
		sleep(s.jobCtx, backoff)
		backoff *= 2
	}
	run.End = time.Now().UTC()
	if err != nil {
		run.Result, run.Error = "failed", err.Error()
		s.log.Error("job failed", "job", name, "attempts", run.Attempts, "err", err.Error())
	} else {
		run.Result = "success"
		s.metrics.lastSuccess.WithLabelValues(name).Set(float64(run.End.Unix()))
		s.log.Info("job done", "job", name, "took", run.End.Sub(run.Start).Round(time.Millisecond).String())
	}
	s.record(run)
}

func (s *Scheduler) record(r Run) {
	s.metrics.runs.WithLabelValues(r.Job, r.Result).Inc()
	if r.Result == "failed" {
		s.metrics.failures.WithLabelValues(r.Job).Inc()
	}
	s.mu.Lock()
	s.runs = append(s.runs, r)
	if len(s.runs) > keepRuns {
		s.runs = s.runs[len(s.runs)-keepRuns:]
	}
	s.mu.Unlock()
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
