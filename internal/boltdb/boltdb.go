// Package boltdb opens a bolt file with bbolt, mapped read-only, for the
// offline commands that walk it through bbolt's API (hashkv, verify's schema
// walk, defrag's source, save's revision): only after boltpage.Check has
// passed the file, without MAP_POPULATE, with a bounded wait for the lock a
// running etcd holds, and with the resident part of the mapping kept small
// so that peak RSS does not grow with the size of the db. Reading without a
// mapping (the pread scanner) is package boltpage.
package boltdb

import (
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
	"golang.org/x/sys/unix"

	"github.com/etcdkit/etcdkit/internal/boltpage"
)

// residentLimit is the number of bytes of the mapping that may be resident
// before the limiter drops them again; dropping is cheap because the pages
// stay in the page cache and fault back in without I/O.
const residentLimit = 12 << 20

// touchCheckBytes is how much a walk reads between two checks in Touched.
const touchCheckBytes = 1 << 20

// DB is a read-only bolt database with a resident-memory limiter.
type DB struct {
	*bolt.DB
	Path string
	Size int64 // file size in bytes, trailer included
	// Buckets are the top-level bucket names the check found.
	Buckets []string

	baseRSS int64 // resident set when opened
	touched atomic.Int64
	stop    chan struct{}
	wg      sync.WaitGroup
}

// OpenMapped opens path read-only with bbolt, after boltpage.Check passed it:
// bbolt trusts the pages it maps, and a damaged file (a page that lists
// itself as its child, an element outside its page) would make it loop,
// fault, overflow its stack or run out of memory. It waits at most timeout
// for a shared lock (0 waits forever) and fails with boltpage.ErrInUse after that;
// progress reports the check's reading.
//
// entry, when set, sees every entry of the check's scan (boltpage.Check).
func OpenMapped(path string, timeout time.Duration, progress func(done, total int64), entry func(boltpage.Entry) error) (*DB, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.IsDir() {
		return nil, fmt.Errorf("%s: %w: it is a directory", path, boltpage.ErrNotBolt)
	}
	top, err := boltpage.Check(path, timeout, progress, entry)
	if err != nil {
		return nil, err
	}
	db, err := bolt.Open(path, 0o400, &bolt.Options{ReadOnly: true, Timeout: timeout})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, classify(err))
	}
	d := &DB{DB: db, Path: path, Size: fi.Size(), Buckets: top, stop: make(chan struct{})}
	if err := d.checkSize(); err != nil {
		db.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	d.baseRSS = residentBytes()
	d.wg.Add(1)
	go d.limitResident()
	return d, nil
}

func classify(err error) error {
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return fmt.Errorf("%w (timed out waiting for its lock; stop etcd or raise --timeout)", boltpage.ErrInUse)
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrVersionMismatch), errors.Is(err, berrors.ErrChecksum):
		return fmt.Errorf("%w: %w", boltpage.ErrNotBolt, err)
	}
	return err
}

// checkSize refuses a file shorter than the pages its meta page claims: bolt
// would fault reading past the end of the mapping.
func (d *DB) checkSize() error {
	tx, err := d.Begin(false)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if want := tx.Size(); want > d.Size {
		return fmt.Errorf("%w: file is %d bytes but its meta page says %d (truncated copy?)", boltpage.ErrDamaged, d.Size, want)
	}
	return nil
}

// Guard runs fn and turns a panic or a memory fault while reading the
// mapping (a damaged page pointing outside the file) into boltpage.ErrDamaged instead
// of a crash. Every goroutine that walks bolt pages of untrusted input runs
// under Guard.
func Guard(fn func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", boltpage.ErrDamaged, r)
		}
	}()
	return fn()
}

// Close stops the limiter and closes the database.
func (d *DB) Close() error {
	close(d.stop)
	d.wg.Wait()
	return d.DB.Close()
}

// limitResident watches the process's resident set from its own goroutine
// and drops the mapped pages of the db whenever it has grown past
// residentLimit. It is the fallback for walks that cannot report progress
// (bolt's own consistency check); walks that can call Touched as well,
// because a busy runtime (a GC cycle's idle workers) can delay this
// goroutine by tens of milliseconds.
func (d *DB) limitResident() {
	defer d.wg.Done()
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-d.stop:
			return
		case <-t.C:
			d.maybeDrop()
		}
	}
}

// Touched records that the caller read about n bytes of the mapping; every
// few MiB it checks the resident set and drops the mapped pages if needed.
func (d *DB) Touched(n int) {
	if d.touched.Add(int64(n)) >= touchCheckBytes {
		d.touched.Store(0)
		d.maybeDrop()
	}
}

func (d *DB) maybeDrop() {
	if residentBytes() > d.baseRSS+residentLimit {
		d.dropResident()
	}
}

// dropResident releases the mapped pages of the file from this process's
// page tables (MADV_DONTNEED on a read-only file mapping only unmaps them;
// the data stays in the page cache).
func (d *DB) dropResident() {
	info := d.Info()
	length := (uintptr(d.Size) + uintptr(info.PageSize) - 1) &^ (uintptr(info.PageSize) - 1)
	_, _, _ = unix.Syscall(unix.SYS_MADVISE, info.Data, length, unix.MADV_DONTNEED)
}

// residentBytes reads the process's resident set size from /proc/self/statm.
func residentBytes() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize())
}
