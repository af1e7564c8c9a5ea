package hashkv

import (
	"cmp"
	"errors"
	"fmt"
	"hash/crc32"
	"maps"
	"math"
	"slices"

	"github.com/etcdkit/etcdkit/internal/boltpage"
	"github.com/etcdkit/etcdkit/internal/etcdfmt"
)

// Pages computes HashKV from the key bucket's leaf pages in whatever order
// they come (a snapshot stream brings them in file order, free pages
// among them) and joins them at the end in the tree's order, which only
// the whole file tells (boltpage.Stream.Walk).
//
// It gives two hashes: at the snapshot's own revision (known at the end:
// its last entry's), and at the check revision, which the member was
// asked for before the stream started, so that its answer can be computed
// meanwhile. Entries above the compact revision go into one CRC run per
// page (two when the page crosses the check revision). Entries at or
// below it count only if their key has no newer entry (Compute's rule),
// which a stream learns only at the end: each is kept (about 40 bytes),
// with the newest entry of every key changed since the compaction, as the
// server's index holds them. It also counts the live keys. The compact
// revision must be known before the stream (NewPages); a snapshot whose
// meta bucket says a later one cannot be hashed this way
// (ErrCompactionRaced).
//
// A value whose bytes look like a key-bucket leaf page, left in a free
// page, is summarised like one; it can only mark a kept entry superseded,
// which makes the hash differ from the member's: a backup refused, never
// a wrong one accepted.
type Pages struct {
	check, compact int64
	ids            etcdfmt.KeyHasher
	sums           pageSums
	lastAbove      map[uint32]int64 // pages whose last revision is at least check
	tails          []tailSum
	early          []earlyRec
	newest         map[uint64]lateRec // per key: its newest entry in (compact, check]
	over           []overRec          // entries above check (compact > 0 only)
	scratch        []parsed
	// The join, in the tree's order.
	sorted bool
	pos    map[uint32]int // page → its place in the tree, for pages with early entries
	joined struct {
		pages            int
		revision         int64
		check, rev       uint32 // the runs' CRCs up to the check revision and the snapshot's
		checkLen, revLen int64
		delta            int64 // live keys created minus deleted above the estimate
	}
	shifts map[uint32]uint32
}

// pageSum is a key-bucket leaf page's share: its entries in
// (compact, check] as one CRC run, their effect on the live keys, and
// whether it holds early entries.
type pageSum struct {
	id, crc uint32
	n       uint32 // with earlyBit
	// delta is the change in live keys its later entries make: +1 for
	// each key created (version 1), -1 for each deletion (tombstone).
	delta int32
}

// earlyBit marks, in pageSum.n, a page with early entries (a run is at
// most a page with its overflow, far below 2^31 bytes).
const earlyBit = 1 << 31

func (s pageSum) len() uint32    { return s.n &^ earlyBit }
func (s pageSum) hasEarly() bool { return s.n&earlyBit != 0 }

// tailSum is a page's run of entries above the check revision.
type tailSum struct {
	id, crc, n uint32
	delta      int32
}

type earlyRec struct {
	id, crc, n uint32
	idx        uint16
	tomb       bool
	created    bool // version 1: a key created
	key        uint64
	rev        int64
}

type lateRec struct {
	rev  int64
	tomb bool
}

type overRec struct {
	key  uint64
	rev  int64
	tomb bool
}

type parsed struct {
	rev           etcdfmt.Revision
	tomb, created bool
	key           uint64
}

// delta is what an entry does to the count of live keys.
func (e parsed) delta() int32 {
	switch {
	case e.tomb:
		return -1
	case e.created:
		return 1
	}
	return 0
}

// ErrCompactionRaced reports a compaction past the estimate the stream was
// read with: the snapshot's HashKV cannot be computed from it.
var ErrCompactionRaced = errors.New("a compaction ran while the snapshot was taken")

// NewPages prepares for a stream whose member was asked for its hash at
// check, and whose compact revision was compact when the stream started.
func NewPages(check, compact int64) *Pages {
	p := &Pages{check: check, compact: compact, ids: etcdfmt.NewKeyHasher(), lastAbove: map[uint32]int64{}}
	if compact > 0 {
		p.newest = map[uint64]lateRec{}
	}
	return p
}

// Page takes a leaf page; it reports false when the page is not a key
// bucket page (a key is not a revision, or a value not a KeyValue where
// one is needed), so the caller can keep it otherwise.
func (p *Pages) Page(id uint64, page []byte) (bool, error) {
	if id > math.MaxUint32 {
		return false, fmt.Errorf("page %d: more pages than etcdkit's stream summary indexes", id)
	}
	p.scratch = p.scratch[:0]
	err := boltpage.LeafEntries(page, func(flags uint32, k, v []byte) error {
		r, tomb, err := etcdfmt.ParseRevKey(k)
		if err != nil || flags != 0 {
			return errNotKeyPage
		}
		kv, err := etcdfmt.ParseKeyValue(v)
		if err != nil {
			return errNotKeyPage
		}
		e := parsed{rev: r, tomb: tomb, created: kv.Version == 1}
		if p.compact > 0 {
			e.key = p.ids.ID64(kv.Key)
		}
		p.scratch = append(p.scratch, e)
		return nil
	})
	if err != nil || len(p.scratch) == 0 {
		return false, nil
	}
	s := pageSum{id: uint32(id)}
	if last := p.scratch[len(p.scratch)-1].rev.Main; last >= p.check {
		// The key bucket's last page holds the snapshot's revision, which
		// is at least check: only such pages' last revisions are kept.
		p.lastAbove[s.id] = last
	}
	var tail tailSum
	i, hasEarly := 0, false
	err = boltpage.LeafEntries(page, func(_ uint32, k, v []byte) error {
		e := p.scratch[i]
		i++
		switch {
		case e.rev.Main <= p.compact:
			hasEarly = true
			p.early = append(p.early, earlyRec{id: s.id, idx: uint16(i - 1), crc: crcOf(k, v), n: uint32(len(k) + len(v)), tomb: e.tomb, created: e.created, key: e.key, rev: e.rev.Main})
		case e.rev.Main <= p.check:
			s.crc, s.n = crc32.Update(crc32.Update(s.crc, castagnoli, k), castagnoli, v), s.n+uint32(len(k)+len(v))
			s.delta += e.delta()
			if p.newest != nil {
				if l, ok := p.newest[e.key]; !ok || e.rev.Main >= l.rev {
					p.newest[e.key] = lateRec{rev: e.rev.Main, tomb: e.tomb}
				}
			}
		default:
			tail.crc, tail.n = crc32.Update(crc32.Update(tail.crc, castagnoli, k), castagnoli, v), tail.n+uint32(len(k)+len(v))
			tail.delta += e.delta()
			if p.newest != nil {
				p.over = append(p.over, overRec{key: e.key, rev: e.rev.Main, tomb: e.tomb})
			}
		}
		return nil
	})
	if err != nil {
		return false, err
	}
	if hasEarly {
		s.n |= earlyBit
	}
	p.sums.add(s)
	if tail.n > 0 {
		tail.id = s.id
		p.tails = append(p.tails, tail)
	}
	return true, nil
}

var errNotKeyPage = errors.New("not a key bucket page")

// PageResult is what Sum found: the key bucket's last revision, and the
// hash at it and at the check revision.
type PageResult struct {
	Revision, CompactRevision int64
	Hash                      uint32 // at Revision
	Keys                      int64  // live at Revision
	CheckRevision             int64
	CheckHash                 uint32 // at CheckRevision
}

// Join takes the key bucket's next leaf page in the tree's order (ids
// from Walk); Sum ends the join. A page Page did not take is ErrDamaged
// (boltpage's).
func (p *Pages) Join(id uint64) error {
	if !p.sorted {
		p.sums.sort()
		slices.SortFunc(p.tails, func(a, b tailSum) int { return cmp.Compare(a.id, b.id) })
		p.sorted, p.pos = true, map[uint32]int{}
	}
	s, ok := p.sums.find(id)
	if !ok {
		return fmt.Errorf("%w: page %d of the key bucket does not hold revisions", boltpage.ErrDamaged, id)
	}
	j := &p.joined
	last, above := p.lastAbove[s.id]
	if j.pages > 0 && j.revision >= p.check && (!above || last < j.revision) {
		return fmt.Errorf("%w: page %d of the key bucket is out of revision order", boltpage.ErrDamaged, id)
	}
	j.revision = last // 0: below check
	if s.hasEarly() {
		p.pos[s.id] = j.pages
	}
	j.pages++
	j.check, j.checkLen = p.combine(j.check, s.crc, s.len()), j.checkLen+int64(s.len())
	j.rev, j.revLen = p.combine(j.rev, s.crc, s.len()), j.revLen+int64(s.len())
	j.delta += int64(s.delta)
	if i, ok := slices.BinarySearchFunc(p.tails, s.id, func(t tailSum, id uint32) int { return cmp.Compare(t.id, id) }); ok {
		t := p.tails[i]
		j.rev, j.revLen = p.combine(j.rev, t.crc, t.n), j.revLen+int64(t.n)
		j.delta += int64(t.delta)
	}
	return nil
}

// combine is crc32Combine with the shift for each length computed once.
func (p *Pages) combine(crc1, crc2, n uint32) uint32 {
	if n == 0 {
		return crc1 ^ crc2
	}
	if p.shifts == nil {
		p.shifts = map[uint32]uint32{}
	}
	x, ok := p.shifts[n]
	if !ok {
		x = x2nModP(int64(n), 3)
		if len(p.shifts) < 1<<16 {
			p.shifts[n] = x
		}
	}
	return multModP(x, crc1) ^ crc2
}

// Sum ends the join, given the compact revision the snapshot's meta
// bucket records.
func (p *Pages) Sum(compactRev int64) (PageResult, error) {
	j := p.joined
	res := PageResult{CompactRevision: compactRev, CheckRevision: p.check, Revision: j.revision}
	if j.pages > 0 && res.Revision < p.check {
		return res, fmt.Errorf("%w: the snapshot ends at revision %d, before %d the member had already reached", boltpage.ErrDamaged, res.Revision, p.check)
	}
	if compactRev > p.compact {
		return res, fmt.Errorf("%w: the snapshot is compacted to %d, the member was at %d before it", ErrCompactionRaced, compactRev, p.compact)
	}
	early := p.early[:0]
	for _, e := range p.early {
		if _, ok := p.pos[e.id]; ok {
			early = append(early, e)
		}
	}
	slices.SortFunc(early, func(a, b earlyRec) int {
		if c := p.pos[a.id] - p.pos[b.id]; c != 0 {
			return c
		}
		return int(a.idx) - int(b.idx)
	})
	atCheck := p.earlyCRC(early, compactRev, p.check, p.newest)
	atRev := atCheck
	if len(p.over) > 0 || res.Revision > p.check {
		newest := maps.Clone(p.newest)
		for _, o := range p.over {
			if o.rev > res.Revision {
				continue // a free page reused by a write after the snapshot
			}
			if l, ok := newest[o.key]; !ok || o.rev >= l.rev {
				newest[o.key] = lateRec{rev: o.rev, tomb: o.tomb}
			}
		}
		atRev = p.earlyCRC(early, compactRev, res.Revision, newest)
	}
	res.Keys = liveKeys(early, compactRev) + j.delta
	res.CheckHash = crc32Combine(atCheck, j.check, j.checkLen)
	res.Hash = crc32Combine(atRev, j.rev, j.revLen)
	return res, nil
}

// earlyCRC is the CRC, seeded with the bucket name, of the early entries
// the key index at limit keeps, given each key's newest later entry up to
// limit (Compute's rule): an entry at or below compactRev counts unless a
// later entry of its key exists or it is a tombstone (when any key
// lives), and a tombstone exactly at the compact revision never does.
// Early entries above compactRev (the estimate was higher) are later
// entries: they count up to limit.
func (p *Pages) earlyCRC(early []earlyRec, compactRev, limit int64, newest map[uint64]lateRec) uint32 {
	copied := false
	last := map[uint64]int{} // key → index of its newest entry at or below compactRev
	for i, e := range early {
		switch {
		case e.rev <= compactRev:
			last[e.key] = i
		case e.rev <= limit:
			if !copied {
				newest, copied = maps.Clone(newest), true
			}
			if l, ok := newest[e.key]; !ok || e.rev >= l.rev {
				newest[e.key] = lateRec{rev: e.rev, tomb: e.tomb}
			}
		}
	}
	superseded := func(i int, e earlyRec) bool {
		if _, ok := newest[e.key]; ok {
			return true
		}
		return last[e.key] != i
	}
	keepAny := false
	for _, l := range newest {
		if !l.tomb {
			keepAny = true
			break
		}
	}
	for i, e := range early {
		if !keepAny && e.rev <= compactRev && !e.tomb && !superseded(i, e) {
			keepAny = true
		}
	}
	crc := crc32.Update(0, castagnoli, etcdfmt.BucketKey)
	for i, e := range early {
		if e.rev > limit || e.rev <= compactRev && !kept(keepAny, e.tomb, superseded(i, e), e.rev == compactRev) {
			continue
		}
		crc = crc32Combine(crc, e.crc, int64(e.n))
	}
	return crc
}

// liveKeys counts the keys live at the snapshot's revision that the early
// entries tell: those whose newest entry at or below the compaction is
// not a tombstone, plus what early entries above it (the estimate was
// higher) did. Every later entry's share is in the pages' deltas: a put
// of version 1 creates a key, a tombstone deletes one, as in etcd's
// index.
func liveKeys(early []earlyRec, compactRev int64) int64 {
	newest := map[uint64]bool{} // key → its newest early entry is live
	var n int64
	for _, e := range early {
		if e.rev <= compactRev {
			newest[e.key] = !e.tomb
			continue
		}
		n += int64(parsed{tomb: e.tomb, created: e.created}.delta())
	}
	for _, live := range newest {
		if live {
			n++
		}
	}
	return n
}

// pageSums holds the pages' summaries in chunks that never move (a flat
// slice would copy itself, and leave the old copy as garbage, each time
// it grows: at 8 GB that is 48 MB more). A stream brings pages in
// increasing id order, except those gathered with their overflow pages,
// which are kept apart.
type pageSums struct {
	chunks [][]pageSum
	apart  []pageSum
	last   uint32
}

const sumChunk = 1 << 14

func (ps *pageSums) add(s pageSum) {
	if len(ps.chunks) > 0 && s.id <= ps.last {
		ps.apart = append(ps.apart, s)
		return
	}
	if n := len(ps.chunks); n == 0 || len(ps.chunks[n-1]) == sumChunk {
		ps.chunks = append(ps.chunks, make([]pageSum, 0, sumChunk))
	}
	n := len(ps.chunks) - 1
	ps.chunks[n] = append(ps.chunks[n], s)
	ps.last = s.id
}

func (ps *pageSums) sort() {
	slices.SortFunc(ps.apart, func(a, b pageSum) int { return cmp.Compare(a.id, b.id) })
}

func (ps *pageSums) find(id uint64) (pageSum, bool) {
	if id > math.MaxUint32 {
		return pageSum{}, false
	}
	cmpID := func(s pageSum, id uint32) int { return cmp.Compare(s.id, id) }
	c, _ := slices.BinarySearchFunc(ps.chunks, uint32(id), func(ch []pageSum, id uint32) int { return cmp.Compare(ch[len(ch)-1].id, id) })
	if c < len(ps.chunks) {
		if i, ok := slices.BinarySearchFunc(ps.chunks[c], uint32(id), cmpID); ok {
			return ps.chunks[c][i], true
		}
	}
	if i, ok := slices.BinarySearchFunc(ps.apart, uint32(id), cmpID); ok {
		return ps.apart[i], true
	}
	return pageSum{}, false
}
