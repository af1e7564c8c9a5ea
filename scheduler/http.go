package scheduler

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/etcdkit/etcdkit/backup"
	"github.com/etcdkit/etcdkit/pitr"
)

// metrics are the scheduler's Prometheus metrics, all prefixed etcdkit_.
type metrics struct {
	reg         *prometheus.Registry
	runs        *prometheus.CounterVec
	failures    *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	lastSuccess *prometheus.GaugeVec
	active      prometheus.Gauge
	backupRev   prometheus.Gauge
	backupSize  prometheus.Gauge
	backupTime  prometheus.Gauge
	dbSize      *prometheus.GaugeVec
	dbInUse     *prometheus.GaugeVec
	dbQuota     *prometheus.GaugeVec
	interval    *prometheus.GaugeVec
	alarms      *prometheus.GaugeVec
	newest      atomic.Int64 // unix nanoseconds of the newest backup
	// collectors are all of the above, registered in reg.
	collectors []prometheus.Collector

	drillSuccess  prometheus.Gauge
	drillDuration prometheus.Gauge
	drillServing  prometheus.Gauge
	drillFailures prometheus.Counter
}

func newMetrics(s *Scheduler) *metrics {
	m := &metrics{
		reg:         prometheus.NewRegistry(),
		runs:        prometheus.NewCounterVec(prometheus.CounterOpts{Name: "etcdkit_job_runs_total", Help: "Job runs by task and result (success, failed, skipped)."}, []string{"task", "result"}),
		failures:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "etcdkit_job_failures_total", Help: "Failed job runs (after retries), and failed connection attempts as task=connect."}, []string{"task"}),
		duration:    prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "etcdkit_job_duration_seconds", Help: "Duration of job attempts.", Buckets: prometheus.ExponentialBuckets(0.05, 2, 14)}, []string{"task"}),
		lastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "etcdkit_job_last_success_timestamp_seconds", Help: "Unix time of each job's last success."}, []string{"task"}),
		interval:    prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "etcdkit_job_interval_seconds", Help: "Seconds between two runs of each scheduled job, from its schedule (for staleness alerts)."}, []string{"task"}),
		dbQuota:     prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "etcdkit_member_db_quota_bytes", Help: "Each member's backend quota (etcd 3.6 and later report it)."}, []string{"member"}),
		alarms:      prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "etcdkit_cluster_alarms", Help: "Active alarms by type (NOSPACE, CORRUPT): how many members raised it."}, []string{"alarm"}),
		active:      prometheus.NewGauge(prometheus.GaugeOpts{Name: "etcdkit_scheduler_active", Help: "1 when this instance is the elected active scheduler."}),
		backupRev:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "etcdkit_backup_newest_revision", Help: "Revision of the newest backup this instance stored."}),
		backupSize:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "etcdkit_backup_newest_size_bytes", Help: "Snapshot size of the newest backup."}),
		backupTime:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "etcdkit_backup_newest_timestamp_seconds", Help: "Unix time of the newest backup."}),
		dbSize:      prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "etcdkit_member_db_size_bytes", Help: "Each member's db file size."}, []string{"member"}),
		dbInUse:     prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "etcdkit_member_db_size_in_use_bytes", Help: "Each member's db bytes in use."}, []string{"member"}),
	}
	m.drillSuccess = prometheus.NewGauge(prometheus.GaugeOpts{Name: "etcdkit_drill_last_success_timestamp_seconds", Help: "Unix time of the last restore drill that passed."})
	m.drillDuration = prometheus.NewGauge(prometheus.GaugeOpts{Name: "etcdkit_drill_duration_seconds", Help: "Duration of the last restore drill, restore to checks."})
	m.drillServing = prometheus.NewGauge(prometheus.GaugeOpts{Name: "etcdkit_drill_time_to_serving_seconds", Help: "Restore and boot until the drilled member served: the recovery time to expect."})
	m.drillFailures = prometheus.NewCounter(prometheus.CounterOpts{Name: "etcdkit_drill_failures_total", Help: "Restore drills that failed (a check, the restore or the boot)."})
	m.collectors = append(m.collectors, m.drillSuccess, m.drillDuration, m.drillServing, m.drillFailures)
	age := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "etcdkit_backup_newest_age_seconds", Help: "Age of the newest backup (0 before the first)."}, func() float64 {
		return m.newestAge()
	})
	logStat := func(f func(pitr.Stats) float64) func() float64 {
		return func() float64 {
			if lg := s.revlog.Load(); lg != nil {
				return f(lg.Stats())
			}
			return 0
		}
	}
	m.collectors = append(m.collectors,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "etcdkit_revision_log_lag_revisions", Help: "Revisions the cluster is ahead of the stored revision log."},
			logStat(func(st pitr.Stats) float64 { return float64(st.LagRevisions()) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "etcdkit_revision_log_lag_seconds", Help: "How long the oldest event not yet stored in the repository has waited (what a crash now would lose)."},
			logStat(func(st pitr.Stats) float64 { return st.LagSeconds(time.Now()) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "etcdkit_revision_log_stored_revision", Help: "The last revision the revision log stored."},
			logStat(func(st pitr.Stats) float64 { return float64(st.Stored) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "etcdkit_revision_log_stored_timestamp_seconds", Help: "Unix time up to which the stored log reaches."},
			logStat(func(st pitr.Stats) float64 { return float64(st.StoredTime.Unix()) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "etcdkit_revision_log_segments_total", Help: "Log segments stored by this instance."},
			logStat(func(st pitr.Stats) float64 { return float64(st.Segments) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "etcdkit_revision_log_bytes_total", Help: "Stored bytes of the log segments written by this instance."},
			logStat(func(st pitr.Stats) float64 { return float64(st.Bytes) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "etcdkit_revision_log_events_total", Help: "Events stored in the log by this instance."},
			logStat(func(st pitr.Stats) float64 { return float64(st.Events) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "etcdkit_revision_log_gaps_total", Help: "Gaps the log recorded (a compacted watch, or uploads that fell behind); each is followed by a full backup."},
			logStat(func(st pitr.Stats) float64 { return float64(st.Gaps) })),
	)
	m.collectors = append(m.collectors, m.runs, m.failures, m.duration, m.lastSuccess, m.active, m.backupRev, m.backupSize, m.backupTime, m.dbSize, m.dbInUse, m.dbQuota, m.interval, m.alarms, age)
	m.reg.MustRegister(m.collectors...)
	return m
}

func (m *metrics) newestAge() float64 {
	n := m.newest.Load()
	if n == 0 {
		return 0
	}
	return time.Since(time.Unix(0, n)).Seconds()
}

func (m *metrics) setNewestBackup(b backup.Manifest) {
	m.newest.Store(b.Time.UnixNano())
	m.backupRev.Set(float64(b.Revision))
	m.backupSize.Set(float64(b.Size))
	m.backupTime.Set(float64(b.Time.Unix()))
}

// serveHTTP serves /metrics, /healthz (the process runs), /readyz (it
// reaches the cluster and takes part in the election) and /status (JSON).
func (s *Scheduler) serveHTTP() (stop func(), err error) {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !s.ready.Load() {
			http.Error(w, "not connected to the cluster", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(s.Status())
	})
	ln, err := net.Listen("tcp", s.cfg.MetricsAddr)
	if err != nil {
		return nil, fmt.Errorf("metrics address %s: %w", s.cfg.MetricsAddr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("metrics server", "err", err.Error())
		}
	}()
	s.log.Info("serving metrics", "addr", ln.Addr().String())
	return func() { srv.Close() }, nil
}
