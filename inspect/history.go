package inspect

import (
	"context"
	"fmt"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/proto"

	"github.com/etcdkit/etcdkit/internal/etcdfmt"
)

// HistoryOptions select the events History replays: those of the keys in
// the range, at revisions FromRev..ToRev.
type HistoryOptions struct {
	KeyRange
	// FromRev is the first revision; 0 is the oldest the db still holds
	// (its compaction revision).
	FromRev int64
	// ToRev is the last revision; 0 is the db's current one.
	ToRev int64
	// Stored replays every entry the db holds, also those below the
	// compaction (each key's version at the compaction), which a watch
	// would not replay; FromRev must be 0.
	Stored bool
}

// History replays the puts and deletes of the keys in the range, in
// revision order, as a watch started at FromRev on a server booted on the
// db replays them: a put's event carries the stored KeyValue, a delete's
// the key and its revision as ModRevision. fn sees the events of one
// revision at a time (one transaction) with the db's current revision, streamed while the db is read
// once; memory does not grow with the history. It returns the db's
// current revision. A FromRev below the compaction is ErrCompacted, as
// for a watch; above the current revision, ErrFutureRev.
//
// The meta bucket is read first (a few pages), then the whole file goes
// through the scanner's check while the events stream; if the check
// fails late, fn has seen events of a damaged db and the error says so.
func History(ctx context.Context, o *Opened, opts HistoryOptions, fn func(current int64, events []*mvccpb.Event) error) (int64, error) {
	pre, err := peekMeta(o)
	if err != nil {
		return 0, err
	}
	current := pre.Current()
	switch {
	case opts.FromRev > 0 && opts.FromRev < pre.Compacted():
		return current, ErrCompacted
	case opts.FromRev > current:
		return current, ErrFutureRev
	}
	from, to := max(opts.FromRev, pre.Compacted()), opts.ToRev
	if opts.Stored {
		from = 0
	}
	if to == 0 {
		to = current
	}
	var (
		group    []*mvccpb.Event
		groupRev int64
	)
	flush := func() error {
		if len(group) == 0 {
			return nil
		}
		err := fn(current, group)
		group = group[:0]
		return err
	}
	visit := onKeys(func(e keyEntry, v []byte) error {
		r := e.rev
		if r.Main < from || r.Main > to || !opts.Contains(e.kv.Key) {
			return nil
		}
		if r.Main != groupRev {
			if err := flush(); err != nil {
				return err
			}
			groupRev = r.Main
		}
		ev := &mvccpb.Event{Kv: &mvccpb.KeyValue{}}
		if e.tomb {
			// As etcd's watchable store: the tombstone's key, with its
			// revision patched in as the mod revision.
			ev.Type = mvccpb.DELETE
			ev.Kv.Key = append([]byte(nil), e.kv.Key...)
			ev.Kv.ModRevision = r.Main
		} else if err := proto.Unmarshal(v, ev.Kv); err != nil {
			return fmt.Errorf("%w: revision %d_%d: %w", etcdfmt.ErrSchema, r.Main, r.Sub, err)
		}
		group = append(group, ev)
		return nil
	}, nil)
	if _, _, err := scan(ctx, o, visit); err != nil {
		return current, err
	}
	return current, flush()
}
