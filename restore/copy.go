package restore

import (
	"context"
	"crypto/sha256"
	"fmt"
	"hash"
	"io"
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/etcdkit/etcdkit/internal/etcdfmt"
	"github.com/etcdkit/etcdkit/internal/fsutil"
)

const (
	chunkSize = 1 << 20 // bytes per read
	chunks    = 8       // buffers in flight: the copy's whole memory
	// align is the alignment of offsets, lengths and buffers that direct
	// I/O needs (the largest common logical block size).
	align = 4096
	// carryMax is what a buffer holds back for the next one: the part of
	// an aligned block not yet complete, plus a possible trailer.
	carryMax = align + etcdfmt.SnapshotTrailerLen
)

// chunk is one buffer of the input on its way to the hasher and writers.
type chunk struct {
	buf  []byte
	data []byte // the part of buf to hash and write
	off  int64
	refs atomic.Int32
}

// copied is what streamSnapshot learned about its input.
type copied struct {
	Size        int64    // bytes of db written (the trailer excluded)
	HasTrailer  bool     // the input ended in a sha256 trailer
	Expected    [32]byte // the trailer
	Actual      [32]byte // sha256 of the db bytes, when hashed
	HashChecked bool
}

// streamSnapshot reads r once and writes its bytes to every file in outs,
// hashing them with sha256 at the same time. The last 32 bytes are held
// back until the end of the input shows whether they are the snapshot's
// sha256 trailer (etcd appends one when the size of the rest is a multiple
// of 512), which is never written. Memory stays at chunks*chunkSize.
// check, when set, also sees the db's bytes in order, beside the writers.
func streamSnapshot(ctx context.Context, r io.Reader, name string, outs []*os.File, hashIt bool, check checker, progress func(int64)) (copied, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	bufs, release, err := buffers(chunks, carryMax+chunkSize)
	if err != nil {
		return copied{}, err
	}
	defer release()
	free := make(chan *chunk, chunks)
	for _, b := range bufs {
		free <- &chunk{buf: b}
	}
	done := func(c *chunk) {
		if c.refs.Add(-1) == 0 {
			free <- c
		}
	}

	var wg sync.WaitGroup
	consumers := make([]chan *chunk, 0, len(outs)+1)
	start := func(fn func(c *chunk) error) {
		ch := make(chan *chunk, chunks)
		consumers = append(consumers, ch)
		wg.Go(func() {
			failed := false
			for c := range ch {
				if !failed {
					if err := fn(c); err != nil {
						cancel(err)
						failed = true
					}
				}
				done(c)
			}
		})
	}
	var h hash.Hash
	if hashIt {
		h = sha256.New()
		start(func(c *chunk) error { h.Write(c.data); return nil })
	}
	if check != nil {
		start(func(c *chunk) error { check.Write(c.data); return nil })
	}
	for i, f := range outs {
		w := newWriter(f)
		if i == 0 && check != nil {
			w.buffered = check.GaveUp
		}
		defer w.close()
		start(w.write)
	}

	res, err := readChunks(ctx, r, name, free, func(c *chunk) {
		c.refs.Store(int32(len(consumers)))
		for _, ch := range consumers {
			ch <- c
		}
		if progress != nil {
			progress(c.off + int64(len(c.data)))
		}
	})
	for _, ch := range consumers {
		close(ch)
	}
	wg.Wait()
	if cause := context.Cause(ctx); cause != nil {
		return res, cause
	}
	if err != nil {
		return res, err
	}
	if h != nil {
		copy(res.Actual[:], h.Sum(nil))
		res.HashChecked = true
	}
	return res, nil
}

// checker checks the db's bytes as they stream past (streamCheck). Once
// it gave up, the first copy will be read again to be checked, so the rest
// of it is written through the page cache.
type checker interface {
	Write([]byte)
	GaveUp() bool
}

// readChunks fills buffers from r and hands them to emit in order, holding
// back the trailer-sized tail of the input. Every chunk but the last starts
// and ends on an align boundary, so that writers can use direct I/O.
func readChunks(ctx context.Context, r io.Reader, name string, free chan *chunk, emit func(*chunk)) (copied, error) {
	var res copied
	var carry [carryMax]byte
	held := 0 // bytes in carry
	var off int64
	for {
		var c *chunk
		select {
		case c = <-free:
		case <-ctx.Done():
			return res, context.Cause(ctx)
		}
		copy(c.buf, carry[:held])
		n, err := io.ReadFull(r, c.buf[held:held+chunkSize])
		total := held + n
		last := false
		switch {
		case err == io.EOF || err == io.ErrUnexpectedEOF:
			last = true
		case err != nil:
			return res, fmt.Errorf("read %s: %w", name, err)
		}
		var emitLen int
		switch {
		case !last:
			emitLen = (total - etcdfmt.SnapshotTrailerLen) &^ (align - 1)
		case etcdfmt.HasSnapshotTrailer(off + int64(total)):
			emitLen = total - etcdfmt.SnapshotTrailerLen
			res.HasTrailer = true
			copy(res.Expected[:], c.buf[emitLen:total])
		default:
			emitLen = total
		}
		held = copy(carry[:], c.buf[emitLen:total])
		c.data, c.off = c.buf[:emitLen], off
		off += int64(emitLen)
		if emitLen > 0 {
			emit(c)
		} else {
			free <- c
		}
		if last {
			res.Size = off
			return res, nil
		}
	}
}

// buffers returns k buffers of n bytes, each starting on an align
// boundary, mapped outside Go's heap: they live as long as the copy, and
// in the heap they would double the garbage collector's goal (the heap it
// lets grow before collecting) for nothing. release unmaps them; no
// buffer is used after it.
func buffers(k, n int) (bufs [][]byte, release func(), err error) {
	size := (n + align - 1) &^ (align - 1)
	mem, err := unix.Mmap(-1, 0, k*size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANON)
	if err != nil {
		return nil, nil, fmt.Errorf("copy buffers: %w", err)
	}
	for i := range k {
		bufs = append(bufs, mem[i*size:i*size+n:i*size+n])
	}
	return bufs, func() { _ = unix.Munmap(mem) }, nil
}

// writer writes chunks at their offsets. Aligned data goes through a second
// descriptor opened with O_DIRECT: the copy then costs no CPU for the page
// cache and no writeback later, and does not evict the operator's page
// cache. Where direct I/O is not available (tmpfs, some FUSE file systems)
// or for an unaligned tail, it writes through the page cache and starts the
// writeback early instead.
type writer struct {
	f      *os.File
	direct *os.File // nil: no direct I/O
	// buffered, when set and true, sends the rest through the page cache.
	buffered func() bool
	wb       fsutil.Writeback
}

// useDirectIO can be turned off by tests to cover the buffered path.
var useDirectIO = true

func newWriter(f *os.File) *writer {
	w := &writer{f: f, wb: fsutil.Writeback{F: f}}
	if !useDirectIO {
		return w
	}
	if d, err := os.OpenFile(f.Name(), os.O_WRONLY|unix.O_DIRECT, 0); err == nil {
		w.direct = d
	}
	return w
}

func (w *writer) write(c *chunk) error {
	data, off := c.data, c.off
	if w.direct != nil && off%align == 0 && (w.buffered == nil || !w.buffered()) {
		n := len(data) &^ (align - 1)
		if n > 0 {
			if _, err := w.direct.WriteAt(data[:n], off); err != nil {
				return fmt.Errorf("write %s: %w", w.f.Name(), err)
			}
		}
		data, off = data[n:], off+int64(n)
	}
	if len(data) == 0 {
		return nil
	}
	if _, err := w.f.WriteAt(data, off); err != nil {
		return fmt.Errorf("write %s: %w", w.f.Name(), err)
	}
	w.wb.Wrote(off + int64(len(data)))
	return nil
}

func (w *writer) close() {
	if w.direct != nil {
		w.direct.Close()
	}
}
