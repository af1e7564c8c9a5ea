package boltpage

import (
	"encoding/binary"
	"fmt"
)

// Stream reads a bolt file as it arrives, in page order (a snapshot
// stream), without storing it: it hands every page that may be a leaf to
// Leaf, and keeps what a walk of the trees needs at the end (the meta page,
// every branch page's children, and copies of the leaf pages that hold
// buckets). Free pages are in the stream too and look like any page, so
// nothing is known to be part of the tree until Walk, once the whole file
// went through; Leaf's caller keeps what it needs by page id and uses it
// for the pages Walk names.
//
// A page with overflow pages is gathered whole before Leaf sees it, and
// each of its overflow pages is also read as a possible page of its own (a
// free page's stale header may claim pages that are now in use). Memory is
// the branch pages' children (about 8 bytes per page of the file in the
// worst case, 1% of that in etcd's trees), the bucket pages, and the pages
// being gathered (at most maxGather bytes).
type Stream struct {
	// Leaf is called with each page that has a leaf header and its own
	// id, with its overflow pages; p is only valid during the call.
	Leaf func(id uint64, p []byte) error
	// Prove, set before the first Write, makes the stream also check what
	// Scan checks (see proof), so that a copy written as it streams need
	// not be read again: Walk then fails with ErrUnproven where the
	// stream alone does not show the file sound (the caller checks its
	// copy instead). Close returns the proof's memory.
	Prove bool
	// Code, when set, gives keys the caller knows an order code: for two
	// keys with codes, a < b exactly when Code(a) < Code(b). The proof compares
	// last keys by it (see proof), and LastCode returns it.
	Code  func(key []byte) (uint64, bool)
	proof *proof
	over  map[uint64]uint32 // overflow pages of pages that have some

	Meta      Meta
	metaOK    bool
	buf       []byte // the page being received
	next      uint64 // id of the page being received
	extra     int64  // bytes after the last page (etcd's trailer)
	gather    []gathering
	gathered  int
	children  map[uint64]span // branch page → its children in kids
	kids      []uint32
	dirs      map[uint64][]byte // leaf pages holding buckets
	dirBytes  int
	leaves    bitset // pages seen as leaves (whole)
	visited   bitset // pages Walk reached
	tooLarge  map[uint64]bool
	finished  bool
	lastError error
}

// span is a branch page's children: n ids from off in Stream.kids.
type span struct{ off, n uint32 }

type gathering struct {
	id  uint64
	buf []byte
}

const (
	// maxGather bounds the bytes of pages being gathered at once.
	maxGather = 64 << 20
	// maxDirBytes bounds the copies of leaf pages holding buckets: the root
	// bucket's pages and stale copies of them in free pages.
	maxDirBytes = 64 << 20
)

// Write takes the next bytes of the file.
func (s *Stream) Write(b []byte) (int, error) {
	if s.lastError != nil {
		return 0, s.lastError
	}
	n := len(b)
	for len(b) > 0 {
		if s.metaOK && s.next >= s.Meta.Pgid {
			s.extra += int64(len(b))
			if s.extra >= int64(s.Meta.PageSize) {
				return 0, s.fail(fmt.Errorf("%w: more than %d pages (the meta page's high-water mark)", ErrDamaged, s.Meta.Pgid))
			}
			break
		}
		size := pageHeaderSize + metaSize
		if s.metaOK {
			size = int(s.Meta.PageSize)
			if len(s.buf) == 0 && len(b) >= size { // a whole page: no copy
				if err := s.page(s.next, b[:size]); err != nil {
					return 0, s.fail(err)
				}
				s.next++
				b = b[size:]
				continue
			}
		}
		k := min(size-len(s.buf), len(b))
		s.buf = append(s.buf, b[:k]...)
		b = b[k:]
		if len(s.buf) < size {
			continue
		}
		if !s.metaOK {
			if err := s.readMeta(); err != nil {
				return 0, s.fail(err)
			}
			continue
		}
		if err := s.page(s.next, s.buf); err != nil {
			return 0, s.fail(err)
		}
		s.buf = s.buf[:0]
		s.next++
	}
	return n, nil
}

func (s *Stream) fail(err error) error {
	s.lastError = err
	return err
}

// readMeta decodes meta page 0, which comes first and tells the page size.
// A snapshot's two meta pages are the same (bolt's Tx.WriteTo).
func (s *Stream) readMeta() error {
	m, err := decodeMeta(s.buf)
	if err != nil {
		return err
	}
	if m.PageSize < 512 || m.PageSize > maxPageSize || m.PageSize&(m.PageSize-1) != 0 {
		return fmt.Errorf("%w: implausible page size %d", ErrNotBolt, m.PageSize)
	}
	if m.Pgid < 3 || m.Root < 2 || m.Root >= m.Pgid || m.Pgid > 1<<40 {
		return fmt.Errorf("%w: meta page: root page %d, %d pages", ErrDamaged, m.Root, m.Pgid)
	}
	s.Meta, s.metaOK = m, true
	if m.Pgid > 1<<32 {
		return fmt.Errorf("%w: %d pages: more than etcdkit's stream reader indexes", ErrDamaged, m.Pgid)
	}
	s.children, s.dirs, s.tooLarge = map[uint64]span{}, map[uint64][]byte{}, map[uint64]bool{}
	s.over = map[uint64]uint32{}
	if s.Prove {
		// The children go outside Go's heap too, while they fit (in a
		// valid file there is one per page; append moves any more).
		s.proof = newProof(m, s.Code)
		s.kids = s.proof.kids
	}
	// The rest of page 0 follows; count it as received.
	s.buf = append(make([]byte, 0, m.PageSize), s.buf...)
	return nil
}

// page takes page id: it completes the pages being gathered, then reads
// it as a page of its own.
func (s *Stream) page(id uint64, p []byte) error {
	if id < 2 {
		if id == 1 {
			if m, err := decodeMeta(p); err == nil && m.Txid > s.Meta.Txid && m.PageSize == s.Meta.PageSize {
				if m.Root < 2 || m.Root >= m.Pgid || m.Pgid != s.Meta.Pgid {
					return fmt.Errorf("%w: meta page 1 disagrees with meta page 0", ErrDamaged)
				}
				if s.proof != nil && m.Freelist != NoFreelist {
					s.proof.stop("meta page 1 names a stored freelist")
				}
				s.Meta = m
			}
		}
		return nil
	}
	if len(s.gather) > 0 {
		kept := s.gather[:0]
		for _, g := range s.gather {
			g.buf = append(g.buf, p...)
			if len(g.buf) < cap(g.buf) {
				kept = append(kept, g)
				continue
			}
			s.gathered -= len(g.buf)
			if err := s.whole(g.id, g.buf); err != nil {
				return err
			}
		}
		clear(s.gather[len(kept):])
		s.gather = kept
	}
	if binary.LittleEndian.Uint64(p) != id {
		return nil // not a page header: overflow data, or never written
	}
	flags, _, overflow := pageHeader(p)
	if flags != branchPageFlag && flags != leafPageFlag {
		return nil
	}
	if overflow == 0 {
		return s.whole(id, p)
	}
	total := (uint64(overflow) + 1) * uint64(s.Meta.PageSize)
	if id+uint64(overflow) >= s.Meta.Pgid || total > maxPageBytes || s.gathered+int(total) > maxGather {
		s.tooLarge[id] = true
		return nil
	}
	buf := make([]byte, len(p), total)
	copy(buf, p)
	s.gather = append(s.gather, gathering{id, buf})
	s.gathered += int(total)
	return nil
}

// whole reads a complete page.
func (s *Stream) whole(id uint64, p []byte) error {
	flags, count, _ := pageHeader(p)
	if pageHeaderSize+int(count)*elemSize > len(p) {
		return nil // a stale or damaged page; Walk refuses it if reached
	}
	if flags == branchPageFlag {
		start := len(s.kids)
		for i := range int(count) {
			_, child, ok := branchElem(p, i)
			if !ok || child >= s.Meta.Pgid {
				s.kids = s.kids[:start]
				return nil // a stale or damaged page; Walk refuses it if reached
			}
			s.kids = append(s.kids, uint32(child))
		}
		s.children[id] = span{uint32(start), uint32(count)}
		s.overflow(id, p)
		if s.proof != nil {
			s.proof.branch(id, p, int(count))
		}
		return nil
	}
	// Grown as pages arrive: a meta page's claim costs nothing until the
	// pages behind it do.
	for uint64(len(s.leaves))*64 <= id {
		s.leaves = append(s.leaves, 0)
	}
	s.leaves.set(id)
	s.overflow(id, p)
	if s.proof != nil {
		s.proof.leaf(id, p)
	}
	if hasBucket(p) {
		if s.dirBytes+len(p) > maxDirBytes {
			return fmt.Errorf("%w: more than %d bytes of pages holding buckets", ErrDamaged, maxDirBytes)
		}
		s.dirs[id] = append([]byte(nil), p...)
		s.dirBytes += len(p)
	}
	if s.Leaf != nil {
		return s.Leaf(id, p)
	}
	return nil
}

// overflow records how many overflow pages page id (p) has, if any: the
// walk marks them used too.
func (s *Stream) overflow(id uint64, p []byte) {
	if n := len(p)/int(s.Meta.PageSize) - 1; n > 0 {
		s.over[id] = uint32(n)
	}
}

// LastCode returns, after Walk proved the file, the Code of the last key
// of the tree under page id (a bucket's root), if it has one.
func (s *Stream) LastCode(id uint64) (uint64, bool) {
	if s.proof == nil {
		return 0, false
	}
	return s.proof.lastCode(id)
}

// Proving reports whether the stream is proving (Prove) and has not
// given up yet.
func (s *Stream) Proving() bool { return s.proof != nil && !s.proof.off() }

// Close returns the memory of the proof (Prove); the stream is not used
// after it.
func (s *Stream) Close() {
	if s.proof != nil {
		s.kids, s.children = nil, nil
		s.proof.release()
	}
}

func hasBucket(p []byte) bool {
	_, count, _ := pageHeader(p)
	for i := range int(count) {
		if binary.LittleEndian.Uint32(p[pageHeaderSize+i*elemSize:])&bucketLeafFlag != 0 {
			return true
		}
	}
	return false
}

// Finish reports whether the whole file arrived: every page up to the meta
// page's high-water mark (what follows is etcd's trailer, checked apart).
func (s *Stream) Finish() error {
	if s.lastError != nil {
		return s.lastError
	}
	if !s.metaOK || s.next < s.Meta.Pgid {
		return fmt.Errorf("%w: the stream ended after %d of its pages (truncated)", ErrDamaged, s.next)
	}
	s.finished = true
	return nil
}

// Walk visits, after Finish, the leaf pages of each top-level bucket in key
// order: fn gets the bucket's name and a leaf page's id, or for an inline
// bucket id 0 and the inline page. Buckets come in the root's key order.
// A page the trees name that did not arrive whole as a page of the right
// kind is ErrDamaged. It returns the top-level buckets' names.
func (s *Stream) Walk(fn func(bucket []byte, id uint64, inline []byte) error) ([]string, error) {
	if !s.finished {
		return nil, fmt.Errorf("boltpage: Walk before Finish")
	}
	if s.proof != nil {
		if err := s.proof.root(s.Meta.Root, true); err != nil {
			return nil, err
		}
	}
	var top []string
	err := s.walk(s.Meta.Root, 0, func(root uint64) error {
		p, ok := s.dirs[root]
		if !ok {
			return fmt.Errorf("%w: the root bucket's page %d is not a page of buckets", ErrDamaged, root)
		}
		return LeafEntries(p, func(flags uint32, name, val []byte) error {
			if flags&bucketLeafFlag == 0 {
				return fmt.Errorf("%w: the root bucket holds %q, which is not a bucket", ErrDamaged, name)
			}
			if len(val) < bucketHeaderSize {
				return fmt.Errorf("%w: bucket %q has a %d-byte header", ErrDamaged, name, len(val))
			}
			top = append(top, string(name))
			if r := binary.LittleEndian.Uint64(val); r != 0 {
				if s.proof != nil && r < s.Meta.Pgid {
					if err := s.proof.root(r, false); err != nil {
						return err
					}
				}
				return s.walk(r, 0, func(id uint64) error { return fn(name, id, nil) })
			}
			inline := val[bucketHeaderSize:]
			if len(inline) < pageHeaderSize {
				return fmt.Errorf("%w: inline bucket %q is too short", ErrDamaged, name)
			}
			if flags, _, _ := pageHeader(inline); flags != leafPageFlag {
				return fmt.Errorf("%w: inline bucket %q: invalid type: %s", ErrDamaged, name, pageType(flags))
			}
			if s.proof != nil {
				if err := s.proof.inline(inline); err != nil {
					return err
				}
			}
			return fn(name, 0, inline)
		})
	})
	return top, err
}

// walk visits the leaves under page id in order. A page is visited once:
// bolt's trees share no page, and a forged one that names a page twice
// would otherwise be walked an exponential number of times.
func (s *Stream) walk(id uint64, depth int, leaf func(uint64) error) error {
	switch {
	case depth > 64:
		return fmt.Errorf("%w: page %d: the tree is deeper than 64 levels (a cycle?)", ErrDamaged, id)
	case id < 2 || id >= s.Meta.Pgid:
		return fmt.Errorf("%w: page %d is outside the file's %d pages", ErrDamaged, id, s.Meta.Pgid)
	}
	for i := id; i <= id+uint64(s.over[id]); i++ {
		for uint64(len(s.visited))*64 <= i {
			s.visited = append(s.visited, 0)
		}
		if s.visited.has(i) {
			return fmt.Errorf("%w: page %d is in the trees twice", ErrDamaged, i)
		}
		s.visited.set(i)
	}
	switch {
	case s.tooLarge[id]:
		return fmt.Errorf("%w: page %d claims more overflow pages than etcdkit gathers (%d MiB)", ErrDamaged, id, maxPageBytes>>20)
	}
	if sp, ok := s.children[id]; ok {
		for _, k := range s.kids[sp.off : sp.off+sp.n] {
			if err := s.walk(uint64(k), depth+1, leaf); err != nil {
				return err
			}
		}
		return nil
	}
	if id >= uint64(len(s.leaves))*64 || !s.leaves.has(id) {
		return fmt.Errorf("%w: page %d, which the tree names, is not a branch or leaf page", ErrDamaged, id)
	}
	return leaf(id)
}

// LeafEntries calls fn with each element of a leaf page (or an inline
// bucket's page) in order; an element outside the page is ErrDamaged.
func LeafEntries(p []byte, fn func(flags uint32, key, value []byte) error) error {
	_, count, _ := pageHeader(p)
	if pageHeaderSize+int(count)*elemSize > len(p) {
		return fmt.Errorf("%w: %d elements do not fit the page", ErrDamaged, count)
	}
	le := binary.LittleEndian
	for i := range int(count) {
		e := pageHeaderSize + i*elemSize
		flags := le.Uint32(p[e:])
		pos, ksize, vsize := le.Uint32(p[e+4:]), le.Uint32(p[e+8:]), le.Uint32(p[e+12:])
		kv, ok := slice(p, e, pos, uint64(ksize)+uint64(vsize))
		if !ok {
			return fmt.Errorf("%w: leaf element %d points outside the page", ErrDamaged, i)
		}
		if err := fn(flags, kv[:ksize], kv[ksize:]); err != nil {
			return err
		}
	}
	return nil
}
