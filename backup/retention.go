package backup

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Retention says which backups prune keeps; a backup is kept if any rule
// keeps it. Calendar rules keep the newest backup of each of the last N
// hours, days, ISO weeks or months that hold one (in UTC).
type Retention struct {
	KeepLast    int
	KeepHourly  int
	KeepDaily   int
	KeepWeekly  int
	KeepMonthly int
	// KeepWithin keeps every backup taken within this duration before the
	// newest one (not before now: backups that stopped coming are not
	// all lost at once).
	KeepWithin time.Duration
}

// ErrRetention: a prune without any rule would delete everything, and a
// negative count or duration means nothing.
var ErrRetention = errors.New("bad retention")

// Empty reports whether no rule is set.
func (p Retention) Empty() bool { return p == Retention{} }

// Validate refuses negative counts and durations: --keep-last -1 must not
// read as "keep nothing" and delete backups.
func (p Retention) Validate() error {
	for _, r := range []struct {
		flag string
		n    int64
	}{
		{"keep-last", int64(p.KeepLast)}, {"keep-hourly", int64(p.KeepHourly)}, {"keep-daily", int64(p.KeepDaily)},
		{"keep-weekly", int64(p.KeepWeekly)}, {"keep-monthly", int64(p.KeepMonthly)}, {"keep-within", int64(p.KeepWithin)},
	} {
		if r.n < 0 {
			return fmt.Errorf("%w: --%s must not be negative", ErrRetention, r.flag)
		}
	}
	return nil
}

// Decision is prune's verdict on one backup.
type Decision struct {
	Manifest
	Keep    bool     `json:"keep"`
	Reasons []string `json:"reasons,omitempty"`
}

// Decide applies the policy to backups (any order) and returns one
// decision per backup, newest first. The newest verified backup is always
// kept.
func Decide(backups []Manifest, p Retention) []Decision {
	ds := make([]Decision, len(backups))
	for i, m := range backups {
		ds[i] = Decision{Manifest: m}
	}
	// Newest first, by time then revision.
	for i := 1; i < len(ds); i++ {
		for j := i; j > 0 && ds[j-1].Before(ds[j].Manifest); j-- {
			ds[j-1], ds[j] = ds[j], ds[j-1]
		}
	}
	keep := func(d *Decision, why string) { d.Keep = true; d.Reasons = append(d.Reasons, why) }
	for i := range ds {
		if i < p.KeepLast {
			keep(&ds[i], fmt.Sprintf("last %d", p.KeepLast))
		}
	}
	calendar := []struct {
		n      int
		name   string
		bucket func(time.Time) string
	}{
		{p.KeepHourly, "hourly", func(t time.Time) string { return t.Format("2006-01-02T15") }},
		{p.KeepDaily, "daily", func(t time.Time) string { return t.Format("2006-01-02") }},
		{p.KeepWeekly, "weekly", func(t time.Time) string { y, w := t.ISOWeek(); return fmt.Sprintf("%d-W%02d", y, w) }},
		{p.KeepMonthly, "monthly", func(t time.Time) string { return t.Format("2006-01") }},
	}
	for _, cal := range calendar {
		seen := map[string]bool{}
		for i := range ds {
			if len(seen) >= cal.n {
				break
			}
			b := cal.bucket(ds[i].Time.UTC())
			if !seen[b] {
				seen[b] = true
				keep(&ds[i], cal.name+" "+b)
			}
		}
	}
	if p.KeepWithin > 0 && len(ds) > 0 {
		from := ds[0].Time.Add(-p.KeepWithin)
		for i := range ds {
			if !ds[i].Time.Before(from) {
				keep(&ds[i], "within "+p.KeepWithin.String()+" of the newest")
			}
		}
	}
	for i := range ds {
		if ds[i].Verified {
			keep(&ds[i], "newest verified")
			break
		}
	}
	return ds
}

// PruneResult is what prune did (or, dry, would do).
type PruneResult struct {
	Decisions []Decision `json:"decisions"`
	Leftovers []string   `json:"leftovers"` // traces of interrupted uploads removed
	// Segments are the log segments (and gap records) removed: those
	// that extend only backups older than the oldest kept one.
	Segments []string `json:"segments,omitempty"`
}

// Prune deletes the backups the policy does not keep and the leftovers of
// uploads interrupted more than grace ago. With dryRun it only reports.
func (r *Repository) Prune(ctx context.Context, p Retention, grace time.Duration, dryRun bool) (PruneResult, error) {
	var res PruneResult
	if err := p.Validate(); err != nil {
		return res, err
	}
	if p.Empty() {
		return res, fmt.Errorf("%w: give at least one --keep-* flag (prune would delete every backup but the newest verified)", ErrRetention)
	}
	all, err := r.List(ctx)
	if err != nil {
		return res, err
	}
	res.Decisions = Decide(all, p)
	before := time.Now().Add(-grace)
	// Data objects without a manifest: uploads that never finished.
	objs, err := r.Store.List(ctx, prefix)
	if err != nil {
		return res, err
	}
	listed := map[string]bool{}
	for _, m := range all {
		listed[m.dir()] = true
	}
	for _, o := range objs {
		// The backup's directory: backups/<id>/ (attachments lie deeper).
		id, _, _ := strings.Cut(strings.TrimPrefix(o.Name, prefix), "/")
		dir := prefix + id + "/"
		if !listed[dir] && o.ModTime.Before(before) {
			res.Leftovers = append(res.Leftovers, o.Name)
		}
	}
	logLeft, err := r.segmentLeftovers(ctx, before)
	if err != nil {
		return res, err
	}
	res.Leftovers = append(res.Leftovers, logLeft...)
	segs, err := r.Segments(ctx)
	if err != nil {
		return res, err
	}
	var kept []Manifest
	for _, d := range res.Decisions {
		if d.Keep {
			kept = append(kept, d.Manifest)
		}
	}
	drop := unneededSegments(kept, segs)
	for _, s := range drop {
		res.Segments = append(res.Segments, s.Name)
	}
	traces, err := r.Store.Leftovers(ctx, before)
	if err != nil {
		return res, err
	}
	if dryRun {
		res.Leftovers = append(res.Leftovers, traces...)
		return res, nil
	}
	for _, d := range res.Decisions {
		if !d.Keep {
			if err := r.remove(ctx, d.Manifest); err != nil {
				return res, err
			}
		}
	}
	for _, s := range drop {
		if err := r.removeSegment(ctx, s); err != nil {
			return res, err
		}
	}
	for _, o := range res.Leftovers {
		if err := r.Store.Delete(ctx, o); err != nil {
			return res, err
		}
	}
	for _, t := range traces {
		if err := r.Store.RemoveLeftover(ctx, t); err != nil {
			return res, err
		}
		res.Leftovers = append(res.Leftovers, t)
	}
	return res, nil
}
