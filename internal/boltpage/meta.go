package boltpage

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"io"
	"os"
)

// The few facts of bolt's file format that etcdkit needs below bbolt's API
// (bbolt keeps them in an internal package). Bolt stores its structures in
// the machine's byte order; etcd runs on little-endian machines only.
const (
	pageHeaderSize   = 16 // id u64, flags u16, count u16, overflow u32
	metaPageFlag     = 0x04
	freelistPageFlag = 0x10
	boltMagic        = 0xED0CDAED
	boltVersion      = 2
	metaChecksumOff  = 56 // the checksum covers the meta fields before it
	metaSize         = metaChecksumOff + 8
	// NoFreelist is the freelist page id of a db whose freelist is not
	// stored (etcd's backend writes none and bolt rebuilds it at open).
	NoFreelist = ^uint64(0)
	// maxPageSize bounds the page size read from an untrusted meta page.
	maxPageSize = 1 << 16
)

// Meta is a bolt meta page: where the root bucket and the freelist are, the
// high-water mark of pages and the transaction id.
type Meta struct {
	PageSize uint32
	Flags    uint32
	Root     uint64 // root bucket's page
	Sequence uint64 // root bucket's sequence
	Freelist uint64 // freelist page, or NoFreelist
	Pgid     uint64 // high-water mark: pages in use are below it
	Txid     uint64
}

func decodeMeta(p []byte) (Meta, error) {
	if len(p) < pageHeaderSize+metaSize {
		return Meta{}, fmt.Errorf("%w: short meta page", ErrNotBolt)
	}
	b := p[pageHeaderSize:]
	le := binary.LittleEndian
	if le.Uint32(b[0:]) != boltMagic || le.Uint32(b[4:]) != boltVersion {
		return Meta{}, fmt.Errorf("%w: bad magic or version in meta page", ErrNotBolt)
	}
	h := fnv.New64a()
	h.Write(b[:metaChecksumOff])
	if h.Sum64() != le.Uint64(b[metaChecksumOff:]) {
		return Meta{}, fmt.Errorf("%w: meta page checksum mismatch", ErrNotBolt)
	}
	return Meta{
		PageSize: le.Uint32(b[8:]), Flags: le.Uint32(b[12:]),
		Root: le.Uint64(b[16:]), Sequence: le.Uint64(b[24:]),
		Freelist: le.Uint64(b[32:]), Pgid: le.Uint64(b[40:]), Txid: le.Uint64(b[48:]),
	}, nil
}

// page returns m as meta page id (0 or 1) of m.PageSize bytes.
func (m Meta) page(id uint64) []byte {
	p := make([]byte, m.PageSize)
	le := binary.LittleEndian
	le.PutUint64(p[0:], id)
	le.PutUint16(p[8:], metaPageFlag)
	b := p[pageHeaderSize:]
	le.PutUint32(b[0:], boltMagic)
	le.PutUint32(b[4:], boltVersion)
	le.PutUint32(b[8:], m.PageSize)
	le.PutUint32(b[12:], m.Flags)
	le.PutUint64(b[16:], m.Root)
	le.PutUint64(b[24:], m.Sequence)
	le.PutUint64(b[32:], m.Freelist)
	le.PutUint64(b[40:], m.Pgid)
	le.PutUint64(b[48:], m.Txid)
	h := fnv.New64a()
	h.Write(b[:metaChecksumOff])
	le.PutUint64(b[metaChecksumOff:], h.Sum64())
	return p
}

// ReadMeta returns the meta page bolt would use when opening f: the valid
// one of the two with the higher transaction id.
func ReadMeta(f io.ReaderAt) (Meta, error) {
	var first [pageHeaderSize + metaSize]byte
	if _, err := f.ReadAt(first[:], 0); err != nil {
		return Meta{}, fmt.Errorf("%w: reading meta page 0: %w", ErrNotBolt, err)
	}
	// Meta 0 tells the page size; if it is damaged, bolt falls back to
	// meta 1 and probes the usual page sizes, and so do we.
	sizes := []int64{4096, 8192, 16384, 32768, 65536}
	m0, err0 := decodeMeta(first[:])
	if err0 == nil {
		if m0.PageSize < 512 || m0.PageSize > maxPageSize || m0.PageSize&(m0.PageSize-1) != 0 {
			return Meta{}, fmt.Errorf("%w: implausible page size %d", ErrNotBolt, m0.PageSize)
		}
		sizes = []int64{int64(m0.PageSize)}
	}
	var m1 Meta
	err1 := err0
	for _, ps := range sizes {
		var second [pageHeaderSize + metaSize]byte
		if _, err := f.ReadAt(second[:], ps); err != nil {
			err1 = fmt.Errorf("%w: reading meta page 1: %w", ErrNotBolt, err)
			continue
		}
		if m1, err1 = decodeMeta(second[:]); err1 == nil && int64(m1.PageSize) == ps {
			break
		}
	}
	switch {
	case err0 == nil && (err1 != nil || m0.Txid >= m1.Txid):
		return m0, nil
	case err1 == nil:
		return m1, nil
	}
	return Meta{}, err0
}

// CheckSize refuses a db of size bytes that is shorter than the pages its
// meta page says are in use: a truncated copy.
// The comparison divides instead of multiplying: a page count read from a
// damaged file can be anything up to 2^64, and pgid*pageSize would wrap.
// After it passes, Pgid*PageSize fits in an int64 (it is at most size).
func (m Meta) CheckSize(size int64) error {
	if m.PageSize == 0 || size < 0 || m.Pgid > uint64(size)/uint64(m.PageSize) {
		return fmt.Errorf("%w: %d bytes but its meta page says %d pages of %d bytes (truncated copy?)", ErrDamaged, size, m.Pgid, m.PageSize)
	}
	return nil
}

// StoreEmptyFreelist rewrites the bolt file f so that a read-write open does
// not rebuild its freelist: it writes an empty freelist page at the
// high-water mark and points both meta pages at it. etcd's dbs store no
// freelist, and bbolt rebuilds one at every read-write open by walking every
// page of the file (about as long as reading it); for a small edit of a
// freshly copied snapshot that walk would cost more than the copy itself.
// The pages that were free stay unused until etcd opens the db: it stores no
// freelist, so its next start finds them again. f must not be open in bolt;
// the caller syncs it.
func StoreEmptyFreelist(f *os.File) error {
	m, err := ReadMeta(f)
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if err := m.CheckSize(fi.Size()); err != nil {
		return err
	}
	ps := int64(m.PageSize)
	free := make([]byte, ps)
	binary.LittleEndian.PutUint64(free[0:], m.Pgid)
	binary.LittleEndian.PutUint16(free[8:], freelistPageFlag)
	if _, err := f.WriteAt(free, int64(m.Pgid)*ps); err != nil {
		return fmt.Errorf("write freelist page: %w", err)
	}
	m.Freelist = m.Pgid
	m.Pgid++
	// Both meta pages describe the same tree, as bolt's own Tx.WriteTo
	// leaves them; the page with the lower txid is the one the next commit
	// overwrites.
	older := m
	if older.Txid > 0 {
		older.Txid--
	} else {
		m.Txid++
	}
	for _, mm := range []Meta{m, older} {
		id := mm.Txid % 2
		if _, err := f.WriteAt(mm.page(id), int64(id)*ps); err != nil {
			return fmt.Errorf("write meta page %d: %w", id, err)
		}
	}
	return nil
}
