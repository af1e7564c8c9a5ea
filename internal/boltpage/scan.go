package boltpage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ErrIntegrity reports a bolt file that fails bolt's consistency checks.
var ErrIntegrity = errors.New("bolt integrity check failed")

// Answers a Scan visitor may give for a bucket entry to read less of the
// file: SkipBucket leaves the bucket out, LastLeaf reads only the last leaf
// page of its tree (the pages on the path to its largest keys). Either
// makes the scan partial: it no longer checks that every page is reached,
// and its Pages count only what it read. Peeking at the meta bucket and
// the key bucket's last revision this way costs a few pages.
var (
	SkipBucket = errors.New("skip this bucket")
	LastLeaf   = errors.New("read only the last leaf of this bucket")
)

// More of bolt's page format, for the scanner: element headers of branch
// and leaf pages, and the header of a bucket value.
const (
	branchPageFlag   = 0x01
	leafPageFlag     = 0x02
	elemSize         = 16 // branch: pos u32, ksize u32, pgid u64; leaf: flags u32, pos u32, ksize u32, vsize u32
	bucketLeafFlag   = 0x01
	bucketHeaderSize = 16 // root pgid u64, sequence u64; root 0 = inline page follows
	// maxPageBytes bounds one page with its overflow pages. Bolt writes a
	// page that large only for a single value of about that size, far
	// beyond what etcd accepts in a request; a larger claim is damage, and
	// reading it would cost memory in proportion to the file.
	maxPageBytes = 256 << 20
	// maxProblems is how many problems Scan describes; it counts the rest.
	maxProblems = 20
)

// File is a bolt file opened for reading with pread instead of a memory
// map: reading it costs no resident memory beyond a buffer per tree level,
// whatever the size of the file. It holds bolt's shared lock, so a running
// etcd (which holds the exclusive one) keeps it out, and it stays
// compatible with other readers.
type File struct {
	Path string
	Meta Meta  // the meta page bolt would use
	Size int64 // file size in bytes, trailer included
	// Progress, when set, is told after each read of Scan how many bytes
	// it has read of the TotalSize it will read.
	Progress func(done, total int64)
	f        *os.File
	read     int64
}

// Open opens path read-only, waits at most timeout for bolt's shared lock
// (0 waits forever; ErrInUse after that) and reads its meta page.
func Open(path string, timeout time.Duration) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	bf, err := open(f, timeout)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return bf, nil
}

func open(f *os.File, timeout time.Duration) (*File, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.IsDir() {
		return nil, fmt.Errorf("%w: it is a directory", ErrNotBolt)
	}
	if fi.Size() < 4096 {
		return nil, fmt.Errorf("%w: file is %d bytes, too small", ErrNotBolt, fi.Size())
	}
	if err := lockShared(f, timeout); err != nil {
		return nil, err
	}
	m, err := ReadMeta(f)
	if err != nil {
		return nil, err
	}
	if err := m.CheckSize(fi.Size()); err != nil {
		return nil, err
	}
	return &File{Path: f.Name(), Meta: m, Size: fi.Size(), f: f}, nil
}

// lockShared takes bolt's shared flock the way a read-only bolt.Open does.
func lockShared(f *os.File, timeout time.Duration) error { return Lock(f, false, timeout) }

// Lock takes the flock bolt uses on a db file, shared (what readers hold)
// or exclusive (what a running etcd holds), retrying every 50 ms until
// timeout (0 waits forever); ErrInUse after that.
func Lock(f *os.File, exclusive bool, timeout time.Duration) error {
	how := unix.LOCK_SH
	if exclusive {
		how = unix.LOCK_EX
	}
	start := time.Now()
	for {
		err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return fmt.Errorf("lock: %w", err)
		}
		if timeout > 0 && time.Since(start) > timeout-50*time.Millisecond {
			return fmt.Errorf("%w (timed out waiting for its lock; stop etcd or raise --timeout)", ErrInUse)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Close releases the lock and closes the file.
func (f *File) Close() error { return f.f.Close() }

// TotalSize is the size bolt reports as tx.Size(): the pages in use.
func (f *File) TotalSize() int64 { return int64(f.Meta.Pgid) * int64(f.Meta.PageSize) }

// Entry is one key/value pair met by Scan, in bolt's key order.
type Entry struct {
	// Depth is 0 for the entries of the root bucket (the top-level bucket
	// names), 1 for the entries of a top-level bucket, and so on.
	Depth int
	// Bucket says the entry is a nested bucket; its entries follow at
	// Depth+1, before the next entry at Depth.
	Bucket bool
	// Key and Value are only valid during the call; Value is nil for a
	// bucket.
	Key, Value []byte
	// Sequence is a bucket's sequence number (bbolt's NextSequence).
	Sequence uint64
	// Top names the top-level bucket the entry lies in (nil for the
	// entries of the root bucket); valid during the call.
	Top []byte
	// Page is the leaf page the entry lies in, valid during the call; its
	// key and value lie back to back at Page[At:]. Last marks the page's
	// last entry. bbolt writes a page's keys and values in order, so a
	// hash over consecutive entries can be one pass over the page's bytes
	// (PageRun).
	Page []byte
	At   int
	Last bool
}

// Scan reads the file's tree once, depth first in key order, and calls fn
// (when not nil) for every entry of every bucket. While reading, it checks
// what bbolt's Tx.Check checks: every page below the high-water mark is
// either reachable exactly once or free (never both, never freed twice),
// reachable pages are branch or leaf pages inside the file and carry their
// own id, and keys are in strictly increasing order within each page and
// within the bounds their parent pages set. bbolt's Check needs the file
// mapped and walks it several times (twice more to rebuild the freelist etcd
// does not store); Scan reads every page once with pread and keeps two bits
// per page, so its memory is 1/16384 of the file plus a buffer per tree
// level. Damage that bbolt would panic on (an element pointing outside its
// page, a page id outside the file) is a problem like any other.
//
// Problems make Scan return ErrIntegrity describing the first few of them,
// after the whole tree was read; fn's error stops the scan at once and is
// returned as it is.
func (f *File) Scan(fn func(Entry) error) (Pages, error) {
	hwm := f.Meta.Pgid
	if hwm < 2 {
		return Pages{}, fmt.Errorf("%w: high-water mark %d is below the two meta pages", ErrIntegrity, hwm)
	}
	s := &scanner{
		file: f, ps: int(f.Meta.PageSize), hwm: hwm,
		reachable: newBitset(hwm), freed: newBitset(hwm),
		fn: fn,
	}
	f.read = 0
	s.reachable.set(0)
	s.reachable.set(1)
	if err := s.readFreelist(f.Meta.Freelist); err != nil {
		return Pages{}, err
	}
	if _, err := s.walkPage(f.Meta.Root, 0, 0, nil, nil); err != nil {
		return Pages{}, err
	}
	if f.Progress != nil { // free pages were not read
		f.Progress(f.TotalSize(), f.TotalSize())
	}
	pages := Pages{PageSize: uint64(f.Meta.PageSize)}
	for id := uint64(0); id < hwm; id++ {
		switch {
		case s.partial:
			if s.reachable.has(id) {
				pages.Reachable++
			}
		case s.reachable.has(id):
			pages.Reachable++
		case s.freed.has(id) || f.Meta.Freelist == NoFreelist:
			pages.Free++
		default:
			s.problem("page %d: unreachable unfreed", id)
		}
	}
	return pages, s.result()
}

// Pages counts what Scan found below the high-water mark: pages in use
// (meta pages and the freelist included) and free pages (with no stored
// freelist, every page not in use, as bolt rebuilds its freelist).
type Pages struct{ Reachable, Free, PageSize uint64 }

type scanner struct {
	file      *File
	ps        int
	hwm       uint64
	reachable bitset
	freed     bitset
	fn        func(Entry) error
	levels    []level  // read buffers, one per tree level
	stack     []uint64 // page ids from the bucket's root to the current page
	problems  []string
	nproblems int
	partial   bool   // a bucket was skipped or read in part
	lastLeaf  bool   // walking only the rightmost path of the current bucket
	top       []byte // the top-level bucket being walked (a key of the root page, which stays read)
}

func (s *scanner) problem(format string, args ...any) {
	s.nproblems++
	if len(s.problems) < maxProblems {
		s.problems = append(s.problems, fmt.Sprintf(format, args...))
	}
}

func (s *scanner) result() error {
	if s.nproblems == 0 {
		return nil
	}
	const show = 3
	msg := strings.Join(s.problems[:min(show, len(s.problems))], "; ")
	if s.nproblems > show {
		msg += fmt.Sprintf("; and %d more", s.nproblems-show)
	}
	return fmt.Errorf("%w: %s", ErrIntegrity, msg)
}

// readFreelist marks the stored freelist's own pages reachable and the
// pages it lists free, reading it in chunks.
func (s *scanner) readFreelist(id uint64) error {
	if id == NoFreelist {
		return nil
	}
	hdr, err := s.readAt(0, id, false)
	if err != nil || hdr == nil {
		return err
	}
	flags, count, overflow := pageHeader(hdr)
	if flags != freelistPageFlag {
		s.problem("page %d: invalid type: %s, the meta page names it the freelist", id, pageType(flags))
		return nil
	}
	if !s.markReachable(id, overflow) {
		return nil
	}
	n, start := uint64(count), uint64(pageHeaderSize)
	if count == 0xFFFF { // the real count is the first element
		n, start = binary.LittleEndian.Uint64(hdr[pageHeaderSize:]), pageHeaderSize+8
	}
	if end := start + 8*n; end > uint64(overflow+1)*uint64(s.ps) {
		s.problem("page %d: freelist of %d ids does not fit its %d pages", id, n, overflow+1)
		return nil
	}
	const chunk = 8 << 10 // ids per read
	buf := make([]byte, 8*chunk)
	off := int64(id)*int64(s.ps) + int64(start)
	for n > 0 {
		k := min(n, chunk)
		b := buf[:8*k]
		if _, err := s.file.f.ReadAt(b, off); err != nil {
			return fmt.Errorf("read freelist page %d: %w", id, err)
		}
		for i := uint64(0); i < k; i++ {
			free := binary.LittleEndian.Uint64(b[8*i:])
			switch {
			case free < 2 || free >= s.hwm:
				s.problem("page %d: freelist lists page %d, outside the data pages [2, %d)", id, free, s.hwm)
			case s.freed.has(free):
				s.problem("page %d: already freed", free)
			default:
				s.freed.set(free)
			}
		}
		n -= k
		off += int64(8 * k)
	}
	return nil
}

// markReachable records pages id..id+overflow (which readAt found below
// the high-water mark) as reached, reporting pages reached before. It
// returns false if the page must not be followed: on a damaged file a page
// reached twice could make the walk loop.
func (s *scanner) markReachable(id uint64, overflow uint32) bool {
	ok := true
	for i := id; i <= id+uint64(overflow); i++ {
		if s.reachable.has(i) {
			s.problem("page %d: multiple references (stack: %v)", i, s.stack)
			ok = false
		}
		s.reachable.set(i)
	}
	if s.freed.has(id) {
		s.problem("page %d: reachable freed", id)
	}
	return ok
}

// readahead is how many pages a level reads at once while its pages come
// in file order, as they mostly do in etcd's dbs (a leaf level of a tree is
// usually written left to right): one pread per 256 KiB instead of per page.
const readahead = 64

// level is the read buffer of one tree level: pages start..start+n-1 of the
// file. A page returned by readAt stays valid until the next read at its
// level, so keys of a parent page remain usable while its children are read.
type level struct {
	buf      []byte
	start, n uint64
	next     uint64 // the page after the last one returned: reading it is sequential
}

// readAt reads page id (with its overflow pages if whole) at tree level
// lvl. It returns nil (after recording the problem) when the page cannot be
// read as a page: outside the file, a wrong id in its header, or larger
// than maxPageBytes.
func (s *scanner) readAt(lvl int, id uint64, whole bool) ([]byte, error) {
	if id < 2 || id >= s.hwm {
		s.problem("page %d: out of bounds: %d (stack: %v)", id, s.hwm, s.stack)
		return nil, nil
	}
	for len(s.levels) <= lvl {
		s.levels = append(s.levels, level{})
	}
	lv := &s.levels[lvl]
	if id < lv.start || id >= lv.start+lv.n {
		want := uint64(1)
		if id == lv.next {
			want = min(readahead, s.hwm-id)
		}
		if err := s.fill(lv, id, want); err != nil {
			return nil, err
		}
	}
	p := lv.buf[(id-lv.start)*uint64(s.ps):]
	if got := binary.LittleEndian.Uint64(p); got != id {
		s.problem("page %d: its header says it is page %d (stack: %v)", id, got, s.stack)
		return nil, nil
	}
	_, _, overflow := pageHeader(p)
	if id+uint64(overflow) >= s.hwm {
		s.problem("page %d: out of bounds: %d overflow pages pass the high-water mark %d (stack: %v)", id, overflow, s.hwm, s.stack)
		return nil, nil
	}
	pages := uint64(overflow) + 1
	if pages*uint64(s.ps) > maxPageBytes {
		s.problem("page %d: %d overflow pages, more than a page can hold (stack: %v)", id, overflow, s.stack)
		return nil, nil
	}
	lv.next = id + pages
	if !whole {
		return p[:s.ps], nil
	}
	if id+pages > lv.start+lv.n {
		if err := s.fill(lv, id, pages); err != nil {
			return nil, err
		}
		p = lv.buf
	}
	return p[:pages*uint64(s.ps)], nil
}

// fill reads pages id..id+n-1 into the level's buffer.
func (s *scanner) fill(lv *level, id, n uint64) error {
	size := int(n) * s.ps
	if cap(lv.buf) < size {
		lv.buf = make([]byte, size)
	}
	lv.buf = lv.buf[:size]
	lv.start, lv.n = 0, 0
	if _, err := s.file.f.ReadAt(lv.buf, int64(id)*int64(s.ps)); err != nil {
		return fmt.Errorf("read page %d: %w", id, err)
	}
	lv.start, lv.n = id, n
	if f := s.file; f.Progress != nil {
		f.read += int64(size)
		f.Progress(f.read, f.TotalSize())
	}
	return nil
}

// walkPage checks page id of a bucket's tree at tree level lvl (depth is
// the bucket's nesting depth) and everything below it, with all keys in
// [lo, hi) (nil: unbounded), and returns the largest key it holds, as
// bbolt's key order check does.
func (s *scanner) walkPage(id uint64, depth, lvl int, lo, hi []byte) ([]byte, error) {
	s.stack = append(s.stack, id)
	defer func() { s.stack = s.stack[:len(s.stack)-1] }()
	p, err := s.readAt(lvl, id, true)
	if err != nil || p == nil {
		return nil, err
	}
	flags, count, overflow := pageHeader(p)
	if flags != branchPageFlag && flags != leafPageFlag {
		s.problem("page %d: invalid type: %s (stack: %v)", id, pageType(flags), s.stack)
		return nil, nil
	}
	if !s.markReachable(id, overflow) {
		return nil, nil
	}
	if flags == leafPageFlag {
		return s.walkLeaf(p, id, depth, lvl, lo, hi)
	}
	if pageHeaderSize+int(count)*elemSize > len(p) {
		s.problem("page %d: %d elements do not fit the page (stack: %v)", id, count, s.stack)
		return nil, nil
	}
	// Keys of this page stay valid while its children are read: they use
	// the buffers of deeper levels only.
	var maxKey []byte
	prev := lo
	first := 0
	if s.lastLeaf && count > 0 {
		first = int(count) - 1 // its key is checked against lo, still below it
	}
	for i := first; i < int(count); i++ {
		key, child, ok := branchElem(p, i)
		if !ok {
			s.problem("page %d: branch element %d points outside the page (stack: %v)", id, i, s.stack)
			return maxKey, nil
		}
		s.checkOrder(id, "branch", i, key, prev, hi)
		next := hi
		if i+1 < int(count) {
			if k, _, ok := branchElem(p, i+1); ok {
				next = k
			}
		}
		if maxKey, err = s.walkPage(child, depth, lvl+1, key, next); err != nil {
			return nil, err
		}
		prev = maxKey
	}
	return maxKey, nil
}

// walkLeaf checks the entries of a leaf page (or of an inline bucket's
// page) in key order, calls fn for each and descends into nested buckets.
func (s *scanner) walkLeaf(p []byte, id uint64, depth, lvl int, lo, hi []byte) ([]byte, error) {
	_, count, _ := pageHeader(p)
	if pageHeaderSize+int(count)*elemSize > len(p) {
		s.problem("page %d: %d elements do not fit the page (stack: %v)", id, count, s.stack)
		return nil, nil
	}
	prev := lo
	for i := 0; i < int(count); i++ {
		e := pageHeaderSize + i*elemSize
		flags := binary.LittleEndian.Uint32(p[e:])
		pos, ksize, vsize := binary.LittleEndian.Uint32(p[e+4:]), binary.LittleEndian.Uint32(p[e+8:]), binary.LittleEndian.Uint32(p[e+12:])
		kv, ok := slice(p, e, pos, uint64(ksize)+uint64(vsize))
		if !ok {
			s.problem("page %d: leaf element %d points outside the page (stack: %v)", id, i, s.stack)
			return prev, nil
		}
		key, val := kv[:ksize], kv[ksize:]
		s.checkOrder(id, "leaf", i, key, prev, hi)
		prev = key
		bucket := flags&bucketLeafFlag != 0
		if depth == 0 && !bucket {
			// bbolt's root bucket holds only buckets (a Tx has no Put):
			// a meta page whose root is some bucket's page says this.
			s.problem("page %d: the root bucket holds %q, which is not a bucket (stack: %v)", id, key, s.stack)
			continue
		}
		if depth == 0 {
			s.top = key
		}
		if s.fn != nil {
			e := Entry{Depth: depth, Bucket: bucket, Key: key, Value: val,
				Page: p, At: e + int(pos), Last: i == int(count)-1}
			if depth > 0 {
				e.Top = s.top
			}
			if bucket {
				e.Value = nil
				if len(val) >= bucketHeaderSize {
					e.Sequence = binary.LittleEndian.Uint64(val[8:])
				}
			}
			err := s.fn(e)
			switch {
			case bucket && err == SkipBucket:
				s.partial = true
				continue
			case bucket && err == LastLeaf:
				s.partial, s.lastLeaf = true, true
				err = s.walkBucket(id, key, val, depth+1, lvl+1)
				s.lastLeaf = false
				if err != nil {
					return nil, err
				}
				continue
			case err != nil:
				return nil, err
			}
		}
		if bucket {
			if err := s.walkBucket(id, key, val, depth+1, lvl+1); err != nil {
				return nil, err
			}
		}
	}
	return prev, nil
}

// walkBucket descends into the nested bucket whose value (in page parent)
// is val: its own tree, or the inline page that follows the header.
func (s *scanner) walkBucket(parent uint64, name, val []byte, depth, lvl int) error {
	if len(val) < bucketHeaderSize {
		s.problem("page %d: bucket %q has a %d-byte value, shorter than a bucket header (stack: %v)", parent, name, len(val), s.stack)
		return nil
	}
	root := binary.LittleEndian.Uint64(val)
	if root != 0 {
		saved := s.stack
		s.stack = nil // a bucket's stack starts at its root, as bbolt prints it
		_, err := s.walkPage(root, depth, lvl, nil, nil)
		s.stack = saved
		return err
	}
	inline := val[bucketHeaderSize:]
	if len(inline) < pageHeaderSize {
		s.problem("page %d: inline bucket %q is too short (stack: %v)", parent, name, s.stack)
		return nil
	}
	if flags, _, _ := pageHeader(inline); flags != leafPageFlag {
		s.problem("page %d: inline bucket %q: invalid type: %s (stack: %v)", parent, name, pageType(flags), s.stack)
		return nil
	}
	_, err := s.walkLeaf(inline, parent, depth, lvl, nil, nil)
	return err
}

// checkOrder is bbolt's verifyKeyOrder: element i of a page must be above
// prev (the previous key, or the parent's lower bound for the first) and
// below hi.
func (s *scanner) checkOrder(id uint64, typ string, i int, key, prev, hi []byte) {
	if prev != nil {
		switch c := bytes.Compare(prev, key); {
		case i == 0 && c > 0:
			s.problem("page %d: the first %s key %x is below the key %x its parent starts it at (stack: %v)", id, typ, key, prev, s.stack)
		case i > 0 && c >= 0:
			s.problem("page %d: %s key[%d] %x is not above the previous key %x (stack: %v)", id, typ, i, key, prev, s.stack)
		}
	}
	if hi != nil && bytes.Compare(key, hi) >= 0 {
		s.problem("page %d: %s key[%d] %x is not below the next key %x of its parent (stack: %v)", id, typ, i, key, hi, s.stack)
	}
}

// branchElem returns the key and child page of element i of branch page p,
// or false if the key is not inside p.
func branchElem(p []byte, i int) (key []byte, child uint64, ok bool) {
	e := pageHeaderSize + i*elemSize
	le := binary.LittleEndian
	key, ok = slice(p, e, le.Uint32(p[e:]), uint64(le.Uint32(p[e+4:])))
	return key, le.Uint64(p[e+8:]), ok
}

// slice returns the n bytes at pos past the element header at e of page p,
// or false if they are not inside p.
func slice(p []byte, e int, pos uint32, n uint64) ([]byte, bool) {
	start := uint64(e) + uint64(pos)
	end := start + n
	if end > uint64(len(p)) {
		return nil, false
	}
	return p[start:end], true
}

func pageHeader(p []byte) (flags, count uint16, overflow uint32) {
	le := binary.LittleEndian
	return le.Uint16(p[8:]), le.Uint16(p[10:]), le.Uint32(p[12:])
}

func pageType(flags uint16) string {
	switch flags {
	case branchPageFlag:
		return "branch"
	case leafPageFlag:
		return "leaf"
	case metaPageFlag:
		return "meta"
	case freelistPageFlag:
		return "freelist"
	}
	return fmt.Sprintf("unknown<%02x>", flags)
}

// bitset is one bit per page.
type bitset []uint64

func newBitset(n uint64) bitset    { return make(bitset, (n+63)/64) }
func (b bitset) set(i uint64)      { b[i/64] |= 1 << (i % 64) }
func (b bitset) has(i uint64) bool { return b[i/64]&(1<<(i%64)) != 0 }

// PageRun joins the entries a scan meets into runs of bytes that lie back
// to back in one page (each key followed by its value), so that a hash of
// every key and value in order is a call per run, mostly one per page,
// instead of two per entry. Call Add for each entry, then Flush.
type PageRun struct {
	// Write receives each run; runs never span two pages.
	Write      func([]byte)
	page       []byte
	start, end int
}

// Add hashes e's key and value (only the key for a bucket: its value is
// no part of it), joined to the run when they follow it in the same page.
func (r *PageRun) Add(e Entry) {
	n := len(e.Key) + len(e.Value)
	if e.Bucket || len(e.Page) == 0 || e.At < 0 || e.At+n > len(e.Page) {
		r.Flush()
		r.Write(e.Key)
		if len(e.Value) > 0 {
			r.Write(e.Value)
		}
		return
	}
	if r.page != nil && (&r.page[0] != &e.Page[0] || len(r.page) != len(e.Page) || e.At != r.end) {
		r.Flush()
	}
	if r.page == nil {
		r.page, r.start, r.end = e.Page, e.At, e.At
	}
	r.end += n
	if e.Last { // the page's buffer may be reused after this entry
		r.Flush()
	}
}

// Flush writes the run gathered so far.
func (r *PageRun) Flush() {
	if r.page != nil && r.end > r.start {
		r.Write(r.page[r.start:r.end])
	}
	r.page = nil
}
