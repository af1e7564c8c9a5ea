package pitr

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/backup"
)

// Defaults of the log.
const (
	DefaultInterval    = 10 * time.Second
	DefaultSegmentSize = 16 << 20
)

// Config is what a Logger logs and where.
type Config struct {
	Repo   *backup.Repository
	Client *clientv3.Client
	// Interval cuts a segment this long after its first event;
	// SegmentSize cuts it once it holds this many raw bytes, whichever
	// comes first.
	Interval    time.Duration
	SegmentSize int64
	// Idle: when the cluster wrote nothing for this long, a segment
	// without events records that the log still follows it (its reach in
	// time). Default 6 intervals.
	Idle  time.Duration
	Store backup.SegmentOptions
	// Writer names this instance in the segments it writes.
	Writer string
	// FullBackup takes a full backup into Repo: the log starts from the
	// newest one, and after a gap from the one this takes.
	FullBackup func(ctx context.Context) error
	// MaxPending is how many cut segments may wait for their upload
	// before the log counts as unable to keep up (default 4).
	MaxPending int
	Logger     *slog.Logger
	// OnReceive, when set, is called with each revision as it arrives
	// (tests and the bench measure the log's lag with it).
	OnReceive func(rev int64, at time.Time)
}

func (c *Config) defaults() {
	if c.Interval <= 0 {
		c.Interval = DefaultInterval
	}
	if c.SegmentSize <= 0 {
		c.SegmentSize = DefaultSegmentSize
	}
	if c.Idle <= 0 {
		c.Idle = 6 * c.Interval
	}
	if c.MaxPending <= 0 {
		c.MaxPending = 4
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Stats is the log's state, for metrics and status.
type Stats struct {
	Stored     int64     `json:"storedRevision"` // the last revision stored
	StoredTime time.Time `json:"storedTime"`     // the log's reach in time
	Cluster    int64     `json:"clusterRevision"`
	// Oldest is the receive time of the oldest event not yet stored
	// (zero when everything received is stored).
	Oldest   time.Time `json:"oldestUnstored,omitzero"`
	Segments int64     `json:"segments"`
	Bytes    int64     `json:"bytes"` // stored bytes of the segments written
	Events   int64     `json:"events"`
	Gaps     int64     `json:"gaps"`
}

// LagRevisions is how many revisions the cluster is ahead of the store.
func (s Stats) LagRevisions() int64 { return max(0, s.Cluster-s.Stored) }

// LagSeconds is how long the oldest event not yet stored has waited.
func (s Stats) LagSeconds(now time.Time) float64 {
	if s.Oldest.IsZero() {
		return 0
	}
	return now.Sub(s.Oldest).Seconds()
}

// Logger writes the revision log.
type Logger struct {
	cfg Config
	log *slog.Logger
	mu  sync.Mutex
	st  Stats
	// pending are the first receive times of the segments cut and not
	// yet stored, oldest first; filling that of the segment under way.
	pending []time.Time
	filling time.Time
	ttls    map[int64]int64 // lease ID → granted TTL (0: unknown)
	cluster string          // the cluster's ID, hex
}

// ErrConfig: a Logger without its repository, client or full backup.
var ErrConfig = errors.New("bad log configuration")

// New checks the configuration.
func New(cfg Config) (*Logger, error) {
	cfg.defaults()
	if cfg.Repo == nil || cfg.Client == nil || cfg.FullBackup == nil {
		return nil, fmt.Errorf("%w: a repository, a client and a full backup function are needed", ErrConfig)
	}
	if err := backup.CheckCompression(cfg.Store.Compression); cfg.Store.Compression != "" && err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	return &Logger{cfg: cfg, log: cfg.Logger, ttls: map[int64]int64{}}, nil
}

// Stats returns the log's state.
func (l *Logger) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.st
	st.Oldest = l.filling
	if len(l.pending) > 0 {
		st.Oldest = l.pending[0]
	}
	return st
}

func (l *Logger) update(fn func(*Stats)) {
	l.mu.Lock()
	fn(&l.st)
	l.mu.Unlock()
}

// gapError: the log lost revisions from From on (the watch was compacted,
// or the uploads fell behind).
type gapError struct {
	from   int64
	reason string
}

func (e *gapError) Error() string {
	return fmt.Sprintf("log gap from revision %d: %s", e.from, e.reason)
}

// Run logs until ctx ends (then the segment under way is stored, and nil
// returned) or the log fails (the watch or the store; the caller retries:
// a new Run resumes after the last stored segment). It starts after the
// newest full backup's reach, taking a full backup first when the
// repository has none. A compacted watch or uploads that cannot keep up
// are recorded as a gap, followed by a new full backup the log continues
// from.
func (l *Logger) Run(ctx context.Context) error {
	for {
		start, at, err := l.resume(ctx)
		if err != nil {
			return err
		}
		l.mu.Lock()
		l.st.Stored, l.st.StoredTime, l.pending, l.filling = start-1, at, nil, time.Time{}
		l.mu.Unlock()
		l.log.Info("revision log: following the cluster", "from", start)
		err = l.follow(ctx, start, at)
		var gap *gapError
		if !errors.As(err, &gap) {
			return err
		}
		l.log.Warn("revision log: gap; taking a full backup to continue from", "from", gap.from, "reason", gap.reason)
		l.update(func(s *Stats) { s.Gaps++ })
		if err := l.cfg.FullBackup(ctx); err != nil {
			return fmt.Errorf("full backup after a log gap: %w", err)
		}
		b, err := l.cfg.Repo.Find(ctx, "latest")
		if err != nil {
			return err
		}
		if b.Revision >= gap.from {
			if _, err := l.cfg.Repo.PutGap(ctx, gap.from, b.Revision, time.Now().UTC(), gap.reason, l.cfg.Writer, l.cluster); err != nil {
				return err
			}
		}
	}
}

// RunRetrying runs the log until ctx ends, starting it again 5 seconds
// after each failure (a lost leader, an unreachable store); onErr, when
// set, sees each failure.
func (l *Logger) RunRetrying(ctx context.Context, onErr func(error)) {
	for ctx.Err() == nil {
		err := l.Run(ctx)
		if err == nil || ctx.Err() != nil {
			return
		}
		l.log.Error("revision log failed; starting it again in 5s", "err", err.Error())
		if onErr != nil {
			onErr(err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(5 * time.Second):
		}
	}
}

// resume is where the log goes on: after the reach of the newest full
// backup's window. A repository without a backup of this cluster (none
// at all, or the newest of another cluster: this one was restored from
// it) gets one first.
func (l *Logger) resume(ctx context.Context) (int64, time.Time, error) {
	ml, err := l.cfg.Client.MemberList(ctx)
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("the cluster's ID: %w", err)
	}
	l.cluster = fmt.Sprintf("%x", ml.Header.ClusterId)
	b, err := l.cfg.Repo.Find(ctx, "latest")
	switch {
	case errors.Is(err, backup.ErrNoBackup):
		l.log.Info("revision log: the repository holds no full backup; taking one to start from")
	case err == nil && b.ClusterID != "" && b.ClusterID != l.cluster:
		l.log.Info("revision log: the newest full backup is of another cluster (this one was restored?); taking one of this cluster to start from",
			"backup", b.ID, "backupCluster", b.ClusterID, "cluster", l.cluster)
	default:
		if err != nil {
			return 0, time.Time{}, err
		}
		segs, err := l.cfg.Repo.Segments(ctx)
		if err != nil {
			return 0, time.Time{}, err
		}
		w := backup.Reach(b, segs)
		return w.To + 1, w.ToTime, nil
	}
	if err := l.cfg.FullBackup(ctx); err != nil {
		return 0, time.Time{}, fmt.Errorf("first full backup: %w", err)
	}
	if b, err = l.cfg.Repo.Find(ctx, "latest"); err != nil {
		return 0, time.Time{}, err
	}
	if b.ClusterID != "" && b.ClusterID != l.cluster {
		return 0, time.Time{}, fmt.Errorf("the newest full backup %s is of cluster %s, not of this cluster %s", b.ID, b.ClusterID, l.cluster)
	}
	segs, err := l.cfg.Repo.Segments(ctx)
	if err != nil {
		return 0, time.Time{}, err
	}
	w := backup.Reach(b, segs)
	return w.To + 1, w.ToTime, nil
}

// segment is a segment being filled, then waiting for its upload.
type segment struct {
	enc    *encoder
	meta   backup.Segment
	leases map[int64]bool
	first  time.Time // receive time of its first event
}

func (l *Logger) newSegment(first int64) *segment {
	return &segment{enc: newEncoder(), meta: backup.Segment{First: first, Last: first - 1, Writer: l.cfg.Writer, ClusterID: l.cluster}, leases: map[int64]bool{}}
}

// follow watches from start and stores segments until ctx ends, the watch
// fails, or a gap.
func (l *Logger) follow(ctx context.Context, start int64, known time.Time) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	queue := make(chan *segment, l.cfg.MaxPending)
	upErr := make(chan error, 1)
	var up sync.WaitGroup
	upCtx, cancelUp := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelUp()
	up.Go(func() { l.upload(upCtx, queue, upErr) })
	// finish stops the uploads: after the queued ones are stored when
	// drain is set (a clean stop), else at once.
	closed := false
	finish := func(drain bool) error {
		if !closed {
			close(queue)
			closed = true
		}
		if !drain {
			cancelUp()
		}
		done := make(chan struct{})
		go func() { up.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cancelUp()
			<-done
		}
		select {
		case err := <-upErr:
			return err
		default:
			return nil
		}
	}
	ch := l.cfg.Client.Watch(wctx, "\x00", clientv3.WithFromKey(), clientv3.WithRev(start), clientv3.WithProgressNotify())
	cur := l.newSegment(start)
	last := start - 1   // the last revision received
	lastStored := known // the reach in time of what is stored or queued
	tick := time.NewTicker(max(100*time.Millisecond, min(time.Second, l.cfg.Interval/4)))
	defer tick.Stop()
	var asked time.Time // when progress was last requested
	seal := func() error {
		s := cur
		cur = l.newSegment(last + 1)
		if s.meta.Events > 0 {
			l.mu.Lock()
			l.pending, l.filling = append(l.pending, s.first), time.Time{}
			l.mu.Unlock()
		}
		select {
		case queue <- s:
			lastStored = s.meta.LastTime
			return nil
		default:
			return &gapError{from: s.meta.First, reason: fmt.Sprintf("the log fell behind: %d segments waiting for their upload", l.cfg.MaxPending)}
		}
	}
	// stop is a clean stop: the segment under way is cut and stored with
	// the queued ones (if the queue has room; else a restart fetches its
	// revisions again).
	stop := func() error {
		if cur.meta.Events > 0 {
			seal()
		}
		return finish(true)
	}
	for {
		select {
		case err := <-upErr:
			finish(false)
			return fmt.Errorf("store a log segment: %w", err)
		case <-ctx.Done():
			return stop()
		case now := <-tick.C:
			switch {
			case cur.meta.Events > 0 && now.Sub(cur.first) >= l.cfg.Interval:
				if err := seal(); err != nil {
					finish(true)
					return err
				}
			case cur.meta.Events == 0 && now.Sub(lastStored) >= l.cfg.Idle:
				if cur.meta.LastTime.After(lastStored) {
					// The cluster confirmed it is still at last.
					cur.meta.FirstTime = cur.meta.LastTime
					cur.enc.time(cur.meta.LastTime)
					if err := seal(); err != nil {
						finish(true)
						return err
					}
				} else if now.Sub(asked) >= l.cfg.Interval {
					asked = now
					if err := l.cfg.Client.RequestProgress(wctx); err != nil && ctx.Err() == nil {
						l.log.Warn("revision log: progress request failed", "err", err.Error())
					}
				}
			}
		case resp, ok := <-ch:
			if !ok {
				if ctx.Err() != nil {
					continue // the ctx.Done case stores what is under way
				}
				finish(true)
				return errors.New("the watch closed")
			}
			if resp.CompactRevision != 0 {
				finish(true)
				return &gapError{from: last + 1, reason: fmt.Sprintf("revision %d was compacted (the cluster is compacted up to %d)", last+1, resp.CompactRevision)}
			}
			if err := resp.Err(); err != nil {
				if ctx.Err() != nil {
					return stop()
				}
				finish(true)
				return fmt.Errorf("watch: %w", err)
			}
			now := time.Now().UTC()
			l.update(func(s *Stats) { s.Cluster = max(s.Cluster, resp.Header.Revision) })
			if resp.IsProgressNotify() {
				if resp.Header.Revision == last {
					cur.meta.LastTime = now
				}
				continue
			}
			if err := l.add(wctx, cur, &last, resp.Events, now); err != nil {
				finish(true)
				return err
			}
			if int64(len(cur.enc.buf)) >= l.cfg.SegmentSize {
				if err := seal(); err != nil {
					finish(true)
					return err
				}
			}
		}
	}
}

// add appends one watch response's events (whole revisions: the server
// never splits one across responses) to the segment.
func (l *Logger) add(ctx context.Context, s *segment, last *int64, evs []*clientv3.Event, now time.Time) error {
	if len(evs) == 0 {
		return nil
	}
	if s.meta.Events == 0 {
		s.first, s.meta.FirstTime = now, now
		l.mu.Lock()
		l.filling = now
		l.mu.Unlock()
	}
	s.enc.time(now)
	for _, ev := range evs {
		rev := ev.Kv.ModRevision
		if rev != *last && rev != *last+1 {
			return fmt.Errorf("the watch delivered revision %d after %d", rev, *last)
		}
		if rev != *last && l.cfg.OnReceive != nil {
			l.cfg.OnReceive(rev, now)
		}
		*last = rev
		if ev.Type == mvccpb.Event_PUT && ev.Kv.Lease != 0 && !s.leases[ev.Kv.Lease] {
			s.leases[ev.Kv.Lease] = true
			s.enc.lease(ev.Kv.Lease, l.ttl(ctx, ev.Kv.Lease))
			s.meta.Leases++
		}
		if err := s.enc.event((*mvccpb.Event)(ev)); err != nil {
			return err
		}
		s.meta.Events++
	}
	s.meta.Last, s.meta.LastTime = *last, now
	return nil
}

// ttl is a lease's granted TTL, asked once per lease; 0 when the lease is
// already gone (revoked or expired before the log asked).
func (l *Logger) ttl(ctx context.Context, id int64) int64 {
	if ttl, ok := l.ttls[id]; ok {
		return ttl
	}
	var ttl int64
	resp, err := l.cfg.Client.TimeToLive(ctx, clientv3.LeaseID(id))
	if err == nil && resp.TTL >= 0 {
		ttl = resp.GrantedTTL
	}
	if len(l.ttls) >= 1<<16 {
		clear(l.ttls)
	}
	l.ttls[id] = ttl
	return ttl
}

// upload stores the queued segments in order, retrying each a few times.
func (l *Logger) upload(ctx context.Context, queue <-chan *segment, errc chan<- error) {
	for s := range queue {
		var err error
		for attempt, backoff := 1, time.Second; ; attempt, backoff = attempt+1, backoff*2 {
			var stored backup.Segment
			stored, err = l.cfg.Repo.PutSegment(ctx, s.meta, bytes.NewReader(s.enc.buf), l.cfg.Store)
			if err == nil {
				l.mu.Lock()
				st := &l.st
				st.Stored, st.StoredTime = max(st.Stored, s.meta.Last), s.meta.LastTime
				st.Segments++
				st.Bytes += stored.StoredSize
				st.Events += s.meta.Events
				if s.meta.Events > 0 && len(l.pending) > 0 {
					l.pending = l.pending[1:]
				}
				l.mu.Unlock()
				break
			}
			if attempt == 4 || ctx.Err() != nil {
				break
			}
			l.log.Warn("revision log: segment upload failed; retrying", "segment", s.meta.First, "in", backoff.String(), "err", err.Error())
			select {
			case <-ctx.Done():
			case <-time.After(backoff):
			}
		}
		if err != nil {
			errc <- err
			for range queue { // let the watch loop go on until it notices
			}
			return
		}
	}
}
