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

	"github.com/etcdkit/etcdkit/internal/boltdb"
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

// Defrag defragments the bolt db at path in place.
func Defrag(ctx context.Context, path string, opts Options) (res Result, err error) {
	start := time.Now()
	res.Path = path
	fi, err := os.Stat(path)
	if err != nil {
		return res, err
	}
	src, err := boltdb.OpenMapped(path, opts.LockTimeout, nil)
	if err == nil {
		if err = etcdfmt.CheckBuckets(src.Buckets); err != nil {
			src.Close()
			err = fmt.Errorf("%s: %w", path, err)
		}
	}
	if err != nil {
		return res, err
	}
	defer src.Close()
	res.Before = fi.Size()

	err = boltdb.Guard(func() error {
		res.InUse, err = inUse(src)
		return err
	})
	src.DropResident()
	if err != nil {
		return res, fmt.Errorf("%s: %w", path, err)
	}
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

// inUse returns the bytes of the pages the db's buckets use (bolt's
// per-bucket statistics read page headers only).
func inUse(db *boltdb.DB) (int64, error) {
	var pages int64
	var pageSize int64
	err := db.View(func(tx *bolt.Tx) error {
		pageSize = int64(tx.DB().Info().PageSize)
		pages = 4 // meta pages, the root bucket's page, slack
		return tx.ForEach(func(_ []byte, b *bolt.Bucket) error {
			s := b.Stats()
			pages += int64(s.BranchPageN + s.BranchOverflowN + s.LeafPageN + s.LeafOverflowN)
			return nil
		})
	})
	return pages * pageSize, err
}

// copyDB writes every bucket of src into a new bolt file at tmp with the
// owner and mode of the original, and syncs it.
func copyDB(ctx context.Context, src *boltdb.DB, tmp string, orig os.FileInfo, total int64, progress func(done, total int64)) error {
	dst, err := bolt.Open(tmp, orig.Mode().Perm(), &bolt.Options{
		NoSync: true, NoGrowSync: true, NoFreelistSync: true, FreelistType: bolt.FreelistMapType,
		PageSize: src.Info().PageSize, Timeout: time.Second,
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
	w := &writer{ctx: ctx, dst: dst, src: src, total: total, progress: progress}
	err = boltdb.Guard(func() error {
		return src.View(func(tx *bolt.Tx) error {
			if w.tx, err = dst.Begin(true); err != nil {
				return err
			}
			return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
				return w.copyBucket(b, [][]byte{name})
			})
		})
	})
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

// writer holds the destination's open write transaction and commits it
// every commitBytes.
type writer struct {
	ctx      context.Context
	dst      *bolt.DB
	src      *boltdb.DB
	tx       *bolt.Tx
	gen      int // incremented at every commit: cached buckets are stale
	pending  int
	done     int64
	total    int64
	progress func(done, total int64)
}

// bucket resolves a bucket path in the current transaction.
func (w *writer) bucket(path [][]byte) *bolt.Bucket {
	b := w.tx.Bucket(path[0])
	for _, name := range path[1:] {
		b = b.Bucket(name)
	}
	return b
}

func (w *writer) copyBucket(src *bolt.Bucket, path [][]byte) error {
	var parent interface {
		CreateBucket([]byte) (*bolt.Bucket, error)
	} = w.tx
	if len(path) > 1 {
		parent = w.bucket(path[:len(path)-1])
	}
	b, err := parent.CreateBucket(path[len(path)-1])
	if err != nil {
		return fmt.Errorf("create bucket %q: %w", path, err)
	}
	if err := b.SetSequence(src.Sequence()); err != nil {
		return err
	}
	b.FillPercent = 1.0
	gen := w.gen
	c := src.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if v == nil { // a nested bucket
			if err := w.copyBucket(src.Bucket(k), append(path[:len(path):len(path)], k)); err != nil {
				return err
			}
			continue
		}
		if w.gen != gen {
			b, gen = w.bucket(path), w.gen
			b.FillPercent = 1.0
		}
		if err := b.Put(k, v); err != nil {
			return fmt.Errorf("bucket %q: %w", path, err)
		}
		n := len(k) + len(v)
		w.src.Touched(n)
		w.pending += n
		w.done += int64(n)
		if w.pending >= commitBytes {
			if err := w.commit(); err != nil {
				return err
			}
		}
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
	w.gen++
	if w.progress != nil {
		w.progress(w.done, w.total)
	}
	return nil
}
