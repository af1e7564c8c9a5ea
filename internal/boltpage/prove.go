package boltpage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ErrUnproven reports a stream that Stream.Prove could not prove sound:
// not that the file is damaged, only that the stream alone does not show
// it is whole. The caller checks its copy with Check instead.
var ErrUnproven = errors.New("the stream alone does not prove the file sound")

// maxProvePages bounds the pages a proof indexes: 17 bytes each, outside
// Go's heap, so 34 MiB at etcd's largest recommended quota (8 GiB of 4 KiB
// pages), plus the Stream's branch children (4 bytes each, resident as
// they come). A larger file is not proven (ErrUnproven): its copy is
// checked.
const maxProvePages = 1 << 21

// maxDeferred bounds the edges from a parent that came first to a child
// whose summary has not come yet (about 100 bytes each, in Go's heap). A
// file whose pages came in the order bolt wrote them (a defragged or
// restored db, and what etcdkit's defrag writes) has none: children come
// first. A db bolt has long reused freed pages in has many (in etcd's
// tests, about a fifth of its pages at the worst moment): past the bound,
// nothing is proven and the caller checks its copy.
const maxDeferred = 1 << 15

// proof checks, as pages stream past in file order, what Scan checks of a
// file with no stored freelist (etcd's): within every page the elements lie
// inside it and keys strictly increase; across pages every branch key
// equals the first key of its child and the last key of a child is below
// the next branch key. Each page is summarised when it comes: a keyed hash
// of its first key, an order of its last key (an integer: smaller proves
// smaller) and flags. A branch checks its children
// against its keys when both have come, whichever is later; a branch is
// proven once all its children were, so the proof of a bucket's root page
// covers its whole tree. Anything the summaries cannot decide (a file
// bolt would not write, or keys that differ only after their first 8 bytes
// across pages) leaves the page unproven, never wrongly proven.
type proof struct {
	code    func([]byte) (uint64, bool)
	seed    maphash.Seed
	mem     []byte   // the mapping behind first, last, kids and flags
	kids    []uint32 // room for the Stream's branch children
	first   []uint64 // by page id: hash of the first key
	last    []uint64 // by page id: order of the last key
	flags   []uint8
	pending map[uint64]*pendingBranch
	waiting map[uint64][]edge // child page → edges of parents that came first
	nwait   int
	queue   []uint64
	why     string // not "": nothing is proven, and why
}

// Page flags of a proof.
const (
	pDone   = 1 << iota // summarised (a branch: all its children were)
	pOK                 // the page and everything below it passed
	pEmpty              // no keys: it may not be a child
	pNested             // a bucket lies in it or below it
	pCoded              // its last key's order is a Stream.Code
)

// edge is an element of branch parent: its key's hash and, unless it is
// the last element, the order of the next key.
type edge struct {
	key    uint64
	next   uint64
	parent uint32 // Stream indexes 2^32 pages
	coded  bool   // next is a Stream.Code
	last   bool
}

// pendingBranch is a branch page whose children have not all come.
type pendingBranch struct {
	left   int
	ok     bool
	nested bool
	coded  bool
	first  uint64
	last   uint64
}

func newProof(m Meta, code func([]byte) (uint64, bool)) *proof {
	p := &proof{seed: maphash.MakeSeed(), code: code}
	switch {
	case m.Freelist != NoFreelist:
		p.why = "the file stores a freelist"
		return p
	case m.Pgid > maxProvePages:
		p.why = fmt.Sprintf("%d pages, more than a proof indexes (%d)", m.Pgid, maxProvePages)
		return p
	}
	n := int(m.Pgid)
	mem, err := unix.Mmap(-1, 0, 21*n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANON)
	if err != nil {
		p.why = fmt.Sprintf("no memory for a proof: %v", err)
		return p
	}
	p.mem = mem
	p.first = unsafe.Slice((*uint64)(unsafe.Pointer(&mem[0])), n)
	p.last = unsafe.Slice((*uint64)(unsafe.Pointer(&mem[8*n])), n)
	p.kids = unsafe.Slice((*uint32)(unsafe.Pointer(&mem[16*n])), n)[:0]
	p.flags = mem[20*n : 21*n]
	p.pending, p.waiting = map[uint64]*pendingBranch{}, map[uint64][]edge{}
	return p
}

// release returns the proof's memory; it proves nothing after.
func (p *proof) release() {
	p.stop("released")
	if p.mem != nil {
		_ = unix.Munmap(p.mem)
		p.mem, p.first, p.last, p.kids, p.flags = nil, nil, nil, nil, nil
	}
}

func (p *proof) off() bool { return p.why != "" }

// stop gives the proof up: nothing is proven.
func (p *proof) stop(why string) {
	if p.why == "" {
		p.why = why
	}
}

func (p *proof) hash(k []byte) uint64 { return maphash.Bytes(p.seed, k) }

// order is what a summary keeps of a key to compare it with another: the
// caller's code (Stream.Code, coded) where it has one, else the key's
// first 8 bytes as a big-endian integer, zero-padded. Of two orders of the
// same kind, the smaller proves the smaller key.
func (p *proof) order(k []byte) (v uint64, coded bool) {
	if p.code != nil {
		if c, ok := p.code(k); ok {
			return c, true
		}
	}
	var b [8]byte
	copy(b[:], k)
	return binary.BigEndian.Uint64(b[:]), false
}

// keys reads leaf page pg's elements: its first and last key, whether a
// bucket lies in it, and whether its elements lie inside it with keys
// strictly increasing (ok).
func keys(pg []byte) (first, last []byte, nested, ok bool) {
	err := LeafEntries(pg, func(flags uint32, k, _ []byte) error {
		switch {
		case first == nil:
			first = k
		case bytes.Compare(last, k) >= 0:
			return ErrUnproven
		}
		if flags&bucketLeafFlag != 0 {
			nested = true
		}
		last = k
		return nil
	})
	return first, last, nested, err == nil
}

// leaf summarises leaf page id.
func (p *proof) leaf(id uint64, pg []byte) {
	if p.off() {
		return
	}
	var f uint8
	first, last, nested, ok := keys(pg)
	if ok {
		f |= pOK
	}
	if nested {
		f |= pNested
	}
	if first == nil {
		f |= pEmpty
	} else {
		p.first[id] = p.hash(first)
		var coded bool
		if p.last[id], coded = p.order(last); coded {
			f |= pCoded
		}
	}
	p.flags[id] = f | pDone
	p.done(id)
}

// branch summarises branch page id (its elements lie inside it: Stream
// read their children), or waits for its children.
func (p *proof) branch(id uint64, pg []byte, count int) {
	if p.off() {
		return
	}
	b := &pendingBranch{ok: count > 0}
	var prev []byte
	for i := range count {
		k, child, _ := branchElem(pg, i)
		if prev != nil && bytes.Compare(prev, k) >= 0 {
			b.ok = false
		}
		prev = k
		e := edge{parent: uint32(id), key: p.hash(k), last: i == count-1}
		if i == 0 {
			b.first = e.key
		}
		if !e.last {
			next, _, _ := branchElem(pg, i+1)
			e.next, e.coded = p.order(next)
		}
		if p.flags[child]&pDone != 0 {
			p.apply(b, e, child)
			continue
		}
		if p.nwait >= maxDeferred {
			p.stop(fmt.Sprintf("more than %d pages came after their parent", maxDeferred))
			return
		}
		p.waiting[child] = append(p.waiting[child], e)
		p.nwait++
		b.left++
	}
	if b.left > 0 {
		p.pending[id] = b
		return
	}
	p.finish(id, b)
	p.done(id)
}

// apply checks child (summarised) against edge e of branch b.
func (p *proof) apply(b *pendingBranch, e edge, child uint64) {
	f := p.flags[child]
	// The child's last key is proven below the next key when both
	// orders are of one kind and the child's is smaller.
	below := f&pCoded != 0 == e.coded && p.last[child] < e.next
	if f&pOK == 0 || f&pEmpty != 0 || p.first[child] != e.key || !e.last && !below {
		b.ok = false
	}
	if f&pNested != 0 {
		b.nested = true
	}
	if e.last {
		b.last, b.coded = p.last[child], f&pCoded != 0
	}
}

// flags are a completed branch's page flags.
func (b *pendingBranch) flags() uint8 {
	var f uint8 = pDone
	if b.ok {
		f |= pOK
	}
	if b.nested {
		f |= pNested
	}
	if b.coded {
		f |= pCoded
	}
	return f
}

// finish records completed branch b as page id's summary.
func (p *proof) finish(id uint64, b *pendingBranch) {
	p.first[id], p.last[id], p.flags[id] = b.first, b.last, b.flags()
}

// done completes the branches that waited for page id, just summarised
// (and, in turn, the branches that waited for those).
func (p *proof) done(id uint64) {
	p.queue = append(p.queue[:0], id)
	for len(p.queue) > 0 {
		c := p.queue[len(p.queue)-1]
		p.queue = p.queue[:len(p.queue)-1]
		edges := p.waiting[c]
		delete(p.waiting, c)
		p.nwait -= len(edges)
		for _, e := range edges {
			parent := uint64(e.parent)
			b := p.pending[parent]
			if b == nil { // the proof stopped (why) while b was read
				continue
			}
			p.apply(b, e, c)
			if b.left--; b.left == 0 {
				delete(p.pending, parent)
				p.finish(parent, b)
				p.queue = append(p.queue, parent)
			}
		}
	}
}

// root reports whether the tree under page id (a bucket's root) is proven;
// nested says a bucket may lie in it (the root bucket's tree).
func (p *proof) root(id uint64, nested bool) error {
	if p.off() {
		return fmt.Errorf("%w: %s", ErrUnproven, p.why)
	}
	f := p.flags[id]
	switch {
	case f&pOK == 0:
		return fmt.Errorf("%w: the tree under page %d", ErrUnproven, id)
	case f&pNested != 0 && !nested:
		return fmt.Errorf("%w: page %d's tree holds a nested bucket", ErrUnproven, id)
	}
	return nil
}

// inline reports whether an inline bucket's page is proven.
func (p *proof) inline(pg []byte) error {
	if _, _, nested, ok := keys(pg); !ok || nested {
		return fmt.Errorf("%w: an inline bucket's keys", ErrUnproven)
	}
	return nil
}

// lastCode returns the Stream.Code of the last key under page id, if the
// proof summarised it with one.
func (p *proof) lastCode(id uint64) (uint64, bool) {
	if p.off() || id >= uint64(len(p.flags)) || p.flags[id]&(pDone|pCoded) != pDone|pCoded {
		return 0, false
	}
	return p.last[id], true
}
