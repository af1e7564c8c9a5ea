package scheduler

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/etcdkit/etcdkit/alarm"
	"github.com/etcdkit/etcdkit/backup"
	"github.com/etcdkit/etcdkit/compact"
	"github.com/etcdkit/etcdkit/drill"
	"github.com/etcdkit/etcdkit/pitr"
	"github.com/etcdkit/etcdkit/rollingdefrag"
)

// backupJob creates a verified backup and applies the retention rules.
func (s *Scheduler) backupJob(ctx context.Context) error {
	m, err := s.repo.Create(ctx, s.cl, backup.CreateOptions{Compression: s.cfg.Compression, Recipients: s.cfg.Recipients, Verify: true,
		Attachments: s.cfg.Attachments, AllowPlaintextAttachments: s.cfg.AllowPlaintextAttachments, RateLimit: s.cfg.RateLimit, SkipMemberHash: s.cfg.SkipMemberHash})
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	s.log.Info("backup stored", "id", m.ID, "revision", m.Revision, "size", m.Size, "stored", m.StoredSize, "repo", s.repo.Store.String())
	s.metrics.setNewestBackup(m)
	if !s.cfg.Retention.Empty() {
		res, err := s.repo.Prune(ctx, s.cfg.Retention, time.Hour, false)
		if err != nil {
			return fmt.Errorf("prune: %w", err)
		}
		removed := 0
		for _, d := range res.Decisions {
			if !d.Keep {
				removed++
			}
		}
		if removed+len(res.Leftovers) > 0 {
			s.log.Info("pruned", "backups", removed, "leftovers", len(res.Leftovers))
		}
	}
	return nil
}

// compactJob compacts by policy, never past the newest backup.
func (s *Scheduler) compactJob(ctx context.Context) error {
	p := s.cfg.CompactPolicy
	if s.repo != nil {
		if newest, err := s.repo.Find(ctx, "latest"); err == nil {
			p.BackupRevision, p.ClampToBackup = newest.Revision, true
		}
	}
	if lg := s.revlog.Load(); lg != nil {
		// Never past where the log goes on: a log that restarts must
		// find its next revision in the cluster's history.
		st := lg.Stats()
		if !p.ClampToBackup || st.Stored+1 < p.BackupRevision {
			p.BackupRevision, p.ClampToBackup = st.Stored+1, true
		}
	}
	res, err := compact.Compact(ctx, s.cl, p)
	if err != nil {
		return fmt.Errorf("compact: %w", err)
	}
	if res.Compacted {
		s.log.Info("compacted", "revision", res.Revision, "current", res.CurrentRevision)
	}
	return nil
}

// defragJob runs a rolling defrag with the configured rule.
func (s *Scheduler) defragJob(ctx context.Context) error {
	res, err := rollingdefrag.Run(ctx, s.cl, rollingdefrag.Options{Rule: s.defragRule, MoveLeader: true,
		Log: func(format string, args ...any) { s.log.Info("defrag: " + fmt.Sprintf(format, args...)) }})
	for _, r := range res {
		if r.Action == rollingdefrag.Defragmented {
			s.log.Info("defragmented", "member", r.Name, "before", r.Before, "after", r.After, "took", r.Took.String())
		}
	}
	if err != nil {
		return fmt.Errorf("defrag: %w", err)
	}
	return nil
}

// drillJob restores the newest backup, boots a member on it and checks it.
func (s *Scheduler) drillJob(ctx context.Context) error {
	rep, err := drill.Run(ctx, drill.Options{Repo: s.repo, Backup: "latest", Identities: s.cfg.Identities, EtcdBinary: s.cfg.DrillEtcdBinary})
	if rep != nil {
		s.metrics.drillDuration.Set(rep.TotalSeconds)
		s.metrics.drillServing.Set(rep.ServingSeconds)
	}
	if err != nil {
		s.metrics.drillFailures.Inc()
		return fmt.Errorf("drill: %w", err)
	}
	s.metrics.drillSuccess.Set(float64(time.Now().Unix()))
	s.log.Info("drill passed", "backup", rep.Backup, "revision", rep.Revision, "serving_after", fmt.Sprintf("%.1fs", rep.ServingSeconds))
	return nil
}

// recoverJob lifts NOSPACE.
func (s *Scheduler) recoverJob(ctx context.Context) error {
	rec, err := alarm.RecoverNoSpace(ctx, s.cl, rollingdefrag.Options{})
	if err != nil {
		return fmt.Errorf("recover-nospace: %w", err)
	}
	s.log.Info("recovered from NOSPACE", "compacted", rec.Compacted, "disarmed", len(rec.Disarmed))
	return nil
}

// watch runs while active: member sizes for the metrics, the revision
// clock once a minute, and the alarm check.
func (s *Scheduler) watch(stop <-chan struct{}) {
	tick := time.NewTicker(s.cfg.AlarmCheckEvery)
	defer tick.Stop()
	var lastClock time.Time
	for {
		ctx, cancel := context.WithTimeout(s.jobCtx, 30*time.Second)
		for _, st := range s.cl.Status(ctx, 0) {
			if st.OK() {
				s.metrics.dbSize.WithLabelValues(st.Name).Set(float64(st.DBSize))
				s.metrics.dbInUse.WithLabelValues(st.Name).Set(float64(st.DBSizeInUse))
				if st.DBQuota > 0 {
					s.metrics.dbQuota.WithLabelValues(st.Name).Set(float64(st.DBQuota))
				}
			}
		}
		if time.Since(lastClock) >= time.Minute {
			if _, err := compact.RecordClock(ctx, s.cl); err == nil {
				lastClock = time.Now()
			}
		}
		if as, err := alarm.List(ctx, s.cl); err == nil {
			count := map[string]int{"NOSPACE": 0, "CORRUPT": 0}
			for _, a := range as {
				count[a.Alarm]++
			}
			for name, n := range count {
				s.metrics.alarms.WithLabelValues(name).Set(float64(n))
			}
			if s.cfg.AutoRecoverNoSpace && count["NOSPACE"] > 0 {
				s.log.Error("NOSPACE alarm: the cluster refuses writes; recovering")
				go s.runJob("recover-nospace", s.recoverJob)
			}
		}
		cancel()
		select {
		case <-stop:
			return
		case <-tick.C:
		}
	}
}

// logLoop runs the revision log until stop, restarting it after a failure
// (it resumes after the last stored segment).
func (s *Scheduler) logLoop(stop <-chan struct{}) {
	lg := s.revlog.Load()
	if lg == nil {
		var err error
		lg, err = pitr.New(pitr.Config{Repo: s.repo, Client: s.cl.Client, Interval: s.cfg.LogInterval, SegmentSize: s.cfg.LogSegmentSize,
			Store: backup.SegmentOptions{Compression: s.cfg.Compression, Recipients: s.cfg.Recipients}, Writer: s.cfg.Name,
			FullBackup: s.fullBackupForLog, Logger: s.log})
		if err != nil {
			s.log.Error("revision log: cannot start", "err", err.Error())
			return
		}
		s.revlog.Store(lg)
	}
	ctx, cancel := context.WithCancel(s.jobCtx)
	defer cancel()
	go func() {
		select {
		case <-stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	lg.RunRetrying(ctx, func(error) { s.metrics.failures.WithLabelValues("revision-log").Inc() })
}

// fullBackupForLog takes a backup as the backup job does (never beside
// another job) for the log to start or go on from.
func (s *Scheduler) fullBackupForLog(ctx context.Context) error {
	s.runJob("backup", s.backupJob)
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.runs) - 1; i >= 0; i-- {
		if r := s.runs[i]; r.Job == "backup" {
			if r.Result != "success" {
				return fmt.Errorf("backup %s: %s", r.Result, r.Error)
			}
			return nil
		}
	}
	return errors.New("the backup did not run (this instance is no longer active)")
}
