package backup

import (
	"io"
	"sync"
)

// readAhead reads r in its own goroutine, up to depth buffers of size
// bytes ahead of the caller: the stages before it (download, hashing of
// the stored bytes, age, zstd) run on one core while the caller's (the
// raw hash, a restore) run on another. Close stops the goroutine once its
// current read returns (closing what it reads from unblocks it).
type readAhead struct {
	full  chan []byte
	free  chan []byte
	err   error // set before full is closed
	cur   []byte
	stop  chan struct{}
	done  chan struct{} // closed when the goroutine returned
	once  sync.Once
	bufOf []byte
}

func newReadAhead(r io.Reader, depth, size int) *readAhead {
	ra := &readAhead{full: make(chan []byte, depth), free: make(chan []byte, depth+1), stop: make(chan struct{}), done: make(chan struct{})}
	for range depth + 1 {
		ra.free <- make([]byte, size)
	}
	go func() {
		defer close(ra.done)
		defer close(ra.full)
		for {
			var b []byte
			select {
			case b = <-ra.free:
			case <-ra.stop:
				return
			}
			n, err := io.ReadFull(r, b[:cap(b)])
			if n > 0 {
				select {
				case ra.full <- b[:n]:
				case <-ra.stop:
					return
				}
			}
			if err == io.ErrUnexpectedEOF {
				err = io.EOF
			}
			if err != nil {
				ra.err = err
				return
			}
		}
	}()
	return ra
}

func (ra *readAhead) Read(p []byte) (int, error) {
	if len(ra.cur) == 0 {
		if ra.bufOf != nil {
			ra.free <- ra.bufOf[:cap(ra.bufOf)]
			ra.bufOf = nil
		}
		b, ok := <-ra.full
		if !ok {
			return 0, ra.err
		}
		ra.cur, ra.bufOf = b, b
	}
	n := copy(p, ra.cur)
	ra.cur = ra.cur[n:]
	return n, nil
}

// Close asks the reading goroutine to stop; wait waits until it did (after
// the caller closed what it reads from, so a blocked read returns).
func (ra *readAhead) Close() error {
	ra.once.Do(func() { close(ra.stop) })
	return nil
}

func (ra *readAhead) wait() { <-ra.done }
