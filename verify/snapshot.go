package verify

import (
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/etcdkit/etcdkit/internal/boltpage"
	"github.com/etcdkit/etcdkit/internal/etcdfmt"
)

// Options tune a verification.
type Options struct {
	// LockTimeout bounds the wait for the lock of a db held by a running
	// etcd (0 waits forever).
	LockTimeout time.Duration
	// Progress, when set, is told how much of a db bolt's consistency
	// checks have read (bytes done, in all).
	Progress func(done, total int64)
}

// Snapshot verifies a snapshot file (or a bare db): its sha256 trailer,
// bolt's consistency and etcd's schema. The error is for what stops the
// verification itself (a missing file, a db locked by a running etcd);
// what is wrong with the file is in the report.
func Snapshot(path string, opts Options) (*Report, error) {
	start := time.Now()
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.IsDir() {
		return nil, fmt.Errorf("%s: %w: it is a directory (use verify data-dir)", path, boltpage.ErrNotBolt)
	}
	r := &Report{Target: path}
	trailer := &Report{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		trailer.checkTrailer(path, fi.Size())
	}()
	_, err = r.checkDB(path, opts)
	<-done
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	r.Checks = append(trailer.Checks, r.Checks...)
	r.Problems = append(trailer.Problems, r.Problems...)
	r.Took = time.Since(start)
	return r, nil
}

// checkTrailer compares the sha256 of a snapshot's bytes with its trailer.
func (r *Report) checkTrailer(path string, size int64) {
	c := r.check("sha256 trailer", path)
	if !etcdfmt.HasSnapshotTrailer(size) {
		// A bolt file is whole pages (a multiple of 512 bytes); anything
		// else is a snapshot cut short, even by one byte of its trailer.
		if rest := size % 512; rest != 0 {
			c.add(size, "", "%d bytes is neither whole pages nor pages plus the 32-byte sha256 trailer (%d bytes past the last 512-byte unit): a truncated or padded snapshot", size, rest)
			c.done("not checked")
			return
		}
		c.done("no trailer: a db copied from a data dir")
		return
	}
	f, err := os.Open(path)
	if err != nil {
		c.add(-1, "", "%v", err)
		c.done("not checked")
		return
	}
	defer f.Close()
	_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_SEQUENTIAL)
	n := size - etcdfmt.SnapshotTrailerLen
	tw := etcdfmt.NewTrailerWriter()
	if _, err := io.CopyBuffer(tw, io.NewSectionReader(f, 0, size), make([]byte, 1<<20)); err != nil {
		c.add(-1, "", "reading: %v", err)
		c.done("not checked")
		return
	}
	if _, err := tw.Check(); err != nil {
		c.add(n, "", "%v", err)
	}
	c.done("sha256 of %d bytes", n)
}
