package boltpage

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/etcdkit/etcdkit/internal/fsutil"
)

// Builder writes a new bolt file from its buckets and their keys given in
// key order, as a bulk load, page by page: leaves packed full, a branch
// page written as soon as it is full above each level, pages in file order
// with no free page among them, the root bucket last, then the two meta
// pages. It holds one page per tree level, never the data: memory does not
// grow with the file. The file stores no freelist (as etcd's dbs), so
// bbolt rebuilds it at open and finds none free.
//
// Buckets hold keys only (etcd's schema has no nested buckets); a bucket
// small enough is stored inline in the root bucket's page, as bbolt does.
type Builder struct {
	f    *os.File
	w    *bufio.Writer
	ps   int
	next uint64 // id of the next page written
	root *treeBuilder
	cur  *treeBuilder
	page []byte // scratch for one serialized page
	// Written counts the bytes of keys and values added.
	Written int64
}

// ErrNested reports a bucket inside a bucket, which Builder does not
// write (etcd never makes one).
var ErrNested = errors.New("nested buckets are not supported")

// NewBuilder writes a bolt file of pageSize pages into f, which must be
// empty. Call Bucket, then Put for its keys in order, for every bucket in
// order, then Finish.
func NewBuilder(f *os.File, pageSize int) (*Builder, error) {
	if pageSize < 1024 || pageSize > maxPageSize || pageSize&(pageSize-1) != 0 {
		return nil, fmt.Errorf("bolt page size %d: not a power of two between 1 KiB and 64 KiB", pageSize)
	}
	if _, err := f.Seek(2*int64(pageSize), io.SeekStart); err != nil {
		return nil, err
	}
	wb := &writeback{f: f, off: 2 * int64(pageSize), wb: fsutil.Writeback{F: f}}
	b := &Builder{f: f, w: bufio.NewWriterSize(wb, 1<<20), ps: pageSize, next: 2}
	b.root = &treeBuilder{b: b, root: true}
	return b, nil
}

// writeback writes the Builder's pages to its file and starts their
// writeback as it goes (fsutil.Writeback), so the disk works while pages
// are built.
type writeback struct {
	f   *os.File
	off int64
	wb  fsutil.Writeback
}

func (w *writeback) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	w.off += int64(n)
	w.wb.Wrote(w.off)
	return n, err
}

// Bucket starts the next top-level bucket; its name must sort after the
// previous one's.
func (b *Builder) Bucket(name []byte, sequence uint64) error {
	if err := b.endBucket(); err != nil {
		return err
	}
	b.cur = &treeBuilder{b: b, name: append([]byte(nil), name...), seq: sequence}
	return nil
}

// Put adds a key to the current bucket; keys must come in increasing order.
func (b *Builder) Put(key, value []byte) error {
	if b.cur == nil {
		return errors.New("bolt builder: a key outside any bucket")
	}
	b.Written += int64(len(key) + len(value))
	return b.cur.add(0, key, value, 0)
}

// endBucket writes what remains of the current bucket and adds its header
// (or its inline page) to the root bucket.
func (b *Builder) endBucket() error {
	if b.cur == nil {
		return nil
	}
	t := b.cur
	b.cur = nil
	header := make([]byte, bucketHeaderSize)
	binary.LittleEndian.PutUint64(header[8:], t.seq)
	if t.pages == 0 && len(t.levels) == 0 && t.leaf.size() <= b.ps/4 {
		// As bbolt: a small bucket lives inline, its page after the header.
		header = append(header, t.leaf.serialize(nil, leafPageFlag)...)
	} else {
		root, err := t.finish()
		if err != nil {
			return err
		}
		binary.LittleEndian.PutUint64(header, root)
	}
	return b.root.add(0, t.name, header, bucketLeafFlag)
}

// Finish writes the last bucket, the root bucket and the meta pages,
// flushes and syncs the file.
func (b *Builder) Finish() (Meta, error) {
	if err := b.endBucket(); err != nil {
		return Meta{}, err
	}
	root, err := b.root.finish()
	if err != nil {
		return Meta{}, err
	}
	if err := b.w.Flush(); err != nil {
		return Meta{}, err
	}
	// The file ends with its last page (a caller may have preallocated).
	if err := b.f.Truncate(int64(b.next) * int64(b.ps)); err != nil {
		return Meta{}, err
	}
	m := Meta{PageSize: uint32(b.ps), Root: root, Freelist: NoFreelist, Pgid: b.next, Txid: 2}
	// Both meta pages describe the tree, as bbolt's Tx.WriteTo leaves them.
	older := m
	older.Txid--
	for _, mm := range []Meta{m, older} {
		id := mm.Txid % 2
		if _, err := b.f.WriteAt(mm.page(id), int64(id)*int64(b.ps)); err != nil {
			return Meta{}, fmt.Errorf("write meta page %d: %w", id, err)
		}
	}
	if err := b.f.Sync(); err != nil {
		return Meta{}, fmt.Errorf("fsync %s: %w", b.f.Name(), err)
	}
	return m, nil
}

// writePage writes a serialized page (with its overflow) as the next page
// and returns its id.
func (b *Builder) writePage(p []byte) (uint64, error) {
	id := b.next
	n := (len(p) + b.ps - 1) / b.ps
	binary.LittleEndian.PutUint64(p[0:], id)
	binary.LittleEndian.PutUint32(p[12:], uint32(n-1))
	if full := n * b.ps; full <= cap(p) { // pad in place: one write
		clear(p[len(p):full])
		p = p[:full]
	}
	if _, err := b.w.Write(p); err != nil {
		return 0, err
	}
	for pad := n*b.ps - len(p); pad > 0; {
		k := min(pad, len(zeroPad))
		if _, err := b.w.Write(zeroPad[:k]); err != nil {
			return 0, err
		}
		pad -= k
	}
	b.next += uint64(n)
	return id, nil
}

// zeroPad pads a page's last bytes (a package variable: a local array
// passed to Write would be a heap allocation per page).
var zeroPad [4096]byte

// treeBuilder builds one bucket's tree bottom-up: the leaf being filled
// and, above it, the branch page being filled at each level.
type treeBuilder struct {
	b      *Builder
	name   []byte
	seq    uint64
	root   bool // the root bucket: never inline
	leaf   pageBuf
	levels []*pageBuf // levels[0] holds the leaves' first keys
	pages  int        // pages written
	last   []byte     // the last key added
}

// add puts an element at level lvl (0: the leaf; i: branch level i-1).
func (t *treeBuilder) add(lvl int, key, value []byte, flags uint32) error {
	p := t.pageAt(lvl)
	if p.count() >= 2 && p.size()+elemSize+len(key)+len(value) > t.b.ps {
		if err := t.flush(lvl); err != nil {
			return err
		}
	}
	if lvl == 0 {
		if t.last != nil && bytes.Compare(t.last, key) >= 0 {
			// From a scan, only a damaged source gives keys out of order.
			return fmt.Errorf("%w: bolt builder: key %q after %q: keys must increase", ErrIntegrity, key, t.last)
		}
		t.last = append(t.last[:0], key...)
	}
	p.append(key, value, flags)
	return nil
}

func (t *treeBuilder) pageAt(lvl int) *pageBuf {
	if lvl == 0 {
		return &t.leaf
	}
	for len(t.levels) < lvl {
		t.levels = append(t.levels, &pageBuf{})
	}
	return t.levels[lvl-1]
}

// flush writes the page at level lvl and adds it to the level above.
func (t *treeBuilder) flush(lvl int) error {
	p := t.pageAt(lvl)
	flag := uint16(leafPageFlag)
	if lvl > 0 {
		flag = branchPageFlag
	}
	if p.count() == 0 && (lvl > 0 || t.pages > 0) {
		return fmt.Errorf("bolt builder: an empty page at level %d", lvl)
	}
	t.b.page = p.serialize(t.b.page, flag)
	id, err := t.b.writePage(t.b.page)
	if err != nil {
		return err
	}
	t.pages++
	var first []byte // an empty page is a bucket's only one: never a branch's child
	if p.count() > 0 {
		first = append(first, p.key(0)...)
	}
	p.reset()
	var child [8]byte
	binary.LittleEndian.PutUint64(child[:], id)
	return t.add(lvl+1, first, child[:], branchChild)
}

// finish writes what the levels hold and returns the root page's id: the
// top level's one element needs no page of its own.
func (t *treeBuilder) finish() (uint64, error) {
	if t.leaf.count() > 0 || t.pages == 0 {
		if err := t.flush(0); err != nil {
			return 0, err
		}
	}
	for lvl := 1; ; lvl++ {
		p := t.pageAt(lvl)
		if lvl == len(t.levels) && p.count() == 1 {
			return binary.LittleEndian.Uint64(p.value(0)), nil
		}
		if err := t.flush(lvl); err != nil {
			return 0, err
		}
	}
}

// branchChild marks an element of a branch page: its value is the child's
// page id.
const branchChild = ^uint32(0)

// pageBuf is one page being filled: its elements' keys and values in an
// arena, serialized when the page is written.
type pageBuf struct {
	arena []byte
	elems []elem
}

type elem struct {
	k, v  int // offsets of key and value in the arena
	kn    int
	vn    int
	flags uint32
}

func (p *pageBuf) count() int { return len(p.elems) }
func (p *pageBuf) reset()     { p.arena, p.elems = p.arena[:0], p.elems[:0] }
func (p *pageBuf) key(i int) []byte {
	e := p.elems[i]
	return p.arena[e.k : e.k+e.kn]
}
func (p *pageBuf) value(i int) []byte {
	e := p.elems[i]
	return p.arena[e.v : e.v+e.vn]
}

func (p *pageBuf) append(key, value []byte, flags uint32) {
	e := elem{k: len(p.arena), kn: len(key), flags: flags}
	p.arena = append(p.arena, key...)
	e.v, e.vn = len(p.arena), len(value)
	p.arena = append(p.arena, value...)
	p.elems = append(p.elems, e)
}

// size is the serialized size: header, elements, keys and values (a
// branch element stores its child in the element, not as data).
func (p *pageBuf) size() int {
	n := pageHeaderSize + len(p.elems)*elemSize
	for _, e := range p.elems {
		n += e.kn
		if e.flags != branchChild {
			n += e.vn
		}
	}
	return n
}

// serialize lays the page out as bolt does, into dst's storage: header
// (id and overflow left 0), element headers, then each element's key (and
// value), pos counted from the element's header.
func (p *pageBuf) serialize(dst []byte, flag uint16) []byte {
	n := p.size()
	if cap(dst) < n {
		dst = make([]byte, n)
	}
	out := dst[:n]
	clear(out[:pageHeaderSize])
	le := binary.LittleEndian
	le.PutUint16(out[8:], flag)
	le.PutUint16(out[10:], uint16(len(p.elems)))
	data := pageHeaderSize + len(p.elems)*elemSize
	for i, e := range p.elems {
		h := pageHeaderSize + i*elemSize
		pos := uint32(data - h)
		if flag == branchPageFlag {
			le.PutUint32(out[h:], pos)
			le.PutUint32(out[h+4:], uint32(e.kn))
			copy(out[h+8:], p.arena[e.v:e.v+8])
			data += copy(out[data:], p.arena[e.k:e.k+e.kn])
			continue
		}
		le.PutUint32(out[h:], e.flags)
		le.PutUint32(out[h+4:], pos)
		le.PutUint32(out[h+8:], uint32(e.kn))
		le.PutUint32(out[h+12:], uint32(e.vn))
		data += copy(out[data:], p.arena[e.k:e.k+e.kn])
		data += copy(out[data:], p.arena[e.v:e.v+e.vn])
	}
	return out
}
