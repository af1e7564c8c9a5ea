package save

import (
	"io"
	"sync"
)

// fanOut copies src to every writer, each written by its own goroutine
// from a few shared buffers: the stream keeps arriving while one writer
// hashes and another compresses, and no writer waits for the others
// except when all buffers are taken. It returns the bytes read and the
// first error of the read or of any writer (a writer's error stops the
// copy).
func fanOut(src io.Reader, dsts ...io.Writer) (int64, error) {
	const bufs, size = 8, 512 << 10
	type chunk struct {
		b    []byte
		left sync.WaitGroup
	}
	free := make(chan *chunk, bufs)
	for range bufs {
		free <- &chunk{b: make([]byte, size)}
	}
	var (
		mu    sync.Mutex
		first error
		stop  = make(chan struct{})
	)
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if first == nil {
			first = err
			close(stop)
		}
	}
	queues := make([]chan *chunk, len(dsts))
	var workers sync.WaitGroup
	for i, w := range dsts {
		queues[i] = make(chan *chunk, bufs)
		workers.Add(1)
		go func(q chan *chunk) {
			defer workers.Done()
			failed := false
			for c := range q {
				if !failed {
					if _, err := w.Write(c.b); err != nil {
						fail(err)
						failed = true
					}
				}
				c.left.Done()
			}
		}(queues[i])
	}
	// Buffers come back once every writer is done with them.
	var n int64
	var readErr error
	for readErr == nil {
		var c *chunk
		select {
		case c = <-free:
		case <-stop:
		}
		if c == nil {
			break
		}
		k, err := io.ReadFull(src, c.b[:size])
		if err == io.ErrUnexpectedEOF || err == io.EOF {
			err, readErr = nil, io.EOF
		}
		if err != nil {
			readErr = err
			free <- c
			break
		}
		if k == 0 {
			free <- c
			break
		}
		n += int64(k)
		c.b = c.b[:k]
		c.left.Add(len(dsts))
		for _, q := range queues {
			q <- c
		}
		go func(c *chunk) {
			c.left.Wait()
			c.b = c.b[:cap(c.b)]
			free <- c
		}(c)
	}
	for _, q := range queues {
		close(q)
	}
	workers.Wait()
	mu.Lock()
	defer mu.Unlock()
	switch {
	case first != nil:
		return n, first
	case readErr != nil && readErr != io.EOF:
		return n, readErr
	}
	return n, nil
}
