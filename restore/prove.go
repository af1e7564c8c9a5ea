package restore

import (
	"bytes"
	"fmt"
	"sync/atomic"

	"github.com/etcdkit/etcdkit/internal/boltpage"
	"github.com/etcdkit/etcdkit/internal/etcdfmt"
)

// streamCheck checks a snapshot as it streams into the restore (bolt's
// checks, proven page by page: boltpage.Stream's Prove) and learns what
// checkDB learns, so that no copy has to be read again. Where the stream
// alone proves nothing (see boltpage's proof), facts says so and the
// restore runs checkDB on its copy instead.
type streamCheck struct {
	s      boltpage.Stream
	pages  []uint8 // by leaf page: what it holds for checkDB's facts
	failed error   // the stream's first error: no more is written
	gaveUp atomic.Bool
}

// Per leaf page: every key is a revision; and, reading its values in
// order until one is Kubernetes' or does not parse, which came first.
const (
	leafRevs   = 1 << iota // every key parses as a revision
	leafKube               // a value under /registry/ came first
	leafBroken             // a value that does not parse came first
	leafAny                // it holds an entry
)

func newStreamCheck() *streamCheck {
	c := &streamCheck{}
	c.s = boltpage.Stream{Prove: true, Code: etcdfmt.RevKeyCode, Leaf: c.leaf}
	return c
}

// close returns the proof's memory.
func (c *streamCheck) close() { c.s.Close() }

// Write takes the next bytes of the db; it never fails the copy.
func (c *streamCheck) Write(b []byte) {
	if c.failed == nil {
		_, c.failed = c.s.Write(b)
	}
	if c.failed != nil || !c.s.Proving() {
		c.gaveUp.Store(true)
	}
}

// GaveUp reports, from any goroutine, whether the stream will prove
// nothing: the copy will be checked.
func (c *streamCheck) GaveUp() bool { return c.gaveUp.Load() }

func (c *streamCheck) leaf(id uint64, p []byte) error {
	if !c.s.Proving() {
		return nil // nothing will be proven: the copy is checked
	}
	if c.pages == nil { // the proof bounds the pages
		c.pages = make([]uint8, c.s.Meta.Pgid)
	}
	c.pages[id] = leafFacts(p)
	return nil
}

// leafFacts reads a key bucket's page as checkDB reads its entries.
func leafFacts(p []byte) uint8 {
	var f uint8 = leafRevs
	_ = boltpage.LeafEntries(p, func(_ uint32, k, v []byte) error {
		f |= leafAny
		if _, _, err := etcdfmt.ParseRevKey(k); err != nil {
			f &^= leafRevs
		}
		if f&(leafKube|leafBroken) == 0 {
			switch kv, err := etcdfmt.ParseKeyValue(v); {
			case err != nil:
				f |= leafBroken
			case bytes.HasPrefix(kv.Key, kubernetesPrefix):
				f |= leafKube
			}
		}
		return nil
	})
	return f
}

// facts returns checkDB's facts once the stream ended, or an error
// (boltpage.ErrUnproven or the stream's own) if the stream does not prove
// the db sound; the restore then checks its copy.
func (c *streamCheck) facts() (srcFacts, error) {
	var f srcFacts
	if c.failed != nil {
		return f, c.failed
	}
	if err := c.s.Finish(); err != nil {
		return f, err
	}
	decided := false // the first leaf that is not plain was met
	var lastID uint64
	var lastInline []byte
	top, err := c.s.Walk(func(bucket []byte, id uint64, inline []byte) error {
		if !bytes.Equal(bucket, etcdfmt.BucketKey) {
			return nil
		}
		lastID, lastInline = id, inline
		var lf uint8
		if inline != nil {
			lf = leafFacts(inline)
		} else if id < uint64(len(c.pages)) {
			lf = c.pages[id]
		}
		switch {
		case lf&leafRevs == 0:
			return fmt.Errorf("%w: page %d of the key bucket holds a key that is not a revision", boltpage.ErrUnproven, id)
		case decided:
		case lf&leafBroken != 0:
			return fmt.Errorf("%w: page %d of the key bucket holds a value that does not parse", boltpage.ErrUnproven, id)
		case lf&leafKube != 0:
			f.kubernetes, decided = true, true
		}
		return nil
	})
	if err != nil {
		return f, err
	}
	if err := etcdfmt.CheckBuckets(top); err != nil {
		return f, err
	}
	f.latest, err = c.latest(lastID, lastInline)
	return f, err
}

// latest is the main revision of the key bucket's last key, the order
// code (etcdfmt.RevKeyCode) the proof kept of the last page's last key.
func (c *streamCheck) latest(id uint64, inline []byte) (int64, error) {
	var last []byte
	if inline != nil {
		_ = boltpage.LeafEntries(inline, func(_ uint32, k, _ []byte) error { last = k; return nil })
		if last == nil {
			return 0, nil
		}
		r, _, err := etcdfmt.ParseRevKey(last)
		return r.Main, err
	}
	if id == 0 || c.pages[id]&leafAny == 0 {
		return 0, nil // an empty key bucket: a new cluster
	}
	code, ok := c.s.LastCode(id)
	if !ok {
		return 0, fmt.Errorf("%w: the key bucket's last key has no order code", boltpage.ErrUnproven)
	}
	return etcdfmt.RevOfCode(code), nil
}
