package scheduler

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/etcdkit/etcdkit/alarm"
	"github.com/etcdkit/etcdkit/backup"
)

// CheckItem is one line of a preflight check: a configured job and when it
// next runs, or whether the cluster and the repository answer.
type CheckItem struct {
	Name   string     `json:"name"` // backup, compact, defrag, nospace, cluster, repository
	OK     bool       `json:"ok"`
	Detail string     `json:"detail"`
	Next   *time.Time `json:"next,omitempty"`
}

// Check is the preflight an operator runs before trusting a scheduler
// with the cluster (`etcdkit scheduler --check`): what each configured job
// does and when it next runs (the configuration itself was checked by
// New), then whether the cluster answers (members, active alarms) and the
// repository opens (its newest backup). It neither campaigns nor runs a
// job, and changes nothing in the cluster or the repository (a local
// repository's directory is created, as the scheduler would).
func (s *Scheduler) Check(ctx context.Context, now time.Time) []CheckItem {
	var items []CheckItem
	job := func(name, spec, detail string) {
		it := CheckItem{Name: name, OK: true, Detail: spec + ": " + detail}
		if sched, err := s.parser.Parse(spec); err == nil {
			next := sched.Next(now).UTC()
			it.Next = &next
		}
		items = append(items, it)
	}
	cfg := s.cfg
	if cfg.BackupSchedule != "" {
		d := "backup, verify, then keep " + retentionString(cfg.Retention) + "; " + cfg.Compression
		if n := len(cfg.Recipients); n > 0 {
			d += fmt.Sprintf(", encrypted to %d age recipient(s)", n)
		}
		if cfg.BackupAtStart {
			d += "; one backup as soon as this instance is active"
		}
		job("backup", cfg.BackupSchedule, d)
	}
	if cfg.CompactSchedule != "" {
		p := cfg.CompactPolicy
		d := fmt.Sprintf("compact, keeping the last %d revisions", p.KeepRevisions)
		if p.KeepDuration > 0 {
			d = fmt.Sprintf("compact, keeping %s of history", p.KeepDuration)
		}
		job("compact", cfg.CompactSchedule, d+"; never past the newest backup")
	}
	if cfg.DefragSchedule != "" {
		rule := cfg.DefragRule
		if rule == "" {
			rule = "every member"
		}
		job("defrag", cfg.DefragSchedule, "rolling defrag, leader last, of members where: "+rule)
	}
	if cfg.DrillSchedule != "" {
		member := "the embedded etcd"
		if cfg.DrillEtcdBinary != "" {
			member = cfg.DrillEtcdBinary
		}
		job("drill", cfg.DrillSchedule, "restore drill of the newest backup: restore into a scratch directory, boot "+member+", compare HashKV, keys, leases and members with the manifest")
	}
	if cfg.AutoRecoverNoSpace {
		items = append(items, CheckItem{Name: "nospace", OK: true,
			Detail: fmt.Sprintf("every %s: recover from a NOSPACE alarm (compact, defrag, disarm)", cfg.AlarmCheckEvery)})
	}
	items = append(items, s.checkCluster(ctx))
	if cfg.Repo != "" {
		items = append(items, s.checkRepo(ctx))
	}
	return items
}

func (s *Scheduler) checkCluster(ctx context.Context) CheckItem {
	it := CheckItem{Name: "cluster"}
	cl, ms, err := dial(ctx, s.cfg.Cluster)
	if err != nil {
		it.Detail = err.Error()
		return it
	}
	defer cl.Close()
	var names []string
	for _, m := range ms {
		names = append(names, m.Name)
	}
	it.Detail = fmt.Sprintf("%d members (%s)", len(ms), strings.Join(names, ", "))
	alarms, err := alarm.List(ctx, cl)
	if err != nil {
		it.Detail += fmt.Sprintf("; alarms: %v", err)
		return it
	}
	it.OK = true
	for _, a := range alarms {
		it.Detail += fmt.Sprintf("; ALARM %s on member %s", a.Alarm, a.MemberID)
	}
	return it
}

func (s *Scheduler) checkRepo(ctx context.Context) CheckItem {
	it := CheckItem{Name: "repository"}
	r, err := backup.Open(ctx, s.cfg.Repo)
	if err != nil {
		it.Detail = err.Error()
		return it
	}
	ms, err := r.List(ctx)
	if err != nil {
		it.Detail = fmt.Sprintf("%s: %v", r.Store, err)
		return it
	}
	it.OK = true
	if len(ms) == 0 {
		it.Detail = fmt.Sprintf("%s: no backups yet", r.Store)
		return it
	}
	newest := ms[len(ms)-1]
	it.Detail = fmt.Sprintf("%s: %d backups, newest %s at %s (revision %d)", r.Store, len(ms), newest.ID, newest.Time.UTC().Format(time.RFC3339), newest.Revision)
	return it
}

func retentionString(r backup.Retention) string {
	var parts []string
	for _, p := range []struct {
		n    int
		what string
	}{{r.KeepLast, "last"}, {r.KeepHourly, "hourly"}, {r.KeepDaily, "daily"}, {r.KeepWeekly, "weekly"}, {r.KeepMonthly, "monthly"}} {
		if p.n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", p.what, p.n))
		}
	}
	if r.KeepWithin > 0 {
		parts = append(parts, "within "+r.KeepWithin.String())
	}
	if len(parts) == 0 {
		return "every backup (no retention rule)"
	}
	return strings.Join(parts, ", ")
}
