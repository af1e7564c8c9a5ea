// Package defrag rewrites an etcd bolt db offline without its free pages:
// every bucket, key and value is copied in order into a new file next to
// it, which replaces the original only when complete and synced.
//
// Unlike etcdutl defrag it does not map the db with MAP_POPULATE (memory
// stays bounded whatever the db size), checks the free disk space first,
// waits a bounded time for a running etcd's lock, packs pages full
// (FillPercent 1.0: the copy inserts in key order) and keeps the original's
// owner and mode.
package defrag

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.etcd.io/etcd/server/v3/storage/datadir"

	"github.com/etcdkit/etcdkit/internal/boltpage"
	"github.com/etcdkit/etcdkit/internal/etcdfmt"
	"github.com/etcdkit/etcdkit/internal/fsutil"
)

// ErrNoSpace reports too little free disk space for the new file.
var ErrNoSpace = fsutil.ErrNoSpace

const (
	tempMarker = ".etcdkit-defrag-"
	// commitBytesDefault is how much data one write transaction holds:
	// bolt keeps a transaction's dirty pages in memory until it commits.
	commitBytesDefault = 16 << 20
	// headroom is added to the live size for the free-space check: bolt
	// grows files in steps of up to 16 MiB.
	headroom = 32 << 20
)

// commitBytes is commitBytesDefault; tests lower it to commit more often.
var commitBytes = commitBytesDefault

// Options tune a defrag.
type Options struct {
	// LockTimeout bounds the wait for the lock of a db held by a running
	// etcd (0 waits forever).
	LockTimeout time.Duration
	// Reserve is free space that must remain on the file system after the
	// new file is written.
	Reserve int64
	// Progress, when set, is called with the bytes copied so far and the
	// live size of the db.
	Progress func(done, total int64)
}

// Result describes a finished defrag.
type Result struct {
	Path   string        `json:"path"`
	Before int64         `json:"sizeBefore"` // file size
	InUse  int64         `json:"sizeInUse"`  // bytes of the pages in use before
	After  int64         `json:"sizeAfter"`  // file size after
	Took   time.Duration `json:"took"`
}

// DBPath returns the db file of a data dir.
func DBPath(dataDir string) string { return datadir.ToBackendFileName(dataDir) }

// Defrag defragments the bolt db at path in place. The source is read with
// the pread scanner twice under one shared lock (a running etcd cannot
// open it meanwhile): once to check it (a damaged db is refused before
// anything is written) and to learn its live size, once to copy its
// buckets, keys and values in key order into the new file. It is never
// mapped.
func Defrag(ctx context.Context, path string, opts Options) (res Result, err error) {
	start := time.Now()
	res.Path = path
	fi, err := os.Stat(path)
	if err != nil {
		return res, err
	}
	src, err := boltpage.Open(path, opts.LockTimeout)
	if err != nil {
		return res, err
	}
	defer src.Close()
	res.Before = fi.Size()
	var top []string
	pages, err := src.Scan(func(e boltpage.Entry) error {
		if e.Depth == 0 && e.Bucket {
			top = append(top, string(e.Key))
		}
		return nil
	})
	if err == nil {
		err = etcdfmt.CheckBuckets(top)
	}
	if err != nil {
		return res, fmt.Errorf("%s: %w", path, err)
	}
	res.InUse = int64(pages.Reachable) * int64(src.Meta.PageSize)

	free, err := fsutil.Free(filepath.Dir(path))
	if err != nil {
		return res, err
	}
	if need := res.InUse + headroom + opts.Reserve; free.Bytes < need {
		return res, fmt.Errorf("%w: %s has %s free, defragmenting %s needs %s (its live data plus headroom); free some space or copy the db to a larger disk",
			ErrNoSpace, filepath.Dir(path), fsutil.MiB(free.Bytes), path, fsutil.MiB(need))
	}

	tmp, err := fsutil.TempSibling(path, tempMarker)
	if err != nil {
		return res, err
	}
	created, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, fi.Mode().Perm())
	if err != nil {
		return res, err
	}
	created.Close()
	renamed := false
	defer func() {
		if !renamed { // after an error, and while a panic unwinds
			os.Remove(tmp)
		}
	}()
	if err = copyDB(ctx, src, tmp, fi, res.InUse, opts.Progress); err != nil {
		return res, fmt.Errorf("%s: %w", path, err)
	}
	if err = fsutil.RenameSynced(tmp, path); err != nil {
		return res, err
	}
	renamed = true
	if fi, err := os.Stat(path); err == nil {
		res.After = fi.Size()
	}
	res.Took = time.Since(start)
	return res, nil
}

// copyDB writes every bucket of src into a new bolt file at tmp with the
// owner and mode of the original, and syncs it.
func copyDB(ctx context.Context, src *boltpage.File, tmp string, orig os.FileInfo, total int64, progress func(done, total int64)) error {
	dst, err := bolt.Open(tmp, orig.Mode().Perm(), &bolt.Options{
		NoSync: true, NoGrowSync: true, NoFreelistSync: true, FreelistType: bolt.FreelistMapType,
		PageSize: int(src.Meta.PageSize), Timeout: time.Second,
		// Map the expected size at once: every remap of a growing bolt
		// file first copies all pending node data out of the mapping.
		InitialMmapSize: int(total + headroom),
	})
	if err != nil {
		return err
	}
	closed := false
	defer func() {
		if !closed {
			dst.Close()
		}
	}()
	if st, ok := orig.Sys().(*syscall.Stat_t); ok {
		if err := os.Chown(tmp, int(st.Uid), int(st.Gid)); err != nil && !errors.Is(err, os.ErrPermission) {
			return err
		}
	}
	w := &writer{ctx: ctx, dst: dst, total: total, progress: progress}
	if w.tx, err = dst.Begin(true); err != nil {
		return err
	}
	_, err = src.Scan(w.entry)
	if err == nil {
		err = w.tx.Commit()
		if progress != nil {
			progress(total, total)
		}
	} else if w.tx != nil {
		w.tx.Rollback()
	}
	if err != nil {
		return err
	}
	if err := dst.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", tmp, err)
	}
	closed = true
	return dst.Close()
}

// slabSize is the unit in which the writer keeps copies of keys and
// values: bbolt needs them valid until the transaction commits, and the
// scanner reuses its buffers.
const slabSize = 4 << 20

// writer builds the new file from the scan's entries (depth first, in key
// order) in one open write transaction, committed every commitBytes.
type writer struct {
	ctx      context.Context
	dst      *bolt.DB
	tx       *bolt.Tx
	gen      int      // incremented at every commit: cached buckets are stale
	path     [][]byte // the bucket the next entry at depth len(path) is in
	cur      *bolt.Bucket
	curGen   int
	slab     []byte
	pending  int
	done     int64
	total    int64
	progress func(done, total int64)
}

// keep copies b into the current slab.
func (w *writer) keep(b []byte) []byte {
	if cap(w.slab)-len(w.slab) < len(b) {
		w.slab = make([]byte, 0, max(slabSize, len(b)))
	}
	w.slab = append(w.slab, b...)
	return w.slab[len(w.slab)-len(b) : len(w.slab) : len(w.slab)]
}

// bucket resolves a bucket path in the current transaction.
func (w *writer) bucket(path [][]byte) *bolt.Bucket {
	b := w.tx.Bucket(path[0])
	for _, name := range path[1:] {
		b = b.Bucket(name)
	}
	return b
}

// entry copies one entry of the scan.
func (w *writer) entry(e boltpage.Entry) error {
	if e.Depth < len(w.path) {
		w.path, w.cur = w.path[:e.Depth], nil
	}
	if e.Bucket {
		var parent interface {
			CreateBucket([]byte) (*bolt.Bucket, error)
		} = w.tx
		if len(w.path) > 0 {
			parent = w.bucket(w.path)
		}
		name := w.keep(e.Key)
		b, err := parent.CreateBucket(name)
		if err != nil {
			return fmt.Errorf("create bucket %q: %w", append(w.path, name), err)
		}
		if err := b.SetSequence(e.Sequence); err != nil {
			return err
		}
		w.path, w.cur = append(w.path, name), nil
		return nil
	}
	if e.Depth == 0 {
		return fmt.Errorf("%w: top-level entry %q is not a bucket", etcdfmt.ErrSchema, e.Key)
	}
	if w.cur == nil || w.curGen != w.gen {
		w.cur, w.curGen = w.bucket(w.path), w.gen
		w.cur.FillPercent = 1.0 // keys arrive in order: pack pages full
	}
	if err := w.cur.Put(w.keep(e.Key), w.keep(e.Value)); err != nil {
		return fmt.Errorf("bucket %q: %w", w.path, err)
	}
	n := len(e.Key) + len(e.Value)
	w.pending += n
	w.done += int64(n)
	if w.pending >= commitBytes {
		return w.commit()
	}
	return nil
}

func (w *writer) commit() error {
	if err := w.ctx.Err(); err != nil {
		return err
	}
	if err := w.tx.Commit(); err != nil {
		return err
	}
	tx, err := w.dst.Begin(true)
	if err != nil {
		w.tx = nil
		return err
	}
	w.tx, w.pending = tx, 0
	w.slab = nil // the committed transaction no longer needs the copies
	w.gen++
	if w.progress != nil {
		w.progress(w.done, w.total)
	}
	return nil
}
