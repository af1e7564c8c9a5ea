// Package defrag rewrites an etcd bolt db offline without its free pages:
// every bucket, key and value is copied in order into a new file next to
// it, which replaces the original only when complete and synced.
//
// Unlike etcdutl defrag it does not map the db with MAP_POPULATE (memory
// stays bounded whatever the db size), does not go through bbolt
// transactions (the new file is written directly, page by page in key
// order, pages packed full: a bulk load), checks the free disk space first,
// waits a bounded time for a running etcd's lock and keeps the original's
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

	"go.etcd.io/etcd/server/v3/storage/datadir"

	"github.com/etcdkit/etcdkit/internal/boltpage"
	"github.com/etcdkit/etcdkit/internal/etcdfmt"
	"github.com/etcdkit/etcdkit/internal/fsutil"
)

// ErrNoSpace reports too little free disk space for the new file.
var ErrNoSpace = fsutil.ErrNoSpace

const (
	tempMarker = ".etcdkit-defrag-"
	// progressBytesDefault is how much is copied between progress reports
	// (and checks of the context).
	progressBytesDefault = 16 << 20
	// headroom is added to the live size for the free-space check: bolt
	// grows files in steps of up to 16 MiB.
	headroom = 32 << 20
)

// progressBytes is progressBytesDefault; tests lower it.
var progressBytes = progressBytesDefault

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

// Defrag defragments the bolt db at path in place, under one shared lock
// (a running etcd cannot open it meanwhile), reading it with the pread
// scanner, never mapped. When the file system has room for a copy as large
// as the whole file, one pass checks the db and writes the new file (a
// damaged db is found by the end of the pass, and the new file is thrown
// away). Otherwise a first pass checks the db and measures its live data,
// which must fit, before the second writes.
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
	free, err := fsutil.Free(filepath.Dir(path))
	if err != nil {
		return res, err
	}
	onePass := free.Bytes >= res.Before+headroom+opts.Reserve
	if !onePass {
		var top []string
		pages, err := src.Scan(func(e boltpage.Entry) error { // the check, and the live size
			if e.Depth == 0 {
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
		if need := res.InUse + headroom + opts.Reserve; free.Bytes < need {
			return res, fmt.Errorf("%w: %s has %s free, defragmenting %s needs %s (its live data plus headroom); free some space or copy the db to a larger disk",
				ErrNoSpace, filepath.Dir(path), fsutil.MiB(free.Bytes), path, fsutil.MiB(need))
		}
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
	total := res.InUse
	if onePass {
		total = src.TotalSize()
	}
	pages, err := copyDB(ctx, src, tmp, fi, total, opts.Progress)
	if err != nil {
		return res, fmt.Errorf("%s: %w", path, err)
	}
	res.InUse = int64(pages.Reachable) * int64(src.Meta.PageSize)
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

// copyDB writes every bucket of src into a new bolt file at tmp, page by
// page in key order (boltpage.Builder: a bulk load, no transactions, no
// mapping), with the owner and mode of the original, and syncs it.
func copyDB(ctx context.Context, src *boltpage.File, tmp string, orig os.FileInfo, total int64, progress func(done, total int64)) (boltpage.Pages, error) {
	var pages boltpage.Pages
	f, err := os.OpenFile(tmp, os.O_RDWR, 0)
	if err != nil {
		return pages, err
	}
	defer f.Close()
	if st, ok := orig.Sys().(*syscall.Stat_t); ok {
		if err := f.Chown(int(st.Uid), int(st.Gid)); err != nil && !errors.Is(err, os.ErrPermission) {
			return pages, err
		}
	}
	b, err := boltpage.NewBuilder(f, int(src.Meta.PageSize))
	if err != nil {
		return pages, err
	}
	var reported int64
	var top []string
	pages, err = src.Scan(func(e boltpage.Entry) error {
		switch {
		case e.Depth == 0:
			top = append(top, string(e.Key))
			return b.Bucket(e.Key, e.Sequence)
		case e.Bucket:
			return fmt.Errorf("%w: %w: bucket %q inside %q", etcdfmt.ErrSchema, boltpage.ErrNested, e.Key, e.Top)
		}
		if err := b.Put(e.Key, e.Value); err != nil {
			return err
		}
		if b.Written-reported >= int64(progressBytes) {
			reported = b.Written
			if err := ctx.Err(); err != nil {
				return err
			}
			if progress != nil {
				progress(b.Written, total)
			}
		}
		return nil
	})
	if err == nil {
		err = etcdfmt.CheckBuckets(top) // the scan's check failed, or passed
	}
	if err != nil {
		return pages, err
	}
	if _, err = b.Finish(); err != nil {
		return pages, err
	}
	if progress != nil {
		progress(total, total)
	}
	return pages, f.Close()
}
