package pitr

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"filippo.io/age"
	bolt "go.etcd.io/bbolt"
	"go.etcd.io/etcd/server/v3/lease/leasepb"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/etcdkit/etcdkit/backup"
	"github.com/etcdkit/etcdkit/internal/boltdb"
	"github.com/etcdkit/etcdkit/internal/etcdfmt"
	"github.com/etcdkit/etcdkit/restore"
)

// Errors a caller maps to exit codes.
var (
	// ErrLog: the log does not fit the db or itself (a revision missing
	// or out of order, an event that is not the revision it claims).
	ErrLog = errors.New("revision log does not apply")
	// ErrNotCovered: the revision or time is out of every window.
	ErrNotCovered = backup.ErrNotCovered
)

// Plan is a point-in-time restore: a full backup and the log segments
// that take it to Revision.
type Plan struct {
	Window   backup.Window
	Revision int64
	// Time is the receive time of Revision's events (the backup's time
	// when Revision is the backup's); zero when resolved by revision.
	Time time.Time
}

// Base is the full backup the plan starts from.
func (p Plan) Base() backup.Manifest { return p.Window.Backup }

// Target says where a point-in-time restore goes: a revision, or the last
// revision the log received at or before a time. Latest takes the end of
// the newest backup's window.
type Target struct {
	Revision int64
	Time     time.Time
	Latest   bool
}

func (t Target) String() string {
	switch {
	case t.Latest:
		return "latest"
	case t.Revision > 0:
		return fmt.Sprintf("revision %d", t.Revision)
	}
	return "time " + t.Time.UTC().Format(time.RFC3339Nano)
}

// Resolve finds the full backup and the log segments that reach the
// target, from the newest backup at or before it. A target out of every
// window is refused (ErrNotCovered), naming the reachable ranges.
func Resolve(ctx context.Context, repo *backup.Repository, target Target, identities []age.Identity) (Plan, error) {
	backups, err := repo.List(ctx)
	if err != nil {
		return Plan{}, err
	}
	segs, err := repo.Segments(ctx)
	if err != nil {
		return Plan{}, err
	}
	windows := backup.Windows(backups, segs)
	var w backup.Window
	switch {
	case target.Latest:
		if len(windows) == 0 {
			return Plan{}, fmt.Errorf("%w: the repository holds no full backup", ErrNotCovered)
		}
		w = windows[len(windows)-1]
		return trimPlan(Plan{Window: w, Revision: w.To, Time: w.ToTime}), nil
	case target.Revision > 0:
		if w, err = backup.ForRevision(windows, segs, target.Revision); err != nil {
			return Plan{}, err
		}
		// Time stays zero: only a consolidation needs it (revisionTime).
		return trimPlan(Plan{Window: w, Revision: target.Revision}), nil
	default:
		if w, err = backup.ForTime(windows, segs, target.Time); err != nil {
			return Plan{}, err
		}
		return lastAtOrBefore(ctx, repo, w, target.Time, identities)
	}
}

// trimPlan drops the segments past the plan's revision.
func trimPlan(p Plan) Plan {
	var keep []backup.Segment
	for _, s := range p.Window.Segments {
		if s.First > p.Revision {
			break
		}
		keep = append(keep, s)
	}
	p.Window.Segments = keep
	return p
}

// lastAtOrBefore is the plan to the last revision received at or before t.
func lastAtOrBefore(ctx context.Context, repo *backup.Repository, w backup.Window, t time.Time, ids []age.Identity) (Plan, error) {
	p := Plan{Window: w, Revision: w.From, Time: w.FromTime}
	for _, s := range w.Segments {
		if s.FirstTime.After(t) {
			break
		}
		if !s.LastTime.After(t) {
			if s.Last > p.Revision {
				p.Revision, p.Time = s.Last, s.LastTime
			}
			continue
		}
		err := eachRecord(ctx, repo, s, ids, func(rec *Record, at time.Time) (bool, error) {
			if at.After(t) {
				return false, nil
			}
			if rec.Kind == kindEvent && rec.Event.ModRevision > p.Revision {
				p.Revision, p.Time = rec.Event.ModRevision, at
			}
			return true, nil
		})
		if err != nil {
			return Plan{}, err
		}
		break
	}
	return trimPlan(p), nil
}

// FillTime sets Time of a plan resolved by revision: the receive time of
// its revision's events (read from the last segment).
func (p *Plan) FillTime(ctx context.Context, repo *backup.Repository, ids []age.Identity) error {
	if !p.Time.IsZero() {
		return nil
	}
	var err error
	p.Time, err = revisionTime(ctx, repo, *p, ids)
	return err
}

// revisionTime is the receive time of a revision's events.
func revisionTime(ctx context.Context, repo *backup.Repository, p Plan, ids []age.Identity) (time.Time, error) {
	if p.Revision == p.Window.From || len(p.Window.Segments) == 0 {
		return p.Window.FromTime, nil
	}
	s := p.Window.Segments[len(p.Window.Segments)-1]
	var at time.Time
	err := eachRecord(ctx, repo, s, ids, func(rec *Record, t time.Time) (bool, error) {
		if rec.Kind == kindEvent && rec.Event.ModRevision == p.Revision {
			at = t
			return false, nil
		}
		return true, nil
	})
	return at, err
}

// eachRecord calls fn with every record of a segment and the receive time
// in force, until fn returns false.
func eachRecord(ctx context.Context, repo *backup.Repository, s backup.Segment, ids []age.Identity, fn func(*Record, time.Time) (bool, error)) error {
	rc, err := repo.OpenSegment(ctx, s, ids)
	if err != nil {
		return err
	}
	defer rc.Close()
	d, err := newDecoder(rc, s.Name)
	if err != nil {
		return err
	}
	var rec Record
	var at time.Time
	for {
		if err := d.next(&rec); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
		if rec.Kind == kindTime {
			at = rec.Time
			continue
		}
		if more, err := fn(&rec, at); err != nil || !more {
			return err
		}
	}
}

// Applied is what a replay wrote.
type Applied struct {
	Revision  int64 `json:"revision"`  // the db's latest revision after the replay
	Revisions int64 `json:"revisions"` // revisions applied
	Events    int64 `json:"events"`
	Bytes     int64 `json:"bytes"` // of key-bucket values written
	Segments  int   `json:"segments"`
	Leases    int   `json:"leases"` // leases added for keys attached at the revision
}

// batchBytes bounds what one bolt transaction holds before it commits:
// bolt keeps a transaction's dirty pages in memory.
const batchBytes = 2 << 20

// Replay applies the plan's log to the etcd db at path (a copy of the
// plan's full backup, not open elsewhere): each event becomes the
// key-bucket entry the server wrote for it (<revision>_<sub>, with the
// tombstone mark for a delete), and every lease that a key still holds at
// the revision and that the db lacks is added with the TTL it was granted.
// The db's latest revision must be the backup's; after the replay it is
// the plan's.
func Replay(ctx context.Context, repo *backup.Repository, p Plan, ids []age.Identity, path string) (Applied, error) {
	// No fsync per batch: the restore (or the consolidation) syncs the
	// finished file once, and a failure removes it.
	db, err := bolt.Open(path, 0o600, &bolt.Options{NoFreelistSync: true, NoSync: true, Timeout: time.Second})
	if err != nil {
		return Applied{}, fmt.Errorf("%s: %w", path, err)
	}
	var a Applied
	err = boltdb.Guard(func() error { return replay(ctx, repo, p, ids, db, &a) })
	if cerr := db.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("%s: %w", path, cerr)
	}
	return a, err
}

func replay(ctx context.Context, repo *backup.Repository, p Plan, ids []age.Identity, db *bolt.DB, a *Applied) error {
	var latest int64
	if err := db.View(func(tx *bolt.Tx) error {
		keys := tx.Bucket(etcdfmt.BucketKey)
		if keys == nil || tx.Bucket(etcdfmt.BucketLease) == nil {
			return fmt.Errorf("%w: no %q or %q bucket", etcdfmt.ErrNotEtcd, etcdfmt.BucketKey, etcdfmt.BucketLease)
		}
		var err error
		latest, err = etcdfmt.LatestRevision(keys)
		return err
	}); err != nil {
		return err
	}
	if latest != p.Window.From {
		return fmt.Errorf("%w: the db's latest revision is %d, the backup's manifest says %d", ErrLog, latest, p.Window.From)
	}
	a.Revision = latest
	w := &batchWriter{db: db}
	defer w.rollback()
	ttls := map[int64]int64{}      // lease ID → granted TTL, from the log's lease records
	attached := map[string]int64{} // key → lease, for the keys the log left on a lease
	var sub int64                  // the next change's index in its revision
	var key, val, tomb []byte
	for _, s := range p.Window.Segments {
		if a.Revision >= p.Revision {
			break
		}
		a.Segments++
		cur := int64(-1) // the revision this segment is applying
		err := eachRecord(ctx, repo, s, ids, func(rec *Record, _ time.Time) (bool, error) {
			if err := ctx.Err(); err != nil {
				return false, err
			}
			if rec.Kind == kindLease {
				ttls[rec.LeaseID] = rec.TTL
				return true, nil
			}
			ev := &rec.Event
			rev := ev.ModRevision
			switch {
			case rev == cur:
			case rev <= a.Revision:
				// Held by the backup, or whole by an earlier segment
				// (an overlapping one: a revision is never split).
				return true, nil
			case rev > p.Revision:
				return false, nil
			case rev == a.Revision+1:
				a.Revision, cur, sub = rev, rev, 0
				a.Revisions++
			default:
				return false, fmt.Errorf("%w: %s: revision %d follows %d", ErrLog, s.Name, rev, a.Revision)
			}
			if !ev.Delete && ev.CreateRevision <= 0 {
				return false, fmt.Errorf("%w: %s: a put event at revision %d has no create revision", ErrLog, s.Name, rev)
			}
			key = etcdfmt.Revision{Main: rev, Sub: sub}.AppendKey(key[:0], ev.Delete)
			sub++
			val = ev.KV
			if ev.Delete {
				// What the server stores for a delete: KeyValue{Key}.
				val = protowire.AppendBytes(protowire.AppendTag(tomb[:0], 1, protowire.BytesType), ev.Key)
				tomb = val
				delete(attached, string(ev.Key))
			} else if ev.Lease != 0 {
				attached[string(ev.Key)] = ev.Lease
			} else {
				delete(attached, string(ev.Key)) // a put without a lease detaches
			}
			a.Events++
			a.Bytes += int64(len(val))
			return true, w.put(key, val)
		})
		if err != nil {
			return err
		}
	}
	if a.Revision != p.Revision {
		return fmt.Errorf("%w: the log ends at revision %d, before %d", ErrLog, a.Revision, p.Revision)
	}
	n, err := w.leases(attached, ttls)
	a.Leases = n
	if err != nil {
		return err
	}
	return w.commit()
}

// batchWriter appends to the key bucket in transactions of about
// batchBytes.
type batchWriter struct {
	db    *bolt.DB
	tx    *bolt.Tx
	keys  *bolt.Bucket
	bytes int
	// arena holds the copies of what the transaction puts, in chunks
	// reused once it committed (bolt keeps nothing of them after that).
	arena  []byte
	chunks [][]byte // the chunks in use, arena the last
	spare  [][]byte
}

func (w *batchWriter) begin() error {
	if w.tx != nil {
		return nil
	}
	tx, err := w.db.Begin(true)
	if err != nil {
		return err
	}
	w.tx, w.keys, w.bytes = tx, tx.Bucket(etcdfmt.BucketKey), 0
	w.keys.FillPercent = 0.9 // appends, as etcd's own sequential puts
	return nil
}

// put appends one entry; k and v are copied (bolt holds what it is given
// until the transaction commits).
func (w *batchWriter) put(k, v []byte) error {
	if err := w.begin(); err != nil {
		return err
	}
	k, v = w.keep(k), w.keep(v)
	if err := w.keys.Put(k, v); err != nil {
		return err
	}
	w.bytes += len(k) + len(v)
	if w.bytes >= batchBytes {
		return w.commit()
	}
	return nil
}

// keep copies b into the transaction's arena.
func (w *batchWriter) keep(b []byte) []byte {
	if cap(w.arena)-len(w.arena) < len(b) {
		if n := len(w.spare); n > 0 && cap(w.spare[n-1]) >= len(b) {
			w.arena, w.spare = w.spare[n-1][:0], w.spare[:n-1]
		} else {
			w.arena = make([]byte, 0, max(1<<20, len(b)))
		}
		w.chunks = append(w.chunks, w.arena)
	}
	start := len(w.arena)
	w.arena = append(w.arena, b...)
	return w.arena[start:len(w.arena):len(w.arena)]
}

func (w *batchWriter) commit() error {
	if w.tx == nil {
		return nil
	}
	err := w.tx.Commit()
	w.tx = nil
	w.spare, w.chunks, w.arena = append(w.spare, w.chunks...), w.chunks[:0], nil
	return err
}

func (w *batchWriter) rollback() {
	if w.tx != nil {
		w.tx.Rollback()
		w.tx = nil
	}
}

// leases adds every lease a key holds at the end of the replay and the db
// lacks; a lease whose TTL the log could not learn (revoked before the
// log asked) gets 0, which etcd raises to its minimum TTL when it loads.
func (w *batchWriter) leases(attached map[string]int64, ttls map[int64]int64) (int, error) {
	if err := w.begin(); err != nil {
		return 0, err
	}
	lb := w.tx.Bucket(etcdfmt.BucketLease)
	added := 0
	seen := map[int64]bool{}
	for _, id := range attached {
		if id == 0 || seen[id] {
			continue
		}
		seen[id] = true
		k := etcdfmt.LeaseKey(id)
		if lb.Get(k) != nil {
			continue
		}
		v, err := proto.Marshal(&leasepb.Lease{ID: id, TTL: ttls[id]})
		if err != nil {
			return added, err
		}
		if err := lb.Put(k, v); err != nil {
			return added, err
		}
		added++
	}
	return added, nil
}

// Restore restores the plan as restore.RestoreFrom restores a backup,
// with the log replayed into the db before it becomes the new cluster's:
// the base backup is streamed (download, decrypt, decompress, verify),
// the log applied to the first member's db, the others copied from it.
func Restore(ctx context.Context, repo *backup.Repository, p Plan, ids []age.Identity, cfg restore.Config) (restore.Result, Applied, error) {
	var a Applied
	cfg.Replay = func(ctx context.Context, path string) error {
		var err error
		a, err = Replay(ctx, repo, p, ids, path)
		return err
	}
	res, err := repo.Restore(ctx, p.Base(), ids, cfg)
	return res, a, err
}

// Received calls fn with every revision a segment holds and the time the
// log received it (for the log's lag; in revision order).
func Received(ctx context.Context, repo *backup.Repository, s backup.Segment, ids []age.Identity, fn func(rev int64, at time.Time)) error {
	last := int64(-1)
	return eachRecord(ctx, repo, s, ids, func(rec *Record, at time.Time) (bool, error) {
		if rec.Kind == kindEvent && rec.Event.ModRevision != last {
			last = rec.Event.ModRevision
			fn(last, at)
		}
		return true, nil
	})
}
